"""Single-variable laws, each with an irreducible term, L(x) = E + A·x^-alpha:

- L(N) at the largest token count D* reached by enough model sizes (each size's loss at D*, read from its
  runs and, when available, its training curves, interpolated in log D);
- L(D) at the largest model size with enough token counts (its runs and curve points);
- L(C) along the frontier: the lowest loss observed at each IsoFLOP budget.

Fitted like approach 3: Huber loss (delta = 1e-3) on log loss, from a few starting exponents with E and A
solved linearly at each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import least_squares, nnls

from analysis.parametric_fit import HUBER_DELTA
from analysis.results_table import NotEnoughData, ResultsTable, group_by_log_gaps

MIN_POINTS = 4  # three parameters and at least one degree of freedom
SAME_SIZE_DECADES = 0.01  # model sizes within 2% of each other are one size
RANGE_TOLERANCE = 0.01  # a profile "reaches" D* if D* is within 1% of its range
START_EXPONENTS = (0.1, 0.3, 0.6, 1.0)


@dataclass(frozen=True)
class SaturatingPowerLaw:
    """L(x) = E + A·x^-alpha for x in params, tokens or compute."""

    variable: str
    E: float
    A: float
    alpha: float
    n_points: int
    held_at: float | None = None  # the D (for L(N)) or N (for L(D)) the law is measured at

    def __call__(self, x):
        return self.E + self.A * np.power(x, -self.alpha)

    def to_json(self) -> dict:
        return dict(self.__dict__)


def fit_saturating_power_law(x: np.ndarray, loss: np.ndarray, variable: str, held_at=None,
                             start: SaturatingPowerLaw | None = None) -> SaturatingPowerLaw:
    """The law through (x, loss); from `start`'s exponent alone when given (a bootstrap's refit), else from
    each of START_EXPONENTS."""
    x, loss = np.asarray(x, float), np.asarray(loss, float)
    if len(np.unique(x)) < MIN_POINTS:
        raise NotEnoughData(f"L({variable}) needs {MIN_POINTS}+ distinct points, found {len(np.unique(x))}")
    log_x, log_loss = np.log(x), np.log(loss)

    def residuals(theta):
        e, a, alpha = theta
        return np.logaddexp(e, a - alpha * log_x) - log_loss

    best = None
    for alpha0 in (start.alpha,) if start is not None else START_EXPONENTS:
        features = np.stack([np.ones_like(x), np.exp(-alpha0 * (log_x - log_x.min()))], axis=1)
        coefficients, _ = nnls(features / loss[:, None], np.ones_like(loss))
        e0, a0 = np.log(np.maximum(coefficients, 1e-6 * coefficients.max()))
        a0 += alpha0 * log_x.min()  # undo the shift that kept the feature of order one
        result = least_squares(residuals, [e0, a0, alpha0], loss="huber", f_scale=HUBER_DELTA, method="trf")
        if best is None or result.cost < best.cost:
            best = result
    e, a, alpha = best.x
    return SaturatingPowerLaw(variable, float(np.exp(e)), float(np.exp(a)), float(alpha), len(x), held_at)


def _observations(table: ResultsTable) -> pd.DataFrame:
    """Every (size, tokens, loss) known: the runs' final points and their curve points."""
    runs = table.runs.drop_duplicates("run_id")
    points = [runs[["run_id", "params", "tokens", "loss"]]]
    if table.curves is not None and len(table.curves):
        points.append(table.curves.merge(runs[["run_id", "params"]], on="run_id"))
    observed = pd.concat(points, ignore_index=True)
    observed["size"] = group_by_log_gaps(observed["params"].to_numpy(float), SAME_SIZE_DECADES)
    return observed.groupby(["size", "tokens"], as_index=False)["loss"].min()


def loss_vs_params(table: ResultsTable, start: SaturatingPowerLaw | None = None) -> SaturatingPowerLaw:
    """L(N) at the largest token count that MIN_POINTS model sizes reach."""
    observed = _observations(table)
    ranges = observed.groupby("size")["tokens"].agg(["min", "max"])
    for held_tokens in np.sort(ranges["max"].unique())[::-1]:
        reach = ranges[
            (ranges["min"] <= held_tokens * (1 + RANGE_TOLERANCE))
            & (ranges["max"] >= held_tokens * (1 - RANGE_TOLERANCE))
        ]
        if len(reach) >= MIN_POINTS:
            break
    else:
        raise NotEnoughData(
            f"L(N): no token count is reached by {MIN_POINTS} model sizes (add curves or a grid of sizes x tokens)"
        )
    loss = []
    for size in reach.index:
        profile = observed[observed["size"] == size]
        loss.append(np.interp(np.log(held_tokens), np.log(profile["tokens"]), profile["loss"]))
    return fit_saturating_power_law(reach.index.to_numpy(float), np.array(loss), "params", float(held_tokens), start)


def loss_vs_tokens(table: ResultsTable, start: SaturatingPowerLaw | None = None) -> SaturatingPowerLaw:
    """L(D) at the largest model size with MIN_POINTS distinct token counts."""
    observed = _observations(table)
    counts = observed.groupby("size")["tokens"].nunique()
    sizes = counts[counts >= MIN_POINTS].index
    if len(sizes) == 0:
        raise NotEnoughData(f"L(D): no model size has {MIN_POINTS} token counts (add curves or more runs per size)")
    profile = observed[observed["size"] == sizes.max()]
    return fit_saturating_power_law(profile["tokens"], profile["loss"], "tokens", float(sizes.max()), start)


def loss_vs_compute_frontier(table: ResultsTable, start: SaturatingPowerLaw | None = None) -> SaturatingPowerLaw:
    """L(C) through the lowest observed loss of each IsoFLOP budget."""
    frontier = table.runs.groupby("budget")["loss"].min()
    return fit_saturating_power_law(frontier.index.to_numpy(float), frontier.to_numpy(float), "compute", start=start)


SINGLE_VARIABLE_FITS = {
    "loss_vs_params": loss_vs_params,
    "loss_vs_tokens": loss_vs_tokens,
    "loss_vs_compute": loss_vs_compute_frontier,
}


def fit_single_variable_laws(table: ResultsTable) -> tuple[dict, list[str]]:
    """{"loss_vs_params", "loss_vs_tokens", "loss_vs_compute"} -> law or None, and the warnings for Nones."""
    laws, warnings = {}, []
    for name, fit in SINGLE_VARIABLE_FITS.items():
        try:
            laws[name] = fit(table)
        except NotEnoughData as e:
            laws[name] = None
            warnings.append(f"single_variable.{name}: {e}")
    return laws, warnings
