"""The coordinate check (Yang et al. 2021): does a parametrization keep every layer's update the same size as
the model widens? `scaling bench coord-check`.

Models of several widths (one depth, one seed, the family's other defaults) train a few Adam steps at one
learning rate on the same random token windows; after each step the mean absolute change of the logits and
of the last block's output, from their values at initialization, is recorded per width. Under the standard
parametrization the logit change grows with width (each hidden update adds up coherently over d_model
inputs), which is why the best learning rate drifts; under muP it stays flat.
"""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models.ladder import family_shape
from models.parametrization import learning_rate_multipliers
from scaling.train.step import init_model, make_optimizer, next_token_loss


def coordinate_check(widths=(32, 64, 128, 256), parametrization: str = "standard", base_d_model: int = 32,
                     steps: int = 5, lr: float = 1e-2, n_layers: int = 2, vocab_size: int = 64, seq_len: int = 16,
                     batch_size: int = 8, seed: int = 0) -> dict:
    """{width: {"logits": [mean |logits_t - logits_0| for t = 1..steps], "hidden": [the same for the last
    block's output]}}, plus the settings."""
    rng = np.random.default_rng(seed)
    windows = jnp.asarray(rng.integers(0, vocab_size, (steps, batch_size, seq_len + 1)), jnp.int32)
    out = {}
    for width in widths:
        shape = family_shape(width, vocab_size, seq_len, n_layers=n_layers)
        if parametrization == "mup":
            shape = replace(shape, parametrization="mup", mup_base_d_model=base_d_model)
        out[int(width)] = update_sizes(shape, windows, lr, seed)
    return {"parametrization": parametrization, "base_d_model": base_d_model, "lr": lr, "steps": steps,
            "n_layers": n_layers, "widths": out}


def update_sizes(shape, windows: jax.Array, lr: float, seed: int) -> dict:
    """Train `shape` one Adam step per batch of `windows` (steps, B, T + 1); after each, the mean absolute change
    of the logits and of the last block's output on the first batch, from their values at initialization."""
    graphdef, params = init_model(shape, seed)
    multipliers = None if shape.parametrization == "standard" else learning_rate_multipliers(shape, params)
    tx = make_optimizer(lambda _: lr, weight_decay=0.0, grad_clip=0.0, lr_multipliers=multipliers)
    opt_state = tx.init(params)
    mask = jnp.ones(windows.shape[1:2] + (windows.shape[2] - 1,), jnp.float32)  # (B, T)

    @jax.jit
    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(lambda p: next_token_loss(graphdef, p, batch, mask))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return jax.tree.map(lambda p, u: p + u, params, updates), opt_state, loss

    @jax.jit
    def activations(params, tokens):
        model = nnx.merge(graphdef, params)
        hidden = model.residual_stream(tokens)
        return model.logits(hidden), hidden

    probe = windows[0, :, :-1]
    logits0, hidden0 = activations(params, probe)
    record = {"logits": [], "hidden": []}
    for batch in windows:
        params, opt_state, _ = step(params, opt_state, batch)
        logits, hidden = activations(params, probe)
        record["logits"].append(float(jnp.mean(jnp.abs(logits - logits0))))
        record["hidden"].append(float(jnp.mean(jnp.abs(hidden - hidden0))))
    return record


def growth(check: dict, key: str = "logits") -> float:
    """The last step's change at the widest width over that at the narrowest: about 1 when flat."""
    widths = sorted(check["widths"])
    return check["widths"][widths[-1]][key][-1] / check["widths"][widths[0]][key][-1]
