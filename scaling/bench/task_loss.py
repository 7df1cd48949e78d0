"""Each task's own loss per run: how well a run's next-token distribution predicts a task's outcome codes, on
a split of the token store, as a candidate x for a downstream law in place of the average loss.

    python -m scaling.bench.task_loss runs/demo/sweep/runs/n46k-* runs/demo/final --out task_loss.json

For every task with an outcome token set (`outcome_token_mask`: a binary or count task's codes) and every
target position t of the split's packed windows (those of the run's validation loss, over the whole split):
q_t = the model's probability that the next token is an outcome code, y_t = whether it is. Written per run:
`val_loss` (mean cross-entropy over every target), and per task `outcome_targets` (how many y_t = 1),
`outcome_loss` (mean -log p(target) over those targets) and `outcome_bce` (mean over every target of
-(y log q + (1 - y) log(1 - q)): the task's event rate and timing, scored at every position).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from scaling.common.atomic import write_json_atomic
from scaling.common.jsonable import dumps
from scaling.data.token_store import TokenStore
from scaling.evaluate.outcomes import outcome_token_mask
from scaling.evaluate.tasks import Task, load_tasks
from scaling.train.batches import evaluation_batches
from scaling.train.run_dir import RunDir

BATCH = 256


def window_sums(model, windows: jax.Array, scored: jax.Array, outcomes: jax.Array) -> dict:
    """Sums over one batch of windows (B, T + 1) int32 and its targets' mask (B, T) float32: the cross-entropy
    of every scored target, and per outcome token set (M, V) bool the outcome targets, their cross-entropy and
    the binary cross-entropy of q vs y."""
    log_p = jax.nn.log_softmax(model(windows[:, :-1]))  # (B, T, V)
    targets = windows[:, 1:]  # (B, T)
    ce = -jnp.take_along_axis(log_p, targets[..., None], -1)[..., 0]  # (B, T)
    log_q = jax.nn.logsumexp(jnp.where(outcomes[:, None, None, :], log_p[None], -jnp.inf), -1)  # (M, B, T)
    y = outcomes[:, targets] & (scored > 0)[None]  # (M, B, T) bool
    log_not_q = jnp.log(-jnp.expm1(jnp.minimum(log_q, -1e-7)))  # log(1 - q), q < 1
    bce = -jnp.where(y, log_q, log_not_q) * scored[None]
    return {"ce": (ce * scored).sum(), "targets": scored.sum(), "outcomes": y.sum((1, 2)),
            "outcome_ce": jnp.where(y, ce[None], 0.0).sum((1, 2)), "bce": bce.sum((1, 2))}


def task_losses(run_dir: str | Path, tasks: list[Task], split: str = "tuning") -> dict:
    """The run's val_loss and each task's outcome_targets, outcome_loss and outcome_bce on `split`."""
    run = RunDir(run_dir)
    model, config, step = run.load_model()
    store = TokenStore.open(config.data)
    scored = [(t, outcome_token_mask(t, store.vocab, model.shape.vocab_size)) for t in tasks]
    scored = [(t, m) for t, m in scored if m is not None]
    outcomes = jnp.asarray(np.stack([m for _, m in scored]))  # (M, V) bool
    sums = jax.jit(lambda w, m: window_sums(model, w, m, outcomes))
    tokens = store.split(split)
    total = None
    for windows, mask in evaluation_batches(tokens, BATCH, config.train.seq_len, tokens.n_tokens,
                                            store.vocab.pad_id, mode=config.train.window_mode):
        batch = jax.tree.map(np.asarray, sums(jnp.asarray(windows), jnp.asarray(mask)))
        total = batch if total is None else jax.tree.map(np.add, total, batch)
    per_task = {}
    for i, (task, _) in enumerate(scored):
        n = int(total["outcomes"][i])
        per_task[task.name] = {"outcome_targets": n,
                               "outcome_loss": float(total["outcome_ce"][i] / n) if n else None,
                               "outcome_bce": float(total["bce"][i] / total["targets"])}
    return {"run_dir": str(run.path), "checkpoint_step": step, "split": split,
            "val_loss": float(total["ce"] / total["targets"]), "tasks": per_task}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories (`scaling train`, a sweep's runs, `scaling final`)")
    parser.add_argument("--tasks", default="synth", help="a tasks TOML, or 'synth' (the shipped tasks)")
    parser.add_argument("--split", default="tuning", help="the token store's split to score")
    parser.add_argument("--out", help="also write the table as JSON here")
    args = parser.parse_args()
    tasks = load_tasks(args.tasks)
    rows = []
    for run_dir in args.runs:
        rows.append(task_losses(run_dir, tasks, args.split))
        row = rows[-1]
        print(f"{Path(run_dir).name}: val_loss {row['val_loss']:.4f} | " + " | ".join(
            f"{name} loss {t['outcome_loss'] or float('nan'):.3f} bce {1e3 * t['outcome_bce']:.3f}e-3"
            f" ({t['outcome_targets']})" for name, t in row["tasks"].items()), flush=True)
    if args.out:
        write_json_atomic(args.out, {"runs": rows})
    else:
        print(dumps({"runs": rows}))


if __name__ == "__main__":
    main()
