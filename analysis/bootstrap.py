"""Bootstrap uncertainty: resample whole runs (not points) with replacement, refit every approach that ran on
the full table, and report percentile intervals for every parameter, the exponents a and b, and, at a
target compute, the recommended N, D and predicted loss.

Approach 3 refits start from the full-data optimum (as Epoch did) and fall back to the full initialisation
grid when that start does not converge. A resample on which an approach cannot run (say, a budget left
with two sizes) is counted in `n_failed` rather than silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from analysis.blas_threads import single_threaded_blas
from analysis.compute_pricing import ComputePricing
from analysis.data_constrained import DataConstrainedFit, cap_values, fit_data_constrained_table
from analysis.envelope import EnvelopeFit, fit_training_curve_envelope
from analysis.isoflop import IsoflopFit, fit_isoflop_profiles
from analysis.parametric_fit import ParametricLossFit, fit_parametric_loss_table
from analysis.results_table import NotEnoughData, ResultsTable
from analysis.single_variable_laws import SINGLE_VARIABLE_FITS

CONFIDENCE_LEVEL = 0.95
# The single-variable laws' bands (figures only) take the first this many resamples: their refits cost ten
# times approach 3's, and a band needs fewer than an interval on a recommendation.
SINGLE_VARIABLE_RESAMPLES = 50


@dataclass(frozen=True)
class BootstrapResult:
    n: int
    seed: int
    samples: dict[str, np.ndarray]  # "approach3.alpha" -> values over the resamples where approach 3 ran
    n_failed: dict[str, int]
    level: float = CONFIDENCE_LEVEL

    def interval(self, name: str) -> tuple[float, float] | None:
        values = self.samples.get(name)
        if values is None or len(values) < 2:
            return None
        tail = 100 * (1 - self.level) / 2
        low, high = np.percentile(values, [tail, 100 - tail])
        return float(low), float(high)

    def to_json(self) -> dict:
        return {
            "n": self.n,
            "seed": self.seed,
            "level": self.level,
            "n_failed": dict(self.n_failed),
            "ci": {name: list(self.interval(name)) for name in self.samples if self.interval(name)},
        }


def _parametric_values(fit: ParametricLossFit) -> dict[str, float]:
    return {"E": fit.E, "A": fit.A, "B": fit.B, "alpha": fit.alpha, "beta": fit.beta, "a": fit.a, "b": fit.b}


def _data_constrained_values(fit: DataConstrainedFit) -> dict[str, float]:
    law = fit.law.law
    return {"E": fit.E, "A": fit.A, "B": fit.B, "alpha": fit.alpha, "beta": fit.beta, "R_D_star": fit.R_D_star,
            "a": law.a, "b": law.b}  # fmt: skip


def _recommendation_values(fit, compute: float, loss_law: ParametricLossFit | None,
                           pricing: ComputePricing | None = None) -> dict[str, float]:
    """N_opt, D_opt, D/N and the predicted loss at `compute` (approach 3's under `pricing` when given);
    nothing for a degenerate refit (an exponent of 0 says size or data does not matter, so it has no
    compute-optimal allocation)."""
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        if pricing is not None and isinstance(fit, ParametricLossFit):
            params, tokens = pricing.optimum(fit.law, compute)
        else:
            params, tokens = float(fit.optimal_params(compute)), float(fit.optimal_tokens(compute))
    if not (np.isfinite(params) and np.isfinite(tokens) and params > 0 and tokens > 0):
        return {}
    values = {"optimal_params": params, "optimal_tokens": tokens, "tokens_per_param": tokens / params}
    if loss_law is not None:
        values["predicted_loss"] = float(loss_law.predict(params, tokens))
    return values


def bootstrap_fits(
    table: ResultsTable,
    n_resamples: int,
    *,
    approach1: EnvelopeFit | None = None,
    approach2: IsoflopFit | None = None,
    approach3: ParametricLossFit | None = None,
    compute: float | None = None,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    data_constrained: DataConstrainedFit | None = None,
    unique_tokens: float | None = None,
    pricing: ComputePricing | None = None,
    single_variable: dict | None = None,
) -> BootstrapResult:
    """Refit the approaches given (those that ran on the full table) on `n_resamples` resamples of runs.
    With `data_constrained`, its law too (warm-started at the full-data fit), and with `compute` and
    `unique_tokens` its optimum under that data cap (`cap_values`). With `single_variable` (name -> law or
    None), each law that was fitted, as "single_variable.<name>.E / .A / .alpha" (one of each per resample
    that fitted it, so they stay aligned for bands), on the first SINGLE_VARIABLE_RESAMPLES resamples,
    each refit started from the full-data law's exponent."""
    single_variable = {name: law for name, law in (single_variable or {}).items() if law is not None}
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    n_failed = {name: 0 for name, fit in (("approach1", approach1), ("approach2", approach2),
                                           ("approach3", approach3),
                                           ("data_constrained", data_constrained)) if fit is not None}  # fmt: skip
    n_failed.update({f"single_variable.{name}": 0 for name in single_variable})

    def record(prefix: str, values: dict[str, float]) -> None:
        for key, value in values.items():
            samples.setdefault(f"{prefix}.{key}", []).append(value)

    # Resample rows of a canonical order, so the intervals do not depend on the order the runs finished in.
    canonical = np.lexsort((table.runs["loss"].to_numpy(), table.runs["tokens"].to_numpy(),
                            table.runs["params"].to_numpy()))
    with single_threaded_blas():
        for i in range(n_resamples):
            resample = table.select(canonical[rng.integers(0, table.n_runs, table.n_runs)])
            refits: dict[str, object] = {}
            if approach3 is not None:
                try:
                    refit = fit_parametric_loss_table(resample, warm_start=approach3)
                    refits["approach3"] = refit
                    record("approach3", _parametric_values(refit))
                except NotEnoughData:
                    n_failed["approach3"] += 1
            for name, fit_function, fitted in (
                ("approach2", fit_isoflop_profiles, approach2),
                ("approach1", fit_training_curve_envelope, approach1),
            ):
                if fitted is None:
                    continue
                try:
                    refit = fit_function(resample)
                    refits[name] = refit
                    record(name, {"a": refit.a, "b": refit.b})
                except NotEnoughData:
                    n_failed[name] += 1
            if data_constrained is not None:
                try:
                    refit = fit_data_constrained_table(resample, refit_from=data_constrained)
                    record("data_constrained", _data_constrained_values(refit))
                    if compute is not None and unique_tokens is not None:
                        # the epoch bound is the full table's: a rule the recommendation applies, not an estimate
                        record("data_constrained", cap_values(refit.law, compute, unique_tokens,
                                                              refit.flops_per_param_token,
                                                              data_constrained.last_helpful_epochs))  # fmt: skip
                except NotEnoughData:
                    n_failed["data_constrained"] += 1
            for name, full in single_variable.items() if i < SINGLE_VARIABLE_RESAMPLES else ():
                try:
                    law = SINGLE_VARIABLE_FITS[name](resample, start=full)
                    record(f"single_variable.{name}", {"E": law.E, "A": law.A, "alpha": law.alpha})
                except NotEnoughData:
                    n_failed[f"single_variable.{name}"] += 1
            if compute is not None:
                loss_law = refits.get("approach3")
                for name, refit in refits.items():
                    record(name, _recommendation_values(refit, compute, loss_law, pricing))
            if progress is not None:
                progress(i + 1)
    return BootstrapResult(
        n=n_resamples,
        seed=seed,
        samples={name: np.array(values) for name, values in samples.items()},
        n_failed=n_failed,
    )
