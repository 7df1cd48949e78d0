"""The decoder against a naive float64 NumPy transformer written from the Qwen2 recipe, and the KV-cache
path against the full forward pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models.config import ModelShape
from models.decoder import Decoder

# Odd, prime-ish sizes so that a transposed axis cannot pass by accident.
SHAPE = ModelShape(d_model=30, n_layers=2, n_heads=3, n_kv_heads=1, d_ff=22, vocab_size=37, max_seq_len=19)


def random_model(shape: ModelShape, seed: int = 0, dtype=jnp.float32) -> Decoder:
    """A decoder whose parameters are all O(0.3) random values, so every path matters."""
    model = Decoder(shape, dtype=dtype, rngs=nnx.Rngs(seed))
    graphdef, params = nnx.split(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng(seed + 1)
    leaves = [jnp.asarray((1.0 if x.ndim == 1 else 0.0) + 0.3 * rng.standard_normal(x.shape), jnp.float32)
              for x in leaves]
    return nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))


def forward(model: Decoder, tokens) -> np.ndarray:
    """The model's logits through one jitted call (eager op-by-op dispatch is slow)."""
    graphdef, params = nnx.split(model)
    return np.asarray(jax.jit(lambda p, t: nnx.merge(graphdef, p)(t))(params, jnp.asarray(tokens)))


def numpy_forward(model: Decoder, tokens: np.ndarray, attention_scale: float | None = None,
                  logit_multiplier: float = 1.0) -> np.ndarray:
    """Logits (B, T, V) in float64, one head and one position at a time (q.k scaled by `attention_scale`,
    default 1 / sqrt(head_dim); logits by `logit_multiplier`)."""
    s = model.shape
    p = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    H, K, D = s.n_heads, s.n_kv_heads, s.head_dim

    def rms(x, scale):
        return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + 1e-6) * f64(scale)

    def rotate(v, pos):  # v (D,): pairs (i, i + D/2) rotated by pos * 10000^(-2i/D)
        out = v.copy()
        for i in range(D // 2):
            a = pos * 10000.0 ** (-2 * i / D)
            out[i] = v[i] * np.cos(a) - v[i + D // 2] * np.sin(a)
            out[i + D // 2] = v[i + D // 2] * np.cos(a) + v[i] * np.sin(a)
        return out

    B, T = tokens.shape
    x = f64(p["embed"])[tokens]  # (B, T, d)
    for layer in range(s.n_layers):
        b = p["blocks"][layer]
        h = rms(x, b["attn_norm"]["scale"]) @ f64(b["attn"]["qkv"])
        q = h[..., : H * D].reshape(B, T, H, D)
        k = h[..., H * D : (H + K) * D].reshape(B, T, K, D)
        v = h[..., (H + K) * D :].reshape(B, T, K, D)
        att = np.zeros((B, T, H, D))
        for bi in range(B):
            for head in range(H):
                kv = head // (H // K)
                qs = np.stack([rotate(q[bi, t, head], t) for t in range(T)])
                ks = np.stack([rotate(k[bi, t, kv], t) for t in range(T)])
                scores = qs @ ks.T * (1 / np.sqrt(D) if attention_scale is None else attention_scale)
                scores[np.triu_indices(T, 1)] = -np.inf
                w = np.exp(scores - scores.max(-1, keepdims=True))
                att[bi, :, head] = (w / w.sum(-1, keepdims=True)) @ v[bi, :, kv]
        x = x + att.reshape(B, T, H * D) @ f64(b["attn"]["out"])
        gu = rms(x, b["mlp_norm"]["scale"]) @ f64(b["mlp"]["gate_up"])
        gate, up = gu[..., : s.d_ff], gu[..., s.d_ff :]
        x = x + (gate / (1 + np.exp(-gate)) * up) @ f64(b["mlp"]["down"])
    head = f64(p["embed"]).T if s.tied_embeddings else f64(p["head"])
    return rms(x, p["final_norm"]["scale"]) @ head * logit_multiplier


@pytest.mark.parametrize("tied", [False, True])
def test_model_decoder_matches_numpy_reference(tied):
    shape = ModelShape(**{**SHAPE.to_dict(), "tied_embeddings": tied})
    model = random_model(shape)
    tokens = np.random.default_rng(0).integers(0, shape.vocab_size, (2, 11))
    logits = forward(model, tokens)
    assert logits.shape == (2, 11, shape.vocab_size) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, numpy_forward(model, tokens), rtol=2e-4, atol=2e-4)


def test_model_decoder_is_causal():
    model = random_model(SHAPE)
    tokens = np.random.default_rng(1).integers(0, SHAPE.vocab_size, (1, 13))
    changed = tokens.copy()
    changed[0, 7:] = (changed[0, 7:] + 5) % SHAPE.vocab_size
    a, b = forward(model, tokens), forward(model, changed)
    np.testing.assert_array_equal(a[0, :7], b[0, :7])
    assert np.abs(a[0, 7:] - b[0, 7:]).max() > 1e-3


def test_model_decoder_kv_cache_decoding_matches_full_forward():
    model = random_model(SHAPE)
    tokens = jnp.asarray(np.random.default_rng(2).integers(0, SHAPE.vocab_size, (3, 13)))
    full = forward(model, tokens)
    graphdef, params = nnx.split(model)
    step = jax.jit(lambda p, t, pos, c: nnx.merge(graphdef, p).forward_with_cache(t, pos, c))
    cache = model.init_cache(batch_size=3, length=SHAPE.max_seq_len)
    positions = jnp.broadcast_to(jnp.arange(13, dtype=jnp.int32), (3, 13))
    prefill, cache = step(params, tokens[:, :5], positions[:, :5], cache)  # a prompt of 5
    steps = [prefill]
    for t in range(5, 13):  # then one token at a time
        logits, cache = step(params, tokens[:, t : t + 1], positions[:, t : t + 1], cache)
        steps.append(logits)
    assert int(cache.index) == 13
    np.testing.assert_allclose(np.concatenate([np.asarray(x) for x in steps], axis=1), full, rtol=1e-4,
                               atol=1e-4)


def test_model_decoder_bfloat16_compute_stays_close_to_float32():
    f32 = random_model(SHAPE)
    bf16 = random_model(SHAPE, dtype=jnp.bfloat16)
    tokens = jnp.asarray(np.random.default_rng(3).integers(0, SHAPE.vocab_size, (2, 11)))
    a, b = forward(f32, tokens), forward(bf16, tokens)
    assert b.dtype == np.float32  # logits come out in float32
    assert np.abs(a - b).max() < 0.1 * np.abs(a).max()
    # and the parameters stay float32
    assert {x.dtype for x in jax.tree.leaves(nnx.state(bf16, nnx.Param))} == {jnp.dtype(jnp.float32)}
