"""Approach 1: the envelope of training curves."""

import numpy as np
import pandas as pd
import pytest

from analysis.envelope import fit_training_curve_envelope
from analysis.example_table import CHINCHILLA_LAW, EXAMPLE_BUDGETS, EXAMPLE_LAW, synthetic_isoflop_table
from analysis.results_table import NotEnoughData, results_from_frame


def test_envelope_takes_the_lowest_loss_run_at_each_compute_level():
    # three runs, linear in log10 compute: the small model wins below 1e14 FLOPs, the large one above,
    # the medium one never (loss_small = 3 - 0.5 x, loss_large = 3.5 - 0.75 x, x = log10(C / 1e12))
    sizes = {"small": 1e6, "medium": 3e6, "large": 1e7}
    lines = {"small": (3.0, -0.5), "medium": (5.0, -0.5), "large": (3.5, -0.75)}
    runs, curves = [], []
    for name, params in sizes.items():
        compute = np.array([1e12, 1e15])
        tokens = compute / (6 * params)
        intercept, slope = lines[name]
        loss = intercept + slope * np.log10(compute / 1e12)
        runs.append((name, params, tokens[-1], loss[-1]))
        curves += [(name, t, v) for t, v in zip(tokens, loss, strict=True)]
    table = results_from_frame(
        pd.DataFrame(runs, columns=["run_id", "params", "tokens", "loss"]),
        curves=pd.DataFrame(curves, columns=["run_id", "tokens", "loss"]),
    )
    fit = fit_training_curve_envelope(table, n_levels=301)
    below, above = fit.compute < 0.99e14, fit.compute > 1.01e14
    assert np.all(fit.params[below] == 1e6) and np.all(fit.params[above] == 1e7)
    np.testing.assert_allclose(fit.tokens, fit.compute / (6 * fit.params))
    expected = np.minimum(3.0 - 0.5 * np.log10(fit.compute / 1e12), 3.5 - 0.75 * np.log10(fit.compute / 1e12))
    np.testing.assert_allclose(fit.loss, expected, rtol=1e-9)


def test_a_level_reached_only_by_seed_replicates_of_one_size_is_not_on_the_envelope():
    # the small model (two seeds) runs to 1e15 FLOPs; the large one only from 1e13 to 1e15: below 1e13
    # only the small size's two seeds are there, and one size leaves no choice to make
    runs, curves = [], []
    for name, params, start in [("small-0", 1e6, 1e12), ("small-1", 1e6, 1e12), ("large", 1e7, 1e13)]:
        compute = np.array([start, 1e15])
        tokens = compute / (6 * params)
        x = np.log10(compute / 1e12)
        loss = 2.8 - 0.1 * x if name == "large" else 3.0 - 0.1 * x - (0.05 if name == "small-1" else 0.0)
        runs.append((name, params, tokens[-1], loss[-1]))
        curves += [(name, t, v) for t, v in zip(tokens, loss, strict=True)]
    table = results_from_frame(
        pd.DataFrame(runs, columns=["run_id", "params", "tokens", "loss"]),
        curves=pd.DataFrame(curves, columns=["run_id", "tokens", "loss"]),
    )
    # where both sizes are, the large one wins everywhere: one size on the envelope, no trend to fit
    with pytest.raises(NotEnoughData, match="a single model size is best"):
        fit_training_curve_envelope(table, n_levels=301)


@pytest.mark.parametrize("law,budgets", [(EXAMPLE_LAW, EXAMPLE_BUDGETS), (CHINCHILLA_LAW, np.geomspace(1e18, 1e21, 7))])
@pytest.mark.parametrize("seed", [0, 1])
def test_recovers_a_known_law_from_noisy_synthetic_curves(law, budgets, seed):
    runs, curves = synthetic_isoflop_table(law, budgets, seed=seed, curve_points=20)
    fit = fit_training_curve_envelope(results_from_frame(runs, curves=curves))
    assert fit.a == pytest.approx(law.a, abs=0.02)
    assert fit.b == pytest.approx(law.b, abs=0.02)
    target = 100 * max(budgets)
    assert fit.optimal_params(target) == pytest.approx(law.optimal_params(target), rel=0.25)


def test_a_table_without_curves_is_not_enough_data():
    runs, _ = synthetic_isoflop_table(EXAMPLE_LAW, EXAMPLE_BUDGETS)
    with pytest.raises(NotEnoughData, match="approach1: needs per-run loss curves"):
        fit_training_curve_envelope(results_from_frame(runs))
