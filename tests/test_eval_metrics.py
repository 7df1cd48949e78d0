"""Metrics against direct scikit-learn calls, calibration by hand, bootstrap intervals."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, mean_absolute_error, roc_auc_score

from scaling.evaluate.evaluation import samples_ladder
from scaling.evaluate.metrics import bootstrap_indices, calibration_error, point_metrics, task_metrics


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
