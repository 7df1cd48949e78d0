"""Hyperparameter laws: the best learning rate and batch size as power laws of compute, from a side sweep.

DeepSeek LLM (2024) fitted eta_opt = 0.3118 C^-0.125 and B_opt = 0.292 C^0.3271 (B in tokens) on small runs
and trained its large models with them; a learning rate copied from a sweep to a run 30x larger is too high
there. A side sweep here is any results table whose runs cross `lr` (and optionally `batch_size`) at a few
budgets (a grid's `lrs` / `batch_sizes` axes, sweeps/grids/hyperparameters.toml). Per budget:
- with 2+ batch sizes and 6+ runs: the quadratic in (log lr, log B) of least squares through the runs' losses;
  its minimum is the budget's (lr_opt, B_opt);
- with one batch size: the parabola in log lr at that batch size;
- the minimum counts only when the quadratic is convex and the minimum lies inside the swept ranges (by at
  most half a step of the grid); otherwise the best run stands in (`source = "best run"`, with a warning).
Then log lr_opt and log B_opt are fitted against log C (least squares), and a bootstrap over the runs of each
budget gives intervals of the exponents and of the laws' values at a target compute. The batch size is in
windows (the table's `batch_size`), at the table's context length.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.power_law import PowerLaw, fit_power_law
from analysis.results_table import NotEnoughData, ResultsTable

CONFIDENCE_LEVEL = 0.95
MIN_BUDGETS = 2
MIN_LRS = 3  # per budget (and per batch size for the 1-D parabola)


@dataclass(frozen=True)
class HyperparameterLaws:
    optima: list[dict]  # per budget: budget, lr, batch_size, loss, n_runs, source
    lr_law: PowerLaw  # lr_opt(C)
    batch_law: PowerLaw | None  # B_opt(C) in windows; None when the sweep had one batch size
    intervals: dict = field(default_factory=dict)  # "lr_exponent", "batch_exponent", "lr_at", "batch_at": [lo, hi]
    compute: float | None = None  # where lr_at / batch_at were evaluated
    warnings: list[str] = field(default_factory=list)

    def lr(self, compute: float) -> float:
        return float(self.lr_law(compute))

    def batch_size(self, compute: float) -> float | None:
        return None if self.batch_law is None else float(self.batch_law(compute))

    def to_json(self) -> dict:
        return {
            "optima": self.optima,
            "lr_law": self.lr_law.to_json(),
            "batch_size_law": None if self.batch_law is None else self.batch_law.to_json(),
            "compute": self.compute,
            "lr_at_compute": None if self.compute is None else self.lr(self.compute),
            "batch_size_at_compute": None if self.compute is None else self.batch_size(self.compute),
            "intervals": self.intervals,
            "warnings": list(self.warnings),
        }


def has_hyperparameter_sweep(table: ResultsTable) -> bool:
    """Whether some budget of the table has runs at MIN_LRS or more learning rates."""
    runs = table.runs
    if "lr" not in runs.columns:
        return False
    return bool((runs.groupby("budget")["lr"].nunique() >= MIN_LRS).any())


def budget_optimum(group, warnings: list[str]) -> dict:
    """The (lr, batch size) of least loss for one budget's runs (see the module docstring)."""
    x = np.log(group["lr"].to_numpy(float))
    batch = group["batch_size"].to_numpy(float) if "batch_size" in group.columns else np.ones(len(group))
    y = np.log(batch)
    loss = group["loss"].to_numpy(float)
    best = int(np.argmin(loss))
    budget = float(group["budget"].iloc[0])
    optimum = {"budget": budget, "lr": float(np.exp(x[best])), "batch_size": float(batch[best]),
               "loss": float(loss[best]), "n_runs": len(group), "source": "best run"}
    two_d = len(np.unique(y)) >= 2 and len(loss) >= 6
    if two_d:
        design = np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=1)
        c = np.linalg.lstsq(design, loss, rcond=None)[0]
        hessian = np.array([[2 * c[3], c[5]], [c[5], 2 * c[4]]])
        if np.all(np.linalg.eigvalsh(hessian) > 0):
            opt = np.linalg.solve(hessian, -c[1:3])
            if inside(opt[0], x) and inside(opt[1], y):
                terms = np.array([1.0, opt[0], opt[1], opt[0] ** 2, opt[1] ** 2, opt[0] * opt[1]])
                value = float(terms @ c)
                return {**optimum, "lr": float(np.exp(opt[0])), "batch_size": float(np.exp(opt[1])), "loss": value,
                        "source": "quadratic"}
    else:
        at = y == y[best]
        if len(np.unique(x[at])) >= MIN_LRS and (found := parabola_minimum(x[at], loss[at])) is not None:
            opt, value = found
            return {**optimum, "lr": float(np.exp(opt)), "loss": value, "source": "parabola"}
    warnings.append(f"hyperparameters: budget {budget:.3g}: no interior minimum of the fitted "
                    f"{'quadratic' if two_d else 'parabola'}; the best run (lr {optimum['lr']:.3g}, batch "
                    f"{optimum['batch_size']:g}) stands in; widen the swept learning rates")
    return optimum


def parabola_minimum(x: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    """(x, y) at the minimum of the least-squares parabola through the points, when it is convex and the
    minimum lies inside the points' x range (see `inside`); else None."""
    c2, c1, c0 = np.polyfit(x, y, 2)
    if not c2 > 0 or not inside(-c1 / (2 * c2), x):
        return None
    return float(-c1 / (2 * c2)), float(c0 - c1 * c1 / (4 * c2))


def inside(value: float, grid: np.ndarray) -> bool:
    """Within the swept range, or past an end by at most half of the smallest step between values."""
    values = np.unique(grid)
    half_step = 0.5 * np.min(np.diff(values)) if len(values) > 1 else 0.0
    return values[0] - half_step <= value <= values[-1] + half_step


def _laws(table: ResultsTable, warnings: list[str]) -> tuple[list[dict], PowerLaw, PowerLaw | None]:
    runs = table.runs.dropna(subset=["lr"])
    groups = [g for _, g in runs.groupby("budget") if g["lr"].nunique() >= MIN_LRS]
    if len(groups) < MIN_BUDGETS:
        raise NotEnoughData(f"hyperparameters: needs {MIN_BUDGETS}+ budgets with runs at {MIN_LRS}+ learning rates, "
                            f"found {len(groups)}")
    optima = [budget_optimum(g, warnings) for g in groups]
    compute = np.array([o["budget"] for o in optima])
    lr_law = fit_power_law(compute, np.array([o["lr"] for o in optima]))
    batch_sizes = runs["batch_size"].nunique() if "batch_size" in runs.columns else 1
    batch_law = fit_power_law(compute, np.array([o["batch_size"] for o in optima])) if batch_sizes >= 2 else None
    return optima, lr_law, batch_law


def fit_hyperparameter_laws(table: ResultsTable, bootstrap: int = 0, compute: float | None = None,
                            seed: int = 0) -> HyperparameterLaws:
    """lr_opt(C) and B_opt(C) from a side sweep (see the module docstring); raises NotEnoughData on thin tables."""
    warnings: list[str] = []
    optima, lr_law, batch_law = _laws(table, warnings)
    intervals: dict = {}
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        by_budget = [np.flatnonzero((table.runs["budget"] == b).to_numpy()) for b in np.unique(table.runs["budget"])]
        samples: dict[str, list[float]] = {}
        for _ in range(bootstrap):
            rows = np.concatenate([idx[rng.integers(0, len(idx), len(idx))] for idx in by_budget])
            try:
                _, lr_b, batch_b = _laws(table.select(rows), [])
            except NotEnoughData:
                continue
            samples.setdefault("lr_exponent", []).append(lr_b.exponent)
            if compute is not None:
                samples.setdefault("lr_at", []).append(float(lr_b(compute)))
            if batch_b is not None:
                samples.setdefault("batch_exponent", []).append(batch_b.exponent)
                if compute is not None:
                    samples.setdefault("batch_at", []).append(float(batch_b(compute)))
        tail = 100 * (1 - CONFIDENCE_LEVEL) / 2
        intervals = {k: [float(v) for v in np.percentile(s, [tail, 100 - tail])] for k, s in samples.items()
                     if len(s) >= 2}
        intervals["level"] = CONFIDENCE_LEVEL
        intervals["resamples"] = len(samples.get("lr_exponent", []))
    if compute is not None and compute > 30 * max(o["budget"] for o in optima):
        warnings.append(f"hyperparameters: {compute:.3g} FLOPs is {compute / max(o['budget'] for o in optima):.0f}x "
                        "the largest budget of the side sweep: the laws are extrapolated that far")
    return HyperparameterLaws(optima, lr_law, batch_law, intervals, compute, warnings)
