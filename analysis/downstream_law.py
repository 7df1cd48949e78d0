"""A downstream law: a task's metric as a smooth function of validation loss (or of log compute), fitted
across the runs of a sweep, so that a larger run's metric can be predicted before it is evaluated.

Two steps, as OLMo's model ladder and Llama 3 predict benchmark scores: the loss law gives the larger run's
loss from its compute (the pre-registered forecast), and this law gives its metric from that loss.

The curve is linear in a link that keeps the metric in its range:

    auroc:  metric = 0.5 + 0.5 · sigmoid(a + b·x)     (chance at high loss, 1 at low loss)
    mae:    metric = exp(a + b·x)                      (positive)

x is the validation loss, or log10 of the training compute. It is fitted by weighted least squares in
the metric's own units (scipy.optimize.curve_fit), each run weighted by its evaluation's bootstrap
interval, so a run scored on few positives counts for less. The interval of a prediction is a parametric
bootstrap: each run's metric redrawn from its own interval, the law refitted, the prediction read off.
With a handful of runs this interval is the honest part: the evaluation noise of each point is often as
large as the differences between runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import curve_fit
from scipy.special import expit, logit

from analysis.results_table import NotEnoughData

Z_95 = 1.959964  # a 95% interval spans +-Z_95 standard deviations


def _auroc(x, a, b):
    return 0.5 + 0.5 * expit(a + b * x)


def _mae(x, a, b):
    return np.exp(a + b * x)


CURVES = {"auroc": _auroc, "mae": _mae}


def _linearised(metric: str, y: np.ndarray) -> np.ndarray:
    """The metric in link space, for a starting point (values at or below chance clipped just above it)."""
    if metric == "auroc":
        return logit(np.clip((y - 0.5) / 0.5, 0.02, 0.98))
    return np.log(np.maximum(y, 1e-9))


@dataclass(frozen=True)
class DownstreamLaw:
    metric: str  # "auroc" or "mae"
    a: float
    b: float
    x_range: tuple[float, float]  # the fitted x values' span
    n_runs: int
    draws: np.ndarray  # (n_bootstrap, 2) refitted (a, b) for the interval

    def __call__(self, x: float | np.ndarray) -> float | np.ndarray:
        return CURVES[self.metric](np.asarray(x, float), self.a, self.b)

    def predict(self, x: float) -> dict:
        """The metric at x, its 95% interval over the bootstrap refits, and whether x lies past the fitted
        span (an extrapolation)."""
        values = CURVES[self.metric](float(x), self.draws[:, 0], self.draws[:, 1]) if len(self.draws) else []
        interval = [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))] if len(values) >= 10 \
            else None
        low, high = self.x_range
        return {"value": float(self(x)), "interval": interval,
                "extrapolated": bool(x < low - 1e-12 or x > high + 1e-12)}

    def to_json(self) -> dict:
        return {"metric": self.metric, "a": self.a, "b": self.b, "x_range": list(self.x_range),
                "n_runs": self.n_runs, "bootstrap": len(self.draws)}


def _fit(metric: str, x: np.ndarray, y: np.ndarray, sigma: np.ndarray) -> tuple[float, float]:
    slope, intercept = np.polyfit(x, _linearised(metric, y), 1)
    try:
        (a, b), _ = curve_fit(CURVES[metric], x, y, p0=[intercept, slope], sigma=sigma, absolute_sigma=True,
                              maxfev=5000)
    except RuntimeError:  # no convergence: keep the link-space line
        a, b = intercept, slope
    return float(a), float(b)


def fit_downstream_law(metric: str, x: np.ndarray, y: np.ndarray, ci: np.ndarray | None = None,
                       n_bootstrap: int = 500, seed: int = 0) -> DownstreamLaw:
    """Fit the metric `y` (n,) against `x` (n,), with `ci` (n, 2) each point's 95% interval (NaN where the
    evaluation gave none: the spread of the residuals stands in). Needs 3 runs at 2 or more distinct x."""
    if metric not in CURVES:
        raise ValueError(f"metric {metric!r}; expected one of {sorted(CURVES)}")
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3 or len(np.unique(x[keep])) < 2:
        raise NotEnoughData(f"a downstream law needs 3 or more scored runs at 2 or more distinct x values, "
                            f"got {int(keep.sum())}")
    x, y = x[keep], y[keep]
    ci = np.full((len(keep), 2), np.nan) if ci is None else np.asarray(ci, float).reshape(len(keep), 2)
    sigma = (ci[keep, 1] - ci[keep, 0]) / (2 * Z_95)
    a, b = _fit(metric, x, y, np.ones_like(y))
    residual = float(np.std(y - CURVES[metric](x, a, b), ddof=min(2, len(y) - 1))) or 1e-3
    sigma = np.where(np.isfinite(sigma) & (sigma > 0), sigma, residual)
    a, b = _fit(metric, x, y, sigma)
    rng = np.random.default_rng(seed)
    draws = np.array([_fit(metric, x, y + sigma * rng.standard_normal(len(y)), sigma)
                      for _ in range(n_bootstrap)]).reshape(-1, 2)
    return DownstreamLaw(metric, a, b, (float(x.min()), float(x.max())), len(y), draws)
