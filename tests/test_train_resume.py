"""Resume: a run killed with SIGKILL mid-way and started again ends with exactly the losses of an
uninterrupted run (same data order, same chunks, restored parameters and optimizer state)."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from train_builders import random_token_store, tiny_run_config, write_toml

from scaling.train.trainer import train_run

pytestmark = pytest.mark.slow


def test_train_resume_after_kill_9_ends_exactly_like_an_uninterrupted_run(tmp_path):
    store = random_token_store(tmp_path / "store")
    config = tiny_run_config(store, steps=150, eval_every=30, checkpoint_every=6, log_every=6,
                             steps_per_dispatch=6, keep_checkpoints=2)
    write_toml(tmp_path / "run.toml", config)
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "scaling", "train", str(tmp_path / "run.toml"), "--out", str(killed), "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    deadline = time.monotonic() + 300
    while not (killed / "checkpoints" / "12").is_dir():  # two checkpoints in: well under way
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the run never reached step 12"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "summary.json").exists(), "the run finished before it was killed; make it longer"
    steps_done = pd.read_parquet(killed / "metrics.parquet")["step"].max()
    assert steps_done < 150

    resumed = train_run(config, killed, progress=False)
    uninterrupted = train_run(config, tmp_path / "uninterrupted", progress=False)
    for key in ("status", "train_loss", "val_loss", "tokens", "flops", "steps"):
        assert resumed[key] == uninterrupted[key], key
    a = pd.read_parquet(killed / "metrics.parquet").drop(columns="tokens_per_s")
    b = pd.read_parquet(tmp_path / "uninterrupted" / "metrics.parquet").drop(columns="tokens_per_s")
    pd.testing.assert_frame_equal(a, b)  # every row, the ones before the kill included, bit for bit
    assert json.loads((killed / "summary.json").read_text())["status"] == "finished"


def test_a_damaged_latest_checkpoint_resumes_from_the_one_before(tmp_path, capsys):
    """The latest checkpoint's files are truncated (a crash while writing, a bad disk): the run resumes from
    the checkpoint before it, says so in one line, keeps the damaged one aside, and ends exactly like an
    uninterrupted run."""
    store = random_token_store(tmp_path / "store")
    config = tiny_run_config(store, steps=24, eval_every=12, checkpoint_every=6, log_every=6,
                             steps_per_dispatch=6, keep_checkpoints=3)
    full = train_run(config, tmp_path / "full", progress=False)
    run = tmp_path / "damaged"
    train_run(config, run, progress=False)
    (run / "summary.json").unlink()  # as if it had stopped right after its last checkpoint
    latest = max(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    for path in (run / "checkpoints" / str(latest)).rglob("*"):
        if path.is_file():
            path.write_bytes(b"")
    capsys.readouterr()
    resumed = train_run(config, run, progress=False)
    err = capsys.readouterr().err
    assert f"checkpoints/{latest} cannot be restored" in err and "resuming from the checkpoint before it" in err
    assert (run / "checkpoints_damaged" / str(latest)).is_dir()  # kept, not deleted
    for key in ("status", "train_loss", "val_loss", "tokens", "steps"):
        assert resumed[key] == full[key], key
