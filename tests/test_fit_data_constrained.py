"""The data-constrained law L(N, D, U) (Muennighoff et al. 2023): its closed form, recovery of a known law
from a table drawn from it (also with runs that overfit mixed in), the optimum under a data cap and under an
epoch bound, and null with a reason without repeated data."""

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import approx_fprime

from analysis.data_constrained import (
    OVERFIT_TOLERANCE,
    RepeatData,
    cap_analysis,
    constrained_optimum,
    fit_data_constrained_table,
    objective_and_gradient,
    overfit_runs,
)
from analysis.example_table import (
    EXAMPLE_DATA_CONSTRAINED_LAW,
    EXAMPLE_LAW,
    EXAMPLE_SIZES,
    EXAMPLE_UNIQUE_TOKENS,
    synthetic_data_constrained_table,
)
from analysis.fit_report import fit_all
from analysis.loss_law import DataConstrainedLaw
from analysis.parametric_fit import fit_parametric_loss_table
from analysis.results_table import NotEnoughData, results_from_frame
from scaling.common.errors import InputError

LAW = EXAMPLE_DATA_CONSTRAINED_LAW


def test_effective_data_is_the_closed_form():
    U, r_star = 1e6, LAW.R_D_star
    assert LAW.effective_tokens(0.5 * U, U) == pytest.approx(0.5 * U)  # a fresh subset
    assert LAW.effective_tokens(U, U) == pytest.approx(U)
    for epochs in (2.0, 4.0, 16.0, 32.0):
        expected = U + U * r_star * (1 - np.exp(-(epochs - 1) / r_star))
        assert LAW.effective_tokens(epochs * U, U) == pytest.approx(expected)
    assert LAW.effective_tokens(1e6 * U, U) == pytest.approx(U * (1 + r_star))  # the ceiling
    assert LAW.effective_tokens(3e9, np.inf) == pytest.approx(3e9)  # unlimited data
    assert LAW.loss(1e7, 4e9, np.inf) == pytest.approx(EXAMPLE_LAW.loss(1e7, 4e9))
    assert DataConstrainedLaw.from_json(LAW.to_json()) == LAW


def test_gradient_is_exact():
    table = results_from_frame(synthetic_data_constrained_table(LAW))
    params, tokens, loss = table.arrays()
    data = RepeatData.from_arrays(params, tokens, table.unique_tokens_array(), loss)
    theta = np.array([0.1, 4.0, 7.0, 0.3, 0.35, np.log(8.0)])
    numeric = approx_fprime(theta, lambda t: objective_and_gradient(t, data)[0], 1e-7)
    np.testing.assert_allclose(objective_and_gradient(theta, data)[1], numeric, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("r_star,seed", [(15.4, 0), (5.0, 1), (40.0, 2)])
def test_recovers_a_known_law(r_star, seed):
    true = DataConstrainedLaw(EXAMPLE_LAW, r_star)
    table = results_from_frame(synthetic_data_constrained_table(true, noise=0.005, seed=seed))
    fit = fit_data_constrained_table(table, warm_start=fit_parametric_loss_table(table))
    assert fit.converged
    assert fit.R_D_star == pytest.approx(r_star, rel=0.20)
    for params in EXAMPLE_SIZES:
        for unique in EXAMPLE_UNIQUE_TOKENS:
            assert fit.predict(params, 16 * unique, unique) == pytest.approx(
                true.loss(params, 16 * unique, unique), rel=0.01
            )


def test_constrained_optimum_spends_the_compute_and_costs_loss():
    C, U, k = 1e17, 1e8, 6.0
    point = constrained_optimum(LAW, C, U)
    assert k * point["params"] * point["tokens"] == pytest.approx(C, rel=1e-9)
    assert point["epochs"] == pytest.approx(point["tokens"] / U)
    # the minimum over N: neighbours on the compute line are no better
    for factor in (0.9, 1.1):
        n = point["params"] * factor
        assert LAW.loss(n, C / (k * n), U) >= point["predicted_loss"]
    cap = cap_analysis(LAW, C, U)
    free = cap["unconstrained"]
    assert free["params"] == pytest.approx(EXAMPLE_LAW.optimal_params(C))
    assert free["predicted_loss"] == pytest.approx(EXAMPLE_LAW.loss(free["params"], free["tokens"]))
    assert free["predicted_loss"] < point["predicted_loss"] <= free["loss_at_unique_tokens"]
    assert cap["loss_cost"] == pytest.approx(point["predicted_loss"] - free["predicted_loss"])
    assert point["params"] > free["params"]  # a cap on data moves the optimum to larger models
    assert cap["double_compute"]["predicted_loss"] < point["predicted_loss"]
    assert cap["double_unique_tokens"]["predicted_loss"] < point["predicted_loss"]
    # with plenty of unique data the cap costs nothing
    plenty = cap_analysis(LAW, C, 1e15)
    assert plenty["constrained"]["params"] == pytest.approx(free["params"], rel=1e-3)
    assert plenty["loss_cost"] == pytest.approx(0.0, abs=1e-6)


def test_runs_more_epochs_made_worse_are_found():
    # N, U, D, loss: per (N, U), a run is flagged when its loss tops the best earlier one by more than 1%
    rows = [
        (1e6, 1e7, 5e6, 3.00), (1e6, 1e7, 2e7, 2.50), (1e6, 1e7, 8e7, 2.60), (1e6, 1e7, 3e8, 2.55),  # 8x, 30x worse
        (2e6, 1e7, 2e7, 2.40), (2e6, 1e7, 8e7, 2.42),  # +0.8%: within the noise tolerance
        (1e6, 1e8, 2e7, 2.90), (1e6, 1e8, 8e7, 2.95),  # fewer tokens than U: no repeat, never flagged
        (2e6, 4e7, 8e7, 2.30), (2e6, 4e7, 1.6e8, 2.10), (2e6, 4e7, 3.2e8, 2.20),  # 4x worse
    ]
    params, unique, tokens, loss = (np.array(column) for column in zip(*rows, strict=True))
    mask, last_helpful = overfit_runs(params, tokens, unique, loss)
    assert mask.tolist() == [False, False, True, True, False, False, False, False, False, False, True]
    assert 2.42 / 2.40 - 1 < OVERFIT_TOLERANCE < 2.60 / 2.50 - 1
    # the best run before each group's first flagged one: 2 epochs (U = 1e7) and 4 epochs (U = 4e7)
    assert last_helpful == pytest.approx(2.0)
    no_worse = slice(4, 8)  # the groups where more epochs never hurt
    assert overfit_runs(params[no_worse], tokens[no_worse], unique[no_worse], loss[no_worse])[1] == np.inf


def test_runs_that_overfit_are_left_out_and_the_law_still_recovered():
    runs = synthetic_data_constrained_table(LAW, noise=0.005, seed=3)
    # the largest model on the smallest subset memorises it past 32 epochs: its loss rises 20% and 35%
    group = runs[(runs["params"] == max(EXAMPLE_SIZES)) & (runs["unique_tokens"] == min(EXAMPLE_UNIQUE_TOKENS))]
    last = group.loc[group["epochs"].idxmax()]
    extra = [last.to_dict() | {"run_id": f"memorised-x{e}", "epochs": e, "tokens": e * last["unique_tokens"],
                               "flops": 6 * last["params"] * e * last["unique_tokens"], "loss": last["loss"] * rise}
             for e, rise in ((64.0, 1.20), (128.0, 1.35))]
    table = results_from_frame(pd.concat([runs, pd.DataFrame(extra)], ignore_index=True))
    fit = fit_data_constrained_table(table, warm_start=fit_parametric_loss_table(table))
    assert set(fit.overfit_run_ids) == {"memorised-x64.0", "memorised-x128.0"}
    assert fit.n_points == len(runs) and fit.overfit_epochs == 64.0
    assert fit.last_helpful_epochs == pytest.approx(group.loc[group["loss"].idxmin(), "epochs"])
    assert fit.R_D_star == pytest.approx(LAW.R_D_star, rel=0.20)
    U = min(EXAMPLE_UNIQUE_TOKENS)
    assert fit.predict(1e7, 16 * U, U) == pytest.approx(LAW.loss(1e7, 16 * U, U), rel=0.01)
    assert any("2 run(s) got worse with more epochs" in w for w in fit.warnings)


def test_capped_optimum_stays_within_the_epochs_that_helped():
    C, U, k = 1e17, 1e7, 6.0
    free = constrained_optimum(LAW, C, U)
    assert free["epochs"] > 8 and not free["limited_by_epochs"]
    bound = free["epochs"] / 2
    held = constrained_optimum(LAW, C, U, max_epochs=bound)
    # on the bound: N = C / (k·U·bound), and a worse loss than the law's own optimum
    assert held["limited_by_epochs"] and held["epochs"] == pytest.approx(bound, rel=1e-6)
    assert held["params"] == pytest.approx(C / (k * U * bound), rel=1e-6)
    assert held["predicted_loss"] > free["predicted_loss"]
    # a bound the optimum does not reach changes nothing
    loose = constrained_optimum(LAW, C, U, max_epochs=2 * free["epochs"])
    assert loose["params"] == pytest.approx(free["params"], rel=1e-6) and not loose["limited_by_epochs"]
    assert cap_analysis(LAW, C, U, k, bound)["max_epochs"] == bound


def test_fit_report_adds_the_law_with_bootstrap_intervals():
    table = results_from_frame(synthetic_data_constrained_table(LAW))
    report = fit_all(table, approaches=("approach3",), bootstrap=8, holdout=0, compute=1e17)
    data = report.to_json()
    dc = data["data_constrained"]
    assert set(dc) >= {"E", "A", "B", "alpha", "beta", "R_D_star", "converged", "form", "max_epochs"}
    assert dc["n_repeated_runs"] == 75 and dc["max_epochs"] == 32
    assert report.unique_tokens == max(EXAMPLE_UNIQUE_TOKENS)
    ci = data["bootstrap"]["ci"]
    low, high = ci["data_constrained.R_D_star"]
    assert low <= dc["R_D_star"] <= high
    assert {"data_constrained.constrained.predicted_loss", "data_constrained.loss_cost"} <= set(ci)


@pytest.mark.parametrize("columns", ["none", "no_repeats"])
def test_no_repetition_gives_null_with_a_reason(columns):
    runs = synthetic_data_constrained_table(LAW, epochs=(0.25, 0.5, 1.0))
    if columns == "none":
        runs = runs.drop(columns=["unique_tokens", "epochs"])
    table = results_from_frame(runs)
    with pytest.raises(NotEnoughData, match="^data_constrained: "):
        fit_data_constrained_table(table)
    data = fit_all(table, holdout=0).to_json()
    assert data["data_constrained"] is None
    assert data["approach3"] is not None
    reason = "records no unique_tokens" if columns == "none" else "needs 3+ runs that repeat data"
    assert any(w.startswith("data_constrained:") and reason in w for w in data["warnings"])


def test_results_table_reads_unique_tokens_and_epochs():
    runs = synthetic_data_constrained_table(LAW, sizes=(1e6,), unique_tokens=(1e7,), epochs=(1.0, 4.0))
    table = results_from_frame(runs.drop(columns=["unique_tokens"]))  # derived from epochs
    np.testing.assert_allclose(table.unique_tokens_array(), 1e7)
    assert table.unique_tokens == 1e7
    partial = runs.assign(unique_tokens=[1e7, np.nan], epochs=[1.0, np.nan])
    table = results_from_frame(partial)
    assert np.isinf(table.unique_tokens_array()).sum() == 1
    assert any("taken as not repeating data" in note for note in table.notes)
    with pytest.raises(InputError, match="column 'epochs' disagrees with tokens / unique_tokens"):
        results_from_frame(runs.assign(epochs=[1.0, 2.0]))
    with pytest.raises(InputError, match="column 'unique_tokens' has 1 non-positive values"):
        results_from_frame(runs.assign(unique_tokens=[1e7, 0.0], epochs=np.nan))
    assert not results_from_frame(runs.drop(columns=["unique_tokens", "epochs"])).has_unique_tokens
