"""The sweep engine: a grid's runs as Ray tasks, one per run, with skip-if-done and resume.

    summary = run_sweep("sweeps/grids/quickstart.toml", "runs/sweeps/quickstart")

- Ray: an embedded local instance by default; `address` (or RAY_ADDRESS) joins an existing cluster,
  whose workers must have this project installed and see the sweep directory and token store at the
  same paths (a shared filesystem). Both through sweeps.cluster.
- Each run is one task with the grid's cpus/gpus. Its worker gets thread settings in its environment
  before JAX is imported there (sweeps.cluster.worker_env), so
  two runs on one machine do not each take every core; GPU tasks use one device each (Ray sets
  CUDA_VISIBLE_DEVICES; Ray's default of one task per GPU worker process frees the memory after it).
  The driver never imports JAX and never forks.
- Skip-if-done: a finished or diverged run is not submitted again (its files are not touched). Any
  other run resumes from its latest checkpoint (scaling.train.trainer). A run whose worker dies is re-run by
  Ray (max_retries). A run that raises is recorded as failed and tried again only by the next launch;
  a diverged run is recorded and never retried.
- A per-run file lock makes a retried task wait for an orphaned earlier attempt (e.g. of a killed
  driver) to die before it touches the run directory.
- results.parquet and curves.parquet are rewritten atomically as each run finishes (sweeps.run_store).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from scaling.common.errors import InputError
from scaling.train.run_dir import DIVERGED, DONE, FAILED, FINISHED, RunDir
from sweeps.cluster import check_run_fits, connect_ray, runtime_env, worker_env
from sweeps.expand import Expansion, PlannedRun, expand_grid
from sweeps.grid import Grid, load_grid
from sweeps.plan import hardware_profile, make_plan
from sweeps.run_store import SweepDir, append_attempt, result_row, run_curve
from sweeps.status import sweep_status


def default_out(grid: Grid) -> Path:
    return Path("runs") / "sweeps" / grid.name


# -- the task (runs in a Ray worker) ------------------------------------------------------------------------


def train_task(run_id: str, run_dir: str, config: dict, parent_dir: str | None, parent_step: int | None) -> dict:
    """Train one run into `run_dir` (resuming), holding its lock; return a small record for the driver."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "a") as lock:
        waited = time.perf_counter()
        fcntl.flock(lock, fcntl.LOCK_EX)  # an orphaned attempt still training holds it until it dies
        waited = time.perf_counter() - waited
        try:
            return _train_locked(run_id, run_dir, config, parent_dir, parent_step, waited)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _train_locked(run_id, run_dir: Path, config, parent_dir, parent_step, waited: float) -> dict:
    import ray  # lazy: start-up time of the commands that import the engine

    where = {"pid": os.getpid(), "host": socket.gethostname(), "node_id": _node_id(ray),
             "threads": os.environ.get("PJRT_NPROC")}
    summary = RunDir(run_dir).read_summary()
    if summary is not None and summary.get("status") in DONE:  # finished by an earlier attempt while this one waited
        return {"run_id": run_id, "status": summary["status"], "summary": summary, "wall_s": 0.0, **where}
    append_attempt(run_dir, {"event": "started", "time": time.time(), "lock_wait_s": round(waited, 3), **where})
    start = time.perf_counter()
    try:
        if parent_dir is not None:
            RunDir(run_dir).branch_from(RunDir(parent_dir), parent_step)
        # Lazy: JAX starts here, in the worker, after worker_env took effect (the driver never imports it).
        from scaling.train.trainer import train_run

        summary = train_run(config, run_dir, progress=False)
    except Exception as e:
        wall = time.perf_counter() - start
        message = f"{type(e).__name__}: {e}"
        if not RunDir(run_dir).traceback_path.is_file():  # failed before the trainer could write it
            RunDir(run_dir).write_traceback(traceback.format_exc())
        append_attempt(run_dir, {"event": FAILED, "time": time.time(), "wall_s": wall, "message": message, **where})
        return {"run_id": run_id, "status": FAILED, "message": message, "wall_s": wall, **where}
    wall = time.perf_counter() - start
    append_attempt(run_dir, {"event": summary["status"], "time": time.time(), "wall_s": wall, **where})
    return {"run_id": run_id, "status": summary["status"], "summary": summary, "wall_s": wall, **where}


def start_order(todo: list[PlannedRun], est_seconds: dict[str, float]) -> list[PlannedRun]:
    """The order runs start in: every config's first seed before any repeat, longest first within each.

    Longest first keeps the sweep's tail short (the last runs to start are short). Repeats last: a repeat
    compiles the same programs as its first seed, and started together (as longest-first alone would, the two
    being equally long) both compile them; started later, it reads them from the compilation cache."""
    seen: dict[str, int] = {}
    repeat = {}
    for run in sorted(todo, key=lambda r: r.config.get("seed", 0)):
        key = json.dumps({**run.config, "seed": None}, sort_keys=True, default=str)
        repeat[run.run_id] = seen.get(key, 0)
        seen[key] = repeat[run.run_id] + 1
    return sorted(todo, key=lambda r: (repeat[r.run_id], -est_seconds[r.run_id]))


def _node_id(ray) -> str | None:
    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # not inside Ray (tests call train_task directly)
        return None


# -- the driver --------------------------------------------------------------------------------------------


def run_sweep(grid: str | Path | Grid, out: str | Path | None = None, *, data: str | Path | None = None,
              address: str | None = None, max_parallel: int | None = None, num_cpus: int | None = None,
              progress: bool = True, console: Console | None = None) -> dict:
    """Run every run of `grid` not yet done into `out`; return a summary of the sweep directory."""
    import ray  # lazy: start-up time of the commands that import the engine

    if not isinstance(grid, Grid):
        grid = load_grid(grid, data)
    if not (Path(grid.data) / "vocab.json").is_file():
        raise InputError(f"{grid.source}: data = '{grid.data}' is not a token store (no vocab.json there); "
                         "runs need one: make it with `scaling data tokenize` or pass data", field="data")
    expansion = expand_grid(grid)
    sweep = SweepDir(out or default_out(grid))
    console = console or Console(stderr=True, quiet=not progress)
    plan = make_plan(expansion, hardware_profile("cpu"))
    sweep.write_plan(plan)
    records = {r["run_id"]: r for r in plan["runs"]}
    collect_results(sweep, records)

    states = {run.run_id: sweep.run_state(run.run_id).status for run in expansion.runs}
    todo = [run for run in expansion.runs if states[run.run_id] not in DONE]
    console.print(f"[bold]sweep[/] {grid.name}: {len(expansion.runs)} runs, "
                  f"{len(expansion.runs) - len(todo)} done, {len(todo)} to run -> {sweep.root}", soft_wrap=True)
    scheduler = Scheduler(expansion, sweep, records, states, max_parallel)
    started = time.perf_counter()
    if todo:
        owns_ray = not ray.is_initialized()
        env = worker_env(grid.resources.cpus_per_run, grid.resources.gpus_per_run)
        needs_env = connect_ray(address, num_cpus, env) if owns_ray else True
        try:
            check_run_fits(grid.resources.cpus_per_run, grid.resources.gpus_per_run, ray.nodes(), address)
            scheduler.run(todo, env if needs_env else None, console, progress)
        finally:
            if owns_ray:
                ray.shutdown()
    wall = time.perf_counter() - started
    status = sweep_status(sweep.root)
    status.update(wall_s=wall, task_seconds=scheduler.task_seconds, this_launch=scheduler.outcome)
    counts = ", ".join(f"{n} {state}" for state, n in status["counts"].items() if n)
    console.print(f"[bold]sweep[/] {grid.name}: {counts} in {wall:.0f} s; results: {sweep.results_path}",
                  soft_wrap=True)
    return status


def collect_results(sweep: SweepDir, records: dict) -> int:
    """Add every finished run missing from results.parquet (e.g. after a killed driver)."""
    have = set(sweep.read_results()["run_id"].astype(str))
    rows, curves = [], []
    for run_id, record in records.items():
        if run_id in have or record["role"] == "stable":
            continue
        state = sweep.run_state(run_id)
        if state.status == FINISHED:
            rows.append(result_row(record, state.summary, sweep.run_dir(run_id)))
            curves.append(run_curve(run_id, sweep.run_dir(run_id)))
    return sweep.add_results(rows, curves)


@dataclass
class Scheduler:
    """Submits a sweep's runs as Ray tasks and follows them to the end.

    `states` (run id -> status) is the scheduler's own copy, updated as runs end: a branch run starts once
    the run it branches from has finished, and fails without starting when that run diverged or failed.
    `outcome` counts this launch's ends by status; `task_seconds` holds the wall time of each task that ran.
    """

    expansion: Expansion
    sweep: SweepDir
    records: dict  # run id -> the planned run's record in sweep.json
    states: dict[str, str]
    max_parallel: int | None = None
    outcome: dict[str, int] = field(default_factory=lambda: {FINISHED: 0, DIVERGED: 0, FAILED: 0})
    task_seconds: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.states = dict(self.states)

    def run(self, todo: list[PlannedRun], env: dict | None, console: Console, progress: bool) -> None:
        """Train `todo` (tasks get `env` as their runtime_env) with a progress bar; return when all ended."""
        import ray  # lazy: start-up time of the commands that import the engine

        resources = self.expansion.grid.resources
        task = ray.remote(train_task).options(
            num_cpus=resources.cpus_per_run, num_gpus=resources.gpus_per_run, max_retries=resources.max_retries,
            retry_exceptions=False, runtime_env=runtime_env(env),
        )
        pending = start_order(todo, {r.run_id: self.records[r.run_id]["est_seconds"] for r in todo})
        limit = self.max_parallel or len(pending)
        inflight: dict = {}
        bar = _progress_bar(console, progress)
        task_id = bar.add_task("runs", total=sum(self.records[r.run_id]["est_seconds"] for r in todo), counts="",
                               latest="")
        done_est = 0.0
        last_poll = 0.0
        with bar:
            while pending or inflight:
                self._submit(task, pending, inflight, limit)
                if not inflight:
                    break
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
                for ref in ready:
                    run = inflight.pop(ref)
                    self._finish(run, _task_result(ref, run, self.sweep), console)
                    done_est += self.records[run.run_id]["est_seconds"]
                now = time.perf_counter()
                if now - last_poll > 5.0 or ready:
                    last_poll = now
                    bar.update(task_id, completed=done_est, counts=_counts_text(self.outcome, inflight, pending),
                               latest=_latest_losses(self.sweep, inflight.values()))

    def _submit(self, task, pending: list[PlannedRun], inflight: dict, limit: int) -> None:
        """Start pending runs up to `limit` in flight: those with no parent or a finished one."""
        for run in list(pending):
            if len(inflight) >= limit:
                break
            parent_state = self.states.get(run.parent) if run.parent else FINISHED
            if parent_state in (DIVERGED, FAILED):
                pending.remove(run)
                self.states[run.run_id] = FAILED
                self.outcome[FAILED] += 1
                append_attempt(self.sweep.run_dir(run.run_id), {"event": FAILED, "time": time.time(), "message":
                               f"not started: the run it branches from ({run.parent}) {parent_state}"})
                continue
            if parent_state != FINISHED:
                continue
            parent_dir = str(self.sweep.run_dir(run.parent)) if run.parent else None
            ref = task.remote(run.run_id, str(self.sweep.run_dir(run.run_id)), run.config, parent_dir, run.parent_step)
            inflight[ref] = run
            pending.remove(run)

    def _finish(self, run: PlannedRun, result: dict, console: Console) -> None:
        """Record a task's end; a finished result run goes into the results table now."""
        self.states[run.run_id] = result["status"]
        self.outcome[result["status"]] = self.outcome.get(result["status"], 0) + 1
        if result.get("wall_s"):
            self.task_seconds.append(result["wall_s"])
        console.print(_result_line(run, result), soft_wrap=True)
        if result["status"] == FINISHED and run.is_result:
            run_dir = self.sweep.run_dir(run.run_id)
            self.sweep.add_results([result_row(self.records[run.run_id], result["summary"], run_dir)],
                                   [run_curve(run.run_id, run_dir)])


def _task_result(ref, run: PlannedRun, sweep: SweepDir) -> dict:
    import ray  # lazy: start-up time of the commands that import the engine

    try:
        return ray.get(ref)
    except Exception as e:  # the worker died more than max_retries times, or the task was cancelled
        message = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        append_attempt(sweep.run_dir(run.run_id), {"event": FAILED, "time": time.time(), "message": message})
        return {"run_id": run.run_id, "status": FAILED, "message": message}


def _progress_bar(console: Console, progress: bool) -> Progress:
    return Progress(
        TextColumn("[bold]sweep[/]"), BarColumn(), TextColumn("{task.fields[counts]}"), TextColumn("ETA"),
        TimeRemainingColumn(), TextColumn("{task.fields[latest]}"), console=console, disable=not progress,
    )


def _counts_text(outcome: dict, inflight: dict, pending: list) -> str:
    return (f"done {outcome['finished']} | in flight {len(inflight)} | queued {len(pending)} | "
            f"failed {outcome['failed']} | diverged {outcome['diverged']}")


def _latest_losses(sweep: SweepDir, runs) -> str:
    """The latest train loss of each run in flight (from its metrics)."""
    parts = []
    for run in list(runs)[:3]:
        row = RunDir(sweep.run_dir(run.run_id)).latest_metrics()
        if row is None:  # not written yet, or being replaced
            continue
        parts.append(f"{run.run_id[:14]} step {int(row['step'])}/{run.steps} loss {row['train_loss']:.3f}")
    return " ; ".join(parts)


def _result_line(run: PlannedRun, result: dict) -> str:
    status = result["status"]
    wall = result.get("wall_s")
    took = f" in {wall:.0f} s" if wall else ""
    if status == FINISHED:
        loss = result["summary"].get("val_loss")
        loss_text = f"val loss {loss:.4f}" if loss is not None and math.isfinite(loss) else "no val loss"
        compiled = result["summary"].get("compile")
        compile_text = (f"; compiled {compiled['compiled']}, {compiled['from_cache']} from the cache "
                        f"({compiled['compile_s']:.1f} s)" if compiled else "")
        return (f"  [green]finished[/] {run.run_id} (N={run.params:,}, D={run.tokens:,}) {loss_text}{took}"
                f"{compile_text}")
    if status == DIVERGED:
        return f"  [yellow]diverged[/] {run.run_id}: {result['summary'].get('message', '')}"
    return f"  [red]failed[/] {run.run_id}: {result.get('message', '')}"
