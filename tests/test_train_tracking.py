"""Live tracking: a run's TensorBoard event files, read back with TensorBoard's own reader, hold every
metrics row (losses, learning rate, gradient and parameter norms, throughput), and a directory of runs
opens as one comparison."""

import numpy as np
import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
from train_builders import random_token_store, tiny_run_config

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
