"""Data parallelism: the same run on 4 forced CPU devices (batch split over a mesh, gradients
all-reduced by XLA) reaches the losses of the 1-device run within float tolerance."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from train_builders import random_token_store, tiny_run_config

pytestmark = pytest.mark.slow

SCRIPT = """
import json, sys
from scaling.train.trainer import train_run
import jax
summary = train_run(json.loads(sys.argv[1]), sys.argv[2], progress=False)
print(json.dumps({"devices": jax.device_count(), **summary}))
"""


def run_on_devices(n_devices: int, config: dict, run_dir) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={n_devices}"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(config), str(run_dir)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_train_data_parallel_on_4_devices_matches_1_device(tmp_path):
    store = random_token_store(tmp_path / "store")
    config = tiny_run_config(store, batch_size=8)
    one = run_on_devices(1, config, tmp_path / "one")
    four = run_on_devices(4, config, tmp_path / "four")
    assert (one["devices"], four["devices"]) == (1, 4)
    assert four["status"] == one["status"] == "finished"
    a = pd.read_parquet(tmp_path / "one" / "metrics.parquet")
    b = pd.read_parquet(tmp_path / "four" / "metrics.parquet")
    np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(b["val_loss"].dropna(), a["val_loss"].dropna(), rtol=1e-5)
    assert four["val_loss"] == pytest.approx(one["val_loss"], rel=1e-5)
