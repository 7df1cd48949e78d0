"""Single-variable laws L(N), L(D), L(C), each with an irreducible term."""

import numpy as np
import pandas as pd
import pytest

from analysis.example_table import CHINCHILLA_LAW, EXAMPLE_BUDGETS, EXAMPLE_LAW, synthetic_isoflop_table
from analysis.fit_report import fit_all
from analysis.plots import _law_band
from analysis.results_table import results_from_frame
from analysis.single_variable_laws import (
    fit_saturating_power_law,
    fit_single_variable_laws,
    loss_vs_compute_frontier,
    loss_vs_params,
    loss_vs_tokens,
)

LAW = CHINCHILLA_LAW


def _grid_table():
    """Every size trained on every token count, losses exactly on the law."""
    params, tokens = np.meshgrid(np.geomspace(1e7, 1e9, 5), np.geomspace(1e9, 1e11, 4))
    frame = pd.DataFrame({"params": params.ravel(), "tokens": tokens.ravel()})
    return results_from_frame(frame.assign(loss=LAW.loss(frame["params"], frame["tokens"])))


def test_saturating_power_law_recovers_exact_data():
    x = np.geomspace(1e5, 1e8, 8)
    law = fit_saturating_power_law(x, 1.5 + 30 * x**-0.3, "params")
    assert (law.E, law.A, law.alpha) == pytest.approx((1.5, 30, 0.3), rel=1e-3)


def test_loss_vs_params_is_measured_at_the_largest_shared_token_count():
    law = loss_vs_params(_grid_table())
    assert law.held_at == pytest.approx(1e11)
    assert law.n_points == 5
    # at fixed D the data term is a constant that joins E
    assert law.E == pytest.approx(LAW.E + LAW.B * 1e11**-LAW.beta, rel=1e-3)
    assert (law.A, law.alpha) == pytest.approx((LAW.A, LAW.alpha), rel=1e-3)


def test_loss_vs_tokens_is_measured_at_the_largest_size():
    law = loss_vs_tokens(_grid_table())
    assert law.held_at == pytest.approx(1e9)
    assert law.E == pytest.approx(LAW.E + LAW.A * 1e9**-LAW.alpha, rel=1e-3)
    assert (law.A, law.alpha) == pytest.approx((LAW.B, LAW.beta), rel=1e-3)


def test_loss_vs_compute_goes_through_the_best_run_of_each_budget():
    runs, _ = synthetic_isoflop_table(EXAMPLE_LAW, EXAMPLE_BUDGETS, noise=0.0)
    table = results_from_frame(runs)
    law = loss_vs_compute_frontier(table)
    best = runs.groupby("budget")["loss"].min()
    assert law.n_points == len(EXAMPLE_BUDGETS)
    np.testing.assert_allclose(law(best.index.to_numpy()), best.to_numpy(), rtol=0.01)


def test_laws_that_cannot_be_measured_are_none_with_a_warning():
    runs, _ = synthetic_isoflop_table(EXAMPLE_LAW, EXAMPLE_BUDGETS)  # no curves: one token count per size
    laws, warnings = fit_single_variable_laws(results_from_frame(runs))
    assert laws["loss_vs_tokens"] is None
    assert any(w.startswith("single_variable.loss_vs_tokens") for w in warnings)
    assert laws["loss_vs_compute"] is not None


def test_bootstrap_band_of_a_single_variable_law_covers_the_law_it_came_from():
    """Every resample refits L(N) on the grid table (no noise): each resample's law is the law of its runs,
    so the band's ends are real laws of the data, and it holds the full-data law at every N."""
    report = fit_all(_grid_table(), approaches=("approach3",), bootstrap=30, holdout=0)
    samples = report.bootstrap.samples
    E, A, alpha = (samples[f"single_variable.loss_vs_params.{k}"] for k in ("E", "A", "alpha"))
    assert len(E) == len(A) == len(alpha) >= 2  # recorded together, one of each per fitted resample
    x = np.geomspace(1e7, 1e10, 20)
    low, high = _law_band(report, "single_variable.loss_vs_params", x)
    law = report.single_variable["loss_vs_params"]
    assert np.all(low <= law(x) + 1e-9) and np.all(law(x) <= high + 1e-9)
    assert report.bootstrap.n_failed["single_variable.loss_vs_params"] + len(E) == 30  # under the 50 a band takes
