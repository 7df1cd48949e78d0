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
    true_risk_auroc,
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


def test_true_risk_auroc_by_pair_count():
    # every ordered pair i != j weighted by p_i (1 - p_j): the chance that i is a positive and j a negative
    p = np.array([0.9, 0.2, 0.5, 0.05, np.nan])  # the last row has no known risk: left out
    s = np.array([0.7, 0.7, 0.1, 0.3, 0.99])
    right = total = 0.0
    for i in range(4):
        for j in range(4):
            if i != j:
                weight = p[i] * (1 - p[j])
                total += weight
                right += weight * (1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0)
    assert true_risk_auroc(p, s) == pytest.approx(right / total)
    assert true_risk_auroc(np.zeros(5), s) is None  # no positive can be drawn: no pair has weight


def test_true_risk_auroc_is_the_expected_auroc_over_the_labels_draw_and_the_risk_ranks_best():
    rng = np.random.default_rng(11)
    p = rng.beta(0.5, 6.0, 600)  # a rare outcome, as the demo's
    scores = np.clip(p + rng.normal(0, 0.05, 600), 0, 1)
    draws = [roc_auc_score(y, scores) for y in (rng.random((2000, 600)) < p).astype(float)]
    assert true_risk_auroc(p, scores) == pytest.approx(np.mean(draws), abs=0.003)
    # the labels' coin flips move the label AUROC by several hundredths; the true-risk AUROC does not see them
    assert np.std(draws) > 0.01
    # no estimate ranks better than the risk itself (for each pair, it weights the likelier order)
    for noise in (0.01, 0.05, 0.2):
        other = np.clip(p + rng.normal(0, noise, 600), 0, 1)
        assert true_risk_auroc(p, other) < true_risk_auroc(p, p)


def test_true_risk_metrics_and_their_paired_difference(binary):
    y, p = binary
    resamples = bootstrap_indices(len(y), 200, seed=2)
    noise = np.random.default_rng(4).random(len(y))
    m = task_metrics("binary", y, noise, resamples, true_risk=p)
    assert m["auroc_true_risk"] == pytest.approx(true_risk_auroc(p, noise))
    lo, hi = m["ci"]["auroc_true_risk"]
    assert lo <= m["auroc_true_risk"] <= hi
    assert "auroc_true_risk" not in task_metrics("binary", y, noise, resamples)  # no risk, no such metric
    better = paired_difference("binary", y, p, noise, resamples, true_risk=p)
    assert better["metric"] == "auroc_true_risk"
    assert better["difference"] == pytest.approx(true_risk_auroc(p, p) - true_risk_auroc(p, noise))
    assert better["verdict"] == "ahead" and better["ci"][0] > 0
