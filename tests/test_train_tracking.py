"""Live tracking: a run's TensorBoard event files, read back with TensorBoard's own reader, hold every
metrics row (losses, learning rate, gradient and parameter norms, throughput), and a directory of runs
opens as one comparison."""

import numpy as np
import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
from train_builders import random_token_store, tiny_run_config, write_toml

from scaling.train.run_dir import RunDir
from scaling.train.trainer import train_run


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracking")
    store = random_token_store(root / "store")
    for seed in (0, 1):
        config = tiny_run_config(store)
        config["seed"] = seed
        train_run(config, root / "sweep" / f"run{seed}", progress=False)
    return root / "sweep"


def scalars(run_dir, tag):
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_event_files_hold_every_metrics_row(two_runs):
    run = two_runs / "run0"
    metrics = pd.read_parquet(run / "metrics.parquet")
    for column, tag in (("train_loss", "loss/train"), ("lr", "lr"), ("grad_norm", "grad_norm"),
                        ("param_norm", "param_norm"), ("tokens_per_s", "throughput/tokens_per_s")):
        logged = scalars(run, tag)
        assert [step for step, _ in logged] == list(metrics["step"]), column
        np.testing.assert_allclose([v for _, v in logged], metrics[column], rtol=1e-6, err_msg=column)
    evaluated = metrics.dropna(subset=["val_loss"])
    assert [step for step, _ in scalars(run, "loss/val")] == list(evaluated["step"])
    assert (metrics["grad_norm"] > 0).all()


def test_the_last_parameter_norm_is_the_final_checkpoints(two_runs):
    import optax
    from flax import nnx

    model, _, step = RunDir(two_runs / "run0").load_model()
    norm = float(optax.tree.norm(nnx.state(model, nnx.Param)))
    last_step, last_norm = scalars(two_runs / "run0", "param_norm")[-1]
    assert last_step == step and last_norm == pytest.approx(norm, rel=1e-5)


def test_a_directory_of_runs_opens_as_one_comparison(two_runs):
    multiplexer = EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(two_runs))
    multiplexer.Reload()
    assert sorted(multiplexer.Runs()) == ["run0/tensorboard", "run1/tensorboard"]


# W&B and MLflow (the optional trackers behind --track), each checked with its own package: W&B's offline run
# file parsed with W&B's own protobuf records, MLflow's metrics read back through its client from sqlite.

WANDB_HEADER = 7  # ":W&B", a 2-byte magic, a version byte; then LevelDB-log records in 32 KiB blocks


def wandb_history(run_dir) -> list[dict]:
    """Every history row of the offline W&B run under run_dir/wandb: {"_step": s, tag: value}."""
    import json

    from wandb.proto import wandb_internal_pb2

    (path,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    data, pos, pending, rows = path.read_bytes(), WANDB_HEADER, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    import os
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("trackers")
    write_toml(root / "run.toml", tiny_run_config(random_token_store(root / "store")))
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "MLFLOW_EXPERIMENT_NAME": "tiny"}
    out = subprocess.run([sys.executable, "-m", "scaling", "train", str(root / "run.toml"), "--out",
                          str(root / "run"), "--quiet", "--track", "wandb,mlflow"], env=env, cwd=root,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return root, env


def test_wandb_gets_every_metrics_row(tracked_run):
    root, _ = tracked_run
    metrics = pd.read_parquet(root / "run" / "metrics.parquet")
    rows = [r for r in wandb_history(root / "run") if "loss/train" in r]
    assert [r["_step"] for r in rows] == list(metrics["step"])
    np.testing.assert_allclose([r["loss/train"] for r in rows], metrics["train_loss"], rtol=1e-6)
    np.testing.assert_allclose([r["lr"] for r in rows], metrics["lr"], rtol=1e-6)
    evaluated = metrics.dropna(subset=["val_loss"])
    assert [r["_step"] for r in rows if "loss/val" in r] == list(evaluated["step"])


def test_mlflow_gets_every_metrics_row_and_the_config(tracked_run, monkeypatch):
    from mlflow import MlflowClient

    root, env = tracked_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert run.data.tags["scaling.run_dir"] == str((root / "run").resolve())
    assert run.info.status == "FINISHED"
    record = RunDir(root / "run").read_record()["config"]
    assert float(run.data.params["train.lr"]) == record["train"]["lr"]
    metrics = pd.read_parquet(root / "run" / "metrics.parquet")
    history = client.get_metric_history(run.info.run_id, "loss/train")
    assert [m.step for m in history] == list(metrics["step"])
    np.testing.assert_allclose([m.value for m in history], metrics["train_loss"], rtol=1e-6)


def test_a_resumed_run_logs_to_the_same_mlflow_run(tracked_run, monkeypatch):
    from scaling.train.tracking import MlflowLog

    root, env = tracked_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tiny")
    again = MlflowLog(root / "run", RunDir(root / "run").read_record())
    again.close()
    from mlflow import MlflowClient

    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert run.info.run_id == again.run_id


def test_trackers_reach_sweep_workers_with_their_settings(monkeypatch):
    from sweeps.cluster import worker_env

    monkeypatch.delenv("SCALING_TRACK", raising=False)
    monkeypatch.setenv("WANDB_PROJECT", "ehr")
    assert "WANDB_PROJECT" not in worker_env(1, 0)  # nothing asked: nothing forwarded
    monkeypatch.setenv("SCALING_TRACK", "wandb")
    env = worker_env(1, 0)
    assert (env["SCALING_TRACK"], env["WANDB_PROJECT"], env["PJRT_NPROC"]) == ("wandb", "ehr", "1")
