"""Autoregressive sampling from a Decoder with a KV cache, jitted and batched over sequences.

Prompts of different lengths are left-padded to one width: padding slots get position -1, which the
decoder's cached attention never attends to, and each row's real tokens keep positions 0..len-1, so
a padded prompt scores exactly as it would alone. After one prefill call, every step feeds one token
per row at the row's next position and appends its keys and values to the cache.

A row stops at a stop token (end of timeline, death), when its clock passes its horizon (the caller
gives the minutes each token advances the clock: interval tokens advance it, others don't; the token
that crosses the horizon is not kept), or after `max_new_tokens`. Stopped rows emit `pad_id`.

With `outcome_masks` (M, vocab), `generate` also returns, for every step, the probability the sampling
distribution gave each mask's tokens, (B, max_new_tokens, M), 0 once a row has stopped: what an estimator
that uses the model's probabilities instead of the sampled 0/1 outcome accumulates along each future.

`generate_without_cache` recomputes the whole prefix at every step; it exists to measure what the
cache buys (`scaling bench sample`) and to test that both give the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models.decoder import Decoder


@dataclass(frozen=True)
class SamplingSettings:
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off


def left_pad(prompts: list[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Prompts -> (tokens (B, P) int32 left-padded, positions (B, P) int32 with -1 on padding)."""
    width = max(len(p) for p in prompts)
    tokens = np.full((len(prompts), width), pad_id, np.int32)
    positions = np.full((len(prompts), width), -1, np.int32)
    for i, p in enumerate(prompts):
        tokens[i, width - len(p):] = p
        positions[i, width - len(p):] = np.arange(len(p))
    return tokens, positions


def filter_logits(logits: jax.Array, temperature: float, top_k: int, top_p: float) -> jax.Array:
    """Temperature, then keep the top-k tokens and the smallest set with probability >= top_p."""
    logits = logits / jnp.maximum(temperature, 1e-6)
    if top_k:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
        cumulative = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        # the smallest logit still inside the nucleus
        cutoff_index = jnp.sum(cumulative < top_p, axis=-1, keepdims=True)
        cutoff = jnp.take_along_axis(sorted_logits, cutoff_index, axis=-1)
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return logits


def sample_categorical(key: jax.Array, logits: jax.Array) -> jax.Array:
    """One token per row of `logits` (B, vocab), drawn from softmax(logits): (B,) int32.

    Inverse-CDF sampling takes one uniform number per row; `jax.random.categorical` takes one per row
    and token (Gumbel noise), which on CPU costs more than the whole forward step of a small model.
    """
    # (B, vocab); cummax keeps it non-decreasing where a parallel cumsum rounds down by an ulp
    cdf = jax.lax.cummax(jnp.cumsum(jax.nn.softmax(logits, axis=-1), axis=-1), axis=1)
    u = (1.0 - jax.random.uniform(key, (logits.shape[0], 1))) * cdf[:, -1:]  # (B, 1) in (0, total]
    # The first token whose cdf reaches u; a zero-probability token adds an empty interval and is never drawn.
    return jnp.minimum(jnp.sum(cdf < u, axis=-1), logits.shape[-1] - 1).astype(jnp.int32)


def generate(model: Decoder, prompts: list[np.ndarray], key: jax.Array, settings: SamplingSettings, *,
             pad_id: int, stop_ids: tuple[int, ...] = (), minutes_per_token: np.ndarray | None = None,
             horizon_minutes: np.ndarray | float = np.inf, outcome_masks: np.ndarray | None = None):
    """Sample continuations of `prompts`: (B, max_new_tokens) int32, pad_id after each row stops; with
    `outcome_masks` (M, vocab), also each step's probability of each mask's tokens (B, max_new_tokens, M)."""
    tokens, positions = left_pad(prompts, pad_id)
    vocab = model.shape.vocab_size
    minutes = jnp.asarray(np.zeros(vocab) if minutes_per_token is None else minutes_per_token, jnp.float32)
    horizon = jnp.broadcast_to(jnp.asarray(horizon_minutes, jnp.float32), (len(prompts),))
    stop_mask = _stop_mask(vocab, stop_ids)
    masks = jnp.zeros((0, vocab), jnp.float32) if outcome_masks is None else jnp.asarray(outcome_masks, jnp.float32)
    graphdef, state = nnx.split(model)
    cache_len = tokens.shape[1] + settings.max_new_tokens
    out, probs = _generate(graphdef, state, jnp.asarray(tokens), jnp.asarray(positions), key, minutes, horizon,
                           stop_mask, masks, pad_id, cache_len, settings)
    return np.asarray(out) if outcome_masks is None else (np.asarray(out), np.asarray(probs))


@partial(jax.jit, static_argnames=("graphdef", "pad_id", "cache_len", "settings"))
def _generate(graphdef, state, tokens, positions, key, minutes, horizon, stop_mask, masks, pad_id, cache_len,
              settings):
    model = nnx.merge(graphdef, state)
    B = tokens.shape[0]
    cache = model.init_cache(B, cache_len)
    logits, cache = model.forward_with_cache(tokens, positions, cache, last_only=True)  # (B, 1, vocab)
    next_position = positions[:, -1] + 1  # (B,)

    keys = jax.random.split(key, settings.max_new_tokens)

    def step(carry):
        t, logits, cache, position, clock, done, out, probs = carry
        logits = logits.at[:, pad_id].set(-jnp.inf)  # padding is never a sample
        filtered = filter_logits(logits, settings.temperature, settings.top_k, settings.top_p)  # (B, vocab)
        choice = sample_categorical(keys[t], filtered)  # (B,)
        if masks.shape[0]:  # (B, M): the sampling distribution's mass on each mask, for rows still going
            probs = probs.at[:, t].set(jnp.where(done[:, None], 0.0, jax.nn.softmax(filtered, axis=-1) @ masks.T))
        clock = clock + minutes[choice]
        past_horizon = clock >= horizon
        out = out.at[:, t].set(jnp.where(done | past_horizon, pad_id, choice))
        done = done | past_horizon | stop_mask[choice]
        new_logits, cache = model.forward_with_cache(choice[:, None], position[:, None], cache)
        return t + 1, new_logits[:, -1], cache, position + 1, clock, done, out, probs

    # Stop as soon as every row has stopped; the rest of `out` stays padding.
    def keep_going(carry):
        return (carry[0] < settings.max_new_tokens) & ~jnp.all(carry[5])

    out = jnp.full((B, settings.max_new_tokens), pad_id, jnp.int32)
    probs = jnp.zeros((B, settings.max_new_tokens, masks.shape[0]), jnp.float32)
    carry = (0, logits[:, -1], cache, next_position, jnp.zeros(B, jnp.float32), jnp.zeros(B, bool), out, probs)
    return jax.lax.while_loop(keep_going, step, carry)[-2:]  # (B, max_new_tokens), (B, max_new_tokens, M)


def generate_without_cache(model: Decoder, prompts: list[np.ndarray], key: jax.Array, settings: SamplingSettings,
                           *, pad_id: int, stop_ids: tuple[int, ...] = ()) -> np.ndarray:
    """The same sampling, recomputing the full prefix at every step (no cache). Prompts must have one
    length (the benchmark's case), so positions are plain 0..T-1."""
    if len({len(p) for p in prompts}) != 1:
        raise ValueError("generate_without_cache takes prompts of one length")
    tokens = np.stack(prompts).astype(np.int32)
    vocab = model.shape.vocab_size
    stop_mask = _stop_mask(vocab, stop_ids)
    graphdef, state = nnx.split(model)
    return np.asarray(_generate_without_cache(graphdef, state, jnp.asarray(tokens), key, stop_mask, pad_id, settings))


@partial(jax.jit, static_argnames=("graphdef", "pad_id", "settings"))
def _generate_without_cache(graphdef, state, tokens, key, stop_mask, pad_id, settings):
    model = nnx.merge(graphdef, state)
    B, P = tokens.shape
    buffer = jnp.concatenate([tokens, jnp.full((B, settings.max_new_tokens), pad_id, jnp.int32)], axis=1)

    def step(carry, inputs):
        buffer, done = carry
        t, step_key = inputs
        logits = model(buffer)  # (B, P + N, vocab): causal, so positions after t do not matter
        last = jax.lax.dynamic_index_in_dim(logits, P - 1 + t, axis=1, keepdims=False).at[:, pad_id].set(-jnp.inf)
        choice = sample_categorical(
            step_key, filter_logits(last, settings.temperature, settings.top_k, settings.top_p))
        emitted = jnp.where(done, pad_id, choice)
        buffer = jax.lax.dynamic_update_slice(buffer, choice[:, None].astype(jnp.int32), (0, P + t))
        return (buffer, done | stop_mask[choice]), emitted

    inputs = (jnp.arange(settings.max_new_tokens), jax.random.split(key, settings.max_new_tokens))
    _, emitted = jax.lax.scan(step, (buffer, jnp.zeros(B, bool)), inputs)
    return emitted.T


def _stop_mask(vocab: int, stop_ids: tuple[int, ...]) -> jax.Array:
    return jnp.zeros(vocab, bool).at[jnp.asarray(stop_ids, jnp.int32)].set(True) if stop_ids else jnp.zeros(vocab, bool)
