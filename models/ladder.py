"""The shape ladder: a target size (or a compute budget) -> one deterministic decoder shape.

Family defaults (used for every field a run config leaves out, and by the ladder):
- head size: d_model / 4 below d_model 256 (four heads), 64 from 256 up;
- key/value heads: n_heads / 4 (grouped-query attention) when n_heads is 8 or more, else n_heads;
- d_ff: 8/3 * d_model rounded up to a multiple of 32 (SwiGLU keeps the MLP near 8 d_model^2);
- n_layers: d_model / ASPECT_RATIO rounded, at least 1.

A family may be narrowed or widened by two settings (a grid's [model] aspect_ratio and min_layers, and the
recommendation, which reads them back off the swept shapes): `aspect_ratio` replaces ASPECT_RATIO as the
d_model / n_layers the ladder aims at, and `min_layers` is the fewest layers any shape has. Tiny models
(the embeddings dominate) then keep several layers, so a sweep of them and a final run 30x larger are one
family in which depth and width grow together.

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


def default_n_layers(d_model: int, aspect_ratio: float = ASPECT_RATIO, min_layers: int = 1) -> int:
    return max(min_layers, round(d_model / aspect_ratio))


def family_shape(
    d_model: int,
    vocab_size: int,
    max_seq_len: int,
    n_layers: int | None = None,
    n_heads: int | None = None,
    n_kv_heads: int | None = None,
    d_ff: int | None = None,
    tied_embeddings: bool = False,
    aspect_ratio: float = ASPECT_RATIO,
    min_layers: int = 1,
) -> ModelShape:
    """A shape with every field not given filled in by the family defaults above."""
    n_heads = n_heads or default_n_heads(d_model)
    return ModelShape(
        d_model=d_model,
        n_layers=n_layers or default_n_layers(d_model, aspect_ratio, min_layers),
        n_heads=n_heads,
        n_kv_heads=n_kv_heads or default_n_kv_heads(n_heads),
        d_ff=d_ff or default_d_ff(d_model),
        vocab_size=vocab_size,
        max_seq_len=max_seq_len,
        tied_embeddings=tied_embeddings,
    )


def _widths() -> list[int]:
    return list(range(8, 256, 8)) + list(range(256, 16384 + 1, 64))


def _candidates(vocab_size: int, max_seq_len: int, tied_embeddings: bool, target: float, min_layers: int = 1):
    """(params, d_model, n_layers) of every ladder shape (at least `min_layers` deep) up to a little past the
    target."""
    out = []
    for d_model in _widths():
        one = count_params(family_shape(d_model, vocab_size, max_seq_len, n_layers=1,
                                        tied_embeddings=tied_embeddings))["total"]
        two = count_params(family_shape(d_model, vocab_size, max_seq_len, n_layers=2,
                                        tied_embeddings=tied_embeddings))["total"]
        if out and one + (min_layers - 1) * (two - one) > target * (1 + TOLERANCES[-1]):
            break  # wider shapes only grow
        deepest = max(min_layers, min(MAX_LAYERS, d_model // MIN_ASPECT))
        for n_layers in range(min_layers, deepest + 1):
            params = one + (n_layers - 1) * (two - one)
            out.append((params, d_model, n_layers))
            if params > target * (1 + TOLERANCES[-1]):
                break
    return out


@lru_cache(maxsize=256)
def shape_for_params(
    target_params: float, vocab_size: int, max_seq_len: int = 512, *, tied_embeddings: bool = False,
    aspect_ratio: float = ASPECT_RATIO, min_layers: int = 1, aspect_band: float = ASPECT_BAND,
) -> ModelShape:
    """The ladder shape for a target total parameter count (see the module docstring for the rule; a family
    that must keep its aspect ratio closely passes a narrower `aspect_band` than ASPECT_BAND)."""
    if not target_params > 0:
        raise InputError(f"target parameter count {target_params!r} must be positive")
    if not (aspect_ratio > 0 and math.isfinite(aspect_ratio)):
        raise InputError(f"aspect_ratio = {aspect_ratio!r} must be a positive number (d_model / n_layers)")
    if isinstance(min_layers, bool) or not isinstance(min_layers, int) or not 1 <= min_layers <= MAX_LAYERS:
        raise InputError(f"min_layers = {min_layers!r} must be a whole number from 1 to {MAX_LAYERS}")
    candidates = _candidates(vocab_size, max_seq_len, tied_embeddings, float(target_params), min_layers)

    def miss(c):
        return abs(math.log(c[0] / target_params))

    def aspect_miss(c):
        return abs(math.log(c[1] / c[2] / aspect_ratio))

    choice = min(candidates, key=lambda c: (miss(c), aspect_miss(c)))
    for tolerance in TOLERANCES:
        near = [c for c in candidates if miss(c) <= math.log1p(tolerance)]
        if any(aspect_miss(c) <= math.log(aspect_band) for c in near):
            choice = min(near, key=lambda c: (aspect_miss(c), miss(c)))
            break
    _, d_model, n_layers = choice
    return family_shape(d_model, vocab_size, max_seq_len, n_layers=n_layers, tied_embeddings=tied_embeddings)


def aspect_ratio_of(shape) -> float:
    return shape.d_model / shape.n_layers


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
