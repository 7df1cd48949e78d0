"""Metrics against direct scikit-learn calls, calibration by hand, bootstrap intervals, paired differences."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, mean_absolute_error, roc_auc_score

from scaling.evaluate.evaluation import samples_ladder
from scaling.evaluate.metrics import (
    bootstrap_indices,
    calibration_error,
    paired_difference,
    point_metrics,
    task_metrics,
)


@pytest.fixture(scope="module")
def binary():
    rng = np.random.default_rng(3)
    p = rng.random(211)
    y = (rng.random(211) < p).astype(float)
    return y, p


def test_binary_metrics_equal_sklearn(binary):
    y, p = binary
    m = point_metrics("binary", y, p)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, p))
    assert m["auprc"] == pytest.approx(average_precision_score(y, p))
    assert m["brier"] == pytest.approx(brier_score_loss(y, p))
    assert m["calibration_in_the_large"] == pytest.approx(p.mean() - y.mean())


def test_regression_metrics_equal_sklearn():
    rng = np.random.default_rng(5)
    y, estimate = rng.poisson(2, 97).astype(float), rng.random(97) * 4
    m = point_metrics("count", y, estimate)
    assert m["mae"] == pytest.approx(mean_absolute_error(y, estimate))
    assert m["bias"] == pytest.approx(estimate.mean() - y.mean())


def test_calibration_error_by_hand():
    # two bins (edge at the median 0.5): [0.2, 0.4] with labels [0, 1], [0.6, 0.8] with labels [1, 1]
    y, p = np.array([0, 1, 1, 1.0]), np.array([0.2, 0.4, 0.6, 0.8])
    expected = (2 / 4) * abs(0.5 - 0.3) + (2 / 4) * abs(1.0 - 0.7)
    assert calibration_error(y, p, n_bins=2) == pytest.approx(expected)
    rng = np.random.default_rng(0)
    p = rng.random(20_000)
    assert calibration_error((rng.random(20_000) < p).astype(float), p) < 0.02  # calibrated: near 0


def test_bootstrap_intervals_bracket_the_point_and_skip_ranking_with_few_positives(binary):
    y, p = binary
    resamples = bootstrap_indices(len(y), 100, seed=1)
    m = task_metrics("binary", y, p, resamples, min_positives=10)
    for name in ("auroc", "auprc", "brier"):
        lo, hi = m["ci"][name]
        assert lo <= m[name] <= hi and hi - lo > 0
    few = y.copy()
    few[np.flatnonzero(few)[3:]] = 0  # three positives
    m = task_metrics("binary", few, p, resamples, min_positives=10)
    assert m["auroc"] is None and m["auprc"] is None and "auroc" not in m["ci"]
    assert m["brier"] == pytest.approx(brier_score_loss(few, p))
    assert task_metrics("binary", y, p, bootstrap_indices(len(y), 0, 1))["ci"]["auroc"] is None


def test_samples_ladder():
    assert samples_ladder(1) == [1]
    assert samples_ladder(8) == [1, 2, 4, 8]
    assert samples_ladder(12) == [1, 2, 4, 8, 12]


def test_paired_difference_by_hand(binary):
    y, p = binary
    resamples = bootstrap_indices(len(y), 200, seed=2)
    noise = np.random.default_rng(4).random(len(y))
    better = paired_difference("binary", y, p, noise, resamples)  # the true probability against noise
    assert better["metric"] == "auroc"
    assert better["difference"] == pytest.approx(roc_auc_score(y, p) - roc_auc_score(y, noise))
    low, high = better["ci"]
    assert low <= better["difference"] <= high and low > 0 and better["verdict"] == "ahead"
    worse = paired_difference("binary", y, noise, p, resamples)
    assert worse["difference"] == pytest.approx(-better["difference"]) and worse["verdict"] == "behind"
    same = paired_difference("binary", y, p, p.copy(), resamples)
    assert same["difference"] == 0 and same["ci"] == [0, 0] and same["verdict"] == "level"
    # MAE: lower is better, so a smaller error is "ahead" with a negative difference
    counts = np.random.default_rng(6).poisson(3, 150).astype(float)
    close, far = counts + 0.1, counts + 2.0
    mae = paired_difference("count", counts, close, far, bootstrap_indices(150, 100, seed=0))
    assert mae["metric"] == "mae" and mae["difference"] == pytest.approx(0.1 - 2.0) and mae["verdict"] == "ahead"
    # the same noise on both sides: the paired interval is far narrower than either estimator's own
    shared = np.random.default_rng(7).normal(0, 0.3, len(y))
    a, b = np.clip(p + shared, 0, 1), np.clip(p + shared + 0.01, 0, 1)
    paired = paired_difference("binary", y, a, b, resamples)["ci"]
    alone = task_metrics("binary", y, a, resamples)["ci"]["auroc"]
    assert paired[1] - paired[0] < (alone[1] - alone[0]) / 4
    few = y.copy()
    few[np.flatnonzero(few)[3:]] = 0
    assert paired_difference("binary", few, p, noise, resamples) is None  # no AUROC over three positives
