"""Sweep grids: a TOML file that says which runs a scaling study trains, parsed and validated.

    name = "quickstart"
    extends = "quickstart.toml"        # optional: start from that grid (path relative to this file); this
                                       # file's keys replace its keys, table by table ([train].seq_len alone
                                       # changes only seq_len); a base's choice of axis (widths, sizes) stays
    data = "runs/demo/tokens"          # token store (relative: to the current directory, else to this file)
    seed = 0                           # or: seeds = [0, 1, 2]  (every run replicated with each seed)
    [grid]
    kind = "isoflop"                   # isoflop | params_x_tokens | wsd_branches
    budgets = [1e11, 3e11, 1e12]       # isoflop: FLOPs per run (C = 6ND, or flops = "detailed")
    sizes = [20000, 40000, 80000]      # target total parameters (models.ladder picks each shape)
    # or: widths = [16, 32, 64]        (d_model; layers, heads, d_ff from the family defaults)
    # or: sizes_per_budget = 5, span = 8, tokens_per_param = 20  (log-spaced around the guessed optimum;
    #     with sizes or widths: the 5 of them nearest the guessed optimum, per budget)
    # params_x_tokens / wsd_branches: tokens = [1e6, 3e6]  (training tokens per run / per cooldown branch)
    # unique_tokens = [1e6, 3e6]      (any kind: every run once per value, on a nested subset of the train
    #                                   patients of about that many tokens; see train.unique_tokens)
    # lrs = [1e-3, 3e-3, 1e-2], batch_sizes = [8, 16, 32]  (any kind: every run once per value of each, as
    #                                   its train.lr / train.batch_size: a hyperparameter side sweep)
    [model]                            # vocab_size, max_seq_len, tied_embeddings (the ladder does the rest);
                                       # aspect_ratio = 8, min_layers = 2: the shape family (models.ladder);
                                       # parametrization = "mup", mup_base_d_model = 32 (models.parametrization)
    [train]                            # any run-config [train] field but steps/tokens (the grid sets them)
    [resources]
    cpus_per_run = 1
    gpus_per_run = 0

Every key is checked: an unknown key, a wrong type or an impossible value is an InputError naming the
file and field. `sweeps.expand` turns a Grid into runs (and raises on budgets too small for the smallest
shape and on duplicate runs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from models.accounting import FLOP_METHODS
from scaling.common.errors import InputError
from scaling.common.toml_config import read_toml, refuse_unknown, require, resolve_data_path, table_of, typed
from scaling.train.config import TrainSection

KINDS = ("isoflop", "params_x_tokens", "wsd_branches")
MODEL_KEYS = ("vocab_size", "max_seq_len", "tied_embeddings", "aspect_ratio", "min_layers", "parametrization",
              "mup_base_d_model")
# [model] keys that choose the shapes (models.ladder's family) rather than go into each run's config.
FAMILY_KEYS = ("aspect_ratio", "min_layers")
# [train] keys the grid decides itself, per kind.
GRID_OWNED_TRAIN_KEYS = {"steps", "tokens"}
LAW = "law"  # train.lr = "law": each run's lr from the side sweep's law at the run's compute
WSD_OWNED_TRAIN_KEYS = {"schedule", "cooldown_fraction"}


@dataclass(frozen=True)
class GridAxes:
    """The [grid] table."""

    kind: str
    budgets: tuple[float, ...] = ()  # isoflop: FLOPs per run
    sizes: tuple[float, ...] = ()  # target total parameter counts (models.ladder picks each shape)
    widths: tuple[int, ...] = ()  # or: d_model values, the other fields from the family defaults
    sizes_per_budget: int | None = None  # isoflop: per budget, this many sizes around the guessed optimum:
    # log-spaced over `span` (ladder shapes), or the nearest of the grid's sizes / widths
    span: float = 8.0  # largest / smallest of the log-spaced sizes
    tokens_per_param: float = 20.0  # ... the guess: N_opt = sqrt(C / (6 * tokens_per_param))
    tokens: tuple[float, ...] = ()  # params_x_tokens: tokens per run; wsd_branches: tokens per branch
    flops: str = "6N"  # how C turns into D: D = C / flops_per_token(shape, method)
    min_steps: int = 10  # a run with fewer optimizer steps is too small to say anything
    cooldown_fraction: float = 0.2  # wsd_branches: each branch decays the lr to 0 over this fraction
    unique_tokens: tuple[float, ...] = ()  # every run once per value, as its train.unique_tokens (nested subsets)
    lrs: tuple[float, ...] = ()  # every run once per value, as its train.lr (a learning-rate side sweep)
    batch_sizes: tuple[int, ...] = ()  # every run once per value, as its train.batch_size


@dataclass(frozen=True)
class Resources:
    """The [resources] table: what one run asks of the Ray cluster."""

    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    max_retries: int = 3  # re-runs of a run whose worker died (Ray max_retries); failures are not retried


@dataclass(frozen=True)
class Grid:
    name: str
    data: str  # token store directory (absolute once loaded)
    axes: GridAxes
    seed: int = 0
    seeds: tuple[int, ...] = ()  # replicate seeds (init and data order); empty: every run uses `seed` only
    model: dict = field(default_factory=dict)  # [model]: vocab_size, max_seq_len, tied_embeddings
    train: dict = field(default_factory=dict)  # [train] shared by every run (validated per run)
    resources: Resources = field(default_factory=Resources)
    description: str = ""
    source: str = "grid"  # the file it came from, for messages
    hyperparameters: str = ""  # a learning-rate side sweep's results: train.lr = "law" reads lr_opt(C) off them

    @property
    def replicate_seeds(self) -> tuple[int, ...]:
        """The seeds every run of the grid is trained with."""
        return self.seeds or (self.seed,)

    @property
    def seq_len(self) -> int:
        return int(self.train.get("seq_len", TrainSection.seq_len))

    @property
    def batch_size(self) -> int:
        return int(self.train.get("batch_size", TrainSection.batch_size))

    @property
    def tokens_per_step(self) -> int:
        return self.seq_len * self.batch_size


def load_grid(path: str | Path, data: str | Path | None = None) -> Grid:
    """Read and validate a grid file (and the grids it extends); `data` replaces the token store path."""
    path = Path(path)
    raw = _read_extended(path, ())
    bases = raw.pop(_BASES)
    if data is not None:
        raw["data"] = str(Path(data).absolute())
    # an error in a key the grid inherits names the files it may come from
    source = str(path) + (f" (extends {' -> '.join(str(b) for b in bases)})" if bases else "")
    return parse_grid(raw, source=source)


_BASES = "__bases__"  # the files a grid extends, nearest first, while they are merged


def _read_extended(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """The grid file's tables merged over those of the grid it `extends` (recursively); each file's relative
    paths resolved against its own directory. The files extended are listed under _BASES."""
    raw = read_toml(path, "grid file")
    resolve_data_path(raw, path)
    resolve_data_path(raw, path, "hyperparameters")
    base = raw.pop("extends", None)
    if base is None:
        return {**raw, _BASES: []}
    if not isinstance(base, str) or not base:
        raise InputError(f"{path}: extends = {base!r}; expected the path of another grid file")
    base_path, chain = (path.parent / base).resolve(), chain + (path.resolve(),)
    if base_path in chain:
        raise InputError(f"{path}: extends = {base!r} leads back to {base_path.name}; grids cannot extend in a circle")
    if not base_path.is_file():
        raise InputError(f"{path}: extends = {base!r}: no grid file at {base_path}")
    inherited = _read_extended(base_path, chain)
    return {**_merged(inherited, raw), _BASES: [path.parent / base, *inherited[_BASES]]}


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        both_tables = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = _merged(base[key], value) if both_tables else value
    return merged


def parse_grid(raw: dict[str, Any], source: str = "grid") -> Grid:
    """Validate a grid given as a dict (the TOML tables)."""
    top = {"name", "data", "seed", "seeds", "description", "grid", "model", "train", "resources", "hyperparameters"}
    _no_unknown(source, "", raw, top)
    for key in ("name", "data", "grid"):
        require(source, raw, key)
    name = _typed(source, "name", raw["name"], str)
    if not name or "/" in name or set(name) == {"."}:
        raise InputError(f"{source}: name = {name!r} must be a non-empty name without '/'")
    axes = _axes(source, _table(source, "grid", raw["grid"]))
    model = _table(source, "model", raw.get("model", {}))
    _no_unknown(source, "model.", model, set(MODEL_KEYS))
    _family(source, model)
    train = _train(source, _table(source, "train", raw.get("train", {})), axes.kind)
    for axis, key in (("unique_tokens", "unique_tokens"), ("lrs", "lr"), ("batch_sizes", "batch_size")):
        if getattr(axes, axis) and key in train:
            raise InputError(f"{source}: give grid.{axis} (an axis) or train.{key} (every run), not both")
    resources = _resources(source, _table(source, "resources", raw.get("resources", {})))
    seed, seeds = _seeds(source, raw)
    hyperparameters = _typed(source, "hyperparameters", raw.get("hyperparameters", ""), str)
    if train.get("lr") == LAW and not hyperparameters:
        raise InputError(f"{source}: train.lr = \"law\" needs hyperparameters = PATH at the top of the grid: "
                         "the results of a learning-rate side sweep (e.g. sweeps/grids/hyperparameters.toml)")
    if train.get("batch_size") == LAW:
        raise InputError(f"{source}: train.batch_size = \"law\": a grid's runs share one batch size (it sets their "
                         "steps); give a number, or cross grid.batch_sizes, or let `scaling final "
                         "--hyperparameters` set the final run's")
    return Grid(
        name=name, data=_typed(source, "data", raw["data"], str), axes=axes,
        seed=seed, seeds=seeds, model=dict(model), train=train,
        resources=resources, description=_typed(source, "description", raw.get("description", ""), str),
        source=source, hyperparameters=hyperparameters,
    )


def _family(source: str, model: dict) -> None:
    aspect = model.get("aspect_ratio")
    if aspect is not None and (isinstance(aspect, bool) or not isinstance(aspect, (int, float))
                               or not math.isfinite(aspect) or not 1 <= aspect <= 1024):
        raise InputError(f"{source}: model.aspect_ratio = {aspect!r}: expected d_model / n_layers, a number from 1 "
                         "to 1024")
    layers = model.get("min_layers")
    if layers is not None and (isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= 128):
        raise InputError(f"{source}: model.min_layers = {layers!r}: expected a whole number from 1 to 128")


def _seeds(source: str, raw: dict) -> tuple[int, tuple[int, ...]]:
    """(seed, seeds): `seed = 0` (one run per grid point) or `seeds = [0, 1, 2]` (replicates), not both."""
    if "seeds" not in raw:
        seed = _typed(source, "seed", raw.get("seed", 0), int)
        if seed < 0:
            raise InputError(f"{source}: seed = {seed} is negative; seeds are 0 or more")
        return seed, ()
    if "seed" in raw:
        raise InputError(f"{source}: give seed (one run per grid point) or seeds (replicates), not both")
    seeds = raw["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(x, int) and not isinstance(x, bool)
                                                            for x in seeds):
        raise InputError(f"{source}: seeds = {seeds!r} must be a non-empty list of integers")
    if min(seeds) < 0:
        raise InputError(f"{source}: seeds = {seeds} holds a negative seed; seeds are 0 or more")
    if len(set(seeds)) != len(seeds):
        raise InputError(f"{source}: seeds = {seeds} lists a seed twice; every value must be distinct")
    return seeds[0], tuple(seeds)


def _axes(source: str, table: dict) -> GridAxes:
    known = {f.name for f in fields(GridAxes)}
    _no_unknown(source, "grid.", table, known)
    if "kind" not in table:
        raise InputError(f"{source}: missing key 'grid.kind'; expected one of {list(KINDS)}")
    kind = _typed(source, "grid.kind", table["kind"], str)
    if kind not in KINDS:
        raise InputError(f"{source}: grid.kind = {kind!r} is not one of {list(KINDS)}")
    values: dict[str, Any] = {"kind": kind}
    for key in ("budgets", "sizes", "tokens", "unique_tokens", "lrs"):
        if key in table:
            values[key] = _positive_list(source, f"grid.{key}", table[key])
    for key, unit in (("batch_sizes", "of windows"), ("widths", "(d_model)")):
        if key in table:
            values[key] = _whole_list(source, key, table[key], unit)
    for key, kind_of in (("sizes_per_budget", int), ("min_steps", int), ("span", float),
                         ("tokens_per_param", float), ("cooldown_fraction", float), ("flops", str)):
        if key in table:
            values[key] = _typed(source, f"grid.{key}", table[key], kind_of)
    axes = GridAxes(**values)

    def fail(message: str):
        raise InputError(f"{source}: {message}")

    if axes.flops not in FLOP_METHODS:
        fail(f"grid.flops = {axes.flops!r} is not one of {list(FLOP_METHODS)}")
    if axes.min_steps < 1:
        fail(f"grid.min_steps = {axes.min_steps} must be at least 1")
    if kind == "isoflop":
        if not axes.budgets:
            fail("grid.kind = 'isoflop' needs grid.budgets (FLOPs per run)")
        if axes.tokens:
            fail("grid.tokens is for params_x_tokens and wsd_branches; an isoflop grid sets D = C / 6N")
        if axes.sizes and axes.widths:
            fail("give grid.sizes or grid.widths, not both")
        if not axes.sizes and not axes.widths and axes.sizes_per_budget is None:
            fail("grid.kind = 'isoflop' needs grid.sizes, grid.widths or grid.sizes_per_budget")
        candidates = len(axes.sizes or axes.widths)
        if axes.sizes_per_budget is not None and candidates and axes.sizes_per_budget > candidates:
            fail(f"grid.sizes_per_budget = {axes.sizes_per_budget} is more than the {candidates} sizes to pick from")
        if axes.sizes_per_budget is not None and axes.sizes_per_budget < 1:
            fail(f"grid.sizes_per_budget = {axes.sizes_per_budget} must be at least 1")
        if not axes.span > 1:
            fail(f"grid.span = {axes.span} must be greater than 1 (largest / smallest size)")
        if not axes.tokens_per_param > 0:
            fail(f"grid.tokens_per_param = {axes.tokens_per_param} must be positive")
    else:
        for key in ("budgets", "sizes_per_budget"):
            if key in table:
                fail(f"grid.{key} is for isoflop grids; grid.kind = {kind!r} takes grid.sizes and grid.tokens")
        if bool(axes.sizes) == bool(axes.widths) or not axes.tokens:
            fail(f"grid.kind = {kind!r} needs grid.tokens and one of grid.sizes or grid.widths")
    if kind == "wsd_branches" and not 0 < axes.cooldown_fraction < 1:
        fail(f"grid.cooldown_fraction = {axes.cooldown_fraction} must be between 0 and 1 (exclusive)")
    for key in ("unique_tokens", "lrs"):
        for i, value in enumerate(getattr(axes, key)):
            if not math.isfinite(value):
                fail(f"grid.{key}[{i}] = {value:g} must be a finite number")
    for key in ("budgets", "sizes", "widths", "tokens", "unique_tokens", "lrs", "batch_sizes"):
        values = getattr(axes, key)
        if len(set(values)) != len(values):
            dup = next(v for v in values if values.count(v) > 1)
            fail(f"grid.{key} lists {dup:g} twice; every value must be distinct (duplicate runs)")
    return axes


def _whole_list(source: str, key: str, value: Any, unit: str) -> tuple[int, ...]:
    numbers = _positive_list(source, f"grid.{key}", value)
    for i, x in enumerate(numbers):
        if not x.is_integer():
            raise InputError(f"{source}: grid.{key}[{i}] = {x:g} is not a whole number {unit}")
    return tuple(int(x) for x in numbers)


def _train(source: str, table: dict, kind: str) -> dict:
    known = {f.name for f in fields(TrainSection)}
    for key in table:
        if key in GRID_OWNED_TRAIN_KEYS:
            raise InputError(f"{source}: train.{key} is set per run by the grid (from its budgets, sizes and "
                             "tokens); leave it out")
        if kind == "wsd_branches" and key in WSD_OWNED_TRAIN_KEYS:
            raise InputError(f"{source}: train.{key} is set by a wsd_branches grid (constant stable phase, "
                             "then wsd cooldown branches; see grid.cooldown_fraction); leave it out")
    refuse_unknown(source, table, known - GRID_OWNED_TRAIN_KEYS, prefix="train.")
    # Types and values are checked per run by scaling.train.config (the same messages as `scaling train`).
    return dict(table)


def _resources(source: str, table: dict) -> Resources:
    _no_unknown(source, "resources.", table, {f.name for f in fields(Resources)})
    cpus = _typed(source, "resources.cpus_per_run", table.get("cpus_per_run", 1.0), float)
    gpus = _typed(source, "resources.gpus_per_run", table.get("gpus_per_run", 0.0), float)
    retries = _typed(source, "resources.max_retries", table.get("max_retries", 3), int)
    if not cpus > 0:
        raise InputError(f"{source}: resources.cpus_per_run = {cpus:g} must be positive")
    if gpus < 0:
        raise InputError(f"{source}: resources.gpus_per_run = {gpus:g} must be 0 or more")
    if gpus > 1 and not gpus.is_integer():
        raise InputError(f"{source}: resources.gpus_per_run = {gpus:g} must be a whole number above 1")
    if retries < 0:
        raise InputError(f"{source}: resources.max_retries = {retries} must be 0 or more")
    return Resources(cpus_per_run=cpus, gpus_per_run=gpus, max_retries=retries)


def _table(source: str, name: str, value: Any) -> dict:
    return table_of(source, name, value)


def _no_unknown(source: str, prefix: str, table: dict, known: set[str]) -> None:
    refuse_unknown(source, table, known, prefix)


def _typed(source: str, name: str, value: Any, kind: type) -> Any:
    return typed(source, name, value, kind)


def _positive_list(source: str, name: str, value: Any) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise InputError(f"{source}: {name} = {value!r} must be a non-empty list of numbers")
    out = []
    for i, item in enumerate(value):
        number = _typed(source, f"{name}[{i}]", item, float)
        if not number > 0:
            raise InputError(f"{source}: {name}[{i}] = {number:g} must be positive")
        if not math.isfinite(number):
            raise InputError(f"{source}: {name}[{i}] = {number:g} must be a finite number")
        out.append(number)
    return tuple(out)
