"""Metrics of one estimator on one task, with scikit-learn, and paired bootstrap intervals.

binary:   auroc, auprc (average precision), brier, calibration_error (expected calibration error over
          10 quantile bins of the estimate), calibration_in_the_large (mean estimate - prevalence); with the
          outcome's true risk (a synthetic cohort's oracle), auroc_true_risk
count, duration: mae, bias (mean estimate - mean label)

`auroc_true_risk` is the AUROC the estimate has in expectation over the labels' draw: every pair (i, j) of
different predictions is weighted by p_i (1 - p_j), the probability that i is a positive and j a negative,
where p is the outcome's true probability given the history. It removes the labels' coin flips from the
metric (with 20-50 positives they dominate its noise) and keeps what the estimate ranks; the true risk
itself reaches the highest value any estimate can.

Intervals are percentile intervals (2.5 %, 97.5 %) over `n_bootstrap` resamples of the prediction rows;
every estimator of a task is scored on the same resamples, so their intervals can be compared. AUROC
and AUPRC are left out (None, with a warning) when the task has fewer than `min_positives` positives
or negatives: an AUROC over three positives means nothing.

`paired_difference` compares two estimators on the same rows: the difference of their primary metric and
its interval over the same resamples (a paired bootstrap: far narrower than the two separate intervals
when the estimators err on the same patients), and a verdict, "ahead", "level" or "behind", that only says
ahead or behind when the interval excludes 0.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, mean_absolute_error, roc_auc_score

PRIMARY_METRIC = {"binary": "auroc", "count": "mae", "duration": "mae"}


def calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error: the row-weighted mean |mean label - mean estimate| over quantile bins."""
    edges = np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1)[1:-1]))
    bins = np.searchsorted(edges, p, side="right")
    counts = np.bincount(bins, minlength=len(edges) + 1)
    gap = np.abs(np.bincount(bins, weights=y, minlength=len(counts)) - np.bincount(bins, weights=p,
                                                                                   minlength=len(counts)))
    return float(gap.sum() / len(y))


def can_rank(kind: str, y: np.ndarray, min_positives: int) -> bool:
    """Whether ranking metrics (AUROC, AUPRC) mean anything: always for counts and durations, and for a binary
    task with at least `min_positives` positives and as many negatives."""
    return kind != "binary" or min(y.sum(), len(y) - y.sum()) >= min_positives


def true_risk_auroc(risk: np.ndarray, estimate: np.ndarray) -> float | None:
    """sum_{i != j} p_i (1 - p_j) [s_i > s_j] / sum_{i != j} p_i (1 - p_j) (ties count 1/2), p = `risk`, s =
    `estimate`; rows with no risk (NaN) are left out, None when no pair has weight. scikit-learn scores every row
    once as a positive of weight p and once as a negative of weight 1 - p, which adds the impossible pairs
    (i, i) as ties; they are taken out again in closed form."""
    known = np.isfinite(risk)
    p, s = np.clip(risk[known], 0.0, 1.0), np.clip(estimate[known], 0.0, 1.0)
    self_pairs = float(np.sum(p * (1.0 - p)))
    pairs = float(p.sum() * (1.0 - p).sum()) - self_pairs  # the weight of pairs i != j
    if pairs <= 0.0:
        return None
    labels = np.r_[np.ones(len(p)), np.zeros(len(p))]
    with_self = roc_auc_score(labels, np.r_[s, s], sample_weight=np.r_[p, 1.0 - p])
    return float((with_self * (pairs + self_pairs) - 0.5 * self_pairs) / pairs)


def primary_value(kind: str, y: np.ndarray, estimate: np.ndarray) -> float | None:
    """The task's primary metric alone (PRIMARY_METRIC): AUROC (None with one class) or MAE."""
    if kind == "binary":
        return float(roc_auc_score(y, np.clip(estimate, 0.0, 1.0))) if 0 < y.sum() < len(y) else None
    return float(mean_absolute_error(y, estimate))


def point_metrics(kind: str, y: np.ndarray, estimate: np.ndarray, ranking: bool = True,
                  true_risk: np.ndarray | None = None) -> dict[str, float | None]:
    """The task's metrics on these rows; `true_risk` (binary tasks): each row's true outcome probability."""
    if kind == "binary":
        both = 0 < y.sum() < len(y)
        p = np.clip(estimate, 0.0, 1.0)
        out = {
            "auroc": float(roc_auc_score(y, p)) if ranking and both else None,
            "auprc": float(average_precision_score(y, p)) if ranking and both else None,
            "brier": float(brier_score_loss(y, p)),
            "calibration_error": calibration_error(y, p),
            "calibration_in_the_large": float(p.mean() - y.mean()),
        }
        if true_risk is not None:
            out["auroc_true_risk"] = true_risk_auroc(true_risk, p) if ranking else None
        return out
    return {"mae": float(mean_absolute_error(y, estimate)), "bias": float(estimate.mean() - y.mean())}


def bootstrap_indices(n: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """(n_bootstrap, n) row indices drawn with replacement; shared by every estimator of a task."""
    if n == 0:
        return np.zeros((0, 0), np.int64)
    return np.random.default_rng(seed).integers(0, n, size=(n_bootstrap, n))


def task_metrics(kind: str, y: np.ndarray, estimate: np.ndarray, resamples: np.ndarray,
                 min_positives: int = 10, true_risk: np.ndarray | None = None) -> dict:
    """Point metrics and their bootstrap intervals: {"auroc": x, ..., "ci": {"auroc": [lo, hi], ...}};
    with `true_risk` (binary tasks) also auroc_true_risk."""
    ranking = can_rank(kind, y, min_positives)
    out: dict = point_metrics(kind, y, estimate, ranking, true_risk)
    draws: dict[str, list[float]] = {k: [] for k, v in out.items() if v is not None}
    for rows in resamples:
        yb = y[rows]
        if kind == "binary" and not 0 < yb.sum() < len(yb):
            continue  # a resample with one class has no AUROC; skip it for every metric
        risk = None if true_risk is None else true_risk[rows]
        for name, value in point_metrics(kind, yb, estimate[rows], ranking, risk).items():
            if name in draws and value is not None:
                draws[name].append(value)
    out["ci"] = {name: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if len(v) >= 10 else None
                 for name, v in draws.items()}
    return out


def paired_difference(kind: str, y: np.ndarray, first: np.ndarray, second: np.ndarray, resamples: np.ndarray,
                      min_positives: int = 10, true_risk: np.ndarray | None = None) -> dict | None:
    """`first` minus `second` on the task's primary metric (with `true_risk`, a binary task's auroc_true_risk),
    its paired bootstrap interval, and the verdict for `first` (better is higher AUROC, lower MAE). None when
    the metric is undefined (too few positives)."""
    metric = PRIMARY_METRIC[kind] if true_risk is None else "auroc_true_risk"
    if len(y) == 0 or not can_rank(kind, y, min_positives):
        return None

    def value(rows, estimate) -> float | None:
        if true_risk is None:
            return primary_value(kind, y[rows], estimate[rows])
        return true_risk_auroc(true_risk[rows], estimate[rows]) if 0 < y[rows].sum() < len(rows) else None

    def difference(rows) -> float | None:
        a, b = value(rows, first), value(rows, second)
        return None if a is None or b is None else a - b

    point = difference(np.arange(len(y)))
    if point is None:
        return None
    draws = [d for rows in resamples if (d := difference(rows)) is not None]
    ci = [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))] if len(draws) >= 10 else None
    better = 1.0 if metric.startswith("auroc") else -1.0
    verdict = "level"
    if ci is not None:
        low, high = sorted(better * c for c in ci)
        verdict = "ahead" if low > 0 else "behind" if high < 0 else "level"
    return {"metric": metric, "difference": float(point), "ci": ci, "verdict": verdict}
