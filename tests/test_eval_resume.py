"""`scaling evaluate` of several runs, killed after scoring the first: re-run, it keeps that run's report
(no new simulation) and writes exactly what an uninterrupted evaluation writes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from eval_builders import synth_cohort_and_store

from scaling.train.trainer import train_run

pytestmark = pytest.mark.slow

SETTINGS = ["--patients", "40", "--samples", "4", "--max-new-tokens", "48", "--bootstrap", "20",
            "--oracle-samples", "4"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_resume")
    _, tokens = synth_cohort_and_store(root, patients=400)
    runs = []
    for seed in (1, 2):
        config = {"data": str(tokens), "seed": seed,
                  "model": {"d_model": 24, "n_layers": 1, "n_heads": 3, "n_kv_heads": 1, "d_ff": 40},
                  "train": {"steps": 12, "batch_size": 8, "seq_len": 96, "lr": 1e-2, "warmup_steps": 2,
                            "eval_every": 12, "checkpoint_every": 12, "log_every": 6, "steps_per_dispatch": 6,
                            "eval_tokens": 2000}}
        train_run(config, root / f"run{seed}", progress=False)
        runs.append(root / f"run{seed}")
    return root, runs


def evaluate_command(runs, out):
    return [sys.executable, "-m", "scaling", "evaluate", *map(str, runs), *SETTINGS, "--out", str(out)]


def test_an_interrupted_evaluation_of_two_runs_resumes_at_the_second(two_runs):
    root, runs = two_runs
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out, partial = root / "interrupted", root / "interrupted.partial"
    process = subprocess.Popen(evaluate_command(runs, out), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while not list(partial.glob("*.json")):  # the first run's report is kept
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the first run was never scored"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not out.exists(), "the evaluation finished before it was killed; make the second run longer"
    assert len(list(partial.glob("*.json"))) == 1

    resumed = subprocess.run(evaluate_command(runs, out), env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.count("scored by an earlier, interrupted evaluation") == 1
    assert not partial.exists()

    fresh = subprocess.run(evaluate_command(runs, root / "fresh"), env=env, capture_output=True, text=True,
                           timeout=900)
    assert fresh.returncode == 0, fresh.stderr
    got = json.loads((out / "evaluation.json").read_text())["runs"]
    want = json.loads((root / "fresh" / "evaluation.json").read_text())["runs"]
    assert [r["run"] for r in got] == [r["run"] for r in want]
    for a, b in zip(got, want):
        assert a["tasks"] == b["tasks"]  # the same futures and scores, the kept run's included
        assert a["simulation"]["generated_tokens"] == b["simulation"]["generated_tokens"]
    names = sorted(p.name for p in (out / "runs").iterdir())
    assert names == sorted(p.name for p in (root / "fresh" / "runs").iterdir()) and len(names) == 2
    for name in names:
        assert (out / "runs" / name / "predictions.parquet").read_bytes() == \
            (root / "fresh" / "runs" / name / "predictions.parquet").read_bytes()
