"""Metrics of one estimator on one task, with scikit-learn, and paired bootstrap intervals.

binary:   auroc, auprc (average precision), brier, calibration_error (expected calibration error over
          10 quantile bins of the estimate), calibration_in_the_large (mean estimate - prevalence)
count, duration: mae, bias (mean estimate - mean label)

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


def primary_value(kind: str, y: np.ndarray, estimate: np.ndarray) -> float | None:
    """The task's primary metric alone (PRIMARY_METRIC): AUROC (None with one class) or MAE."""
    if kind == "binary":
        return float(roc_auc_score(y, np.clip(estimate, 0.0, 1.0))) if 0 < y.sum() < len(y) else None
    return float(mean_absolute_error(y, estimate))


def point_metrics(kind: str, y: np.ndarray, estimate: np.ndarray, ranking: bool = True) -> dict[str, float | None]:
    if kind == "binary":
        both = 0 < y.sum() < len(y)
        p = np.clip(estimate, 0.0, 1.0)
        return {
            "auroc": float(roc_auc_score(y, p)) if ranking and both else None,
            "auprc": float(average_precision_score(y, p)) if ranking and both else None,
            "brier": float(brier_score_loss(y, p)),
            "calibration_error": calibration_error(y, p),
            "calibration_in_the_large": float(p.mean() - y.mean()),
        }
    return {"mae": float(mean_absolute_error(y, estimate)), "bias": float(estimate.mean() - y.mean())}


def bootstrap_indices(n: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """(n_bootstrap, n) row indices drawn with replacement; shared by every estimator of a task."""
    if n == 0:
        return np.zeros((0, 0), np.int64)
    return np.random.default_rng(seed).integers(0, n, size=(n_bootstrap, n))


def task_metrics(kind: str, y: np.ndarray, estimate: np.ndarray, resamples: np.ndarray,
                 min_positives: int = 10) -> dict:
    """Point metrics and their bootstrap intervals: {"auroc": x, ..., "ci": {"auroc": [lo, hi], ...}}."""
    ranking = can_rank(kind, y, min_positives)
    out: dict = point_metrics(kind, y, estimate, ranking)
    draws: dict[str, list[float]] = {k: [] for k, v in out.items() if v is not None}
    for rows in resamples:
        yb = y[rows]
        if kind == "binary" and not 0 < yb.sum() < len(yb):
            continue  # a resample with one class has no AUROC; skip it for every metric
        for name, value in point_metrics(kind, yb, estimate[rows], ranking).items():
            if name in draws and value is not None:
                draws[name].append(value)
    out["ci"] = {name: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if len(v) >= 10 else None
                 for name, v in draws.items()}
    return out


def paired_difference(kind: str, y: np.ndarray, first: np.ndarray, second: np.ndarray, resamples: np.ndarray,
                      min_positives: int = 10) -> dict | None:
    """`first` minus `second` on the task's primary metric, its paired bootstrap interval, and the verdict for
    `first` (better is higher AUROC, lower MAE). None when the metric is undefined (too few positives)."""
    metric = PRIMARY_METRIC[kind]
    if len(y) == 0 or not can_rank(kind, y, min_positives):
        return None

    def difference(rows) -> float | None:
        a, b = primary_value(kind, y[rows], first[rows]), primary_value(kind, y[rows], second[rows])
        return None if a is None or b is None else a - b

    point = difference(np.arange(len(y)))
    if point is None:
        return None
    draws = [d for rows in resamples if (d := difference(rows)) is not None]
    ci = [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))] if len(draws) >= 10 else None
    better = 1.0 if metric == "auroc" else -1.0
    verdict = "level"
    if ci is not None:
        low, high = sorted(better * c for c in ci)
        verdict = "ahead" if low > 0 else "behind" if high < 0 else "level"
    return {"metric": metric, "difference": float(point), "ci": ci, "verdict": verdict}
