"""Training throughput of the project's real hot loop on this machine (`scaling bench train`).

The measured path is the trainer's: windows drawn by `WindowSampler` from a token split and prefetched
by `ChunkFeeder`, then `make_train_chunk` (jit over nnx.split state, lax.scan over steps, donated
buffers) on a data-parallel mesh over all local devices. The split is random tokens held in memory.
FLOP/s are 6N-counted (N = all parameters), and also given with the detailed count; MFU is reported
when the accelerator's peak is known.
"""

from __future__ import annotations

import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np

from models.accounting import count_params, flops_per_token
from models.config import ModelShape
from scaling.data.token_store import TokenSplit
from scaling.train.batches import WindowSampler
from scaling.train.cpu_devices import split_cpu_into_devices, training_devices
from scaling.train.step import (
    batch_sharding,
    data_mesh,
    init_model,
    learning_rate_schedule,
    make_optimizer,
    make_train_chunk,
    replicated,
)
from scaling.train.trainer import (  # the trainer's own prefetcher, peak and attention choice
    ChunkFeeder,
    attention_implementation,
    device_peak_flops,
)


def random_split(vocab_size: int, n_tokens: int, seed: int = 0) -> TokenSplit:
    tokens = np.random.default_rng(seed).integers(2, vocab_size, n_tokens).astype(np.int32)
    return TokenSplit("train", tokens, np.array([0, n_tokens], np.int64), np.array([0], np.int64))


class ProjectTrainLoop:
    """The trainer's hot loop on random data, compiled once and timed as often as asked."""

    def __init__(self, shape: ModelShape, batch_size: int, seq_len: int, dtype: str = "float32",
                 steps_per_dispatch: int = 10, attention: str = "auto"):
        split_cpu_into_devices()  # as the trainer does: one device per core on a CPU
        self.devices = training_devices(batch_size)
        mesh = data_mesh(self.devices)
        compute_dtype = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
        impl = attention_implementation(attention, dtype, "--attention ")
        self.attention = impl or "xla"
        graphdef, params = init_model(shape, 0, compute_dtype, impl)
        tx = make_optimizer(learning_rate_schedule("cosine", 1e-3, 10**6, 100))
        self.params, self.opt_state = jax.device_put((params, tx.init(params)), replicated(mesh))
        self.train_chunk = make_train_chunk(graphdef, tx, mesh)
        sampler = WindowSampler(random_split(shape.vocab_size, max(10 * batch_size * seq_len, 100_000)),
                                batch_size, seq_len, seed=0, pad_id=0)
        self.k, self.tokens_per_step = steps_per_dispatch, batch_size * seq_len
        chunks = ((i * self.k, (i + 1) * self.k) for i in itertools.count())
        self.feeder = ChunkFeeder(sampler, chunks, batch_sharding(mesh, leading=1))
        self.batches = iter(self.feeder)
        t0 = time.perf_counter()
        self.losses = None
        self._chunk()
        jax.block_until_ready(self.losses)
        self.compile_s = time.perf_counter() - t0

    def _chunk(self) -> None:
        self.params, self.opt_state, self.losses, _ = self.train_chunk(self.params, self.opt_state,
                                                                    *next(self.batches))

    def run(self, seconds: float) -> tuple[float, int]:
        """Train for about `seconds`; return (tokens per second, steps)."""
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            previous = self.losses
            self._chunk()
            # At most two chunks in flight, as in the trainer: dispatch is asynchronous, and an unbounded queue
            # made a 3-second round run for minutes at 1M parameters (every queued chunk still had to finish).
            jax.block_until_ready(previous)
            steps += self.k
        jax.block_until_ready(self.losses)
        return steps * self.tokens_per_step / (time.perf_counter() - start), steps

    def close(self) -> None:
        self.feeder.close()


def bench_train(shape: ModelShape, batch_size: int, seq_len: int, dtype: str = "float32",
                steps_per_dispatch: int = 10, seconds: float = 10.0, log=None, attention: str = "auto") -> dict:
    """Run the project's training loop for about `seconds` after compilation; return throughput figures."""
    loop = ProjectTrainLoop(shape, batch_size, seq_len, dtype, steps_per_dispatch, attention)
    try:
        if log:
            log(f"compiled in {loop.compile_s:.1f} s; timing for {seconds:.0f} s")
        tokens_per_s, steps = loop.run(seconds)
    finally:
        loop.close()
    counts = count_params(shape)
    result = {
        "params": counts["total"],
        "params_nonembed": counts["non_embedding"],
        "tokens_per_s": tokens_per_s,
        "flops_per_s": flops_per_token(shape, seq_len, "6N") * tokens_per_s,
        "flops_per_s_detailed": flops_per_token(shape, seq_len, "detailed") * tokens_per_s,
        "step_ms": 1e3 * batch_size * seq_len / tokens_per_s,
        "steps": steps,
        "compile_s": loop.compile_s,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "dtype": dtype,
        "steps_per_dispatch": steps_per_dispatch,
        "attention": loop.attention,
        "devices": len(loop.devices),
        "device": jax.devices()[0].device_kind,
        "final_loss": float(np.asarray(loop.losses)[-1]),
        "shape": shape.to_dict(),
    }
    peak = device_peak_flops(dtype)
    if peak:
        result["peak_flops_per_s"] = peak
        result["mfu"] = result["flops_per_s"] / peak
        result["mfu_detailed"] = result["flops_per_s_detailed"] / peak
    return result
