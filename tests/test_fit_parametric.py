"""Approach 3: the parametric loss L(N, D) = E + A/N^alpha + B/D^beta."""

import time
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import approx_fprime, minimize_scalar

from analysis.example_table import CHINCHILLA_LAW, EXAMPLE_BUDGETS, EXAMPLE_LAW, synthetic_isoflop_table
from analysis.parametric_fit import (
    LogData,
    chinchilla_init_grid,
    fit_parametric_loss,
    fit_parametric_loss_table,
    huber_objective_and_gradient,
    project_linear_terms,
)
from analysis.results_table import NotEnoughData, results_from_frame

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CHINCHILLA_CSV = SHARED_DATA / "chinchilla_epoch_svg_extracted.csv"
EPOCH = {"E": 1.82, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}


def _synthetic(law=EXAMPLE_LAW, budgets=EXAMPLE_BUDGETS, seed=0, noise=0.005):
    runs, _ = synthetic_isoflop_table(law, budgets, seed=seed, noise=noise)
    return results_from_frame(runs, "synthetic")


def test_analytic_gradient_matches_finite_differences():
    params, tokens, loss = _synthetic().arrays()
    data = LogData.from_arrays(params, tokens, loss)
    for theta in ([0.3, 4.0, 7.0, 0.3, 0.35], [1.0, 10.0, 5.0, 1.0, 0.2]):
        theta = np.array(theta)
        _, gradient = huber_objective_and_gradient(theta, data)
        numeric = approx_fprime(theta, lambda t: huber_objective_and_gradient(t, data)[0], 1e-7)
        np.testing.assert_allclose(gradient, numeric, rtol=1e-4, atol=1e-8)


def test_chinchilla_initialisation_grid_has_4500_points():
    grid = chinchilla_init_grid()
    assert grid.shape == (4500, 5)
    # columns e, a, b, alpha, beta: Hoffmann et al. appendix D.2
    assert sorted(set(grid[:, 0])) == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert sorted(set(grid[:, 1])) == sorted(set(grid[:, 2])) == [0, 5, 10, 15, 20, 25]
    assert sorted(set(grid[:, 3])) == sorted(set(grid[:, 4])) == [0.0, 0.5, 1.0, 1.5, 2.0]


def test_linear_projection_recovers_the_linear_terms_at_the_true_exponents():
    params, tokens = np.geomspace(1e6, 1e9, 12), np.geomspace(1e10, 1e8, 12)
    loss = CHINCHILLA_LAW.loss(params, tokens)
    data = LogData.from_arrays(params, tokens, loss)
    e, a, b = project_linear_terms(CHINCHILLA_LAW.alpha, CHINCHILLA_LAW.beta, data)
    np.testing.assert_allclose([e, a, b], [CHINCHILLA_LAW.E, CHINCHILLA_LAW.A, CHINCHILLA_LAW.B], rtol=1e-6)


@pytest.mark.skipif(not CHINCHILLA_CSV.is_file(), reason="../shared/data is not present")
def test_chinchilla_data_reproduces_epochs_published_fit():
    from scaling.bench.fit import chinchilla_table

    table = chinchilla_table(CHINCHILLA_CSV)
    assert table.n_runs == 240
    started = time.perf_counter()
    fit = fit_parametric_loss_table(table)
    seconds = time.perf_counter() - started
    assert fit.converged
    for name in ("E", "alpha", "beta"):
        assert getattr(fit, name) == pytest.approx(EPOCH[name], rel=0.01), name
    for name in ("A", "B"):
        assert getattr(fit, name) == pytest.approx(EPOCH[name], rel=0.05), name
    assert fit.a == pytest.approx(0.513, abs=0.005)
    assert seconds < 5.0


@pytest.mark.parametrize("law,budgets", [(EXAMPLE_LAW, EXAMPLE_BUDGETS), (CHINCHILLA_LAW, np.geomspace(1e18, 1e21, 7))])
@pytest.mark.parametrize("seed", [0, 1])
def test_recovers_a_known_law_from_a_noisy_synthetic_table(law, budgets, seed):
    fit = fit_parametric_loss_table(_synthetic(law, budgets, seed))
    assert fit.converged
    assert fit.a == pytest.approx(law.a, abs=0.02)
    assert fit.b == pytest.approx(law.b, abs=0.02)
    target = 100 * max(budgets)
    assert fit.optimal_params(target) == pytest.approx(law.optimal_params(target), rel=0.25)


def test_compute_optimal_size_minimises_the_fitted_loss_at_fixed_compute():
    fit = fit_parametric_loss_table(_synthetic())
    compute = 1e17
    # independent: minimise L(N, C / 6N) over log N numerically
    best = minimize_scalar(lambda log_n: fit.predict(np.exp(log_n), compute / (6 * np.exp(log_n))),
                           bounds=(np.log(1e3), np.log(1e10)), method="bounded", options={"xatol": 1e-10})
    assert fit.optimal_params(compute) == pytest.approx(np.exp(best.x), rel=1e-4)
    assert fit.optimal_params(compute) * fit.optimal_tokens(compute) * 6 == pytest.approx(compute)


def test_warm_started_refit_agrees_with_the_full_search():
    table = _synthetic(seed=3)
    full = fit_parametric_loss_table(table)
    resample = table.select(np.random.default_rng(0).integers(0, table.n_runs, table.n_runs))
    warm = fit_parametric_loss_table(resample, warm_start=full)
    cold = fit_parametric_loss_table(resample)
    assert warm.n_starts == 1 and warm.converged
    assert warm.objective == pytest.approx(cold.objective, rel=1e-6)
    assert warm.alpha == pytest.approx(cold.alpha, rel=1e-3)


def test_noise_free_data_is_fitted_exactly():
    params = np.repeat(np.geomspace(1e6, 1e9, 6), 4)
    tokens = np.tile(np.geomspace(1e8, 1e11, 4), 6)
    fit = fit_parametric_loss(params, tokens, CHINCHILLA_LAW.loss(params, tokens))
    for name in ("E", "A", "B", "alpha", "beta"):
        assert getattr(fit, name) == pytest.approx(getattr(CHINCHILLA_LAW, name), rel=1e-3), name


def test_thin_table_is_not_enough_data():
    runs, _ = synthetic_isoflop_table(EXAMPLE_LAW, (1e15,), sizes_per_budget=5)
    with pytest.raises(NotEnoughData, match="approach3: needs 8"):
        fit_parametric_loss_table(results_from_frame(runs))
