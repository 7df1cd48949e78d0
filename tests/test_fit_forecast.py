"""The pre-registered forecast: approach 3 at a run's own N and D, its bootstrap and pinned-E spread, and the
hash that names the runs it was fitted on."""

import numpy as np
import pytest

from analysis.example_table import EXAMPLE_BUDGETS, EXAMPLE_LAW, synthetic_isoflop_table
from analysis.fit_report import fit_all
from analysis.forecast import fit_input_sha256, forecast_run, grade
from analysis.results_table import results_from_frame

FAR = 30 * max(EXAMPLE_BUDGETS)  # a run 30x past the sweep


def _table(noise=0.005, seed=0):
    runs, _ = synthetic_isoflop_table(EXAMPLE_LAW, EXAMPLE_BUDGETS, seed=seed, noise=noise)
    return results_from_frame(runs, "synthetic")


def _far_run():
    params = float(EXAMPLE_LAW.optimal_params(FAR))
    return params, FAR / (6 * params)


def test_forecast_of_a_noiseless_sweep_is_the_law_and_a_pinned_true_E_agrees():
    report = fit_all(_table(noise=0.0), approaches=("approach3",), holdout=0)
    params, tokens = _far_run()
    forecast = forecast_run(report, params, tokens, pinned_E=EXAMPLE_LAW.E, pinned_E_source="the true E")
    truth = EXAMPLE_LAW.loss(params, tokens)
    assert forecast["predicted_loss"] == pytest.approx(truth, rel=1e-6)
    assert forecast["pinned_E"]["predicted_loss"] == pytest.approx(truth, rel=1e-6)
    assert forecast["bootstrap_interval"] is None  # no bootstrap was asked for
    largest = report.table.runs["flops"].max()
    assert forecast["extrapolation_factor"] == pytest.approx(6 * params * tokens / largest, rel=1e-9)


def test_a_wrongly_pinned_E_widens_the_interval_to_its_forecast():
    report = fit_all(_table(noise=0.0), approaches=("approach3",), holdout=0)
    params, tokens = _far_run()
    forecast = forecast_run(report, params, tokens)  # E pinned to 0: a pure power law
    pinned = forecast["pinned_E"]
    assert pinned["E"] == 0.0 and pinned["source"].startswith("pure power law")
    # the power law bends less, so 30x past the sweep it forecasts a lower loss than the true law
    assert pinned["predicted_loss"] < forecast["predicted_loss"]
    assert forecast["interval"] == [pytest.approx(pinned["predicted_loss"]), pytest.approx(forecast["predicted_loss"])]


def test_bootstrap_interval_is_the_percentiles_of_each_refits_prediction_and_covers_the_truth():
    report = fit_all(_table(noise=0.005, seed=3), approaches=("approach3",), bootstrap=40, holdout=0)
    params, tokens = _far_run()
    forecast = forecast_run(report, params, tokens, pinned_E=EXAMPLE_LAW.E)
    s = report.bootstrap.samples
    by_hand = [s["approach3.E"][i] + s["approach3.A"][i] / params ** s["approach3.alpha"][i]
               + s["approach3.B"][i] / tokens ** s["approach3.beta"][i] for i in range(len(s["approach3.E"]))]
    assert forecast["bootstrap_interval"] == pytest.approx(list(np.percentile(by_hand, [2.5, 97.5])))
    low, high = forecast["interval"]
    assert low <= EXAMPLE_LAW.loss(params, tokens) <= high


def test_fit_input_hash_ignores_row_order_and_sees_any_changed_loss():
    table = _table()
    shuffled = results_from_frame(table.runs.sample(frac=1.0, random_state=0).reset_index(drop=True), "other")
    assert fit_input_sha256(shuffled) == fit_input_sha256(table)
    changed = table.runs.copy()
    changed.loc[3, "loss"] *= 1.001
    assert fit_input_sha256(results_from_frame(changed, "synthetic")) != fit_input_sha256(table)


def test_grade_is_the_relative_error_and_the_interval_check():
    forecast = {"predicted_loss": 2.0, "interval": [1.9, 2.1]}
    assert grade(forecast, 2.2) == {"actual_loss": 2.2, "relative_error": pytest.approx(0.1), "inside_interval": False}
    assert grade(forecast, 1.95)["inside_interval"] is True
    assert grade(forecast, None)["relative_error"] is None


def test_an_exact_floor_makes_the_pinned_law_the_point_forecast_and_grading_reports_both():
    """With an exact E the forecast is the pinned law's prediction; the free law's stays beside it, and the
    grade gives the error of each against the actual loss."""
    report = fit_all(_table(noise=0.005, seed=3), approaches=("approach3",), holdout=0)
    params, tokens = _far_run()
    bound = forecast_run(report, params, tokens, pinned_E=EXAMPLE_LAW.E)
    exact = forecast_run(report, params, tokens, pinned_E=EXAMPLE_LAW.E, pinned_E_exact=True)
    assert bound["point_from"] == "window_mean" and bound["predicted_loss"] == bound["window_mean"]["predicted_loss"]
    assert exact["point_from"] == "pinned_E" and exact["pinned_E"]["exact"]
    assert exact["predicted_loss"] == exact["pinned_E"]["predicted_loss"]
    assert exact["free_E_predicted_loss"] == bound["free_E_predicted_loss"]
    actual = EXAMPLE_LAW.loss(params, tokens)
    graded = grade(exact, actual)
    assert graded["relative_error"] == pytest.approx((actual - exact["predicted_loss"]) / exact["predicted_loss"])
    free = bound["free_E_predicted_loss"]
    assert graded["free_E_relative_error"] == pytest.approx((actual - free) / free)


def test_refits_without_the_smallest_budgets_recover_the_law_a_bent_bottom_budget_hides():
    """Noiseless runs of the example law, except that the smallest budget's runs sit 3% low (a regime where
    loss falls faster): the full fit's forecast far past the sweep is off; the refits from the second budget
    up (and the third, while two budgets remain) see only the law and predict it; the interval spans them."""
    table = _table(noise=0.0)
    runs = table.runs.copy()
    smallest = runs["budget"] == runs["budget"].min()
    runs.loc[smallest, "loss"] *= 0.97
    report = fit_all(results_from_frame(runs, "bent"), approaches=("approach3",), holdout=0)
    params, tokens = _far_run()
    truth = EXAMPLE_LAW.loss(params, tokens)
    forecast = forecast_run(report, params, tokens, pinned_E=EXAMPLE_LAW.E)
    refits = forecast["without_smallest_budgets"]
    budgets = sorted(set(EXAMPLE_BUDGETS))
    assert [r["min_budget"] for r in refits] == pytest.approx(budgets[1:-1])
    assert [r["runs"] for r in refits] == [int((runs["budget"] >= b * (1 - 1e-9)).sum()) for b in budgets[1:-1]]
    assert abs(forecast["free_E_predicted_loss"] - truth) / truth > 0.002
    for refit in refits:
        assert refit["predicted_loss"] == pytest.approx(truth, rel=1e-4)
    low, high = forecast["interval"]
    assert low <= truth <= high
    graded = grade(forecast, truth)
    assert [g["min_budget"] for g in graded["without_smallest_budgets"]] == [r["min_budget"] for r in refits]
    assert graded["without_smallest_budgets"][0]["relative_error"] == pytest.approx(0.0, abs=1e-4)
    by_hand = (forecast["free_E_predicted_loss"] + sum(r["predicted_loss"] for r in refits)) / (1 + len(refits))
    assert forecast["window_mean"] == {"predicted_loss": pytest.approx(by_hand), "fits": 1 + len(refits)}
    assert graded["window_mean_relative_error"] == pytest.approx((truth - by_hand) / by_hand)
    # the point forecast is the window mean: closer to the truth than the bent all-budget law
    assert forecast["point_from"] == "window_mean" and forecast["predicted_loss"] == pytest.approx(by_hand)
    assert abs(by_hand - truth) < abs(forecast["free_E_predicted_loss"] - truth)


def test_report_prints_each_refit_and_its_graded_error():
    from scaling.pipeline.report import forecast_lines

    report = fit_all(_table(noise=0.005, seed=3), approaches=("approach3",), holdout=0)
    params, tokens = _far_run()
    forecast = {**forecast_run(report, params, tokens), "made_before_training": True}
    actual = EXAMPLE_LAW.loss(params, tokens)
    text = "\n".join(forecast_lines({"forecast": grade(forecast, actual)}, forecast, {}, None))
    assert len(forecast["without_smallest_budgets"]) == len(EXAMPLE_BUDGETS) - 2
    for refit in forecast["without_smallest_budgets"]:
        budget, predicted = refit["min_budget"], refit["predicted_loss"]
        assert f"fitted from budget {budget:.3g} up: {predicted:.4f}" in text
        assert f"The law fitted from budget {budget:.3g} up: {100 * (actual - predicted) / predicted:+.2f}%." in text
    # the mean is the point: the headline names it and its error, once
    mean = forecast["window_mean"]["predicted_loss"]
    assert forecast["point_from"] == "window_mean"
    free = forecast["free_E_predicted_loss"]
    refits = len(EXAMPLE_BUDGETS) - 2
    assert f"loss {mean:.4f} (the mean of the law fitted on all budgets, {free:.4f}, and its {refits} refits" in text
    assert f"**{100 * (actual - mean) / mean:+.2f}%** against the forecast" in text
    assert "the mean of those" not in text and "The mean over budget windows" not in text
    assert f"The law fitted on all budgets: {100 * (actual - free) / free:+.2f}%." in text
    # where the point is the law's own (E pinned exactly), the mean is named beside it, with its error
    pinned = {**forecast, "point_from": "pinned_E", "predicted_loss": free}
    text = "\n".join(forecast_lines({"forecast": grade(pinned, actual)}, pinned, {}, None))
    assert f"the mean of those {refits + 1} forecasts (all budgets and each refit): {mean:.4f}" in text
    assert f"The mean over budget windows: {100 * (actual - mean) / mean:+.2f}%." in text
