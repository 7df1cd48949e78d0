"""The results table: one row per finished run (N, D, loss, compute), loaded, validated and grouped
into IsoFLOP budgets. Every fit in `analysis` starts from a `ResultsTable`.

Columns (docs/contracts.md, "Results table"): `params` (N, all parameters including embeddings), `tokens` (D)
and `loss` are required; `flops` (C, default 6·N·D), `budget` (nominal IsoFLOP budget), `run_id`, `status` and
`vocab_size` are used when present; so are `unique_tokens` (U, the unique train tokens a run drew from) and
`epochs` (D / U), which the data-constrained law needs (a run that leaves them empty is taken as not
repeating data). Per-run training curves for approach 1 come either from a `curve` column
(a list of (tokens, loss) pairs per run; a JSON string in a CSV) or from a side file with columns `run_id,
tokens, loss` (see `find_curves_file`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from scaling.common.errors import InputError

REQUIRED_COLUMNS = ("params", "tokens", "loss")
OPTIONAL_POSITIVE_COLUMNS = ("flops", "budget")
# Optional columns a run may leave empty (NaN): unique train tokens and epochs = tokens / unique_tokens.
UNIQUE_TOKENS_COLUMNS = ("unique_tokens", "epochs")
EPOCHS_TOLERANCE = 0.01  # relative disagreement of `epochs` with tokens / unique_tokens accepted
# Runs whose compute differs by less than this many decades belong to one IsoFLOP budget
# when the table has no `budget` column.
BUDGET_GAP_DECADES = 0.1
FLOPS_PER_PARAM_TOKEN = 6.0


class NotEnoughData(ValueError):
    """Valid but thin data: one approach cannot run (it is reported as null with this reason)."""


@dataclass(frozen=True)
class ResultsTable:
    """Validated runs, sorted by compute. `runs` has columns params, tokens, loss, flops, budget, run_id
    (plus any extra input columns); `curves` is long-format run_id, tokens, loss sorted by run_id then
    tokens, or None."""

    runs: pd.DataFrame
    source: str = "<table>"
    curves: pd.DataFrame | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def n_runs(self) -> int:
        return len(self.runs)

    @property
    def budgets(self) -> np.ndarray:
        """The distinct IsoFLOP budgets (FLOPs), ascending."""
        return np.unique(self.runs["budget"].to_numpy())

    @property
    def flops_per_param_token(self) -> float:
        """k in C = k·N·D, the median over runs (exactly 6 when the table has no `flops` column)."""
        r = self.runs
        return float(np.median(r["flops"] / (r["params"] * r["tokens"])))

    @property
    def vocab_size(self) -> int | None:
        if "vocab_size" not in self.runs.columns:
            return None
        values = self.runs["vocab_size"].dropna()
        return int(values.mode().iloc[0]) if len(values) else None

    @property
    def has_unique_tokens(self) -> bool:
        """Whether any run records its unique train tokens (column `unique_tokens`, or `epochs`)."""
        return "unique_tokens" in self.runs.columns and bool(self.runs["unique_tokens"].notna().any())

    @property
    def unique_tokens(self) -> float | None:
        """The largest unique-token count of any run (the whole train split, for a sweep), or None."""
        if not self.has_unique_tokens:
            return None
        return float(self.runs["unique_tokens"].max())

    def unique_tokens_array(self) -> np.ndarray:
        """Each run's unique train tokens; infinity (fresh data) where the run records none."""
        if "unique_tokens" not in self.runs.columns:
            return np.full(self.n_runs, np.inf)
        return self.runs["unique_tokens"].to_numpy(float, na_value=np.inf)

    def epochs_array(self) -> np.ndarray:
        """Passes over the unique data, tokens / unique_tokens (0 where unknown: fresh data); below 1 for a
        run that saw only part of its data."""
        return self.runs["tokens"].to_numpy(float) / self.unique_tokens_array()

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(params, tokens, loss) as float arrays."""
        r = self.runs
        return (r["params"].to_numpy(float), r["tokens"].to_numpy(float), r["loss"].to_numpy(float))

    def select(self, row_positions: np.ndarray) -> ResultsTable:
        """The table restricted to (or resampled at) the given row positions; curves follow run_id."""
        runs = self.runs.iloc[np.asarray(row_positions)].reset_index(drop=True)
        curves = self.curves
        if curves is not None:
            curves = curves[curves["run_id"].isin(set(runs["run_id"]))]
        return replace(self, runs=runs, curves=curves)

    def without_highest_loss(self, n: int) -> ResultsTable:
        """Drop the n highest-loss runs (Epoch's choice for the Chinchilla data: n = 5)."""
        order = np.argsort(self.runs["loss"].to_numpy(), kind="stable")
        return self.select(np.sort(order[: self.n_runs - n]))


def load_results(path: Path | str, curves_path: Path | str | None = None,
                 min_budget: float | None = None) -> ResultsTable:
    """Read a results table (.parquet or .csv), validate it and attach curves when available; with
    `min_budget`, only the runs of budgets at least that large (`from_budget`)."""
    path = Path(path)
    frame = _read_table(path)
    curves = None
    if "curve" in frame.columns:
        curves = _curves_from_column(frame, path)
    side_file = Path(curves_path) if curves_path is not None else find_curves_file(path)
    if side_file is not None:
        curves = _read_curves_file(side_file)
    table = results_from_frame(frame, source=path.name, curves=curves)
    return table if min_budget is None else from_budget(table, min_budget)


# Budgets within this relative distance of --min-budget count as at it (1e11 written as 1.0e11 or 100e9).
MIN_BUDGET_TOLERANCE = 1e-6


def from_budget(table: ResultsTable, min_budget: float) -> ResultsTable:
    """The runs of IsoFLOP budgets >= `min_budget` FLOPs, with a note of what was left out. Small budgets can
    sit in a regime where loss falls faster with compute than it does further up (very short runs, models
    mostly embedding), and a law fitted with them forecasts too low far past the sweep (docs/fitting.md,
    "Which budgets to fit")."""
    if not (np.isfinite(min_budget) and min_budget > 0):
        raise InputError(f"min_budget = {min_budget:g} is not a positive number of FLOPs", field="min_budget")
    budgets = table.runs["budget"].to_numpy(float)
    keep = budgets >= min_budget * (1 - MIN_BUDGET_TOLERANCE)
    listed = ", ".join(f"{b:.3g}" for b in table.budgets)
    if not keep.any():
        raise InputError(f"{table.source}: min_budget = {min_budget:.3g} leaves no runs; the table's budgets are "
                         f"{listed} FLOPs", field="min_budget")
    if keep.all():
        return table
    dropped = ", ".join(f"{b:.3g}" for b in np.unique(budgets[~keep]))
    note = (f"{table.source}: fitted on budgets >= {min_budget:.3g} FLOPs; left out {int((~keep).sum())} runs "
            f"of budgets {dropped}")
    selected = table.select(np.flatnonzero(keep))
    return replace(selected, notes=(*selected.notes, note))


def find_curves_file(results_path: Path) -> Path | None:
    """The side file of per-run curves: `<stem>_curves.parquet|csv` beside the table, or, for a sweep's
    `results.parquet`, `curves.parquet|csv` in the same directory."""
    results_path = Path(results_path)
    candidates = [results_path.with_name(f"{results_path.stem}_curves{ext}") for ext in (".parquet", ".csv")]
    if results_path.stem == "results":
        candidates += [results_path.with_name(f"curves{ext}") for ext in (".parquet", ".csv")]
    return next((c for c in candidates if c.is_file()), None)


def results_from_frame(
    frame: pd.DataFrame, source: str = "<table>", curves: pd.DataFrame | None = None
) -> ResultsTable:
    """Validate a results DataFrame and return a `ResultsTable` (raises InputError on bad input)."""
    notes: list[str] = []
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(
            f"{source}: missing column {missing[0]!r}; expected columns {', '.join(REQUIRED_COLUMNS)}"
        )
    runs = frame.copy()
    if "status" in runs.columns:
        finished = runs["status"].astype(str) == "finished"
        if (~finished).any():
            notes.append(f"{source}: ignored {int((~finished).sum())} runs whose status is not 'finished'")
        runs = runs[finished]
    if len(runs) == 0:
        raise InputError(f"{source}: no finished runs; expected at least one row with params, tokens, loss")
    # a run outside any IsoFLOP budget (say, the final run) may leave `budget` empty
    without_budget = runs["budget"].isna().to_numpy() if "budget" in runs.columns else np.ones(len(runs), bool)
    for column in REQUIRED_COLUMNS + tuple(c for c in OPTIONAL_POSITIVE_COLUMNS if c in runs.columns):
        if column == "budget":
            budgets = np.full(len(runs), np.nan)
            budgets[~without_budget] = _positive_column(runs[column][~without_budget], column, source)
            runs[column] = budgets
        else:
            runs[column] = _positive_column(runs[column], column, source)
    runs = _unique_tokens_columns(runs, source, notes)
    if "flops" not in runs.columns:
        runs["flops"] = FLOPS_PER_PARAM_TOKEN * runs["params"] * runs["tokens"]
    if "budget" not in runs.columns:
        runs["budget"] = np.nan
    if without_budget.any():
        runs.loc[without_budget, "budget"] = group_isoflop_budgets(runs["flops"].to_numpy()[without_budget])
    if "run_id" not in runs.columns:
        runs["run_id"] = [f"run{i:04d}" for i in range(len(runs))]
    runs["run_id"] = runs["run_id"].astype(str)
    if runs["run_id"].duplicated().any():
        dup = runs["run_id"][runs["run_id"].duplicated()].iloc[0]
        raise InputError(f"{source}: column 'run_id' has duplicate value {dup!r}; expected one row per run")
    runs = runs.drop(columns=[c for c in ("curve",) if c in runs.columns])
    runs = runs.sort_values(["flops", "params"], kind="stable").reset_index(drop=True)
    if curves is not None:
        curves = _validate_curves(curves, source)
    return ResultsTable(runs=runs, source=source, curves=curves, notes=tuple(notes))


def _unique_tokens_columns(runs: pd.DataFrame, source: str, notes: list[str]) -> pd.DataFrame:
    """Validate the optional `unique_tokens` and `epochs` columns (positive where given; empty allowed):
    `unique_tokens` is derived from `epochs` where only that is given, and `epochs` is then
    tokens / unique_tokens (a given `epochs` that disagrees by more than 1% is an error)."""
    present = [c for c in UNIQUE_TOKENS_COLUMNS if c in runs.columns]
    if not present:
        return runs
    values = {}
    for column in present:
        given = runs[column].notna().to_numpy()
        column_values = np.full(len(runs), np.nan)
        if given.any():
            column_values[given] = _positive_column(runs[column][given], column, source).to_numpy()
        values[column] = column_values
    tokens = runs["tokens"].to_numpy(float)
    unique = values.get("unique_tokens", np.full(len(runs), np.nan))
    if "epochs" in values:
        epochs = values["epochs"]
        both = np.isfinite(unique) & np.isfinite(epochs)
        expected = tokens / unique
        off = both & (np.abs(epochs - expected) > EPOCHS_TOLERANCE * expected)
        if off.any():
            i = int(np.flatnonzero(off)[0])
            raise InputError(
                f"{source}: column 'epochs' disagrees with tokens / unique_tokens in {int(off.sum())} rows "
                f"(e.g. row {i}: {epochs[i]:.4g} vs {expected[i]:.4g}); expected epochs = tokens / unique_tokens"
            )
        only_epochs = ~np.isfinite(unique) & np.isfinite(epochs)
        unique = np.where(only_epochs, tokens / np.where(only_epochs, epochs, 1.0), unique)
    n_missing = int((~np.isfinite(unique)).sum())
    if n_missing and np.isfinite(unique).any():
        notes.append(f"{source}: {n_missing} runs record no unique_tokens; taken as not repeating data")
    runs["unique_tokens"] = unique
    runs["epochs"] = tokens / unique  # NaN where unique_tokens is unknown
    return runs


def group_isoflop_budgets(flops: np.ndarray, gap_decades: float = BUDGET_GAP_DECADES) -> np.ndarray:
    """Label each run with its IsoFLOP budget (the group's median compute); see `group_by_log_gaps`."""
    return group_by_log_gaps(flops, gap_decades)


def group_by_log_gaps(values: np.ndarray, gap_decades: float) -> np.ndarray:
    """Group positive values: sorted log10 values are split wherever two neighbours are more than
    `gap_decades` apart. Each value is labelled by its group's median."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values)
    log_sorted = np.log10(values[order])
    group_of_sorted = np.concatenate([[0], np.cumsum(np.diff(log_sorted) > gap_decades)])
    labels = np.empty_like(values)
    for g in np.unique(group_of_sorted):
        members = order[group_of_sorted == g]
        labels[members] = float(np.median(values[members]))
    return labels


def _read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise InputError(f"{path}: file not found; expected a results table (.parquet or .csv)")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix in (".csv", ".tsv", ".txt"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    except Exception as e:  # pyarrow and pandas raise many types for a corrupt file
        raise InputError(
            f"{path}: cannot read as {suffix[1:]} ({type(e).__name__}); expected a valid table"
        ) from None
    raise InputError(f"{path}: unknown extension {suffix!r}; expected .parquet or .csv")


def _positive_column(values: pd.Series, column: str, source: str) -> pd.Series:
    numeric = pd.to_numeric(values, errors="coerce")
    non_numeric = int((numeric.isna() & values.notna()).sum())
    if non_numeric:
        bad = values[numeric.isna() & values.notna()].iloc[0]
        raise InputError(
            f"{source}: column {column!r} has {non_numeric} non-numeric values (e.g. {bad!r}); "
            "expected numbers"
        )
    numeric = numeric.astype(float)
    n_missing = int((~np.isfinite(numeric)).sum())
    if n_missing:
        raise InputError(
            f"{source}: column {column!r} has {n_missing} missing, NaN or infinite values; "
            "expected finite numbers"
        )
    n_nonpositive = int((numeric <= 0).sum())
    if n_nonpositive:
        what = {"loss": "losses"}.get(column, f"{column} values")
        raise InputError(
            f"{source}: column {column!r} has {n_nonpositive} non-positive values; expected positive {what}"
        )
    return numeric


def _curves_from_column(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Long-format curves from a `curve` column of (tokens, loss) pairs."""
    if "run_id" not in frame.columns:
        raise InputError(f"{path.name}: column 'curve' needs a 'run_id' column; expected both")
    rows = []
    for run_id, curve in zip(frame["run_id"].astype(str), frame["curve"], strict=True):
        if curve is None or (isinstance(curve, float) and np.isnan(curve)):
            continue
        points = json.loads(curve) if isinstance(curve, str) else list(curve)
        for point in points:
            if isinstance(point, dict):
                rows.append((run_id, point["tokens"], point["loss"]))
            else:
                tokens, loss = point
                rows.append((run_id, tokens, loss))
    return pd.DataFrame(rows, columns=["run_id", "tokens", "loss"])


def _read_curves_file(path: Path) -> pd.DataFrame:
    frame = _read_table(path)
    missing = [c for c in ("run_id", "tokens", "loss") if c not in frame.columns]
    if missing:
        raise InputError(f"{path.name}: missing column {missing[0]!r}; expected columns run_id, tokens, loss")
    return frame[["run_id", "tokens", "loss"]].assign(run_id=lambda f: f["run_id"].astype(str))


def _validate_curves(curves: pd.DataFrame, source: str) -> pd.DataFrame:
    curves = curves[["run_id", "tokens", "loss"]].copy()
    curves["run_id"] = curves["run_id"].astype(str)
    for column in ("tokens", "loss"):
        curves[column] = _positive_column(curves[column], column, f"{source} (curves)")
    return curves.sort_values(["run_id", "tokens"], kind="stable").reset_index(drop=True)
