"""Tiny grids and token stores for the sweep tests."""

from __future__ import annotations

from pathlib import Path

from train_builders import random_token_store

# A two-budget IsoFLOP grid of 1-layer models with odd widths; each run is a few seconds of training.
TINY_GRID = """
name = "tiny"
data = "{data}"
seed = 1
[grid]
kind = "isoflop"
budgets = [{budgets}]
widths = [{widths}]
min_steps = 4
[train]
batch_size = 4
seq_len = 24
lr = 3e-3
warmup_steps = 2
log_every = 3
eval_every = 12
checkpoint_every = 12
steps_per_dispatch = 3
eval_tokens = 300
[resources]
cpus_per_run = 1
max_retries = 3
"""


def tiny_store(path: Path) -> Path:
    return random_token_store(path, n_codes=37, patients={"train": 61, "tuning": 9})


def write_grid(path: Path, data: Path, budgets=(2e8, 4e8), widths=(16, 24), extra: str = "", **replace) -> Path:
    text = TINY_GRID.format(data=data, budgets=", ".join(f"{b:g}" for b in budgets),
                            widths=", ".join(str(w) for w in widths))
    for old, new in replace.items():
        text = text.replace(old, new)
    path.write_text(text + extra)
    return path
