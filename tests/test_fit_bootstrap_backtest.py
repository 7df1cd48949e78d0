"""Bootstrap intervals over resampled runs, and the extrapolation backtest."""

import numpy as np
import pytest

from analysis.backtest import backtest_extrapolation
from analysis.bootstrap import BootstrapResult, bootstrap_fits
from analysis.example_table import EXAMPLE_BUDGETS, EXAMPLE_LAW, synthetic_isoflop_table
from analysis.isoflop import fit_isoflop_profiles
from analysis.parametric_fit import fit_parametric_loss_table
from analysis.results_table import results_from_frame


def _table(seed=0, noise=0.005, curves=False):
    runs, curve_frame = synthetic_isoflop_table(EXAMPLE_LAW, EXAMPLE_BUDGETS, seed=seed, noise=noise,
                                                curve_points=5 if curves else 0)
    return results_from_frame(runs, "synthetic", curve_frame)


def test_resampling_draws_whole_runs_with_their_curves():
    table = _table(curves=True)
    resample = table.select(np.array([3, 3, 7]))
    assert list(resample.runs["run_id"]) == [table.runs["run_id"][3]] * 2 + [table.runs["run_id"][7]]
    assert set(resample.curves["run_id"]) == {table.runs["run_id"][3], table.runs["run_id"][7]}
    assert len(resample.curves) == 10  # 5 points each; a repeated run's curve is not duplicated


def test_intervals_are_percentiles_of_the_refits():
    samples = np.random.default_rng(0).normal(size=500)
    result = BootstrapResult(n=500, seed=0, samples={"approach3.a": samples}, n_failed={})
    assert result.interval("approach3.a") == pytest.approx(tuple(np.percentile(samples, [2.5, 97.5])))


def test_bootstrap_intervals_cover_the_true_exponents_and_the_optimum():
    table = _table()
    compute = 100 * max(EXAMPLE_BUDGETS)
    result = bootstrap_fits(table, 60, approach2=fit_isoflop_profiles(table),
                            approach3=fit_parametric_loss_table(table), compute=compute, seed=1)
    assert result.n_failed == {"approach2": 0, "approach3": 0}
    assert len(result.samples["approach3.alpha"]) == 60
    for name in ("approach3.a", "approach2.a"):
        low, high = result.interval(name)
        assert low < EXAMPLE_LAW.a < high, name
    low, high = result.interval("approach3.optimal_params")
    assert low < EXAMPLE_LAW.optimal_params(compute) < high
    json = result.to_json()
    assert json["n"] == 60 and "approach3.predicted_loss" in json["ci"]


def test_backtest_holds_out_the_top_budget_and_grades_the_prediction():
    table = _table()
    backtest = backtest_extrapolation(table)
    top = table.runs[table.runs["budget"] == max(EXAMPLE_BUDGETS)]
    assert sorted(backtest.held_out["run_id"]) == sorted(top["run_id"])
    assert backtest.fit_runs == table.n_runs - len(top)
    assert backtest.extrapolation_factor == pytest.approx(3.0)
    # independent: refit on the other runs and compare by hand
    law = fit_parametric_loss_table(table.select(np.flatnonzero(table.runs["budget"] != max(EXAMPLE_BUDGETS))))
    expected = law.predict(top["params"].to_numpy(), top["tokens"].to_numpy()) / top["loss"].to_numpy() - 1
    np.testing.assert_allclose(np.sort(backtest.held_out["relative_error"]), np.sort(expected), rtol=1e-6)
    assert backtest.median_abs_rel_error < 0.015  # 0.5% noise
    assert backtest.to_json()["held_out_runs"] == len(top)


def test_backtest_on_noise_free_data_is_almost_exact_and_can_hold_out_k_runs():
    table = _table(noise=0.0)
    backtest = backtest_extrapolation(table, holdout_runs=5)
    assert backtest.held_out_by == "highest_compute_runs"
    highest = table.runs.sort_values("flops", kind="stable")["run_id"].iloc[-5:]
    assert sorted(backtest.held_out["run_id"]) == sorted(highest)
    assert backtest.max_abs_rel_error < 1e-3


def test_intervals_do_not_depend_on_the_order_runs_finished_in():
    """A sweep appends results as runs finish, in an order Ray decides: the same runs in another order
    give the same bootstrap samples."""
    table = _table(seed=3, noise=0.02)
    shuffled = table.select(np.random.default_rng(1).permutation(table.n_runs))
    a3 = fit_parametric_loss_table(table)
    first = bootstrap_fits(table, 6, approach3=a3, compute=1e17, seed=0)
    second = bootstrap_fits(shuffled, 6, approach3=fit_parametric_loss_table(shuffled), compute=1e17, seed=0)
    for name in ("approach3.alpha", "approach3.optimal_params"):
        np.testing.assert_allclose(first.samples[name], second.samples[name], rtol=1e-6)


def test_a_refit_with_no_optimal_allocation_adds_no_recommendation_sample():
    from analysis.bootstrap import _recommendation_values
    from analysis.parametric_fit import ParametricLossFit

    flat_in_size = ParametricLossFit(E=1.0, A=2.0, B=50.0, alpha=0.0, beta=0.5, objective=0.0, converged=True,
                                     max_abs_gradient=0.0, n_points=9, n_starts=1, n_starts_at_best=1)
    assert flat_in_size.optimal_params(1e12) == 0.0  # the old code divided by this
    assert _recommendation_values(flat_in_size, 1e12, flat_in_size) == {}


def test_leave_future_out_fits_each_budgets_past_and_grades_that_budget():
    from analysis.backtest import leave_future_out

    budgets = [1e17, 3e17, 1e18, 3e18, 1e19]
    runs, _ = synthetic_isoflop_table(EXAMPLE_LAW, budgets, seed=0, noise=0.0)
    table = results_from_frame(runs, "synthetic")
    rows = leave_future_out(table)
    assert [row["budget"] for row in rows] == budgets[2:]
    for row in rows:
        past = table.runs["budget"] < row["budget"]
        assert row["fit_runs"] == int(past.sum())
        assert row["fit_budgets"] == [b for b in budgets if b < row["budget"]]
        assert row["predicted_runs"] == int((table.runs["budget"] == row["budget"]).sum())
        # noiseless runs of the law: every future is predicted (almost) exactly
        assert row["max_abs_rel_error"] < 1e-3
    # independent: the last row by hand
    last = rows[-1]
    law = fit_parametric_loss_table(table.select(np.flatnonzero(table.runs["budget"] < budgets[-1])))
    top = table.runs[table.runs["budget"] == budgets[-1]]
    errors = law.predict(top["params"].to_numpy(), top["tokens"].to_numpy()) / top["loss"].to_numpy() - 1
    assert last["mean_rel_error"] == pytest.approx(float(np.mean(errors)), abs=1e-9)
    past = table.runs[table.runs["budget"] < budgets[-1]]
    assert last["extrapolation_factor"] == pytest.approx(top["flops"].max() / past["flops"].max())


def test_leave_future_out_reports_a_thin_past_instead_of_fitting_it():
    from analysis.backtest import leave_future_out

    # 3 sizes per budget: the past of the third budget is 6 runs, below approach 3's 8; the fourth's is 9
    runs, _ = synthetic_isoflop_table(EXAMPLE_LAW, [1e17, 3e17, 1e18, 3e18], sizes_per_budget=3, seed=0, noise=0.0)
    rows = leave_future_out(results_from_frame(runs, "synthetic"))
    assert [row["fit_runs"] for row in rows] == [6, 9]
    assert "approach3: needs 8+ runs" in rows[0]["error"] and "median_abs_rel_error" not in rows[0]
    assert "error" not in rows[1] and rows[1]["max_abs_rel_error"] < 1e-3
