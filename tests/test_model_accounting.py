"""Parameter and FLOP accounting against independent counts: the real nnx parameter tree, and XLA's
own cost analysis of the compiled forward and forward+backward passes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from models.accounting import count_params, flops_per_token, forward_flops_per_sequence
from models.config import ModelShape
from models.decoder import Decoder

SHAPES = [
    ModelShape(d_model=30, n_layers=3, n_heads=3, n_kv_heads=1, d_ff=22, vocab_size=37, max_seq_len=17),
    ModelShape(d_model=28, n_layers=2, n_heads=7, n_kv_heads=7, d_ff=50, vocab_size=53, max_seq_len=11,
               tied_embeddings=True),
]


def part_of(path: str) -> str:
    """Which accounting part a parameter path belongs to, from its name alone."""
    if path.startswith("embed"):
        return "embedding"
    if path.startswith("head"):
        return "head"
    if "norm" in path:
        return "norms"
    return "attention" if ".attn." in path else "mlp"


@pytest.mark.parametrize("shape", SHAPES, ids=["gqa", "tied"])
def test_model_accounting_params_match_the_nnx_parameter_tree(shape):
    params = nnx.state(nnx.eval_shape(lambda: Decoder(shape, rngs=nnx.Rngs(0))), nnx.Param)  # shapes only
    by_part = {"embedding": 0, "attention": 0, "mlp": 0, "norms": 0, "head": 0}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        name = ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        by_part[part_of(name)] += leaf.size
    counts = count_params(shape)
    assert counts["total"] == sum(by_part.values())
    assert {k: counts[k] for k in by_part} == by_part
    assert counts["non_embedding"] == counts["total"] - by_part["embedding"] - by_part["head"]
    assert flops_per_token(shape, 7, "6N") == 6 * counts["total"]


def xla_flops(fn, *args) -> float:
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost["flops"])


@pytest.mark.parametrize("shape", SHAPES, ids=["gqa", "tied"])
def test_model_accounting_detailed_flops_match_xla_cost_analysis(shape):
    batch, seq_len = 3, shape.max_seq_len
    graphdef, params = nnx.split(nnx.eval_shape(lambda: Decoder(shape, rngs=nnx.Rngs(0))), nnx.Param)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, shape.vocab_size, (batch, seq_len + 1)))

    def loss(p, t):
        logits = nnx.merge(graphdef, p)(t[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, t[:, 1:]).mean()

    parts = forward_flops_per_sequence(shape, seq_len)
    # XLA looks embeddings up (a gather, no FLOPs); Chinchilla counts them as a matmul.
    forward = batch * (sum(parts.values()) - parts["embedding"])
    xla_forward = xla_flops(loss, params, tokens)
    xla_training = xla_flops(jax.value_and_grad(loss), params, tokens)
    # The rest of XLA's count is elementwise work (norms, RoPE, SwiGLU, softmax) that appendix F leaves out.
    assert forward <= xla_forward <= 1.15 * forward
    assert 3 * forward <= xla_training <= 1.15 * 3 * forward
    detailed = flops_per_token(shape, seq_len, "detailed") * batch * seq_len
    assert detailed == pytest.approx(3 * (forward + batch * parts["embedding"]))


def test_model_accounting_at_a_realistic_width_agrees_within_two_percent():
    """At widths where matmuls dominate, XLA's count and the detailed count agree closely."""
    shape = ModelShape(d_model=96, n_layers=3, n_heads=6, n_kv_heads=2, d_ff=160, vocab_size=211, max_seq_len=64)
    graphdef, params = nnx.split(nnx.eval_shape(lambda: Decoder(shape, rngs=nnx.Rngs(0))), nnx.Param)
    tokens = jnp.zeros((4, 65), jnp.int32)

    def loss(p, t):
        return optax.softmax_cross_entropy_with_integer_labels(nnx.merge(graphdef, p)(t[:, :-1]), t[:, 1:]).mean()

    parts = forward_flops_per_sequence(shape, 64)
    analytic = 3 * 4 * (sum(parts.values()) - parts["embedding"])
    assert xla_flops(jax.value_and_grad(loss), params, tokens) == pytest.approx(analytic, rel=0.03)
