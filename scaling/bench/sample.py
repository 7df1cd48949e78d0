"""Sampler throughput: generated tokens per second with the KV cache and without it (recomputing the
prefix at every step), at a given context length, on a randomly initialised decoder."""

from __future__ import annotations

import time

import jax
import numpy as np
from flax import nnx

from models.accounting import count_params
from models.decoder import Decoder
from models.ladder import family_shape
from models.sampling import SamplingSettings, generate, generate_without_cache


def bench_sample(d_model: int = 64, n_layers: int = 2, vocab: int = 512, context: int = 512, new_tokens: int = 64,
                 batch: int = 8, repeats: int = 2, log=print) -> dict:
    shape = family_shape(d_model, vocab, context + new_tokens, n_layers=n_layers)
    model = Decoder(shape, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    prompts = [rng.integers(2, vocab, context) for _ in range(batch)]
    settings = SamplingSettings(max_new_tokens=new_tokens)
    results = {}
    for name, fn in (("cached", generate), ("uncached", generate_without_cache)):
        fn(model, prompts, jax.random.key(0), settings, pad_id=0)  # compile
        best = float("inf")
        for r in range(repeats):
            started = time.perf_counter()
            fn(model, prompts, jax.random.key(r + 1), settings, pad_id=0)
            best = min(best, time.perf_counter() - started)
        results[name] = batch * new_tokens / best
        log(f"{name}: {results[name]:,.0f} generated tokens/s")
    return {
        "params": count_params(shape)["total"],
        "context": context,
        "new_tokens": new_tokens,
        "batch": batch,
        "tokens_per_s_cached": round(results["cached"], 1),
        "tokens_per_s_uncached": round(results["uncached"], 1),
        "speedup": round(results["cached"] / results["uncached"], 2),
        "device": jax.devices()[0].platform,
    }
