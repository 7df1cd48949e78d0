"""The sweep engine: a grid's runs as Ray tasks, one per run, with skip-if-done and resume.

    summary = run_sweep("sweeps/quickstart.toml", "runs/sweeps/quickstart")

- Ray: an embedded local instance by default; `address` (or RAY_ADDRESS) joins an existing cluster,
  whose workers must have this project installed and see the sweep directory and token store at the
  same paths (a shared filesystem).
- Each run is one task with the grid's cpus/gpus. Its worker gets thread settings in its environment
  before JAX is imported there (PJRT_NPROC, OMP/MKL threads, single-threaded Eigen for one CPU), so
  two runs on one machine do not each take every core; GPU tasks use one device each (Ray sets
  CUDA_VISIBLE_DEVICES; Ray's default of one task per GPU worker process frees the memory after it).
  The driver never imports JAX and never forks.
- Skip-if-done: a finished or diverged run is not submitted again (its files are not touched). Any
  other run resumes from its latest checkpoint (scaling.trainer). A run whose worker dies is re-run by
  Ray (max_retries). A run that raises is recorded as failed and tried again only by the next launch;
  a diverged run is recorded and never retried.
- A per-run file lock makes a retried task wait for an orphaned earlier attempt (e.g. of a killed
  driver) to die before it touches the run directory.
- results.parquet and curves.parquet are rewritten atomically as each run finishes (sweeps.run_store).
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import shutil
import socket
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from scaling.errors import InputError
from sweeps.expand import Expansion, PlannedRun, expand_grid
from sweeps.grid import Grid, load_grid
from sweeps.plan import hardware_profile, make_plan
from sweeps.run_store import SweepDir, append_attempt, result_row, run_curve

DONE = ("finished", "diverged")


def default_out(grid: Grid) -> Path:
    return Path("runs") / "sweeps" / grid.name


def worker_env(cpus: float, gpus: float) -> dict[str, str]:
    """Environment of a training worker: its thread pools sized to the task's CPUs."""
    threads = str(max(1, int(cpus)))
    env = {name: threads for name in ("PJRT_NPROC", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    flags = os.environ.get("XLA_FLAGS", "")
    if int(threads) == 1 and "xla_cpu_multi_thread_eigen" not in flags:
        flags = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
    if flags:
        env["XLA_FLAGS"] = flags
    if gpus == 0:
        env["JAX_PLATFORMS"] = "cpu"
    elif gpus < 1:  # runs share a GPU: none may take most of its memory up front
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    return env


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
    import json

    import ray

    where = {"pid": os.getpid(), "host": socket.gethostname(), "node_id": _node_id(ray),
             "threads": os.environ.get("PJRT_NPROC")}
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("status") in DONE:  # finished by an earlier attempt while this one waited
            return {"run_id": run_id, "status": summary["status"], "summary": summary, "wall_s": 0.0, **where}
    append_attempt(run_dir, {"event": "started", "time": time.time(), "lock_wait_s": round(waited, 3), **where})
    start = time.perf_counter()
    try:
        if parent_dir is not None:
            seed_from_parent(run_dir, Path(parent_dir), parent_step)
        from scaling.trainer import train_run  # JAX starts here, after worker_env took effect

        summary = train_run(config, run_dir, progress=False)
    except Exception as e:
        wall = time.perf_counter() - start
        message = f"{type(e).__name__}: {e}"
        append_attempt(run_dir, {"event": "failed", "time": time.time(), "wall_s": wall, "message": message, **where})
        return {"run_id": run_id, "status": "failed", "message": message, "wall_s": wall, **where}
    wall = time.perf_counter() - start
    append_attempt(run_dir, {"event": summary["status"], "time": time.time(), "wall_s": wall, **where})
    return {"run_id": run_id, "status": summary["status"], "summary": summary, "wall_s": wall, **where}


def _node_id(ray) -> str | None:
    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # not inside Ray (tests call train_task directly)
        return None


def seed_from_parent(run_dir: Path, parent_dir: Path, parent_step: int) -> None:
    """Start a run from its parent's checkpoint at `parent_step` (and its metrics up to there), once."""
    checkpoints = run_dir / "checkpoints"
    if checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir()):
        return  # seeded before, or trained past the seed
    source = parent_dir / "checkpoints" / str(parent_step)
    if not source.is_dir():
        raise RuntimeError(f"{parent_dir} has no checkpoint at step {parent_step} to branch from")
    if (parent_dir / "metrics.parquet").is_file():
        shutil.copy2(parent_dir / "metrics.parquet", run_dir / "metrics.parquet")
    tmp = run_dir / ".seed.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    checkpoints.mkdir(exist_ok=True)
    os.replace(tmp, checkpoints / str(parent_step))


# -- the driver --------------------------------------------------------------------------------------------


def connect_ray(address: str | None, num_cpus: int | None = None, env: dict[str, str] | None = None,
                quiet: bool = False) -> bool:
    """Join the cluster at `address` (or RAY_ADDRESS), else start an embedded local Ray on loopback.

    The embedded Ray is started with `env` in its environment, so the workers it starts ahead of the
    first task already have the run's thread settings; returns whether tasks still need them as a
    runtime_env (a joined cluster's workers do not inherit this process's environment). `quiet` drops
    Ray's info lines ("Connecting to existing Ray cluster ...") from stderr."""
    import ray

    level = {"logging_level": logging.WARNING} if quiet else {}

    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, log_to_driver=False, **level)
        return True
    saved = {name: os.environ.get(name) for name in env or {}}
    os.environ.update(env or {})
    try:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
                 **level)
    finally:  # this process keeps its own settings (it may use JAX later)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return False


def run_sweep(grid: str | Path | Grid, out: str | Path | None = None, *, data: str | Path | None = None,
              address: str | None = None, max_parallel: int | None = None, num_cpus: int | None = None,
              progress: bool = True, console: Console | None = None) -> dict:
    """Run every run of `grid` not yet done into `out`; return a summary of the sweep directory."""
    import ray

    if not isinstance(grid, Grid):
        grid = load_grid(grid, data)
    if not (Path(grid.data) / "vocab.json").is_file():
        raise InputError(f"{grid.source}: data = '{grid.data}' is not a token store (no vocab.json there); "
                         "runs need one: make it with `scaling data tokenize` or pass --data")
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
    outcome = {"finished": 0, "diverged": 0, "failed": 0}
    started = time.perf_counter()
    task_seconds = []
    if todo:
        owns_ray = not ray.is_initialized()
        env = worker_env(grid.resources.cpus_per_run, grid.resources.gpus_per_run)
        needs_env = connect_ray(address, num_cpus, env) if owns_ray else True
        try:
            task_seconds = _schedule(expansion, todo, states, sweep, records, max_parallel, console, progress,
                                     outcome, env if needs_env else None)
        finally:
            if owns_ray:
                ray.shutdown()
    wall = time.perf_counter() - started
    from sweeps.status import sweep_status

    status = sweep_status(sweep.root)
    status.update(wall_s=wall, task_seconds=task_seconds, this_launch=outcome)
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
        if state.status == "finished":
            rows.append(result_row(record, state.summary, sweep.run_dir(run_id)))
            curves.append(run_curve(run_id, sweep.run_dir(run_id)))
    return sweep.add_results(rows, curves)


def _schedule(expansion: Expansion, todo: list[PlannedRun], states: dict, sweep: SweepDir, records: dict,
              max_parallel: int | None, console: Console, progress: bool, outcome: dict,
              env: dict | None) -> list[float]:
    import ray

    resources = expansion.grid.resources
    task = ray.remote(train_task).options(
        num_cpus=resources.cpus_per_run, num_gpus=resources.gpus_per_run, max_retries=resources.max_retries,
        retry_exceptions=False, runtime_env={"env_vars": env} if env else None,
    )
    # Longest runs first: the last runs to start are short, so the sweep's tail is short.
    pending = sorted(todo, key=lambda r: -records[r.run_id]["est_seconds"])
    limit = max_parallel or len(pending)
    inflight: dict = {}
    task_seconds: list[float] = []
    bar = _progress_bar(console, progress)
    total_est = sum(records[r.run_id]["est_seconds"] for r in todo)
    task_id = bar.add_task("runs", total=total_est, counts="", latest="")
    done_est = 0.0
    last_poll = 0.0
    with bar:
        while pending or inflight:
            for run in list(pending):
                if len(inflight) >= limit:
                    break
                parent_state = states.get(run.parent) if run.parent else "finished"
                if parent_state in ("diverged", "failed"):
                    pending.remove(run)
                    states[run.run_id] = "failed"
                    outcome["failed"] += 1
                    append_attempt(sweep.run_dir(run.run_id), {"event": "failed", "time": time.time(), "message":
                                   f"not started: the run it branches from ({run.parent}) {parent_state}"})
                    continue
                if parent_state != "finished":
                    continue
                parent_dir = str(sweep.run_dir(run.parent)) if run.parent else None
                ref = task.remote(run.run_id, str(sweep.run_dir(run.run_id)), run.config, parent_dir, run.parent_step)
                inflight[ref] = run
                pending.remove(run)
            if not inflight:
                break
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            for ref in ready:
                run = inflight.pop(ref)
                result = _task_result(ref, run, sweep)
                states[run.run_id] = result["status"]
                outcome[result["status"]] = outcome.get(result["status"], 0) + 1
                if result.get("wall_s"):
                    task_seconds.append(result["wall_s"])
                done_est += records[run.run_id]["est_seconds"]
                console.print(_result_line(run, result), soft_wrap=True)
                if result["status"] == "finished" and run.is_result:
                    record = records[run.run_id]
                    sweep.add_results([result_row(record, result["summary"], sweep.run_dir(run.run_id))],
                                      [run_curve(run.run_id, sweep.run_dir(run.run_id))])
            now = time.perf_counter()
            if now - last_poll > 5.0 or ready:
                last_poll = now
                bar.update(task_id, completed=done_est, counts=_counts_text(outcome, inflight, pending),
                           latest=_latest_losses(sweep, inflight.values()))
    return task_seconds


def _task_result(ref, run: PlannedRun, sweep: SweepDir) -> dict:
    import ray

    try:
        return ray.get(ref)
    except Exception as e:  # the worker died more than max_retries times, or the task was cancelled
        message = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        append_attempt(sweep.run_dir(run.run_id), {"event": "failed", "time": time.time(), "message": message})
        return {"run_id": run.run_id, "status": "failed", "message": message}


def _progress_bar(console: Console, progress: bool) -> Progress:
    return Progress(
        TextColumn("[bold]sweep[/]"), BarColumn(), TextColumn("{task.fields[counts]}"), TextColumn("ETA"),
        TimeRemainingColumn(), TextColumn("{task.fields[latest]}"), console=console, disable=not progress,
    )


def _counts_text(outcome: dict, inflight: dict, pending: list) -> str:
    return (f"done {outcome['finished']} | in flight {len(inflight)} | queued {len(pending)} | "
            f"failed {outcome['failed']} | diverged {outcome['diverged']}")


def _latest_losses(sweep: SweepDir, runs) -> str:
    """The latest train loss of each run in flight (from its metrics.parquet)."""
    import pandas as pd

    parts = []
    for run in list(runs)[:3]:
        path = sweep.run_dir(run.run_id) / "metrics.parquet"
        try:
            row = pd.read_parquet(path).iloc[-1]
        except Exception:  # not written yet, or being replaced
            continue
        parts.append(f"{run.run_id[:14]} step {int(row['step'])}/{run.steps} loss {row['train_loss']:.3f}")
    return " ; ".join(parts)


def _result_line(run: PlannedRun, result: dict) -> str:
    status = result["status"]
    wall = result.get("wall_s")
    took = f" in {wall:.0f} s" if wall else ""
    if status == "finished":
        loss = result["summary"].get("val_loss")
        loss_text = f"val loss {loss:.4f}" if loss is not None and math.isfinite(loss) else "no val loss"
        return f"  [green]finished[/] {run.run_id} (N={run.params:,}, D={run.tokens:,}) {loss_text}{took}"
    if status == "diverged":
        return f"  [yellow]diverged[/] {run.run_id}: {result['summary'].get('message', '')}"
    return f"  [red]failed[/] {run.run_id}: {result.get('message', '')}"
