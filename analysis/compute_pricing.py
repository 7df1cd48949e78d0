"""What a training token costs: compute priced at 6N, or with the detailed count of the model's shape.

C = 6 N D (Kaplan, Chinchilla) leaves out attention over the context. For a family of shapes the detailed
count (models.accounting, Chinchilla appendix F) is a function of N, f(N) FLOPs per token, and the budget
is C = f(N) D. At a long context and a small model, f(N) is several times 6N, so the same FLOPs buy fewer
tokens and the compute-optimal model moves. Two things here:

- `reprice(table, method)`: a results table with its `flops` column (and each IsoFLOP group's budget) in
  6N or in detailed FLOPs, from the `flops_6n` / `flops_detailed` columns a sweep writes;
- `ComputePricing.optimum(law, C)`: the N, D that minimise L(N, D) subject to f(N) D = C. Under 6N that is
  the closed form of analysis.loss_law; under the detailed count f(N) comes from the ladder's shape of each N
  (the swept family, the table's vocabulary and context), tabulated on a log grid and interpolated, and the
  optimum is found numerically.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
from scipy.optimize import minimize_scalar

from analysis.loss_law import LossLaw
from analysis.results_table import FLOPS_PER_PARAM_TOKEN, NotEnoughData, ResultsTable
from models.accounting import check_flop_method, count_params, flops_per_token
from models.ladder import shape_for_params
from scaling.common.errors import InputError

GRID_POINTS = 111  # ladder shapes tabulated per pricing (10 a decade over GRID_DECADES)
GRID_DECADES = (2.0, 13.0)  # 1e2 .. 1e13 parameters


@dataclass(frozen=True)
class ComputePricing:
    method: str = "6N"  # "6N" | "detailed" | "table" (the table's own flops column, a constant k)
    k: float = FLOPS_PER_PARAM_TOKEN  # flops per parameter-token, for "6N" and "table"
    vocab_size: int | None = None  # detailed: the shapes' vocabulary and context, and the family
    seq_len: int | None = None
    aspect_ratio: float | None = None
    min_layers: int = 1

    def to_json(self) -> dict:
        return {"method": self.method, "k": None if self.method == "detailed" else self.k,
                "vocab_size": self.vocab_size, "seq_len": self.seq_len, "aspect_ratio": self.aspect_ratio,
                "min_layers": self.min_layers}

    @cached_property
    def _table(self) -> tuple[np.ndarray, np.ndarray]:
        """(log N, log f(N)) of the ladder's shapes on a log grid (detailed pricing)."""
        family = {} if self.aspect_ratio is None else {"aspect_ratio": self.aspect_ratio, "min_layers": self.min_layers}
        log_n, log_f = [], []
        for target in np.logspace(*GRID_DECADES, GRID_POINTS):
            try:
                shape = shape_for_params(float(target), self.vocab_size, self.seq_len, **family)
            except InputError:
                continue
            log_n.append(np.log(count_params(shape)["total"]))
            log_f.append(np.log(flops_per_token(shape, self.seq_len, "detailed")))
        # one point per distinct shape size (neighbouring targets can land on the same shape)
        log_n, first = np.unique(np.array(log_n), return_index=True)
        return log_n, np.array(log_f)[first]

    def flops_per_token(self, params):
        """f(N): training FLOPs per token of a model of N parameters."""
        params = np.asarray(params, dtype=float)
        if self.method != "detailed":
            return self.k * params
        log_n, log_f = self._table
        # log-log linear between tabulated shapes; past the ends, the nearest segment's slope
        slope_lo = (log_f[1] - log_f[0]) / (log_n[1] - log_n[0])
        slope_hi = (log_f[-1] - log_f[-2]) / (log_n[-1] - log_n[-2])
        x = np.log(params)
        y = np.interp(x, log_n, log_f)
        y = np.where(x < log_n[0], log_f[0] + slope_lo * (x - log_n[0]), y)
        y = np.where(x > log_n[-1], log_f[-1] + slope_hi * (x - log_n[-1]), y)
        return np.exp(y)

    def optimum(self, law: LossLaw, compute: float) -> tuple[float, float]:
        """(N, D) minimising law.loss(N, D) subject to flops_per_token(N) * D = compute."""
        if self.method != "detailed":
            return float(law.optimal_params(compute, self.k)), float(law.optimal_tokens(compute, self.k))
        start = np.log(float(law.optimal_params(compute, FLOPS_PER_PARAM_TOKEN)))

        def loss(log_n: float) -> float:
            n = np.exp(log_n)
            return float(law.loss(n, compute / self.flops_per_token(n)))

        grid = start + np.linspace(-6.0, 3.0, 181)  # the detailed optimum is smaller than 6N's, never far larger
        best = grid[int(np.argmin([loss(x) for x in grid]))]
        result = minimize_scalar(loss, bounds=(best - 0.05, best + 0.05), method="bounded",
                                 options={"xatol": 1e-8})
        params = float(np.exp(result.x))
        return params, float(compute / self.flops_per_token(params))


def table_pricing(table: ResultsTable, method: str, family: dict | None = None) -> ComputePricing:
    """The pricing of `method` for this table: 6N; the detailed count of its swept shapes (needs the
    vocab_size and seq_len columns a sweep writes); or "table", the table's own flops column as a constant k."""
    if method == "6N":
        return ComputePricing("6N")
    if method == "table":
        return ComputePricing("table", k=table.flops_per_param_token)
    check_flop_method(method)
    runs = table.runs
    missing = [c for c in ("vocab_size", "seq_len") if c not in runs.columns or runs[c].isna().all()]
    if missing:
        raise NotEnoughData(f"detailed compute: the table has no {' or '.join(missing)} column (a sweep's "
                            "results.parquet has both); the detailed count needs the shapes' vocabulary and context")
    family = family or {}
    return ComputePricing("detailed", vocab_size=int(runs["vocab_size"].mode().iloc[0]),
                          seq_len=int(runs["seq_len"].mode().iloc[0]), aspect_ratio=family.get("aspect_ratio"),
                          min_layers=int(family.get("min_layers", 1)))


def reprice(table: ResultsTable, method: str) -> ResultsTable:
    """The table with `flops` in `method` ("6N" or "detailed"), and each IsoFLOP group's `budget` moved to the
    geometric mean of its runs' new compute (the runs of one nominal budget cost different detailed FLOPs:
    the group is kept, its C is re-measured)."""
    check_flop_method(method)
    runs = table.runs.copy()
    if method == "6N":
        new = FLOPS_PER_PARAM_TOKEN * runs["params"] * runs["tokens"]
    else:
        if "flops_detailed" not in runs.columns or runs["flops_detailed"].isna().any():
            raise InputError(f"{table.source}: --flops detailed needs a flops_detailed value for every run (a sweep's "
                             "results.parquet has the column); this table has none or some empty", field="flops")
        new = runs["flops_detailed"].astype(float)
    runs["flops"] = new
    runs["budget"] = runs.groupby("budget")["flops"].transform(lambda c: float(np.exp(np.log(c).mean())))
    runs = runs.sort_values(["flops", "params"], kind="stable").reset_index(drop=True)
    note = f"{table.source}: compute priced as {method}" + (
        " (Chinchilla appendix F); each IsoFLOP group's budget is its runs' geometric mean" if method == "detailed"
        else "")
    return replace(table, runs=runs, notes=(*table.notes, note))
