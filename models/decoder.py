"""The decoder-only transformer of the family, in the Qwen2 style CoMET used.

Pre-norm RMSNorm, SwiGLU MLP, rotary position embeddings (RoPE), grouped-query attention through
`jax.nn.dot_product_attention`, optional tied input/output embeddings, no biases. Parameters are
float32; `dtype` sets the compute precision (bfloat16 on accelerators), while norms, the softmax and
the logits stay in float32.

Two ways in:
- `model(tokens)`: training and scoring, causal over the whole window, returns logits.
- `model.forward_with_cache(tokens, positions, cache)`: incremental decoding with a KV cache
  (`init_cache`), for the sampler; it returns logits and the updated cache.

Parameter tree (names the accounting and models.parametrization rely on): embed, blocks[i].{attn_norm,
attn.qkv, attn.out, mlp_norm, mlp.gate_up, mlp.down}, final_norm, head (absent when tied).

The shape's `parametrization` (standard or mup) sets the hidden matrices' init, the attention scale and the
logits' multiplier (models.parametrization); per-matrix learning rates are the optimizer's part.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from models.config import ModelShape
from models.parametrization import attention_scale, hidden_init_multiplier, output_multiplier

ROPE_THETA = 10_000.0
INIT_STD = 0.02


class LayerCache(NamedTuple):
    k: jax.Array  # (B, n_kv_heads, S, head_dim)
    v: jax.Array  # (B, n_kv_heads, S, head_dim)


class KVCache(NamedTuple):
    layers: tuple[LayerCache, ...]
    positions: jax.Array  # (B, S) int32: position of each cached key, -1 where the slot is empty
    index: jax.Array  # () int32: the next slot to write


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, *, eps: float = 1e-6):
        self.scale = nnx.Param(jnp.ones((dim,), jnp.float32))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * self.scale[...]).astype(x.dtype)


def rope_tables(positions: jax.Array, head_dim: int) -> tuple[jax.Array, jax.Array]:
    """positions (B, T) -> sin, cos (B, T, 1, head_dim // 2), float32."""
    inv_freq = ROPE_THETA ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # (B, T, head_dim // 2)
    return jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]


def apply_rope(x: jax.Array, sin: jax.Array, cos: jax.Array) -> jax.Array:
    """Rotate feature pairs (i, i + head_dim/2) of x (B, T, heads, head_dim) by the position angles."""
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def matmul(x: jax.Array, w: jax.Array, preferred_element_type=None) -> jax.Array:
    """x (..., n) @ w (n, m) as one 2-D matmul: XLA's CPU backward of a dot that contracts over several
    batch axes is about 3x slower than over one."""
    y = jnp.dot(x.reshape(-1, x.shape[-1]), w, preferred_element_type=preferred_element_type)
    return y.reshape(*x.shape[:-1], w.shape[-1])


def dense(shape: tuple[int, ...], std: float, rngs: nnx.Rngs) -> nnx.Param:
    return nnx.Param(jax.random.normal(rngs.params(), shape, jnp.float32) * std)


class Attention(nnx.Module):
    def __init__(self, shape: ModelShape, *, dtype, attention_impl: str | None, rngs: nnx.Rngs):
        self.n_heads, self.n_kv_heads, self.head_dim = shape.n_heads, shape.n_kv_heads, shape.head_dim
        qkv_width = (shape.n_heads + 2 * shape.n_kv_heads) * shape.head_dim
        std = INIT_STD * hidden_init_multiplier(shape)
        # One fused projection for q, k and v: one matmul instead of three.
        self.qkv = dense((shape.d_model, qkv_width), std, rngs)
        # Residual-branch outputs start smaller, by 1/sqrt(2 n_layers) (GPT-2).
        self.out = dense((shape.n_heads * shape.head_dim, shape.d_model), std / math.sqrt(2 * shape.n_layers), rngs)
        # None keeps jax's own 1 / sqrt(head_dim) (standard): bit-identical to models trained before muP
        self.scale = None if shape.parametrization == "standard" else attention_scale(shape)
        self.dtype = dtype
        self.attention_impl = attention_impl

    def __call__(self, x, sin, cos, positions=None, cache: LayerCache | None = None, index=None):
        B, T, _ = x.shape
        H, K, D = self.n_heads, self.n_kv_heads, self.head_dim
        qkv = matmul(x, self.qkv[...].astype(self.dtype))  # (B, T, (H + 2K) * D)
        q = qkv[..., : H * D].reshape(B, T, H, D)
        k = qkv[..., H * D : (H + K) * D].reshape(B, T, K, D)
        v = qkv[..., (H + K) * D :].reshape(B, T, K, D)
        q, k = apply_rope(q, sin, cos), apply_rope(k, sin, cos)
        if cache is None:
            # softmax's own JVP rule (p * (g - sum(g p))) instead of differentiating exp / sum: the
            # attention backward is about a third cheaper on CPU; the values are the same.
            with jax.softmax_custom_jvp(True):
                out = jax.nn.dot_product_attention(q, k, v, scale=self.scale, is_causal=True,
                                                   implementation=self.attention_impl)
        else:
            # The cache is heads-major, (B, K, S, D): the scores and the weighted sum are then plain batched
            # matmuls over (B, K); the sequence-major layout made XLA transpose the whole cache every step.
            k_all = jax.lax.dynamic_update_slice(cache.k, k.transpose(0, 2, 1, 3).astype(cache.k.dtype),
                                                 (0, 0, index, 0))
            v_all = jax.lax.dynamic_update_slice(cache.v, v.transpose(0, 2, 1, 3).astype(cache.v.dtype),
                                                 (0, 0, index, 0))
            out = cached_attention(q, k_all.astype(q.dtype), v_all.astype(q.dtype), *positions, scale=self.scale)
            cache = LayerCache(k_all, v_all)
        out = matmul(out.reshape(B, T, H * D), self.out[...].astype(self.dtype))  # (B, T, d_model)
        return out, cache


def cached_attention(q: jax.Array, k: jax.Array, v: jax.Array, query_pos: jax.Array, key_pos: jax.Array,
                     scale: float | None = None) -> jax.Array:
    """q (B, T, H, D) against a heads-major cache k, v (B, K, S, D) -> (B, T, H, D); q.k is scaled by `scale`
    (default 1 / sqrt(D)).

    Query head h reads key/value head h // (H / K), as `jax.nn.dot_product_attention` does. A query
    attends to the keys whose position is at least 0 and at most its own (query_pos (B, T), key_pos (B, S)).
    """
    B, T, H, D = q.shape
    K = k.shape[1]
    q = q.reshape(B, T, K, H // K, D).transpose(0, 2, 3, 1, 4)  # (B, K, G, T, D)
    scores = jnp.einsum("bkgtd,bksd->bkgts", q, k, preferred_element_type=jnp.float32)
    scores = scores / math.sqrt(D) if scale is None else scores * scale
    keys = key_pos[:, None, None, None, :]  # (B, 1, 1, 1, S)
    mask = (keys >= 0) & (keys <= query_pos[:, None, None, :, None])  # (B, 1, 1, T, S)
    # A large finite number, not -inf: a padding query has no key at all, and NaN from its empty softmax
    # would reach real queries through the next layer's keys (0 x NaN is NaN).
    scores = jnp.where(mask, scores, -0.7 * jnp.finfo(jnp.float32).max)
    weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)  # (B, K, G, T, S)
    out = jnp.einsum("bkgts,bksd->bkgtd", weights, v)  # (B, K, G, T, D)
    return out.transpose(0, 3, 1, 2, 4).reshape(B, T, H, D)


class SwiGLU(nnx.Module):
    def __init__(self, shape: ModelShape, *, dtype, rngs: nnx.Rngs):
        std = INIT_STD * hidden_init_multiplier(shape)
        # Gate and up projections fused into one matmul: (d_model, 2 * d_ff).
        self.gate_up = dense((shape.d_model, 2 * shape.d_ff), std, rngs)
        self.down = dense((shape.d_ff, shape.d_model), std / math.sqrt(2 * shape.n_layers), rngs)
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        gate, up = jnp.split(matmul(x, self.gate_up[...].astype(self.dtype)), 2, axis=-1)  # (B, T, d_ff) each
        return matmul(jax.nn.silu(gate) * up, self.down[...].astype(self.dtype))


class Block(nnx.Module):
    def __init__(self, shape: ModelShape, *, dtype, attention_impl, rngs: nnx.Rngs):
        self.attn_norm = RMSNorm(shape.d_model)
        self.attn = Attention(shape, dtype=dtype, attention_impl=attention_impl, rngs=rngs)
        self.mlp_norm = RMSNorm(shape.d_model)
        self.mlp = SwiGLU(shape, dtype=dtype, rngs=rngs)

    def __call__(self, x, sin, cos, positions=None, cache=None, index=None):
        h, cache = self.attn(self.attn_norm(x), sin, cos, positions, cache, index)
        x = x + h
        return x + self.mlp(self.mlp_norm(x)), cache


class Decoder(nnx.Module):
    """Decoder-only transformer. `dtype` is the compute dtype; `attention_impl` is passed to
    `jax.nn.dot_product_attention` (None/"xla" everywhere, "cudnn" for flash attention on NVIDIA GPUs)."""

    def __init__(self, shape: ModelShape, *, dtype=jnp.float32, attention_impl: str | None = None,
                 rngs: nnx.Rngs):
        self.shape = shape
        self.dtype = jnp.dtype(dtype)
        self.embed = dense((shape.vocab_size, shape.d_model), INIT_STD, rngs)
        self.blocks = nnx.List(
            [Block(shape, dtype=self.dtype, attention_impl=attention_impl, rngs=rngs) for _ in range(shape.n_layers)]
        )
        self.final_norm = RMSNorm(shape.d_model)
        self.head = None if shape.tied_embeddings else dense((shape.d_model, shape.vocab_size), INIT_STD, rngs)
        self.output_multiplier = output_multiplier(shape)

    def logits(self, x: jax.Array) -> jax.Array:
        """Final norm and output layer: (B, T, d_model) -> (B, T, vocab) float32."""
        x = self.final_norm(x)
        w = self.embed[...].T if self.head is None else self.head[...]
        logits = matmul(x, w.astype(self.dtype), preferred_element_type=jnp.float32)
        return logits if self.output_multiplier == 1.0 else logits * self.output_multiplier

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """tokens (B, T) int -> logits (B, T, vocab) float32, causal over the window."""
        return self.logits(self.residual_stream(tokens))

    def residual_stream(self, tokens: jax.Array) -> jax.Array:
        """tokens (B, T) int -> the residual stream after the last block (B, T, d_model), before the final norm."""
        B, T = tokens.shape
        positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
        sin, cos = rope_tables(positions, self.shape.head_dim)
        x = jnp.take(self.embed[...], tokens, axis=0).astype(self.dtype)  # (B, T, d_model)
        for block in self.blocks:
            x, _ = block(x, sin, cos)
        return x

    def init_cache(self, batch_size: int, length: int | None = None, dtype=None) -> KVCache:
        """An empty KV cache for `batch_size` sequences of up to `length` tokens (default max_seq_len)."""
        s = self.shape
        length = length or s.max_seq_len
        zeros = jnp.zeros((batch_size, s.n_kv_heads, length, s.head_dim), dtype or self.dtype)
        return KVCache(
            layers=tuple(LayerCache(zeros, zeros) for _ in range(s.n_layers)),
            positions=jnp.full((batch_size, length), -1, jnp.int32),
            index=jnp.zeros((), jnp.int32),
        )

    def forward_with_cache(self, tokens: jax.Array, positions: jax.Array, cache: KVCache, last_only: bool = False):
        """Score `tokens` (B, T) at `positions` (B, T) after what `cache` holds; write them into the cache.

        A token attends to the cached and new keys whose position is at most its own; slots with
        position -1 (empty, or padding the caller marked so) are never attended to.
        Returns logits (B, T, vocab) float32 ((B, 1, vocab) with `last_only`: all a sampler's prefill
        needs) and the cache with index advanced by T.
        """
        T = tokens.shape[1]
        key_pos = jax.lax.dynamic_update_slice(cache.positions, positions.astype(jnp.int32), (0, cache.index))
        sin, cos = rope_tables(positions, self.shape.head_dim)
        x = jnp.take(self.embed[...], tokens, axis=0).astype(self.dtype)
        layers = []
        for block, layer_cache in zip(self.blocks, cache.layers, strict=True):
            x, layer_cache = block(x, sin, cos, (positions, key_pos), layer_cache, cache.index)
            layers.append(layer_cache)
        return self.logits(x[:, -1:] if last_only else x), KVCache(tuple(layers), key_pos, cache.index + T)
