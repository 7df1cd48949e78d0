"""The run config: one training run as a TOML file, parsed and validated before anything runs.

    data = "path/to/token_store"     # a token store made by `scaling data tokenize`
    seed = 0                         # parameter init and data order
    [model]                          # omitted fields take the family defaults (models.ladder)
    d_model = 64                     # or: params = 1e6 (a ladder shape of about that many parameters)
    n_layers = 2
    n_heads = 4
    [train]
    steps = 1000                     # or: tokens = 2e7
    batch_size = 16
    seq_len = 128
    lr = 3e-3
    schedule = "cosine"              # cosine | wsd | constant
    warmup_steps = 50
    eval_every = 100
    checkpoint_every = 200
    # unique_tokens = 7e6            # optional: train on a nested subset of the train patients (below)
    # short_seq_len = 32             # optional: a shorter context for the first steps (below)
    # short_seq_fraction = 0.75

`train.unique_tokens = U` limits the windows to the shortest prefix, in a fixed seed-independent order
of the train patients, whose tokens reach U (scaling.data.token_store.TokenSplit.nested_subset): runs
with different U see nested subsets, and a run of D tokens repeats its data D / U' times (U' the
subset's tokens). Validation is unchanged. Left out, a run draws from every train token.

`train.short_seq_len = S` with `train.short_seq_fraction = f` (sequence-length warmup, as Li et al. 2022 and
long-context LLM recipes do): the first round(f x steps) steps train on batch_size x seq_len / S windows of S
tokens, the rest on batch_size windows of seq_len, so every step has the same tokens and only the context
changes. Many short windows early give the small runs of a sweep the low-noise steps of a short context; the
last steps teach the model the whole context. Validation is always at seq_len. The model is the same at both
lengths (rotary positions, no table of positions).

Every key is checked: an unknown key, a wrong type or an impossible value is an InputError naming the
file and the field ("config.toml: unknown key 'train.lrr'").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from models.config import ModelShape
from models.ladder import family_shape, shape_for_params
from scaling.common.errors import InputError
from scaling.common.toml_config import read_toml, refuse_unknown, require, resolve_data_path, table_of, typed

SCHEDULES = ("cosine", "wsd", "constant")
DTYPES = ("float32", "bfloat16")
ATTENTION_IMPLS = ("auto", "xla", "cudnn")
WINDOW_MODES = ("packed", "patient")


@dataclass(frozen=True)
class ModelSection:
    """The [model] table as written; `shape(vocab_size)` fills in the rest."""

    params: float | None = None  # target total parameters: take the ladder shape (models.ladder)
    d_model: int | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    n_kv_heads: int | None = None
    d_ff: int | None = None
    vocab_size: int | None = None  # default: the token store's vocabulary; may be larger (padding)
    max_seq_len: int | None = None  # default: train.seq_len
    tied_embeddings: bool = False
    parametrization: str = "standard"  # standard | mup (models.parametrization)
    mup_base_d_model: int | None = None  # muP: the width the settings were tuned at

    def shape(self, vocab_size: int, seq_len: int) -> ModelShape:
        vocab = self.vocab_size or vocab_size
        max_seq_len = self.max_seq_len or seq_len
        if self.params is not None:
            shape = shape_for_params(self.params, vocab, max_seq_len, tied_embeddings=self.tied_embeddings)
        else:
            shape = family_shape(
                self.d_model, vocab, max_seq_len, n_layers=self.n_layers, n_heads=self.n_heads,
                n_kv_heads=self.n_kv_heads, d_ff=self.d_ff, tied_embeddings=self.tied_embeddings,
            )
        return replace(shape, parametrization=self.parametrization, mup_base_d_model=self.mup_base_d_model)


@dataclass(frozen=True)
class TrainSection:
    steps: int | None = None  # optimizer steps; or give tokens
    tokens: float | None = None  # tokens to train on: steps = ceil(tokens / (batch_size * seq_len))
    batch_size: int = 16  # windows per step, over all devices
    seq_len: int = 128  # tokens per window (context length)
    lr: float = 3e-3  # peak learning rate
    schedule: str = "cosine"  # cosine (to min_lr_ratio of peak) | wsd | constant, after linear warmup
    warmup_steps: int | None = None  # default: min(50, steps // 10)
    cooldown_fraction: float = 0.2  # wsd: the last fraction of steps decays linearly to 0
    min_lr_ratio: float = 0.1  # cosine: final lr / peak lr
    weight_decay: float = 0.1  # AdamW, on matrices only
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # clip the global gradient norm (0: off)
    eval_every: int = 100  # validation loss on the tuning split every this many steps and at the end
    eval_tokens: int = 65_536  # about this many tuning tokens per validation
    checkpoint_every: int = 200
    keep_checkpoints: int = 3  # the last few checkpoints kept
    log_every: int = 10  # one metrics.parquet row every this many steps
    steps_per_dispatch: int = 10  # optimizer steps per compiled call (jax.lax.scan; see trainer.steps_per_chunk)
    window_mode: str = "packed"  # packed | patient (scaling.train.batches)
    dtype: str = "float32"  # compute dtype: float32 | bfloat16 (parameters stay float32)
    attention: str = "auto"  # auto (cudnn on GPU in bfloat16, else xla) | xla | cudnn
    unique_tokens: float | None = None  # draw from a nested subset of train patients of about this many tokens
    short_seq_len: int | None = None  # the context of the first short_seq_fraction of steps (same tokens per step)
    short_seq_fraction: float = 0.0  # the fraction of steps at short_seq_len


@dataclass(frozen=True)
class RunConfig:
    data: str  # token store directory
    seed: int = 0
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)

    @property
    def total_steps(self) -> int:
        t = self.train
        if t.steps is not None:
            return t.steps
        return math.ceil(t.tokens / (t.batch_size * t.seq_len))

    @property
    def warmup_steps(self) -> int:
        if self.train.warmup_steps is not None:
            return self.train.warmup_steps
        return min(50, self.total_steps // 10)

    @property
    def tokens_per_step(self) -> int:
        return self.train.batch_size * self.train.seq_len

    @property
    def short_steps(self) -> int:
        """The steps at train.short_seq_len, from the first (0 without a short context); the last step is
        always at seq_len."""
        if self.train.short_seq_len is None:
            return 0
        return min(round(self.train.short_seq_fraction * self.total_steps), self.total_steps - 1)

    def windows_at(self, step: int) -> tuple[int, int]:
        """(windows, tokens per window) of the batch of optimizer step `step` (0-based)."""
        t = self.train
        if step < self.short_steps:
            return t.batch_size * t.seq_len // t.short_seq_len, t.short_seq_len
        return t.batch_size, t.seq_len

    def shape(self, vocab_size: int) -> ModelShape:
        return self.model.shape(vocab_size, self.train.seq_len)

    def to_dict(self) -> dict:
        """The config as a dict; optional fields added later (train.unique_tokens, train.short_seq_len) only
        when set, so the record of a run that leaves them out is the one earlier versions wrote (resume
        compares it)."""
        out = asdict(self)
        if out["train"]["unique_tokens"] is None:
            del out["train"]["unique_tokens"]
        if out["train"]["short_seq_len"] is None and out["train"]["short_seq_fraction"] == 0.0:
            del out["train"]["short_seq_len"], out["train"]["short_seq_fraction"]
        if out["model"]["parametrization"] == "standard" and out["model"]["mup_base_d_model"] is None:
            del out["model"]["parametrization"], out["model"]["mup_base_d_model"]
        return out


def load_run_config(path: str | Path) -> RunConfig:
    """Read and validate a run config TOML file."""
    path = Path(path)
    raw = read_toml(path, "run config file")
    resolve_data_path(raw, path)
    return parse_run_config(raw, source=str(path))


def parse_run_config(raw: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a run config given as a dict (the TOML tables; also what config.json's "config" holds)."""
    raw = dict(raw)
    refuse_unknown(source, raw, {"data", "seed", "model", "train"})
    data = _typed(source, "data", require(source, raw, "data", what="the token store directory"), str)
    seed = _typed(source, "seed", raw.get("seed", 0), int)
    model = _section(source, "model", raw.get("model", {}), ModelSection)
    train = _section(source, "train", raw.get("train", {}), TrainSection)
    config = RunConfig(data=data, seed=seed, model=model, train=train)
    _validate(source, config)
    return config


_TYPES = {
    "params": float, "d_model": int, "n_layers": int, "n_heads": int, "n_kv_heads": int, "d_ff": int,
    "vocab_size": int, "max_seq_len": int, "tied_embeddings": bool, "steps": int, "tokens": float,
    "batch_size": int, "seq_len": int, "lr": float, "schedule": str, "warmup_steps": int,
    "cooldown_fraction": float, "min_lr_ratio": float, "weight_decay": float, "beta1": float,
    "beta2": float, "grad_clip": float, "eval_every": int, "eval_tokens": int, "checkpoint_every": int,
    "keep_checkpoints": int, "log_every": int, "steps_per_dispatch": int, "window_mode": str,
    "dtype": str, "attention": str, "unique_tokens": float, "parametrization": str, "mup_base_d_model": int,
    "short_seq_len": int, "short_seq_fraction": float,
}


def _typed(source: str, name: str, value: Any, kind: type) -> Any:
    return typed(source, name, value, kind, whole_floats=name.split(".")[-1] in ("tokens", "eval_tokens"))


def _section(source: str, name: str, table: Any, cls: type) -> Any:
    table = table_of(source, name, table)
    refuse_unknown(source, table, {f.name for f in fields(cls)}, prefix=f"{name}.")
    values = {key: _typed(source, f"{name}.{key}", value, _TYPES[key]) for key, value in table.items()}
    return cls(**values)


def _validate(source: str, c: RunConfig) -> None:
    m, t = c.model, c.train

    def fail(message: str):
        raise InputError(f"{source}: {message}")

    if c.seed < 0:
        fail(f"seed = {c.seed} is negative; seeds are 0 or more")
    if (t.steps is None) == (t.tokens is None):
        fail("give exactly one of train.steps or train.tokens")
    positive = ["batch_size", "seq_len", "eval_every", "eval_tokens", "checkpoint_every", "keep_checkpoints",
                "log_every", "steps_per_dispatch"] + (["steps"] if t.steps is not None else ["tokens"])
    for name in positive:
        if not getattr(t, name) > 0:
            fail(f"train.{name} = {getattr(t, name)!r} must be positive")
    for name in ("lr",):
        if not getattr(t, name) > 0:
            fail(f"train.{name} = {getattr(t, name)!r} must be positive")
    for name in ("cooldown_fraction", "min_lr_ratio", "beta1", "beta2"):
        if not 0 <= getattr(t, name) <= 1:
            fail(f"train.{name} = {getattr(t, name)!r} must be between 0 and 1")
    for name in ("weight_decay", "grad_clip"):
        if getattr(t, name) < 0:
            fail(f"train.{name} = {getattr(t, name)!r} must be 0 or more")
    for name, allowed in (("schedule", SCHEDULES), ("dtype", DTYPES), ("attention", ATTENTION_IMPLS),
                          ("window_mode", WINDOW_MODES)):
        if getattr(t, name) not in allowed:
            fail(f"train.{name} = {getattr(t, name)!r} is not one of {list(allowed)}")
    if t.unique_tokens is not None and not (math.isfinite(t.unique_tokens) and t.unique_tokens > 0):
        fail(f"train.unique_tokens = {t.unique_tokens!r} must be a positive, finite number of tokens "
             "(leave it out to train on every train token)")
    _validate_short_context(fail, c)
    for section_name, section in (("model", m), ("train", t)):
        for f in fields(section):
            value = getattr(section, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                fail(f"{section_name}.{f.name} = {value!r} is not a finite number")
    if t.warmup_steps is not None and not 0 <= t.warmup_steps < c.total_steps:
        fail(f"train.warmup_steps = {t.warmup_steps} must be 0 or more and less than the "
             f"{c.total_steps} training steps")
    if m.params is None and m.d_model is None:
        fail("[model] needs d_model (the other fields have family defaults) or params (a ladder size)")
    if m.params is not None:
        extra = [f.name for f in fields(m) if f.name in ("d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff")
                 and getattr(m, f.name) is not None]
        if extra:
            fail(f"model.params picks the whole shape; leave out model.{extra[0]}")
        if not m.params > 0:
            fail(f"model.params = {m.params!r} must be positive")
    if m.max_seq_len is not None and m.max_seq_len < t.seq_len:
        fail(f"model.max_seq_len = {m.max_seq_len} is less than train.seq_len = {t.seq_len}")
    try:
        # The vocabulary comes from the token store later; a stand-in checks the rest of the shape now.
        c.shape(vocab_size=m.vocab_size or 2)
    except InputError as e:
        fail(str(e))


def _validate_short_context(fail, c: RunConfig) -> None:
    t = c.train
    if t.short_seq_len is None:
        if t.short_seq_fraction != 0.0:
            fail(f"train.short_seq_fraction = {t.short_seq_fraction!r} needs train.short_seq_len (the short context)")
        return
    if not 0 < t.short_seq_len < t.seq_len or t.seq_len % t.short_seq_len:
        fail(f"train.short_seq_len = {t.short_seq_len} must be less than train.seq_len = {t.seq_len} and divide "
             "it (a step of the short context holds the same tokens in more windows)")
    if not 0 < t.short_seq_fraction < 1:
        fail(f"train.short_seq_fraction = {t.short_seq_fraction!r} must be between 0 and 1 (exclusive): the "
             "fraction of steps at train.short_seq_len")
