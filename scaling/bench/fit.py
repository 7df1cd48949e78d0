"""`scaling bench fit`: how fast approach 3 and its bootstrap are on this machine, against a naive reference.

The reference is what a straightforward SciPy replication does: one L-BFGS-B per starting point of
Chinchilla's 4,500-point grid, with numeric (finite-difference) gradients. Running all 4,500 would take
minutes, so it runs on an evenly spread subset of the grid and its time is scaled up by 4,500 / subset size;
the ratio of that estimate to the fast fit's measured time is the reported speed-up. Both run in the same
process, one after the other, single-threaded BLAS for both.

Data: 240 runs drawn from Epoch's fitted Chinchilla law with 1% noise, or Epoch's extraction of the
Chinchilla runs when its CSV is given (240 after dropping the 5 highest-loss runs).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import logsumexp

from analysis.blas_threads import single_threaded_blas
from analysis.bootstrap import bootstrap_fits
from analysis.example_table import CHINCHILLA_LAW, synthetic_isoflop_table
from analysis.parametric_fit import HUBER_DELTA, LogData, chinchilla_init_grid, fit_parametric_loss_table, huber
from analysis.results_table import ResultsTable, results_from_frame
from scaling.common.errors import InputError

APPROACH3_GOAL_SECONDS = 5.0
BOOTSTRAP_GOAL_SECONDS = 60.0


def chinchilla_table(path: Path) -> ResultsTable:
    """Epoch's Chinchilla runs (chinchilla_epoch_svg_extracted.csv) as a results table, with their choice:
    drop the 5 highest-loss runs."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; expected Epoch's Chinchilla CSV (chinchilla_epoch_svg_extracted.csv)")
    raw = pd.read_csv(path)
    frame = pd.DataFrame(
        {
            "params": raw["Model Size"],
            "tokens": raw["Training FLOP"] / (6 * raw["Model Size"]),
            "flops": raw["Training FLOP"],
            "loss": raw["loss"],
        }
    ).dropna()
    return results_from_frame(frame, source=path.name).without_highest_loss(5)


def _benchmark_table(data: Path | None) -> ResultsTable:
    if data is not None:
        return chinchilla_table(data)
    runs, _ = synthetic_isoflop_table(CHINCHILLA_LAW, np.geomspace(6e18, 3e21, 12), sizes_per_budget=20, noise=0.01)
    return results_from_frame(runs, source="synthetic (Epoch's Chinchilla law, 1% noise)")


def _naive_objective(theta: np.ndarray, data: LogData) -> float:
    e, a, b, alpha, beta = theta
    terms = [np.full_like(data.log_params, e), a - alpha * data.log_params, b - beta * data.log_tokens]
    return float(huber(logsumexp(terms, axis=0) - data.log_loss, data.delta).sum())


def naive_reference(table: ResultsTable, n_starts: int) -> dict:
    """Numeric-gradient L-BFGS-B from `n_starts` evenly spread grid points; time scaled to the full grid."""
    params, tokens, loss = table.arrays()
    data = LogData.from_arrays(params, tokens, loss, HUBER_DELTA)
    grid = chinchilla_init_grid()
    subset = grid[np.linspace(0, len(grid) - 1, n_starts).round().astype(int)]
    started = time.perf_counter()
    best = min((minimize(_naive_objective, start, args=(data,), method="L-BFGS-B") for start in subset),
               key=lambda r: r.fun)  # fmt: skip
    per_start = (time.perf_counter() - started) / n_starts
    return {
        "starts_timed": n_starts,
        "seconds_per_start": per_start,
        "full_grid_seconds_estimate": per_start * len(grid),
        "best_objective_of_subset": float(best.fun),
    }


def bench_fit(
    data: Path | None = None, naive_starts: int = 8, bootstrap: int = 1000, log: Callable[[str], None] | None = None
) -> dict:
    """Time approach 3 (full initialisation grid), a `bootstrap`-resample bootstrap, and the naive reference."""
    say = log or (lambda message: None)
    table = _benchmark_table(data)
    with single_threaded_blas():
        say(f"approach 3 on {table.n_runs} runs of {table.source} ...")
        timings = []
        for _ in range(2):
            started = time.perf_counter()
            fit = fit_parametric_loss_table(table)
            timings.append(time.perf_counter() - started)
        say(f"naive reference: numeric-gradient L-BFGS-B from {naive_starts} of the 4,500 grid points ...")
        naive = naive_reference(table, naive_starts)
        say(f"bootstrap: {bootstrap} resamples ...")
        started = time.perf_counter()
        boot = bootstrap_fits(table, bootstrap, approach3=fit)
        bootstrap_seconds = time.perf_counter() - started
    approach3_seconds = min(timings)
    return {
        "data": table.source,
        "n_runs": table.n_runs,
        "approach3_seconds": approach3_seconds,
        "approach3_seconds_first": timings[0],
        "approach3": {k: getattr(fit, k) for k in ("E", "A", "B", "alpha", "beta", "objective", "converged")},
        "naive": naive,
        "speedup_vs_naive": naive["full_grid_seconds_estimate"] / approach3_seconds,
        "bootstrap_resamples": bootstrap,
        "bootstrap_seconds": bootstrap_seconds,
        "bootstrap_failed": boot.n_failed.get("approach3", 0),
        "goals": {
            "approach3_under_5s": approach3_seconds < APPROACH3_GOAL_SECONDS,
            "bootstrap_1000_under_60s": bootstrap_seconds * 1000 / max(bootstrap, 1) < BOOTSTRAP_GOAL_SECONDS,
        },
    }
