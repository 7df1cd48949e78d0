"""The Ray sweep engine: results, skip-if-done, resume after a killed driver or worker, a multi-node cluster
on loopback, and wsd cooldown branches. Every test starts (and stops) its own Ray."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from sweep_builders import tiny_store, write_grid

from sweeps.run_store import SweepDir, read_attempts
from sweeps.status import sweep_status

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
DESIGN_COLUMNS = ["run_id", "params", "params_nonembed", "tokens", "loss", "flops", "flops_detailed", "budget",
                  "status"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tiny_store(tmp_path_factory.mktemp("engine_store") / "tok")


@pytest.fixture
def local_ray(monkeypatch):
    """Ray started in this process by run_sweep: shut down whatever happens; env changes undone."""
    import ray

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)  # ray.init sets it; monkeypatch restores the old state
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield
    ray.shutdown()


def fingerprint(run_dir: Path) -> dict:
    """Every file of a run directory with its size and modification time."""
    return {str(p.relative_to(run_dir)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def sweep_command(grid: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "scaling", "sweep", "run", str(grid), "--out", str(out), *extra]


def started_pids(run_dir: Path) -> list[int]:
    return [a["pid"] for a in read_attempts(run_dir) if a.get("event") == "started"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def wait_for(condition, timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep exited (code {proc.returncode}) before {what}")
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def check_results(out: Path, expected_ids: set[str], isoflop: bool = True) -> pd.DataFrame:
    results = pd.read_parquet(out / "results.parquet")
    assert not results["run_id"].duplicated().any()
    assert set(results["run_id"]) == expected_ids
    assert (results["status"] == "finished").all()
    assert all(column in results.columns for column in DESIGN_COLUMNS if isoflop or column != "budget")
    assert ("budget" in results.columns) == isoflop
    curves = pd.read_parquet(out / "curves.parquet")
    assert set(curves["run_id"]) == expected_ids and (curves["loss"] > 0).all()
    return results


def test_sweep_runs_every_run_once_and_a_rerun_touches_nothing(tmp_path, store, local_ray, run_cli):
    from sweeps.engine import run_sweep

    grid = REPO / "sweeps" / "grids" / "smoke.toml"  # 2 budgets x 3 widths
    out = tmp_path / "sweep"
    status = run_sweep(grid, out, data=store, num_cpus=2, progress=False)
    assert status["counts"]["finished"] == 6 and status["results_rows"] == 6
    sweep = SweepDir(out)
    ids = {r["run_id"] for r in sweep.read_plan()["runs"]}
    results = check_results(out, ids)
    for row in results.itertuples():
        assert row.flops == pytest.approx(6 * row.params * row.tokens)
        summary = json.loads((out / "runs" / row.run_id / "summary.json").read_text())
        assert row.loss == pytest.approx(summary["val_loss"])
        assert row.unique_tokens == summary["unique_tokens"] == 4177  # every train token of the tiny store
        assert row.epochs == pytest.approx(row.tokens / row.unique_tokens)
        # one XLA thread pool of the task's one CPU
        assert {a["threads"] for a in read_attempts(out / "runs" / row.run_id)} == {"1"}

    before = {run_id: fingerprint(out / "runs" / run_id) for run_id in ids}
    results_before = (out / "results.parquet").read_bytes()
    again = run_sweep(grid, out, data=store, num_cpus=2, progress=False)
    assert again["this_launch"] == {"finished": 0, "diverged": 0, "failed": 0}
    assert {run_id: fingerprint(out / "runs" / run_id) for run_id in ids} == before
    assert (out / "results.parquet").read_bytes() == results_before

    # A lost results table is rebuilt from the run directories without training anything.
    (out / "results.parquet").unlink()
    run_sweep(grid, out, data=store, num_cpus=2, progress=False)
    check_results(out, ids)
    assert {run_id: fingerprint(out / "runs" / run_id) for run_id in ids} == before

    code, text, err = run_cli("sweep", "status", out, "--json")
    assert code == 0, err
    assert json.loads(text)["counts"] == {"finished": 6, "running": 0, "pending": 0, "failed": 0, "diverged": 0}


def test_driver_killed_with_kill_9_then_rerun_finishes_each_run_once(tmp_path, store):
    grid = write_grid(tmp_path / "g.toml", store, budgets=(6e8, 1.2e9), widths=(16, 24))
    out = tmp_path / "sweep"
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(sweep_command(grid, out, "--num-cpus", "2"), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=log)
    sweep = SweepDir(out)

    def checkpointed_step(run_id: str) -> int:
        folder = sweep.run_dir(run_id) / "checkpoints"
        return max((int(p.name) for p in folder.iterdir() if p.name.isdigit()), default=0) if folder.is_dir() else 0

    def one_done_one_in_flight() -> bool:
        """A finished run, and one with a checkpoint before half its steps (so the kill interrupts it)."""
        if not sweep.exists():
            return False
        runs = sweep.read_plan()["runs"]
        done = [r for r in runs if sweep.run_state(r["run_id"]).status == "finished"]
        flying = [r for r in runs if r not in done and 0 < checkpointed_step(r["run_id"]) < r["steps"] / 2]
        return bool(done and flying)

    try:
        wait_for(one_done_one_in_flight, 400, proc, "one run finished and another checkpointed")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its embedded Ray (gcs, raylet)
        proc.wait()
    ids = [r["run_id"] for r in sweep.read_plan()["runs"]]
    finished = [i for i in ids if sweep.run_state(i).status == "finished"]
    unfinished = [i for i in ids if i not in finished]
    before = {i: fingerprint(sweep.run_dir(i)) for i in finished}
    orphans = [pid for i in unfinished for pid in started_pids(sweep.run_dir(i))]
    try:
        # The workers of the killed driver (their own process groups) exit once their raylet is gone.
        wait_for(lambda: not any(alive(pid) for pid in orphans), 90, what="the killed sweep's workers to exit")
    finally:
        for pid in orphans:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)

    rerun = subprocess.run(sweep_command(grid, out, "--num-cpus", "2"), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    check_results(out, set(ids))
    for i in finished:
        assert fingerprint(sweep.run_dir(i)) == before[i]  # not redone, not touched
    resumed = [i for i in unfinished if len(started_pids(sweep.run_dir(i))) == 2]
    assert resumed, "a run in flight at the kill should have been started again"


def test_killed_worker_is_retried_and_the_sweep_completes(tmp_path, store):
    grid = write_grid(tmp_path / "g.toml", store, budgets=(1.2e9,), widths=(16, 24))
    out = tmp_path / "sweep"
    log = open(tmp_path / "sweep.log", "w")
    proc = subprocess.Popen(sweep_command(grid, out, "--num-cpus", "2"), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=log)
    sweep = SweepDir(out)
    victim = {}

    def a_run_mid_training() -> bool:
        if not sweep.exists():
            return False
        for record in sweep.read_plan()["runs"]:
            run_dir = sweep.run_dir(record["run_id"])
            pids = started_pids(run_dir)
            if pids and (run_dir / "metrics.parquet").is_file() and not (run_dir / "summary.json").is_file():
                victim.update(run_id=record["run_id"], pid=pids[-1])
                return True
        return False

    try:
        wait_for(a_run_mid_training, 400, proc, "a run mid-training")
        # `sweep status` reads the directory of a sweep running elsewhere
        running = [r for r in sweep_status(out)["runs"] if r["status"] == "running"]
        assert victim["run_id"] in {r["run_id"] for r in running}
        os.kill(victim["pid"], signal.SIGKILL)
        assert proc.wait(timeout=600) == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    ids = {r["run_id"] for r in sweep.read_plan()["runs"]}
    check_results(out, ids)
    pids = started_pids(sweep.run_dir(victim["run_id"]))
    assert len(pids) == 2 and pids[0] == victim["pid"] and pids[1] != victim["pid"]
    assert sweep.run_state(victim["run_id"]).status == "finished"


def test_sweep_on_a_multi_node_cluster_joined_by_address(tmp_path, store, loopback_cluster):
    address, env = loopback_cluster
    grid = write_grid(tmp_path / "g.toml", store)
    out = tmp_path / "sweep"
    result = subprocess.run(sweep_command(grid, out, "--address", address, "--json"), env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    status = json.loads(result.stdout)
    assert status["counts"]["finished"] == 4
    sweep = SweepDir(out)
    ids = {r["run_id"] for r in sweep.read_plan()["runs"]}
    check_results(out, ids)
    nodes = {a["node_id"] for i in ids for a in read_attempts(sweep.run_dir(i)) if a.get("event") == "started"}
    assert len(nodes) == 2  # both nodes trained runs


def test_wsd_branches_match_a_standalone_wsd_run(tmp_path, store, local_ray):
    from scaling.train.trainer import train_run
    from sweeps.engine import run_sweep

    grid = write_grid(
        tmp_path / "w.toml", store, widths=(16,),
        **{'kind = "isoflop"': 'kind = "wsd_branches"\ntokens = [2304, 4608]\ncooldown_fraction = 0.25',
           "budgets = [2e+08, 4e+08]\n": ""})
    out = tmp_path / "sweep"
    status = run_sweep(grid, out, num_cpus=2, progress=False)
    assert status["counts"]["finished"] == 4
    sweep = SweepDir(out)
    runs = sweep.read_plan()["runs"]
    branches = [r for r in runs if r["role"] == "branch"]
    results = check_results(out, {r["run_id"] for r in branches}, isoflop=False)
    assert sorted(results["steps"]) == [24, 48]
    longest = max(branches, key=lambda r: r["steps"])
    curve = pd.read_parquet(out / "curves.parquet")
    assert curve[curve["run_id"] == longest["run_id"]]["step"].min() == 3  # the stable prefix is in the curve

    # The 48-step branch (stable to step 36 in two segments, then cooled down) equals a plain wsd run.
    alone = train_run(longest["config"], tmp_path / "alone", progress=False)
    assert alone["val_loss"] == pytest.approx(results.set_index("run_id").loc[longest["run_id"], "loss"], rel=1e-4)
