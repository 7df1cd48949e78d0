"""Data parallelism: the same run on 4 forced CPU devices (batch split over a mesh, gradients
all-reduced by XLA) reaches the losses of the 1-device run within float tolerance."""

import json
import os
import shutil
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
    # each checkpoint loads for inference on the other device count (a run trained on a GPU host or a
    # split CPU, evaluated elsewhere): the two models' logits agree
    on_one = logits_on_devices(1, [tmp_path / "one", tmp_path / "four"])
    on_four = logits_on_devices(4, [tmp_path / "one", tmp_path / "four"])
    for logits in (on_one, on_four):
        np.testing.assert_allclose(logits[1], logits[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(on_four[0], on_one[0], rtol=1e-5, atol=1e-6)


LOGITS_SCRIPT = """
import json, sys
import numpy as np
from scaling.train.run_dir import load_trained_model
tokens = np.arange(12, dtype=np.int32)[None] % 5 + 3  # (1, 12), ids inside any tiny vocabulary
print(json.dumps([np.asarray(load_trained_model(d)[0](tokens)).tolist() for d in sys.argv[1:]]))
"""


def logits_on_devices(n_devices: int, run_dirs: list) -> list[np.ndarray]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={n_devices}"}
    out = subprocess.run([sys.executable, "-c", LOGITS_SCRIPT, *map(str, run_dirs)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return [np.asarray(x) for x in json.loads(out.stdout.strip().splitlines()[-1])]


SPLIT_SCRIPT = """
import json, sys
from scaling.train.cpu_devices import split_cpu_into_devices, training_devices
import jax
first = split_cpu_into_devices()
jax.devices()
late = split_cpu_into_devices()  # after the backends started: a no-op
print(json.dumps({"set": first, "late": late, "devices": jax.device_count(),
                  "mesh": {b: len(training_devices(b)) for b in (16, 6, 7, 9)}}))
"""


def split_in_fresh_process(env: dict) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "SCALING_CPU_DEVICES", "PJRT_NPROC")}
    out = subprocess.run([sys.executable, "-c", SPLIT_SCRIPT], env={**base, "JAX_PLATFORMS": "cpu", **env},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cpu_is_split_into_devices_before_jax_starts_and_the_mesh_takes_the_most_that_divide_the_batch():
    four = split_in_fresh_process({"SCALING_CPU_DEVICES": "4"})
    assert (four["set"], four["late"], four["devices"]) == (4, None, 4)
    # the most of the 4 devices that divide the batch: 16 -> 4, 6 -> 3, 7 -> 1, 9 -> 3
    assert four["mesh"] == {"16": 4, "6": 3, "7": 1, "9": 3}
    # a sweep worker's thread budget (PJRT_NPROC = cpus_per_run) sets the count; 1 leaves one device
    assert split_in_fresh_process({"PJRT_NPROC": "3"})["devices"] == 3
    assert split_in_fresh_process({"SCALING_CPU_DEVICES": "1"}) == {"set": None, "late": None, "devices": 1,
                                                                    "mesh": {"16": 1, "6": 1, "7": 1, "9": 1}}
    # a count the user forced through XLA's own flag wins
    forced = split_in_fresh_process({"SCALING_CPU_DEVICES": "4",
                                     "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert (forced["set"], forced["devices"]) == (None, 2)


def test_a_run_on_split_cpu_devices_matches_one_device(tmp_path):
    """train_run splits the CPU itself (no XLA flag): 2 devices here reach the 1-device losses."""
    store = random_token_store(tmp_path / "store")
    config = tiny_run_config(store, batch_size=8)
    one = run_on_devices(1, config, tmp_path / "one")
    env = {**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, "JAX_PLATFORMS": "cpu",
           "SCALING_CPU_DEVICES": "2"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(config), str(tmp_path / "two")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    two = json.loads(out.stdout.strip().splitlines()[-1])
    assert (two["devices"], two["status"]) == (2, "finished")
    assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-5)


def test_a_run_stopped_on_4_devices_resumes_on_1_device(tmp_path):
    """Moved to another host mid-way: the 4-device checkpoint restores onto 1 device (nothing is put aside as
    damaged, no step is redone from scratch) and the run ends at the uninterrupted 1-device losses."""
    store = random_token_store(tmp_path / "store")
    config = tiny_run_config(store, batch_size=8, steps=24, eval_every=12, checkpoint_every=6, log_every=6,
                             steps_per_dispatch=6, keep_checkpoints=4)
    uninterrupted = run_on_devices(1, config, tmp_path / "one")
    run = tmp_path / "moved"
    run_on_devices(4, config, run)
    (run / "summary.json").unlink()  # as if it had stopped right after its checkpoint at step 18
    shutil.rmtree(run / "checkpoints" / "24")
    before = pd.read_parquet(run / "metrics.parquet")
    resumed = run_on_devices(1, config, run)
    assert not (run / "checkpoints_damaged").exists()
    # the rows up to the checkpoint are the 4-device run's own, measured speeds included: a run started again
    # from step 0 would have logged them anew (its speeds differ)
    after = pd.read_parquet(run / "metrics.parquet")
    kept = before[before["step"] <= 18]
    pd.testing.assert_frame_equal(after[after["step"] <= 18].reset_index(drop=True), kept.reset_index(drop=True))
    assert "tokens_per_s" in kept and kept["tokens_per_s"].notna().any()
    assert (resumed["devices"], resumed["status"], resumed["steps"]) == (1, "finished", 24)
    assert resumed["val_loss"] == pytest.approx(uninterrupted["val_loss"], rel=1e-5)
    assert resumed["train_loss"] == pytest.approx(uninterrupted["train_loss"], rel=1e-5)
