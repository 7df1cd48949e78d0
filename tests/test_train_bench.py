"""`scaling bench train --json`: the figures of the project's training step, consistent with the accounting."""

import json
import os

import pytest

from models.accounting import count_params
from models.ladder import family_shape


def test_train_bench_cli_prints_params_tokens_and_flops_per_second(run_cli):
    code, out, err = run_cli("bench", "train", "--d-model", 24, "--n-layers", 1, "--n-heads", 3, "--vocab", 37,
                             "--seq-len", 16, "--batch", 4, "--steps-per-dispatch", 3, "--seconds", 0.5, "--json")
    assert code == 0, err
    result = json.loads(out)
    shape = family_shape(24, 37, 16, n_layers=1, n_heads=3)
    assert result["params"] == count_params(shape)["total"]
    assert result["tokens_per_s"] > 0 and result["steps"] % 3 == 0
    assert result["flops_per_s"] == pytest.approx(6 * result["params"] * result["tokens_per_s"])
    assert "mfu" not in result  # no known peak on a CPU
    assert result["attention"] == "xla"  # auto is cuDNN only on a GPU in bfloat16


def test_train_bench_cli_rejects_bad_flags_in_one_line(run_cli):
    code, out, err = run_cli("bench", "train", "--dtype", "float16", "--json")
    assert code == 2 and out == ""
    assert err.strip() == "error: --dtype float16; expected float32 or bfloat16"
    code, _, err = run_cli("bench", "train", "--d-model", 30, "--n-heads", 4)
    assert code == 2 and "model.d_model = 30 is not divisible by model.n_heads = 4" in err
    code, out, err = run_cli("bench", "train", "--attention", "flash", "--json")
    assert code == 2 and err.strip() == "error: --attention flash; expected one of auto, xla, cudnn"


def test_train_bench_cli_refuses_cudnn_attention_without_a_gpu(run_cli):
    code, out, err = run_cli("bench", "train", "--d-model", 24, "--n-layers", 1, "--n-heads", 3, "--vocab", 37,
                             "--seq-len", 16, "--batch", 4, "--seconds", 0.1, "--attention", "cudnn", "--json")
    assert code == 2 and out == ""
    assert err.strip() == ("error: --attention 'cudnn' needs an NVIDIA GPU; this process runs JAX on cpu "
                           "(use 'auto' or 'xla')")


@pytest.mark.slow
def test_train_vs_torch_runs_each_method_in_its_own_process():
    """The comparison's worker mode: each loop answers from a process of its own (its pid differs from
    ours), and the result carries every method's rounds and the project-over-other ratios."""
    from scaling.bench.train_vs_torch import SHAPES, WorkerLoop, compare

    spec = next(s for s in SHAPES if s[0] == "0.16M")
    loop = WorkerLoop("plain_jit", spec, steps_per_dispatch=2)
    assert loop.process.pid != os.getpid() and loop.process.poll() is None
    tokens_per_s, steps = loop.run(0.05)
    loop.close()
    assert steps >= 1 and tokens_per_s > 0 and loop.process.returncode == 0
    result = compare(*spec, rounds=2, seconds=0.05, steps_per_dispatch=2, log=lambda m: None)
    assert result["separate_processes"] and len(result["samples"]["project"]) == 2
    assert result["ratios"]["project/plain_jit"] == pytest.approx(
        result["tokens_per_s"]["project"] / result["tokens_per_s"]["plain_jit"])


def test_chunk_feeder_close_stops_its_thread_even_with_a_full_queue():
    """The prefetch thread is gone once close() returns, also while it waits to hand over a chunk (its queue
    full): a thread left running at exit aborted GPU processes."""
    import itertools
    import time

    import jax

    from scaling.bench.train import random_split
    from scaling.train.batches import WindowSampler
    from scaling.train.step import batch_sharding, data_mesh
    from scaling.train.trainer import ChunkFeeder

    sampler = WindowSampler(random_split(50, 5_000), 2, 8, seed=0, pad_id=0)
    chunks = ((i * 3, (i + 1) * 3) for i in itertools.count())
    feeder = ChunkFeeder(sampler, chunks, batch_sharding(data_mesh(jax.devices()[:1]), leading=1), depth=2)
    windows, masks = next(iter(feeder))
    assert windows.shape == (3, 2, 9) and masks.shape == (3, 2, 8)
    deadline = time.monotonic() + 30
    while not feeder.queue.full() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert feeder.queue.full() and feeder.thread.is_alive()
    feeder.close()
    assert not feeder.thread.is_alive()
