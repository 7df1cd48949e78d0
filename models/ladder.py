"""The shape ladder: a target size (or a compute budget) -> one deterministic decoder shape.

Family defaults (used for every field a run config leaves out, and by the ladder):
- head size: d_model / 4 below d_model 256 (four heads), 64 from 256 up;
- key/value heads: n_heads / 4 (grouped-query attention) when n_heads is 8 or more, else n_heads;
- d_ff: 8/3 * d_model rounded up to a multiple of 32 (SwiGLU keeps the MLP near 8 d_model^2);
- n_layers: d_model / ASPECT_RATIO rounded, at least 1.

The ladder rule (`shape_for_params`): among all family shapes with d_model a multiple of 8 below 256
(a multiple of 64 from 256 up) and 1 to 128 layers, take the first tolerance in TOLERANCES
(2%, 5%, 10%) that admits a shape within it of the target total parameter count whose aspect ratio
d_model / n_layers is within a factor ASPECT_BAND = 4 of ASPECT_RATIO = 64; among the shapes within
that tolerance take the one whose aspect ratio is nearest 64 (in log ratio), ties to the count nearest
the target. When no tolerance admits such a shape (tiny targets that the embeddings dominate), the
nearest count wins. No shape is deeper than d_model / MIN_ASPECT layers: without that floor a tiny
target could land on a needle such as d_model 8 with 31 layers. The count is
`count_params(shape)["total"]`, embeddings included.
"""

from __future__ import annotations

import math
from functools import lru_cache

from models.accounting import count_params
from models.config import ModelShape
from scaling.common.errors import InputError

ASPECT_RATIO = 64  # d_model / n_layers, as in nanochat (d_model = 64 x depth)
FF_MULTIPLE = 32
TOLERANCES = (0.02, 0.05, 0.10)
ASPECT_BAND = 4.0
MIN_ASPECT = 4  # d_model / n_layers never below this
MAX_LAYERS = 128



def default_n_heads(d_model: int) -> int:
    return 4 if d_model < 256 else max(1, d_model // 64)


def default_n_kv_heads(n_heads: int) -> int:
    return n_heads // 4 if n_heads >= 8 and n_heads % 4 == 0 else n_heads


def default_d_ff(d_model: int) -> int:
    return FF_MULTIPLE * math.ceil(8 * d_model / 3 / FF_MULTIPLE)


def default_n_layers(d_model: int) -> int:
    return max(1, round(d_model / ASPECT_RATIO))


def family_shape(
    d_model: int,
    vocab_size: int,
    max_seq_len: int,
    n_layers: int | None = None,
    n_heads: int | None = None,
    n_kv_heads: int | None = None,
    d_ff: int | None = None,
    tied_embeddings: bool = False,
) -> ModelShape:
    """A shape with every field not given filled in by the family defaults above."""
    n_heads = n_heads or default_n_heads(d_model)
    return ModelShape(
        d_model=d_model,
        n_layers=n_layers or default_n_layers(d_model),
        n_heads=n_heads,
        n_kv_heads=n_kv_heads or default_n_kv_heads(n_heads),
        d_ff=d_ff or default_d_ff(d_model),
        vocab_size=vocab_size,
        max_seq_len=max_seq_len,
        tied_embeddings=tied_embeddings,
    )


def _widths() -> list[int]:
    return list(range(8, 256, 8)) + list(range(256, 16384 + 1, 64))


def _candidates(vocab_size: int, max_seq_len: int, tied_embeddings: bool, target: float):
    """(params, d_model, n_layers) of every ladder shape up to a little past the target."""
    out = []
    for d_model in _widths():
        one = count_params(family_shape(d_model, vocab_size, max_seq_len, n_layers=1,
                                        tied_embeddings=tied_embeddings))["total"]
        two = count_params(family_shape(d_model, vocab_size, max_seq_len, n_layers=2,
                                        tied_embeddings=tied_embeddings))["total"]
        if out and one > target * (1 + TOLERANCES[-1]):
            break  # wider shapes only grow
        for n_layers in range(1, max(1, min(MAX_LAYERS, d_model // MIN_ASPECT)) + 1):
            params = one + (n_layers - 1) * (two - one)
            out.append((params, d_model, n_layers))
            if params > target * (1 + TOLERANCES[-1]):
                break
    return out


@lru_cache(maxsize=256)
def shape_for_params(
    target_params: float, vocab_size: int, max_seq_len: int = 512, *, tied_embeddings: bool = False
) -> ModelShape:
    """The ladder shape for a target total parameter count (see the module docstring for the rule)."""
    if not target_params > 0:
        raise InputError(f"target parameter count {target_params!r} must be positive")
    candidates = _candidates(vocab_size, max_seq_len, tied_embeddings, float(target_params))

    def miss(c):
        return abs(math.log(c[0] / target_params))

    def aspect_miss(c):
        return abs(math.log(c[1] / c[2] / ASPECT_RATIO))

    choice = min(candidates, key=lambda c: (miss(c), aspect_miss(c)))
    for tolerance in TOLERANCES:
        near = [c for c in candidates if miss(c) <= math.log1p(tolerance)]
        if any(aspect_miss(c) <= math.log(ASPECT_BAND) for c in near):
            choice = min(near, key=lambda c: (aspect_miss(c), miss(c)))
            break
    _, d_model, n_layers = choice
    return family_shape(d_model, vocab_size, max_seq_len, n_layers=n_layers, tied_embeddings=tied_embeddings)


def shape_for_compute(
    compute: float,
    vocab_size: int,
    max_seq_len: int = 512,
    *,
    tokens: float | None = None,
    tokens_per_param: float | None = None,
) -> ModelShape:
    """The ladder shape for a compute budget C (FLOPs, C = 6 N D) and either the tokens D to train on,
    or a tokens-per-parameter ratio r (N = sqrt(C / 6r); Chinchilla r ~ 20, CoMET r ~ 1000)."""
    if (tokens is None) == (tokens_per_param is None):
        raise InputError("shape_for_compute: give exactly one of tokens or tokens_per_param")
    if tokens is not None:
        params = compute / (6.0 * tokens)
    else:
        params = math.sqrt(compute / (6.0 * tokens_per_param))
    return shape_for_params(params, vocab_size, max_seq_len)
