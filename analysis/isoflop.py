"""Approach 2 (Chinchilla): IsoFLOP profiles. For each compute budget, a parabola of loss in log N (and
one in log D) locates the loss-minimising model size (and token count); N_opt = k·C^a and
D_opt = k'·C^b are then fitted through those minima in log space.

A parabola is only as good as the grid under it: the fit warns when a minimum lies outside the sampled
sizes (the grid must straddle the optimum) and drops at most one outlying run per budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.power_law import ComputeAllocation, PowerLaw, fit_power_law
from analysis.results_table import NotEnoughData, ResultsTable

MIN_RUNS_PER_BUDGET = 3
# A minimum further outside the sampled sizes than this fraction of their log-range is an extrapolation of
# a nearly straight profile, not a minimum: the budget is skipped.
FAR_OUTSIDE = 0.5
# A run whose leave-one-out residual exceeds this many residual scales of the other runs is an outlier;
# only budgets with at least OUTLIER_MIN_RUNS runs are checked (fewer leave nothing to judge against).
OUTLIER_THRESHOLD = 5.0
OUTLIER_MIN_RUNS = 5
# A dropped run must also be off by this fraction of the loss: on near-perfect profiles (synthetic data,
# tiny noise) the ordinary misfit of a parabola's end points is many standard errors but not an outlier.
RESIDUAL_FLOOR = 5e-3


@dataclass(frozen=True)
class IsoflopMinimum:
    budget: float
    params: float
    tokens: float
    loss: float
    n_runs: int
    inside_sampled_range: bool
    dropped_run: str | None = None
    parabola: tuple[float, float, float] = (0.0, 0.0, 0.0)  # loss = c2·(ln N)² + c1·ln N + c0 (for plots)

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "parabola"}


@dataclass(frozen=True)
class IsoflopFit(ComputeAllocation):
    minima: list[IsoflopMinimum]
    params_law: PowerLaw  # N_opt = coefficient · C^a
    tokens_law: PowerLaw  # D_opt = coefficient · C^b
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            **self.laws_json(),
            "n_budgets": len(self.minima),
            "minima": [m.to_json() for m in self.minima],
        }


def fit_parabola_robust(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, int | None]:
    """Coefficients (c2, c1, c0) of y ≈ c2·x² + c1·x + c0 and the index of the one dropped outlier (or None).

    The outlier test is leave-one-out: each point is predicted by the parabola through the others, and the
    worst-predicted point is dropped when its error exceeds OUTLIER_THRESHOLD standard errors of that
    prediction (the studentized deleted residual, which allows for the leverage of end points) and
    RESIDUAL_FLOOR of the loss. Repeated x values (a bootstrap resample) are allowed.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    centre = float(np.mean(x))
    design = np.vander(x - centre, 3)  # (n, 3): u², u, 1 with u = x - centre, for conditioning
    worst = None
    if len(np.unique(x)) >= OUTLIER_MIN_RUNS:
        floor = RESIDUAL_FLOOR * float(np.median(y))
        worst_ratio = OUTLIER_THRESHOLD
        for i in range(len(x)):
            others = x != x[i]  # drop every copy of the point, or the copies vouch for each other
            c, *_ = np.linalg.lstsq(design[others], y[others], rcond=None)
            dof = others.sum() - 3
            residual_scale = np.sqrt(np.sum((design[others] @ c - y[others]) ** 2) / max(dof, 1))
            leverage = design[i] @ np.linalg.pinv(design[others].T @ design[others]) @ design[i]
            ratio = abs(design[i] @ c - y[i]) / max(residual_scale * np.sqrt(1.0 + leverage), floor)
            if ratio > worst_ratio:
                worst, worst_ratio = i, ratio
    # The outlier and its bootstrap copies go; a seed replicate of the same size (another loss) stays.
    keep = np.ones(len(x), bool) if worst is None else ~((x == x[worst]) & (y == y[worst]))
    c2, c1, c0 = np.linalg.lstsq(design[keep], y[keep], rcond=None)[0]
    # back from u = x - centre to x
    return np.array([c2, c1 - 2 * c2 * centre, c2 * centre**2 - c1 * centre + c0]), worst


def isoflop_minimum(
    budget: float, params: np.ndarray, tokens: np.ndarray, loss: np.ndarray, run_ids: np.ndarray
) -> IsoflopMinimum:
    """The minimum of one IsoFLOP profile, from parabolas in log N and in log D."""
    if len(np.unique(params)) < MIN_RUNS_PER_BUDGET:
        raise NotEnoughData(
            f"budget {budget:.3g} FLOPs has {len(np.unique(params))} distinct model sizes; "
            f"a parabola needs {MIN_RUNS_PER_BUDGET}"
        )
    log_n, log_d = np.log(params), np.log(tokens)
    c_n, dropped = fit_parabola_robust(log_n, loss)
    c_d, _ = fit_parabola_robust(log_d, loss)
    if c_n[0] <= 0 or c_d[0] <= 0:
        raise NotEnoughData(f"budget {budget:.3g} FLOPs: the IsoFLOP profile is not convex (no minimum)")
    log_n_opt = -c_n[1] / (2 * c_n[0])
    log_d_opt = -c_d[1] / (2 * c_d[0])
    span = np.ptp(log_n)
    if not log_n.min() - FAR_OUTSIDE * span <= log_n_opt <= log_n.max() + FAR_OUTSIDE * span:
        raise NotEnoughData(
            f"budget {budget:.3g} FLOPs: the parabola's minimum (N = {np.exp(log_n_opt):.3g}) is far outside the "
            f"sampled sizes ({params.min():.3g} to {params.max():.3g}); not used"
        )
    return IsoflopMinimum(
        budget=float(budget),
        params=float(np.exp(log_n_opt)),
        tokens=float(np.exp(log_d_opt)),
        loss=float(np.polyval(c_n, log_n_opt)),
        n_runs=len(params),
        inside_sampled_range=bool(log_n.min() <= log_n_opt <= log_n.max()),
        dropped_run=None if dropped is None else str(run_ids[dropped]),
        parabola=tuple(float(c) for c in c_n),
    )


def fit_isoflop_profiles(table: ResultsTable, min_budgets: int = 2) -> IsoflopFit:
    """Approach 2 on a results table: one minimum per budget, then power laws through the minima."""
    minima: list[IsoflopMinimum] = []
    warnings: list[str] = []
    runs = table.runs
    for budget in table.budgets:
        group = runs[runs["budget"] == budget]
        try:
            minimum = isoflop_minimum(
                budget,
                group["params"].to_numpy(float),
                group["tokens"].to_numpy(float),
                group["loss"].to_numpy(float),
                group["run_id"].to_numpy(),
            )
        except NotEnoughData as e:
            warnings.append(f"approach2: skipped {e}")
            continue
        if not minimum.inside_sampled_range:
            warnings.append(
                f"approach2: the minimum at budget {budget:.3g} FLOPs (N = {minimum.params:.3g}) lies "
                "outside the sampled model sizes; the grid should straddle the optimum"
            )
        if minimum.dropped_run is not None:
            warnings.append(
                f"approach2: budget {budget:.3g} FLOPs: ignored outlier run {minimum.dropped_run}"
            )
        minima.append(minimum)
    if len(minima) < min_budgets:
        raise NotEnoughData(
            f"approach2: needs {min_budgets} budgets with {MIN_RUNS_PER_BUDGET}+ model sizes each, "
            f"found {len(minima)}"
        )
    if len(minima) == 2:
        warnings.append("approach2: only 2 budgets; the power law passes exactly through them (no check)")
    compute = np.array([m.budget for m in minima])
    return IsoflopFit(
        minima=minima,
        params_law=fit_power_law(compute, np.array([m.params for m in minima])),
        tokens_law=fit_power_law(compute, np.array([m.tokens for m in minima])),
        warnings=warnings,
    )
