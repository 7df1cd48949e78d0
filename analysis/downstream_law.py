"""A downstream law: a task's metric as a smooth function of validation loss (or of log compute), fitted
across the runs of a sweep, so that a larger run's metric can be predicted before it is evaluated.

Two steps, as OLMo's model ladder and Llama 3 predict benchmark scores: the loss law gives the larger run's
loss from its compute (the pre-registered forecast), and this law gives its metric from that loss.

Three curves compete, x being the validation loss or log10 of the training compute, and `best` the best
value any model can reach on the evaluated patients (on a synthetic cohort the oracle's: the generator's
own probabilities; without one, AUROC 1 and MAE 0):

    constant:  metric = a                                   (no trend the sweep can measure)
    linear:    metric = a + b·x
    sigmoid:   metric = 0.5 + (best - 0.5) · sigmoid(a + b·x)  (AUROC: chance at high loss, best at low loss)
    log:       metric = best + exp(a + b·x)                  (MAE: falls toward its floor, never below)

AUROC chooses among constant, linear and sigmoid; MAE among constant, linear and log. The choice is made by
leave-one-run-out: each curve is fitted without one run and scored on it (weighted by that run's interval),
and the curve with the smallest error wins; so a sweep whose metric does not move with loss predicts its
mean, and a sigmoid is used only where it predicts held-out runs better than a line (noise puts small
models' AUROC at or below chance, where a chance-floored sigmoid turns into a step). Predictions are clipped
to what a model can reach: AUROC in [0, best], MAE at least best. Without the oracle's bound a line
through three falling MAEs crosses 0 and predicts a perfect model; with it, the prediction stops at the
oracle's error.

Each curve is fitted by weighted least squares in the metric's own units (scipy.optimize.curve_fit), each
run weighted by its evaluation's bootstrap interval. The interval of a prediction is a parametric
bootstrap: each run's metric redrawn from its own interval, the chosen curve refitted, the prediction read
off. With a handful of runs this interval is the honest part: each point's evaluation noise is often as
large as the differences between runs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.special import expit, logit

from analysis.results_table import NotEnoughData

Z_95 = 1.959964  # a 95% interval spans +-Z_95 standard deviations


def _constant(x, a):
    return np.full(np.shape(x), a, dtype=float) if np.ndim(x) else a


def _linear(x, a, b):
    return a + b * x


LINKS = ("constant", "linear", "sigmoid", "log")
CANDIDATES = {"auroc": ("constant", "linear", "sigmoid"), "mae": ("constant", "linear", "log")}
UNBOUNDED_BEST = {"auroc": 1.0, "mae": 0.0}  # the best value when nothing better is known


def curve(link: str, best: float):
    """The curve `link` as f(x, *params), bounded by `best` (the sigmoid's ceiling, the log's floor)."""
    if link == "constant":
        return _constant
    if link == "linear":
        return _linear
    if link == "sigmoid":
        return lambda x, a, b: 0.5 + (best - 0.5) * expit(a + b * x)
    if link == "log":
        return lambda x, a, b: best + np.exp(np.clip(a + b * x, -50.0, 50.0))
    raise ValueError(f"link {link!r}; expected one of {LINKS}")


def metric_range(metric: str, best: float) -> tuple[float, float]:
    """The values a model's expected metric can take: AUROC in [0, best], MAE in [best, inf)."""
    return (0.0, best) if metric == "auroc" else (best, np.inf)


def _start(link: str, x: np.ndarray, y: np.ndarray, best: float) -> list[float]:
    """A starting point: the line through the points in the curve's link space."""
    if link == "constant":
        return [float(np.mean(y))]
    if link == "sigmoid":
        y = logit(np.clip((y - 0.5) / (best - 0.5), 0.02, 0.98))  # best > 0.5: checked by the caller
    elif link == "log":  # a run at or below the floor (evaluation noise) counts as just above it
        y = np.log(np.maximum(y - best, 1e-3 * max(float(np.max(y - best)), 1e-9)))
    slope, intercept = np.polyfit(x, y, 1)
    return [float(intercept), float(slope)]


def _fit(link: str, x: np.ndarray, y: np.ndarray, sigma: np.ndarray, best: float) -> np.ndarray:
    """The curve's parameters by weighted least squares (sigma (n,) each point's standard error)."""
    if link == "constant":
        weights = 1.0 / sigma**2
        return np.array([float(np.sum(weights * y) / np.sum(weights))])
    if link == "linear":
        return np.polyfit(x, y, 1, w=1.0 / sigma)[::-1].astype(float)  # (a, b)
    p0 = _start(link, x, y, best)
    if len(y) <= 2:  # two points: the link-space line goes through both
        return np.array(p0, float)
    try:
        with warnings.catch_warnings():  # a covariance that cannot be estimated: the bootstrap gives the interval
            warnings.simplefilter("ignore", OptimizeWarning)
            params, _ = curve_fit(curve(link, best), x, y, p0=p0, sigma=sigma, absolute_sigma=True, maxfev=5000)
    except RuntimeError:  # no convergence: keep the link-space line
        params = p0
    return np.asarray(params, float)


def _leave_one_out_error(link: str, metric: str, x: np.ndarray, y: np.ndarray, sigma: np.ndarray,
                         best: float) -> float:
    """Mean over runs of ((held-out metric - its prediction, clipped to the metric's range) / its sigma)^2,
    each run left out in turn."""
    errors = []
    for i in range(len(y)):
        rest = np.arange(len(y)) != i
        if len(np.unique(x[rest])) < 2 and link != "constant":
            return np.inf
        params = _fit(link, x[rest], y[rest], sigma[rest], best)
        predicted = np.clip(curve(link, best)(x[i], *params), *metric_range(metric, best))
        errors.append(((y[i] - predicted) / sigma[i]) ** 2)
    return float(np.mean(errors))


@dataclass(frozen=True)
class DownstreamLaw:
    metric: str  # "auroc" or "mae"
    link: str  # the chosen curve (LINKS)
    params: tuple[float, ...]
    x_range: tuple[float, float]  # the fitted x values' span
    n_runs: int
    draws: np.ndarray  # (n_bootstrap, len(params)) refitted parameters for the interval
    loo_errors: dict[str, float]  # each candidate's leave-one-run-out error
    best: float  # the best value a model can reach (the oracle's, or AUROC 1 / MAE 0)

    def _values(self, x, params) -> np.ndarray:
        return np.clip(curve(self.link, self.best)(np.asarray(x, float), *params),
                       *metric_range(self.metric, self.best))

    def __call__(self, x: float | np.ndarray) -> float | np.ndarray:
        return self._values(x, self.params)

    def predict(self, x: float) -> dict:
        """The metric at x, its 95% interval over the bootstrap refits, and whether x lies past the fitted
        span (an extrapolation)."""
        values = [float(self._values(x, p)) for p in self.draws]
        interval = [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))] if len(values) >= 10 \
            else None
        low, high = self.x_range
        return {"value": float(self(x)), "interval": interval,
                "extrapolated": bool(x < low - 1e-12 or x > high + 1e-12)}

    def to_json(self) -> dict:
        return {"metric": self.metric, "link": self.link, "params": list(self.params),
                "x_range": list(self.x_range), "n_runs": self.n_runs, "bootstrap": len(self.draws),
                "leave_one_out_error": self.loo_errors, "best": self.best}

    @classmethod
    def from_json(cls, law: dict) -> DownstreamLaw:
        return cls(law["metric"], law["link"], tuple(law["params"]), tuple(law["x_range"]), law["n_runs"],
                   np.zeros((0, len(law["params"]))), law.get("leave_one_out_error", {}),
                   law.get("best", UNBOUNDED_BEST[law["metric"]]))


def fit_downstream_law(metric: str, x: np.ndarray, y: np.ndarray, ci: np.ndarray | None = None,
                       n_bootstrap: int = 500, seed: int = 0, link: str | None = None,
                       best: float | None = None) -> DownstreamLaw:
    """Fit the metric `y` (n,) against `x` (n,), with `ci` (n, 2) each point's 95% interval (NaN where the
    evaluation gave none: the spread of the residuals stands in). `best` is the best value a model can reach
    on these patients (the oracle's metric; None: AUROC 1, MAE 0). `link` forces a curve; by default the
    candidates of the metric compete by leave-one-run-out. Needs 3 runs at 2 or more distinct x."""
    if metric not in CANDIDATES:
        raise ValueError(f"metric {metric!r}; expected one of {sorted(CANDIDATES)}")
    if link is not None and link not in CANDIDATES[metric]:
        raise ValueError(f"link {link!r}; expected one of {CANDIDATES[metric]} for {metric}")
    best = UNBOUNDED_BEST[metric] if best is None or not np.isfinite(best) else float(best)
    if metric == "auroc" and not 0.5 < best <= 1.0:
        raise ValueError(f"best AUROC {best}; expected a ceiling above chance (0.5, 1]")
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3 or len(np.unique(x[keep])) < 2:
        raise NotEnoughData(f"a downstream law needs 3 or more scored runs at 2 or more distinct x values, "
                            f"got {int(keep.sum())}")
    ci = np.full((len(keep), 2), np.nan) if ci is None else np.asarray(ci, float).reshape(len(keep), 2)
    x, y = x[keep], y[keep]
    sigma = (ci[keep, 1] - ci[keep, 0]) / (2 * Z_95)
    line = _fit("linear", x, y, np.ones_like(y), best)
    residual = float(np.std(y - _linear(x, *line), ddof=min(2, len(y) - 1))) or 1e-3
    sigma = np.where(np.isfinite(sigma) & (sigma > 0), sigma, residual)
    candidates = (link,) if link else CANDIDATES[metric]
    loo = {name: _leave_one_out_error(name, metric, x, y, sigma, best) for name in candidates}
    chosen = min(candidates, key=lambda name: (loo[name], candidates.index(name)))
    params = _fit(chosen, x, y, sigma, best)
    rng = np.random.default_rng(seed)
    draws = np.array([_fit(chosen, x, y + sigma * rng.standard_normal(len(y)), sigma, best)
                      for _ in range(n_bootstrap)]).reshape(-1, len(params))
    return DownstreamLaw(metric, chosen, tuple(float(p) for p in params), (float(x.min()), float(x.max())),
                         len(y), draws, loo, best)
