"""Parameter and FLOP accounting for the decoder family: one function each, used everywhere.

Which count is which:
- `params` (N): every parameter, embeddings and output head included (the results table's `params`).
- `params_nonembed`: N without the vocabulary matrices (input embedding and output head), as in
  Kaplan et al. (2020).
- `flops_per_token(shape, seq_len, "6N")`: 6 * N, the Kaplan/Chinchilla approximation of a forward and
  backward pass per trained token (the default C = 6 N D).
- `flops_per_token(shape, seq_len, "detailed")`: Chinchilla appendix F (Hoffmann et al., 2022), with
  the attention score and value matmuls over the full window, the softmax, grouped-query K/V
  projections, the SwiGLU MLP's three matrices and the output layer; backward = 2 x forward.
"""

from __future__ import annotations

from models.config import ModelShape
from scaling.common.errors import InputError

FLOP_METHODS = ("6N", "detailed")


def check_flop_method(method: str) -> None:
    """Refuse, in one line naming `flops`, a way to count compute that is not one of FLOP_METHODS."""
    if method not in FLOP_METHODS:
        raise InputError(f"flops: {method!r} is not a way to count compute; expected 6N or detailed", field="flops")


def count_params(shape: ModelShape) -> dict:
    """Exact parameter counts of `models.decoder.Decoder(shape)`: total, non-embedding and a breakdown."""
    d, hd = shape.d_model, shape.head_dim
    embedding = shape.vocab_size * d
    head = 0 if shape.tied_embeddings else d * shape.vocab_size
    attention = shape.n_layers * (d * (shape.n_heads + 2 * shape.n_kv_heads) * hd + shape.n_heads * hd * d)
    mlp = shape.n_layers * 3 * d * shape.d_ff
    norms = (2 * shape.n_layers + 1) * d
    total = embedding + attention + mlp + norms + head
    return {
        "total": total,
        "non_embedding": total - embedding - head,
        "embedding": embedding,
        "attention": attention,
        "mlp": mlp,
        "norms": norms,
        "head": head,
    }


def forward_flops_per_sequence(shape: ModelShape, seq_len: int) -> dict:
    """Chinchilla appendix F forward FLOPs for one sequence of `seq_len` tokens, by part."""
    d, T, hd = shape.d_model, seq_len, shape.head_dim
    q_width, kv_width = shape.n_heads * hd, shape.n_kv_heads * hd
    attention = (
        2 * T * d * (q_width + 2 * kv_width)  # q, k, v projections
        + 2 * T * T * q_width  # q @ k^T
        + 3 * shape.n_heads * T * T  # softmax
        + 2 * T * T * q_width  # softmax @ v
        + 2 * T * q_width * d  # output projection
    )
    mlp = 2 * T * 3 * d * shape.d_ff  # gate, up, down
    return {
        "embedding": 2 * T * d * shape.vocab_size,
        "attention": shape.n_layers * attention,
        "mlp": shape.n_layers * mlp,
        "logits": 2 * T * d * shape.vocab_size,
    }


def flops_per_token(shape: ModelShape, seq_len: int, method: str = "6N") -> float:
    """Training FLOPs (forward + backward) per token at context `seq_len`; see the module docstring."""
    if method == "6N":
        return 6.0 * count_params(shape)["total"]
    if method == "detailed":
        return 3.0 * sum(forward_flops_per_sequence(shape, seq_len).values()) / seq_len
    raise ValueError(f"flops method {method!r} is not one of {FLOP_METHODS}")
