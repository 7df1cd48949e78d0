"""The compiled parts of a training run: optimizer, loss, and the hot loop.

The hot loop is a pure `jax.jit` function over the (graphdef, params) split of the model (Flax's
performance guide: `nnx.jit` adds Python overhead that dominates tiny models). One call runs
`steps_per_dispatch` optimizer steps with `jax.lax.scan` and donates the parameter and optimizer
buffers, so a tiny model pays the dispatch cost once per chunk, not once per step. Data parallelism is
`jax.sharding`: parameters replicated, batches split over the mesh's "data" axis; XLA inserts the
gradient all-reduce.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from models.config import ModelShape
from models.decoder import Decoder

DATA_AXIS = "data"


def learning_rate_schedule(
    kind: str, peak: float, total_steps: int, warmup_steps: int, min_lr_ratio: float = 0.1,
    cooldown_fraction: float = 0.2,
) -> optax.Schedule:
    """Linear warmup from 0, then cosine (to min_lr_ratio * peak at the last step), wsd (constant, then a
    linear decay to 0 over the last cooldown_fraction of steps) or constant."""
    warmup = optax.linear_schedule(0.0, peak, max(warmup_steps, 1))
    rest = max(total_steps - warmup_steps, 1)
    if kind == "cosine":
        after = optax.cosine_decay_schedule(peak, rest, alpha=min_lr_ratio)
    elif kind == "wsd":
        cooldown = max(1, round(cooldown_fraction * total_steps)) if cooldown_fraction > 0 else 0
        stable = max(rest - cooldown, 0)
        after = optax.join_schedules(
            [optax.constant_schedule(peak), optax.linear_schedule(peak, 0.0, max(cooldown, 1))], [stable]
        )
    elif kind == "constant":
        after = optax.constant_schedule(peak)
    else:
        raise ValueError(f"unknown schedule {kind!r}")
    if warmup_steps == 0:
        return after
    return optax.join_schedules([warmup, after], [warmup_steps])


def make_optimizer(
    schedule: optax.Schedule, *, weight_decay: float = 0.1, beta1: float = 0.9, beta2: float = 0.95,
    grad_clip: float = 1.0, lr_multipliers=None,
) -> optax.GradientTransformation:
    """AdamW with global-norm clipping; weight decay on matrices only (not norms). `lr_multipliers`, a tree like
    the parameters (models.parametrization.learning_rate_multipliers), scales each parameter's update."""
    adamw = optax.adamw(schedule, b1=beta1, b2=beta2, eps=1e-8, weight_decay=weight_decay,
                        mask=lambda params: jax.tree.map(lambda p: p.ndim >= 2, params))
    parts = ([optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []) + [adamw]
    if lr_multipliers is not None:
        parts.append(scale_by_tree(lr_multipliers))
    return optax.chain(*parts) if len(parts) > 1 else adamw


def scale_by_tree(multipliers) -> optax.GradientTransformation:
    """Multiply each update by its leaf of `multipliers` (a tree like the parameters; no state)."""

    def update(updates, state, params=None):
        return jax.tree.map(lambda u, m: u * m, updates, multipliers), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def init_model(shape: ModelShape, seed: int, dtype=jnp.float32, attention_impl: str | None = None):
    """A fresh model split into (graphdef, params): the same seed gives the same parameters.

    The initializers run as one compiled program (eagerly, each would compile on its own)."""

    def build():
        return Decoder(shape, dtype=dtype, attention_impl=attention_impl, rngs=nnx.Rngs(params=seed))

    graphdef, _ = abstract_model(shape, dtype, attention_impl)
    params = jax.jit(lambda: nnx.split(build(), nnx.Param)[1])()
    return graphdef, params


def abstract_model(shape: ModelShape, dtype=jnp.float32, attention_impl: str | None = None):
    """(graphdef, params as shapes and dtypes): the tree a checkpoint's parameters restore into; nothing is
    computed."""

    def build():
        return Decoder(shape, dtype=dtype, attention_impl=attention_impl, rngs=nnx.Rngs(params=0))

    return nnx.split(nnx.eval_shape(build), nnx.Param)


def next_token_loss(graphdef, params, windows: jax.Array, loss_mask: jax.Array) -> jax.Array:
    """Mean cross-entropy (nats) of windows[:, 1:] given windows[:, :-1], over the unmasked targets.

    windows (B, T + 1) int32, loss_mask (B, T) float32 -> scalar.
    """
    logits = nnx.merge(graphdef, params)(windows[:, :-1])  # (B, T, V) float32
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, windows[:, 1:])  # (B, T)
    return jnp.sum(losses * loss_mask) / jnp.maximum(jnp.sum(loss_mask), 1.0)


def data_mesh(devices=None) -> Mesh:
    """A one-axis mesh over all (global) devices; batches are split along it."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    return Mesh(devices, (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, leading: int = 0) -> NamedSharding:
    """Sharding of an array whose axis `leading` is the batch axis (1 for (K, B, ...) chunks)."""
    return NamedSharding(mesh, P(*([None] * leading), DATA_AXIS))


def make_train_chunk(graphdef, tx: optax.GradientTransformation, mesh: Mesh) -> Callable:
    """The jitted hot loop: (params, opt_state, windows (K, B, T+1), masks (K, B, T)) ->
    (params, opt_state, losses (K,), norms). K optimizer steps in one call; params and opt_state are donated.
    `norms` = (grad_norms (K,): each step's global gradient norm before clipping, param_norm (): the global
    parameter norm after the last step), for tracking."""

    def one_step(carry, batch):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(next_token_loss, argnums=1)(graphdef, params, *batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), (loss, optax.tree.norm(grads))

    def chunk(params, opt_state, windows, masks):
        (params, opt_state), (losses, grad_norms) = jax.lax.scan(one_step, (params, opt_state), (windows, masks))
        return params, opt_state, losses, (grad_norms, optax.tree.norm(params))

    rep, data = replicated(mesh), batch_sharding(mesh, leading=1)
    return jax.jit(chunk, in_shardings=(rep, rep, data, data), out_shardings=(rep, rep, rep, rep),
                   donate_argnums=(0, 1))


def make_eval(graphdef, mesh: Mesh) -> Callable:
    """Jitted validation: (params, windows (N, B, T+1), masks (N, B, T)) -> (sum of losses, targets)."""

    def batch_sums(params, batch):
        windows, mask = batch
        logits = nnx.merge(graphdef, params)(windows[:, :-1])
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, windows[:, 1:])
        return jnp.sum(losses * mask), jnp.sum(mask)

    def evaluate(params, windows, masks):
        sums, counts = jax.lax.map(lambda b: batch_sums(params, b), (windows, masks))
        return jnp.sum(sums), jnp.sum(counts)

    rep, data = replicated(mesh), batch_sharding(mesh, leading=1)
    return jax.jit(evaluate, in_shardings=(rep, data, data), out_shardings=(rep, rep))
