"""Small random token stores and run configs for the model and trainer tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scaling.data.token_store import write_token_store
from scaling.data.vocab import EOS, PAD, Vocabulary


def random_token_store(path: Path, n_codes: int = 97, patients: dict | None = None, seed: int = 0) -> Path:
    """A token store of [PAD], [EOS] and `n_codes` code tokens; random patients, each ending with [EOS].

    Tokens follow a simple Markov pattern (next = previous + 1 or + 2, mod n_codes) so that a model can
    learn something and losses fall.
    """
    rng = np.random.default_rng(seed)
    tokens = [PAD, EOS] + [f"CODE//{i}" for i in range(n_codes)]
    vocab = Vocabulary(
        tokens=tokens,
        categories=["special", "special"] + ["diagnosis"] * n_codes,
        kinds=["special", "special"] + ["code"] * n_codes,
        texts=["", ""] + [f"CODE//{i}" for i in range(n_codes)],
    )
    splits = {}
    for split, n_patients in (patients or {"train": 41, "tuning": 7}).items():
        seqs = []
        for _ in range(n_patients):
            length = int(rng.integers(20, 120))
            steps = rng.integers(1, 3, size=length)
            codes = (int(rng.integers(0, n_codes)) + np.cumsum(steps)) % n_codes
            seqs.append(np.concatenate([codes + 2, [vocab.eos_id]]))
        offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])])
        splits[split] = (np.concatenate(seqs), offsets, np.arange(n_patients))
    write_token_store(Path(path), vocab, splits, stats={}, settings={})
    return Path(path)


def tiny_run_config(data: Path, **train) -> dict:
    """A run config dict for a 2-layer model with odd sizes that trains in seconds on CPU."""
    train_section = {
        "steps": 12, "batch_size": 4, "seq_len": 24, "lr": 3e-3, "warmup_steps": 2, "eval_every": 6,
        "checkpoint_every": 6, "log_every": 3, "steps_per_dispatch": 3, "eval_tokens": 500,
    }
    train_section.update(train)
    return {
        "data": str(data),
        "seed": 3,
        "model": {"d_model": 40, "n_layers": 2, "n_heads": 5, "n_kv_heads": 1, "d_ff": 56},
        "train": train_section,
    }


def write_toml(path: Path, config: dict) -> None:
    """A run config dict (tiny_run_config) as the TOML file `scaling train` reads."""
    lines = [f'data = "{config["data"]}"', f"seed = {config['seed']}", "[model]"]
    lines += [f"{k} = {v}" for k, v in config["model"].items()]
    lines += ["[train]"] + [f"{k} = {v}" for k, v in config["train"].items()]
    path.write_text("\n".join(lines) + "\n")
