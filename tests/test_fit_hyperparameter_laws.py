"""Hyperparameter laws from a side sweep: a table drawn from known optimal learning rates and batch sizes
(power laws of compute) gives those laws back."""

import numpy as np
import pandas as pd
import pytest

from analysis.hyperparameter_laws import budget_optimum, fit_hyperparameter_laws, has_hyperparameter_sweep
from analysis.results_table import results_from_frame

BUDGETS = (1e15, 3e15, 1e16, 3e16)
LRS = np.geomspace(1e-4, 1e-1, 7)
BATCHES = (8, 16, 32, 64, 128, 256)


def true_lr(c):
    return 0.3118 * c ** -0.125  # DeepSeek LLM's law


def true_batch(c):
    return 1e-3 * c ** 0.3  # windows: 32 to 90 over the budgets


def side_sweep(noise=0.0, seed=0, batches=BATCHES):
    """Loss = 2 + 0.05 (log lr - log lr_opt)^2 + 0.02 (log B - log B_opt)^2 at every (budget, lr, batch)."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in BUDGETS:
        for lr in LRS:
            for b in batches:
                loss = 2 + 0.05 * np.log(lr / true_lr(c)) ** 2 + 0.02 * np.log(b / true_batch(c)) ** 2
                rows.append({"params": 1e6, "tokens": c / 6e6, "flops": c, "budget": c, "lr": lr, "batch_size": b,
                             "loss": loss * np.exp(noise * rng.standard_normal())})
    return results_from_frame(pd.DataFrame(rows), "side sweep")


def test_laws_of_a_noiseless_side_sweep_are_the_true_laws():
    laws = fit_hyperparameter_laws(side_sweep(), compute=1e18)
    assert laws.lr_law.exponent == pytest.approx(-0.125, abs=1e-6)
    assert laws.batch_law.exponent == pytest.approx(0.3, abs=1e-6)
    assert laws.lr(1e18) == pytest.approx(true_lr(1e18), rel=1e-5)
    assert laws.batch_size(1e18) == pytest.approx(true_batch(1e18), rel=1e-5)
    assert all(o["source"] == "quadratic" for o in laws.optima)
    assert "33x" in laws.warnings[-1]  # 1e18 is far past the side sweep's largest budget


def test_bootstrap_intervals_cover_the_true_exponents_under_noise():
    laws = fit_hyperparameter_laws(side_sweep(noise=0.002, seed=1), bootstrap=40, compute=1e17)
    low, high = laws.intervals["lr_exponent"]
    assert low < -0.125 < high and high - low < 0.2
    low, high = laws.intervals["batch_exponent"]
    assert low < 0.3 < high


def test_one_batch_size_gives_a_learning_rate_law_only():
    laws = fit_hyperparameter_laws(side_sweep(batches=(16,)))
    assert laws.batch_law is None
    # with B fixed off its optimum the lr optimum is unchanged (the loss separates), so the law is exact
    assert laws.lr_law.exponent == pytest.approx(-0.125, abs=1e-6)
    assert all(o["source"] == "parabola" for o in laws.optima)


def test_a_minimum_outside_the_swept_rates_falls_back_to_the_best_run():
    table = side_sweep(batches=(16,))
    edge = table.runs[table.runs["lr"] <= LRS[2]]  # every budget's optimum (~0.003) lies above these
    warnings = []
    optimum = budget_optimum(edge[edge["budget"] == BUDGETS[0]], warnings)
    assert optimum["source"] == "best run" and optimum["lr"] == pytest.approx(LRS[2])
    assert "no interior minimum" in warnings[0]


def test_tables_without_a_learning_rate_sweep_are_recognized():
    table = side_sweep()
    assert has_hyperparameter_sweep(table)
    one_lr = results_from_frame(table.runs[table.runs["lr"] == LRS[3]].reset_index(drop=True), "t")
    assert not has_hyperparameter_sweep(one_lr)
