"""Approach 2: IsoFLOP parabolas and the power laws through their minima."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.example_table import CHINCHILLA_LAW, EXAMPLE_BUDGETS, EXAMPLE_LAW, synthetic_isoflop_table
from analysis.isoflop import fit_isoflop_profiles, fit_parabola_robust
from analysis.results_table import NotEnoughData, results_from_frame

LLAMA3_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "llama3_isoflops_digitized.csv"


@pytest.mark.skipif(not LLAMA3_CSV.is_file(), reason="../shared/data is not present")
def test_llama3_isoflop_points_give_their_reported_token_exponent():
    table = results_from_frame(pd.read_csv(LLAMA3_CSV), LLAMA3_CSV.name)
    fit = fit_isoflop_profiles(table)
    assert len(fit.minima) == 10
    # Llama 3 reports D* = 0.29 C^0.53
    assert fit.b == pytest.approx(0.53, abs=0.02)
    assert fit.tokens_law.coefficient == pytest.approx(0.29, rel=0.15)
    assert fit.a + fit.b == pytest.approx(1.0, abs=0.01)  # D = C / 6N within each budget


@pytest.mark.parametrize("law,budgets", [(EXAMPLE_LAW, EXAMPLE_BUDGETS), (CHINCHILLA_LAW, np.geomspace(1e18, 1e21, 7))])
@pytest.mark.parametrize("seed", [0, 1])
def test_recovers_a_known_law_from_a_noisy_synthetic_table(law, budgets, seed):
    runs, _ = synthetic_isoflop_table(law, budgets, seed=seed)
    fit = fit_isoflop_profiles(results_from_frame(runs))
    assert fit.a == pytest.approx(law.a, abs=0.02)
    assert fit.b == pytest.approx(law.b, abs=0.02)
    target = 100 * max(budgets)
    assert fit.optimal_params(target) == pytest.approx(law.optimal_params(target), rel=0.25)


def test_parabola_vertex_of_exact_parabola_data():
    x = np.linspace(10, 14, 7)
    coefficients, dropped = fit_parabola_robust(x, 0.3 * (x - 12.3) ** 2 + 2.0)
    assert dropped is None
    assert -coefficients[1] / (2 * coefficients[0]) == pytest.approx(12.3)


def test_one_bad_run_in_a_budget_is_ignored():
    x = np.linspace(10, 14, 7)
    clean = 0.3 * (x - 12.3) ** 2 + 2.0 + np.random.default_rng(0).normal(0, 0.002, 7)
    bad = clean.copy()
    bad[2] *= 1.10  # one run 10% worse (diverged, bad seed)
    coefficients, dropped = fit_parabola_robust(x, bad)
    assert dropped == 2
    assert -coefficients[1] / (2 * coefficients[0]) == pytest.approx(12.3, abs=0.05)


def test_a_bad_seed_replicate_is_dropped_but_not_its_twin():
    x = np.repeat(np.linspace(10, 14, 5), 2)  # every size trained with two seeds
    y = 0.3 * (x - 12.3) ** 2 + 2.0 + np.random.default_rng(1).normal(0, 0.002, 10)
    y[4] *= 1.10  # one seed of the middle size went wrong
    coefficients, dropped = fit_parabola_robust(x, y)
    assert dropped == 4
    twin_kept = np.polyfit(np.delete(x, 4), np.delete(y, 4), 2)  # the fit without that one run
    np.testing.assert_allclose(coefficients, twin_kept, rtol=1e-6)
    # a bootstrap resample that drew the bad run twice drops both copies
    x2, y2 = np.append(x, x[4]), np.append(y, y[4])
    coefficients, dropped = fit_parabola_robust(x2, y2)
    np.testing.assert_allclose(coefficients, twin_kept, rtol=1e-6)


def test_warns_when_a_minimum_lies_outside_the_sampled_sizes():
    rows = []
    for budget in (1e15, 1e16, 1e17):
        optimum = EXAMPLE_LAW.optimal_params(budget)
        for params in optimum * np.geomspace(0.05, 0.5, 5):  # all sizes well below the optimum
            tokens = budget / (6 * params)
            rows.append((params, tokens, budget, EXAMPLE_LAW.loss(params, tokens)))
    table = results_from_frame(pd.DataFrame(rows, columns=["params", "tokens", "budget", "loss"]))
    fit = fit_isoflop_profiles(table)
    assert any("outside the sampled model sizes" in w for w in fit.warnings)
    assert not any(m.inside_sampled_range for m in fit.minima)


def test_budgets_with_too_few_sizes_are_skipped_and_too_few_budgets_fail():
    runs, _ = synthetic_isoflop_table(EXAMPLE_LAW, (1e14, 1e15, 1e16), sizes_per_budget=5)
    thin = runs[(runs["budget"] != 1e16) | (runs.index % 5 < 2)]  # the top budget keeps 2 sizes
    fit = fit_isoflop_profiles(results_from_frame(thin))
    assert [m.budget for m in fit.minima] == [1e14, 1e15]
    assert any("2 distinct model sizes" in w for w in fit.warnings)
    with pytest.raises(NotEnoughData, match="approach2: needs 2 budgets"):
        fit_isoflop_profiles(results_from_frame(runs[runs["budget"] == 1e14]))
