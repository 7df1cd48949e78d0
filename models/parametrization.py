"""How the decoder's initialization, output multiplier, attention scale and per-matrix learning rates depend
on width: the standard parametrization, or the maximal-update parametrization (muP).

standard: every matrix starts N(0, 0.02^2) (the residual-branch outputs / sqrt(2 n_layers), GPT-2), one
learning rate for everything, attention logits scaled by 1 / sqrt(head_dim). The best learning rate then
drifts down as the model widens, so a rate tuned on small models is wrong for the final run.

muP (Yang et al. 2021, "Tensor Programs V", table 3 for Adam; the multiplier form of Microsoft's `mup`
package), with the width multiplier m = d_model / base_d_model:
- hidden matrices (attention qkv and out, MLP gate_up and down): init std 0.02 / sqrt(m) (residual-branch
  outputs also / sqrt(2 n_layers)), Adam learning rate lr / m;
- the input embedding and the norm gains: as standard;
- the output layer: init and learning rate as standard, its logits multiplied by 1 / m;
- attention logits scaled by sqrt(base_head_dim) / head_dim, i.e. 1 / head_dim, which equals standard at the
  base width (base_head_dim is the head size of the family's shape at base_d_model).
At m = 1 both give the same model and the same updates, so settings tuned at the base width carry over; under
muP every layer's update stays the same size as the model widens, and so does the best learning rate.
Tied embeddings are refused under muP (one matrix cannot be both the embedding and the 1/m readout).
"""

from __future__ import annotations

import math

import jax

PARAMETRIZATIONS = ("standard", "mup")
HIDDEN_MATRICES = ("qkv", "out", "gate_up", "down")  # the names of models.decoder's hidden weight matrices


def width_multiplier(shape) -> float:
    """m = d_model / base_d_model under muP; 1 under standard."""
    if shape.parametrization != "mup":
        return 1.0
    return shape.d_model / shape.mup_base_d_model


def hidden_init_multiplier(shape) -> float:
    """Factor on the standard init std of every hidden matrix: 1 / sqrt(m)."""
    return 1.0 / math.sqrt(width_multiplier(shape))


def output_multiplier(shape) -> float:
    """Factor on the logits: 1 / m."""
    return 1.0 / width_multiplier(shape)


def base_head_dim(base_d_model: int) -> int:
    from models.ladder import default_n_heads  # the family's head count at the base width

    return max(1, base_d_model // default_n_heads(base_d_model))


def attention_scale(shape) -> float:
    """The factor on q.k: 1 / sqrt(head_dim) under standard, sqrt(base_head_dim) / head_dim under muP."""
    if shape.parametrization != "mup":
        return 1.0 / math.sqrt(shape.head_dim)
    return math.sqrt(base_head_dim(shape.mup_base_d_model)) / shape.head_dim


def is_hidden_matrix(path) -> bool:
    """Whether a parameter's tree path (jax key path) names one of the hidden matrices."""
    names = {getattr(key, "key", getattr(key, "name", None)) for key in path}
    return bool(names & set(HIDDEN_MATRICES))


def learning_rate_multipliers(shape, params):
    """A tree like `params` of the factor on each parameter's learning rate: 1 / m on hidden matrices under
    muP, 1 elsewhere (and everywhere under standard)."""
    hidden = 1.0 / width_multiplier(shape)
    return jax.tree_util.tree_map_with_path(lambda path, _: hidden if is_hidden_matrix(path) else 1.0, params)
