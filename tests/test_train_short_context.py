"""A shorter context for a run's first steps (train.short_seq_len, train.short_seq_fraction): the same tokens
per step in more, shorter windows, then the run's own context; resumable like any run, and carried to the
final run and its ladder."""

import shutil

import numpy as np
import pandas as pd
import pytest
from train_builders import random_token_store, tiny_run_config

from scaling.common.errors import InputError
from scaling.data.token_store import TokenStore
from scaling.pipeline.final import sweep_train_settings
from scaling.pipeline.ladder import ladder_configs
from scaling.train.config import parse_run_config
from scaling.train.run_dir import RunDir
from scaling.train.trainer import chunk_ends, train_run, window_sampler


def short_config(store="store", **train):
    return parse_run_config(tiny_run_config(store, **{"short_seq_len": 8, "short_seq_fraction": 0.5, **train}))


def test_the_short_steps_hold_the_same_tokens_in_three_times_the_windows():
    config = short_config(steps=20)  # batch 4 x 24 tokens; 8-token windows for the first 10 steps
    assert config.short_steps == 10
    assert config.windows_at(0) == config.windows_at(9) == (12, 8)  # 4 x 24 / 8 windows, 96 tokens either way
    assert config.windows_at(10) == config.windows_at(19) == (4, 24)
    assert short_config(steps=3, short_seq_fraction=0.9).short_steps == 2  # the last step has the whole context


def test_a_chunk_ends_where_the_short_context_ends():
    config = short_config(steps=20, short_seq_fraction=0.55)  # K = gcd(3, 3, 6, 6) = 3; switch at 11
    assert chunk_ends(config, 0) == [3, 6, 9, 11, 12, 15, 18, 20]
    assert chunk_ends(config, 9) == [11, 12, 15, 18, 20]  # resumed before the switch
    assert chunk_ends(config, 12) == [15, 18, 20]
    assert chunk_ends(short_config(steps=20, short_seq_fraction=0.6), 0) == [3, 6, 9, 12, 15, 18, 20]  # 12 is one


def test_the_sampler_draws_short_windows_then_the_runs_own(tmp_path):
    store = random_token_store(tmp_path / "store")
    split = TokenStore.open(store).split("train")
    sampler = window_sampler(short_config(store, steps=20), split, pad_id=0)
    assert sampler.batch(9)[0].shape == (12, 9) and sampler.batch(9)[1].shape == (12, 8)
    assert sampler.batch(10)[0].shape == (4, 25) and sampler.batch(10)[1].shape == (4, 24)


@pytest.mark.parametrize(("train", "message"), [
    ({"short_seq_len": 24}, "must be less than train.seq_len = 24 and divide it"),
    ({"short_seq_len": 7}, "must be less than train.seq_len = 24 and divide it"),
    ({"short_seq_fraction": 1.0}, "must be between 0 and 1"),
    ({"short_seq_fraction": 0.0}, "must be between 0 and 1"),
    ({"short_seq_fraction": float("nan")}, "must be between 0 and 1"),
])
def test_an_impossible_short_context_is_refused_in_one_line(train, message):
    with pytest.raises(InputError, match=message):
        short_config(**train)


def test_a_short_fraction_without_a_short_context_is_refused():
    with pytest.raises(InputError, match="needs train.short_seq_len"):
        parse_run_config(tiny_run_config("store", short_seq_fraction=0.5))


def test_a_run_without_a_short_context_records_the_config_it_always_did():
    record = parse_run_config(tiny_run_config("store")).to_dict()["train"]
    assert "short_seq_len" not in record and "short_seq_fraction" not in record
    assert short_config().to_dict()["train"]["short_seq_len"] == 8


def test_the_short_steps_train_exactly_as_a_run_at_the_short_context(tmp_path):
    """The first 6 of 12 steps of a 24-token run with 8-token windows are the steps of a run of 12 windows of 8
    tokens (same seed, schedule and shape): the same train loss rows; after the switch they part."""
    store = random_token_store(tmp_path / "store")
    warm = short_config(store, steps=12, log_every=3)
    short = parse_run_config({**tiny_run_config(store, steps=12, log_every=3, batch_size=12, seq_len=8),
                              "model": {**tiny_run_config(store)["model"], "max_seq_len": 24}})
    train_run(warm, tmp_path / "warm", progress=False)
    train_run(short, tmp_path / "short", progress=False)
    a = pd.read_parquet(tmp_path / "warm" / "metrics.parquet").set_index("step")["train_loss"]
    b = pd.read_parquet(tmp_path / "short" / "metrics.parquet").set_index("step")["train_loss"]
    np.testing.assert_allclose(a.loc[[3, 6]], b.loc[[3, 6]], rtol=1e-5)
    assert abs(a.loc[12] - b.loc[12]) > 1e-3  # 24-token windows from step 7 on


def test_a_run_stopped_in_its_short_steps_resumes_across_the_switch_exactly(tmp_path):
    store = random_token_store(tmp_path / "store")
    config = short_config(store, steps=24, short_seq_fraction=0.75, checkpoint_every=6, eval_every=6,
                          keep_checkpoints=5)  # the switch at step 18
    full = train_run(config, tmp_path / "full", progress=False)
    stopped = tmp_path / "stopped"
    shutil.copytree(tmp_path / "full", stopped)
    for step in (18, 24):  # as if killed just after the checkpoint at step 12
        shutil.rmtree(stopped / "checkpoints" / str(step))
    (stopped / "summary.json").unlink()
    resumed = train_run(config, stopped, progress=False)
    assert resumed["val_loss"] == full["val_loss"] and resumed["train_loss"] == full["train_loss"]
    pd.testing.assert_frame_equal(pd.read_parquet(stopped / "metrics.parquet").drop(columns="tokens_per_s"),
                                  pd.read_parquet(tmp_path / "full" / "metrics.parquet").drop(columns="tokens_per_s"))


def test_the_final_run_and_every_rung_keep_the_sweeps_short_context(tmp_path):
    # the final run's [train] comes from a sweep run's config.json
    RunDir(tmp_path / "sweep" / "runs" / "a").write_record({"config": short_config(steps=300).to_dict()})
    train, _, _ = sweep_train_settings(tmp_path / "sweep" / "results.parquet")
    assert (train["short_seq_len"], train["short_seq_fraction"]) == (8, 0.5)
    config = short_config(steps=300, short_seq_fraction=0.75)
    (_, rung), = ladder_configs(config, [0.1], "run")
    assert rung.train.short_seq_len == 8 and rung.total_steps == 30 and rung.short_steps == round(0.75 * 30)
