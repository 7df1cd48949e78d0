"""Grid expansion: a Grid -> the runs it trains, each a complete run config with a deterministic id.

- Sizes are target parameter counts (`sizes`, the models.ladder shape of each) or d_model values
  (`widths`, the family defaults for the rest; predictable shapes for tiny models). The grid's [model]
  aspect_ratio and min_layers choose the family both use (models.ladder); they are not run-config fields.
- isoflop: for each budget C and size, the shape of that size and
  D = C / flops_per_token(shape) tokens (flops_per_token = 6N, or the detailed count). With
  `sizes_per_budget = k`, each budget takes k sizes around the guessed optimum N_opt = sqrt(C / (6 r)),
  r = tokens_per_param: the k of the grid's sizes or widths nearest it (in log N), or without those,
  k ladder sizes log-spaced over `span`. Sizes too big for a budget (fewer than grid.min_steps steps) are dropped
  with a warning; a budget too small for its smallest shape is an error.
- params_x_tokens: every size x every token count.
- wsd_branches (Hägele et al. 2024): per size, one warmup-stable run (constant lr) cut into segments
  that end where each branch starts its cooldown; each branch resumes from its segment's last
  checkpoint and decays the lr to 0 over the last cooldown_fraction of its steps. Batches are a function
  of (seed, step) and the warmup is fixed, so a branch trains exactly as a standalone wsd run would.

D is rounded to whole optimizer steps of batch_size x seq_len tokens; the runs' tokens, C and tokens per
parameter are those of the rounded step count. With `seeds = [...]` every run above is planned once per
seed (parameter init and data order differ; everything else is the same run), so the fits see the
run-to-run noise. With `grid.unique_tokens = [...]` every run above is also planned once per value, as
its `train.unique_tokens`: a nested subset of the train patients (scaling.data.token_store.train_subset),
so a grid crosses model size x tokens x unique data. Runs without the axis keep their ids. Each run's
`unique_tokens` is the tokens of its subset (every train token without one), `epochs` = tokens / that.
With `grid.lrs = [...]` and/or `grid.batch_sizes = [...]` the whole expansion is repeated for every
(lr, batch size) pair, as the runs' train.lr and train.batch_size: a hyperparameter side sweep (an isoflop
grid with sizes_per_budget = 1 trains one guessed-optimal size per budget at every pair). Steps follow each
batch size, so D stays C / 6N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from analysis.hyperparameter_laws import HyperparameterLaws, fit_hyperparameter_laws
from analysis.results_table import NotEnoughData, load_results
from models.accounting import count_params, flops_per_token
from models.config import ModelShape
from models.ladder import family_shape, shape_for_params
from scaling.common.errors import InputError
from scaling.data.token_store import TokenStore, TrainSubset, train_subset
from scaling.train.config import parse_run_config
from sweeps.grid import FAMILY_KEYS, LAW, Grid
from sweeps.run_store import data_identity, make_run_id

ROLES = ("run", "stable", "branch")  # stable segments of wsd_branches are not result rows


@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    role: str  # run | stable | branch
    size: float  # the grid's target parameter count
    shape: ModelShape
    params: int  # N: all parameters, embeddings included
    params_nonembed: int
    steps: int
    tokens: int  # D = steps x batch_size x seq_len
    flops: float  # C by the grid's method (6N by default)
    flops_6n: float
    flops_detailed: float
    config: dict  # a run config (scaling.train.config), data as an absolute path
    budget: float | None = None  # the nominal IsoFLOP budget
    parent: str | None = None  # wsd_branches: the run whose last checkpoint this one starts from
    parent_step: int | None = None
    unique_tokens: int | None = None  # train tokens it draws from (its subset's); without a store: as asked

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.params

    @property
    def epochs(self) -> float | None:
        """Passes over its unique tokens: tokens / unique_tokens (None when not known)."""
        return self.tokens / self.unique_tokens if self.unique_tokens else None

    @property
    def is_result(self) -> bool:
        return self.role != "stable"


@dataclass(frozen=True)
class Expansion:
    grid: Grid
    vocab_size: int
    runs: tuple[PlannedRun, ...]
    warnings: tuple[str, ...] = field(default=())
    train_tokens: int | None = None  # tokens in the store's train split (None without a store)

    def by_id(self) -> dict[str, PlannedRun]:
        return {run.run_id: run for run in self.runs}


def grid_vocab_size(grid: Grid) -> tuple[int, TokenStore | None]:
    """The vocabulary the shapes are built for: [model].vocab_size, else the token store's."""
    store = None
    if (store_path := _store_path(grid)) is not None:
        store = TokenStore.open(store_path)
    if "vocab_size" in grid.model:
        vocab = grid.model["vocab_size"]
        if not isinstance(vocab, int) or isinstance(vocab, bool) or vocab < 2:
            raise InputError(f"{grid.source}: model.vocab_size = {vocab!r} is not an integer of 2 or more")
        if store is not None and vocab < store.vocab.size:
            raise InputError(f"{grid.source}: model.vocab_size = {vocab} is smaller than the token store's "
                             f"vocabulary ({store.vocab.size} tokens in {grid.data})")
        return vocab, store
    if store is None:
        raise InputError(f"{grid.source}: data = '{grid.data}' is not a token store (no vocab.json there) and "
                         "[model] gives no vocab_size; make the store (`scaling data tokenize`), pass --data, "
                         "or set model.vocab_size to plan without data")
    return store.vocab.size, store


def _store_path(grid: Grid):
    path = Path(grid.data)
    return path if (path / "vocab.json").is_file() else None


def expand_grid(grid: Grid) -> Expansion:
    """Every run of the grid, validated (see the module docstring)."""
    vocab_size, store = grid_vocab_size(grid)
    identity = data_identity(grid.data)
    has_train = store is not None and "train" in store.split_names
    subsets = unique_data_subsets(grid, store if has_train else None)
    expand_kind = {"isoflop": _isoflop, "params_x_tokens": _params_x_tokens, "wsd_branches": _wsd_branches}
    runs, warnings = [], []
    laws = learning_rate_law(grid)
    for variant in hyperparameter_variants(grid):
        for seed in grid.replicate_seeds:
            for unique, subset in subsets:
                builder = _Builder(variant, vocab_size, identity, seed, unique, subset, laws)
                runs += expand_kind[grid.axes.kind](variant, builder)
                warnings += builder.warnings
    _check_duplicates(grid, runs)
    train_tokens = store.split("train").n_tokens if has_train else None
    warnings = list(dict.fromkeys(warnings))  # each seed's expansion warns alike
    # A grid that limits unique data repeats it on purpose; the plan's epochs column shows how often.
    if train_tokens and not grid.axes.unique_tokens and "unique_tokens" not in grid.train:
        most = max(run.tokens for run in runs)
        if most > train_tokens:
            warnings.append(f"the longest run trains on {most:,} tokens, {most / train_tokens:.1f}x the "
                            f"{train_tokens:,} tokens of the train split (repeated data flattens the law)")
    return Expansion(grid, vocab_size, tuple(runs), tuple(warnings), train_tokens)


def learning_rate_law(grid: Grid) -> HyperparameterLaws | None:
    """The side sweep's laws when train.lr = "law" (grid.hyperparameters), else None."""
    if grid.train.get("lr") != LAW:
        return None
    try:
        return fit_hyperparameter_laws(load_results(grid.hyperparameters))
    except (NotEnoughData, InputError) as e:
        raise InputError(f"{grid.source}: hyperparameters = {grid.hyperparameters}: {e}") from None


def hyperparameter_variants(grid: Grid) -> list[Grid]:
    """The grid once per (lr, batch size) of its grid.lrs x grid.batch_sizes axes (the grid itself without them)."""
    lrs = grid.axes.lrs or (None,)
    batch_sizes = grid.axes.batch_sizes or (None,)
    variants = []
    for lr in lrs:
        for batch_size in batch_sizes:
            train = dict(grid.train)
            if lr is not None:
                train["lr"] = lr
            if batch_size is not None:
                train["batch_size"] = batch_size
            variants.append(replace(grid, train=train))
    return variants


def unique_data_subsets(grid: Grid, store: TokenStore | None) -> list[tuple[float | None, TrainSubset | None]]:
    """(train.unique_tokens to set on each run or None, its subset of the store or None without a store),
    one per value of grid.unique_tokens (smallest first), else one for the grid's [train] setting. Errors
    name the grid field: a count larger than the train split, a subset shorter than one window, two values
    that select the same patients (duplicate runs)."""
    window = grid.seq_len + 1
    if not grid.axes.unique_tokens:
        shared = grid.train.get("unique_tokens")
        if store is None:
            return [(None, None)]
        if not isinstance(shared, (int, float)) or isinstance(shared, bool):
            shared = None  # left out; or a bad type, refused per run (scaling.train.config)
        return [(None, train_subset(store, None if shared is None else float(shared), window, source=grid.source))]
    out = []
    for i, unique in sorted(enumerate(grid.axes.unique_tokens), key=lambda x: x[1]):
        subset = None if store is None else train_subset(store, unique, window, field=f"grid.unique_tokens[{i}]",
                                                         source=grid.source)
        if out and subset is not None and subset.n_patients == out[-1][1].n_patients:
            raise InputError(f"{grid.source}: grid.unique_tokens values {out[-1][0]:g} and {unique:g} select the "
                             f"same {subset.n_patients:,} train patients ({subset.tokens:,} tokens): duplicate runs; "
                             "remove one or spread the values")
        out.append((unique, subset))
    return out


class _Builder:
    """Turns (size, steps, schedule) into a PlannedRun with a validated run config."""

    def __init__(self, grid: Grid, vocab_size: int, identity: str, seed: int, unique: float | None = None,
                 subset: TrainSubset | None = None, laws: HyperparameterLaws | None = None):
        self.grid, self.vocab_size, self.identity, self.seed = grid, vocab_size, identity, seed
        self.unique, self.subset = unique, subset  # the axis value (None: no axis), its subset (None: no store)
        self.laws = laws  # train.lr = "law": the side sweep's lr_opt(C)
        self.max_seq_len = grid.model.get("max_seq_len") or grid.seq_len
        self.warnings: list[str] = []

    @property
    def family(self) -> dict:
        """The ladder's family settings the grid gives (aspect_ratio, min_layers)."""
        return {k: self.grid.model[k] for k in FAMILY_KEYS if k in self.grid.model}

    def shape(self, size: float) -> ModelShape:
        return shape_for_params(float(size), self.vocab_size, int(self.max_seq_len),
                                tied_embeddings=bool(self.grid.model.get("tied_embeddings", False)), **self.family)

    def shapes(self, sizes: list[float] | None = None) -> list[tuple[float, ModelShape]]:
        """(size, shape) of the grid's sizes or widths, smallest first; `size` is the target count, or for
        a width the shape's own count."""
        if sizes is None and self.grid.axes.widths:
            out = []
            for width in self.grid.axes.widths:
                shape = family_shape(width, self.vocab_size, int(self.max_seq_len),
                                     tied_embeddings=bool(self.grid.model.get("tied_embeddings", False)),
                                     **self.family)
                out.append((float(count_params(shape)["total"]), shape))
            return sorted(out, key=lambda x: x[0])
        return [(float(s), self.shape(s)) for s in sorted(sizes if sizes is not None else self.grid.axes.sizes)]

    def flops_per_token(self, shape: ModelShape, method: str | None = None) -> float:
        return flops_per_token(shape, self.grid.seq_len, method or self.grid.axes.flops)

    def steps_for(self, tokens: float) -> int:
        return max(1, round(tokens / self.grid.tokens_per_step))

    def run(self, role: str, size: float, shape: ModelShape, steps: int, *, budget=None, parent=None, parent_step=None,
            train_extra: dict | None = None, what: str = "") -> PlannedRun:
        grid = self.grid
        model = {k: getattr(shape, k) for k in ("d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff")}
        model.update({k: v for k, v in grid.model.items() if k not in FAMILY_KEYS})
        train = {**grid.train, **(train_extra or {}), "steps": int(steps)}
        tokens = steps * grid.tokens_per_step
        if self.laws is not None:  # lr_opt at the run's budget (its own compute outside an isoflop grid)
            compute = budget if budget is not None else self.flops_per_token(shape) * tokens
            train["lr"] = self.laws.lr(compute)
            largest = max(o["budget"] for o in self.laws.optima)
            if compute > 30 * largest:
                self.warnings.append(f"train.lr = \"law\": some runs read the side sweep's law more than 30x past "
                                     f"its largest budget ({largest:.3g} FLOPs)")
        if self.unique is not None:
            train["unique_tokens"] = self.unique
            what = f"{what or f'size {size:g}'}, unique tokens {self.unique:.3g}"
        config = {"data": grid.data, "seed": self.seed, "model": model, "train": train}
        try:
            parsed = parse_run_config(config, source=grid.source)
        except InputError as e:
            raise InputError(f"{e} (in the run for {what or f'size {size:g}'})") from None
        unique_tokens = self.subset.tokens if self.subset is not None else parsed.train.unique_tokens
        counts = count_params(shape)
        run_id = make_run_id(config, self.identity, counts["total"], tokens, parent, parent_step)
        return PlannedRun(
            run_id=run_id, role=role, size=float(size), shape=shape, params=counts["total"],
            params_nonembed=counts["non_embedding"], steps=int(steps), tokens=tokens,
            flops=self.flops_per_token(shape) * tokens, flops_6n=self.flops_per_token(shape, "6N") * tokens,
            flops_detailed=self.flops_per_token(shape, "detailed") * tokens, config=config, budget=budget,
            parent=parent, parent_step=parent_step,
            unique_tokens=None if unique_tokens is None else int(math.ceil(unique_tokens)),
        )


def guessed_optimum(grid: Grid, budget: float) -> float:
    """N_opt = sqrt(C / (6 r)) for the grid's tokens-per-parameter guess r."""
    return math.sqrt(budget / (6.0 * grid.axes.tokens_per_param))


def isoflop_shapes(grid: Grid, b: _Builder, budget: float) -> list[tuple[float, ModelShape]]:
    """(size, shape) of one budget's runs, smallest first (see the module docstring)."""
    axes = grid.axes
    if axes.sizes_per_budget is None:
        return b.shapes()
    optimum = guessed_optimum(grid, budget)
    if not axes.sizes and not axes.widths:
        if axes.sizes_per_budget == 1:
            return b.shapes([optimum])
        half = math.sqrt(axes.span)
        return b.shapes([float(s) for s in np.geomspace(optimum / half, optimum * half, axes.sizes_per_budget)])
    candidates = b.shapes()
    nearest = sorted(candidates, key=lambda c: abs(math.log(count_params(c[1])["total"] / optimum)))
    return sorted(nearest[: axes.sizes_per_budget], key=lambda c: c[0])


def _isoflop(grid: Grid, b: _Builder) -> list[PlannedRun]:
    runs = []
    for i, budget in enumerate(grid.axes.budgets):
        kept = 0
        for j, (size, shape) in enumerate(isoflop_shapes(grid, b, budget)):
            tokens = budget / b.flops_per_token(shape)
            steps = round(tokens / grid.tokens_per_step)
            if steps < grid.axes.min_steps:
                if j == 0:
                    n = count_params(shape)["total"]
                    raise InputError(
                        f"{grid.source}: grid.budgets[{i}] = {budget:.3g} is too small for the smallest shape "
                        f"(size {size:,.0f} -> N = {n:,}): D = C / {grid.axes.flops} = {tokens:,.0f} tokens is "
                        f"{steps} steps of {grid.tokens_per_step:,} tokens, fewer than grid.min_steps = "
                        f"{grid.axes.min_steps}; raise the budget or add a smaller size")
                b.warnings.append(f"budget {budget:.3g}: size {size:,.0f} dropped (only {steps} steps, fewer than "
                                  f"grid.min_steps = {grid.axes.min_steps})")
                continue
            kept += 1
            runs.append(b.run("run", size, shape, steps, budget=budget, what=f"budget {budget:.3g}, size {size:,.0f}"))
        if kept < 3 and not (grid.axes.sizes_per_budget == 1 and (grid.axes.lrs or grid.axes.batch_sizes)):
            b.warnings.append(f"budget {budget:.3g} has {kept} runs; an IsoFLOP parabola needs 3 or more")
    return runs


def _params_x_tokens(grid: Grid, b: _Builder) -> list[PlannedRun]:
    runs = []
    for tokens in sorted(grid.axes.tokens):
        steps = round(tokens / grid.tokens_per_step)
        if steps < grid.axes.min_steps:
            raise InputError(f"{grid.source}: grid.tokens value {tokens:.3g} is {steps} steps of "
                             f"{grid.tokens_per_step:,} tokens, fewer than grid.min_steps = {grid.axes.min_steps}")
        for size, shape in b.shapes():
            runs.append(b.run("run", size, shape, steps, what=f"size {size:,.0f}, tokens {tokens:.3g}"))
    return runs


def _wsd_branches(grid: Grid, b: _Builder) -> list[PlannedRun]:
    axes = grid.axes
    branch_steps = sorted({max(1, round(t / grid.tokens_per_step)) for t in axes.tokens})
    if len(branch_steps) < len(axes.tokens):
        raise InputError(f"{grid.source}: grid.tokens {list(axes.tokens)} give the same step count twice "
                         f"at {grid.tokens_per_step:,} tokens per step (duplicate runs)")
    if branch_steps[0] < axes.min_steps:
        raise InputError(f"{grid.source}: the smallest grid.tokens value is {branch_steps[0]} steps, fewer than "
                         f"grid.min_steps = {axes.min_steps}")
    # As scaling.train.step.learning_rate_schedule: a wsd run of S steps cools down over its last
    # max(1, round(f S)) steps; before that it is exactly the constant-lr run.
    starts = [s - max(1, round(axes.cooldown_fraction * s)) for s in branch_steps]
    if len(set(starts)) < len(starts):
        raise InputError(f"{grid.source}: two branches start their cooldown at the same step; spread grid.tokens")
    warmup = grid.train.get("warmup_steps", min(50, branch_steps[0] // 10))
    if not starts[0] > warmup:
        raise InputError(f"{grid.source}: the first branch starts its cooldown at step {starts[0]}, not after the "
                         f"{warmup} warmup steps; raise the smallest grid.tokens or lower train.warmup_steps")
    runs = []
    for size, shape in b.shapes():
        parent, parent_step = None, None
        for steps, start in zip(branch_steps, starts):
            stable = b.run("stable", size, shape, start, parent=parent, parent_step=parent_step,
                           train_extra={"schedule": "constant", "warmup_steps": warmup},
                           what=f"size {size:,.0f}, stable phase to step {start}")
            branch = b.run("branch", size, shape, steps, parent=stable.run_id, parent_step=start,
                           train_extra={"schedule": "wsd", "warmup_steps": warmup,
                                        "cooldown_fraction": axes.cooldown_fraction},
                           what=f"size {size:,.0f}, branch of {steps} steps")
            runs += [stable, branch]
            parent, parent_step = stable.run_id, start
    return runs


def _check_duplicates(grid: Grid, runs: list[PlannedRun]) -> None:
    seen: dict[str, PlannedRun] = {}
    for run in runs:
        if run.run_id in seen:
            first = seen[run.run_id]
            raise InputError(
                f"{grid.source}: duplicate runs: size {first.size:,.0f} (budget {first.budget or '-'}) and size "
                f"{run.size:,.0f} (budget {run.budget or '-'}) are the same run (shape d_model={run.shape.d_model} "
                f"n_layers={run.shape.n_layers}, {run.steps} steps); remove one")
        seen[run.run_id] = run
