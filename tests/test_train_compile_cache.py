"""The persistent compilation cache: runs fill it, a later process trains the same losses from it, and
SCALING_COMPILE_CACHE=off turns it off."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from train_builders import random_token_store, tiny_run_config

from scaling.train.compile_cache import cache_dir


def train_in_subprocess(config: dict, tmp_path, name: str, cache: str) -> dict:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(config))
    script = ("import json, sys; from scaling.train.trainer import train_run; "
              "print(json.dumps(train_run(json.load(open(sys.argv[1])), sys.argv[2], progress=False)))")
    env = {**os.environ, "SCALING_COMPILE_CACHE": cache, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / name)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_second_process_reads_the_cache_and_trains_the_same_losses(tmp_path):
    config = tiny_run_config(random_token_store(tmp_path / "store"))
    cache = tmp_path / "cache"
    first = train_in_subprocess(config, tmp_path, "a", str(cache))
    entries = sorted(p.name for p in cache.iterdir())
    assert entries, "the first run wrote no compiled program"
    second = train_in_subprocess(config, tmp_path, "b", str(cache))
    assert sorted(p.name for p in cache.iterdir()) == entries  # every program it needed was there
    assert second["val_loss"] == first["val_loss"] and second["startup_s"] > 0
    # summary.json says so: the first run compiled its programs, the second read every one of them back
    assert first["compile"]["compiled"] > 0 and first["compile"]["from_cache"] == 0
    assert second["compile"]["from_cache"] == first["compile"]["compiled"] and second["compile"]["compiled"] == 0
    a, b = (pd.read_parquet(tmp_path / name / "metrics.parquet") for name in ("a", "b"))
    assert list(a["train_loss"]) == list(b["train_loss"])


def test_off_means_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_COMPILE_CACHE", "off")
    assert cache_dir() is None
    monkeypatch.setenv("SCALING_COMPILE_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SCALING_COMPILE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "medscaling" / "jax"


@pytest.mark.slow
def test_simulation_reads_the_sampler_from_the_cache(tmp_path):
    """`scaling simulate` compiles its sampler into the cache; run again, it compiles nothing and writes the
    same futures."""
    from eval_builders import synth_cohort_and_store

    from scaling.train.trainer import train_run

    _, tokens = synth_cohort_and_store(tmp_path, patients=300)
    config = {"data": str(tokens), "seed": 1,
              "model": {"d_model": 24, "n_layers": 1, "n_heads": 3, "n_kv_heads": 1, "d_ff": 40},
              "train": {"steps": 6, "batch_size": 8, "seq_len": 64, "lr": 1e-2, "warmup_steps": 2,
                        "eval_every": 6, "checkpoint_every": 6, "log_every": 6, "eval_tokens": 1000}}
    train_run(config, tmp_path / "run", progress=False)
    cache = tmp_path / "sampler-cache"
    env = {**os.environ, "SCALING_COMPILE_CACHE": str(cache), "JAX_PLATFORMS": "cpu"}

    def simulate(name: str) -> pd.DataFrame:
        command = [sys.executable, "-m", "scaling", "simulate", str(tmp_path / "run"), "--patients", "12",
                   "--samples", "2", "--max-new-tokens", "24", "--out", str(tmp_path / name)]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        return pd.read_parquet(tmp_path / name / "data" / "futures.parquet")

    first = simulate("a")
    entries = sorted(p.name for p in cache.iterdir())
    assert entries, "the simulation wrote no compiled program"
    second = simulate("b")
    assert sorted(p.name for p in cache.iterdir()) == entries  # every program it needed was there
    pd.testing.assert_frame_equal(first, second)
