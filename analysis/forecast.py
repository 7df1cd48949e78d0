"""A pre-registered forecast: the loss one run will reach, with an honest interval, made before it trains.

`forecast_run(report, params, tokens, pinned_E)` evaluates approach 3 at the run's own N and D and
gives the forecast two kinds of uncertainty:
- `bootstrap_interval`: the law refitted on resampled runs (the report's bootstrap), each resample's
  prediction at (N, D), as a percentile interval at the bootstrap's level;
- `pinned_E`: approach 3 refitted with the irreducible loss E pinned (to the data's entropy floor when the
  token store knows it, else 0: a pure power law), and its prediction. Far past the sweep, E and the
  exponents trade off against each other; how far the forecast moves when E is pinned is the part of the
  uncertainty a bootstrap over the same runs cannot see.
- `without_smallest_budgets`: approach 3 refitted with the sweep's smallest budget left out, then the two
  smallest, while two budgets remain, and each refit's prediction. Small budgets can sit in a regime where
  loss falls faster with compute than further up (short runs, models mostly embedding), and a law that must
  pass through them bends too fast; a bootstrap over the same runs cannot see that either (measured:
  docs/fitting.md, "How far the forecast moves without the smallest budget").
`interval` spans all three. `window_mean` is the mean of the full law's forecast and every refit's: a
forecast over windows of budgets, which trades the bottom budget's bias for the refits' variance.
The point forecast (`point_from` says which) is the pinned law's when the pinned E is exact (the floor of
exactly what the run's loss scores, `pinned_E_exact`: E is known, not fitted); else `window_mean` when the
sweep has refits (three budgets or more); else the free-E law's. The window mean became the point after
three pre-registered tests (30x twice, 100x once): within 0.27% each time, where the all-budget law missed
by +0.39% to +0.92% (docs/fitting.md, "How far the forecast moves without the smallest budget").
A run that repeats a data cap of U unique tokens is forecast by the data-constrained law instead
(`forecast_capped_run`: its loss at (N, D, U), the interval of its bootstrap refits), with approach 3's
fresh-data forecast at the same N and D beside it (`unconstrained_predicted_loss`: what ignoring the
repeats would predict).
`fit_input_sha256` names the runs the forecast was fitted on (their N, D, C and loss,
order-free), so a later comparison can check that the forecast and the results table still agree.
"""

from __future__ import annotations

import hashlib

import numpy as np

from analysis.fit_report import FitReport
from analysis.loss_law import LAW_KEYS, DataConstrainedLaw, LossLaw
from analysis.parametric_fit import fit_parametric_loss_table
from analysis.results_table import NotEnoughData, ResultsTable, from_budget

LAW_SAMPLE_KEYS = LAW_KEYS


def fit_input_sha256(table: ResultsTable) -> str:
    """A hash of the runs a fit sees: params, tokens, flops and loss, rounded to 12 significant digits and
    sorted, so neither the row order nor the file format changes it."""
    runs = table.runs[["params", "tokens", "flops", "loss"]].to_numpy(float)
    rows = sorted(tuple(f"{v:.12g}" for v in row) for row in runs)
    return hashlib.sha256("\n".join(",".join(row) for row in rows).encode()).hexdigest()


def bootstrap_predictions(report: FitReport, params: float, tokens: float) -> np.ndarray:
    """Each bootstrap refit's approach-3 prediction at (N, D) (empty without a bootstrap)."""
    samples = report.bootstrap.samples if report.bootstrap is not None else {}
    if not all(f"approach3.{k}" in samples for k in LAW_SAMPLE_KEYS):
        return np.array([])
    # LossLaw with one array per parameter evaluates every resample's law at once
    return LossLaw(*(samples[f"approach3.{k}"] for k in LAW_SAMPLE_KEYS)).loss(params, tokens)


def _percentile_interval(draws: np.ndarray, level: float | None) -> list[float] | None:
    draws = draws[np.isfinite(draws)]
    if len(draws) < 2 or level is None:
        return None
    tail = 100 * (1 - level) / 2
    return [float(v) for v in np.percentile(draws, [tail, 100 - tail])]


def forecast_capped_run(report: FitReport, params: float, tokens: float, unique_tokens: float) -> dict:
    """The forecast of a run of N = `params`, D = `tokens` drawn from `unique_tokens` unique tokens, by the
    data-constrained law (see the module docstring)."""
    fit = report.data_constrained
    if fit is None:
        raise ValueError("a capped forecast needs the data-constrained law; the fit report has none")
    point = float(fit.predict(params, tokens, unique_tokens))
    samples = report.bootstrap.samples if report.bootstrap is not None else {}
    keys = (*LAW_SAMPLE_KEYS, "R_D_star")
    draws = np.array([])
    if all(f"data_constrained.{k}" in samples for k in keys):
        law = LossLaw(*(samples[f"data_constrained.{k}"] for k in LAW_SAMPLE_KEYS))
        draws = np.asarray(DataConstrainedLaw(law, samples["data_constrained.R_D_star"]).loss(params, tokens,
                                                                                              unique_tokens))
    level = report.bootstrap.level if report.bootstrap is not None else None
    boot = _percentile_interval(draws, level)
    unconstrained = None if report.approach3 is None else float(report.approach3.predict(params, tokens))
    epochs = tokens / unique_tokens
    return {
        "approach": "data_constrained",
        "params": float(params),
        "tokens": float(tokens),
        "unique_tokens": float(unique_tokens),
        "epochs": float(epochs),
        "predicted_loss": point,
        "point_from": "data_constrained",
        "interval": [min(point, *(boot or [point])), max(point, *(boot or [point]))],
        "bootstrap_interval": boot,
        "bootstrap_level": level,
        "bootstrap_resamples": int(np.sum(np.isfinite(draws))),
        "law": fit.law.to_json(),
        "last_helpful_epochs": None if not np.isfinite(fit.last_helpful_epochs) else fit.last_helpful_epochs,
        "beyond_last_helpful_epochs": bool(epochs > fit.last_helpful_epochs * (1 + 1e-6)),
        "unconstrained_predicted_loss": unconstrained,
        "fit_runs": report.table.n_runs,
        "fit_input_sha256": fit_input_sha256(report.table),
        "extrapolation_factor": float(report.table.flops_per_param_token * params * tokens
                                      / report.table.runs["flops"].max()),
    }


def forecast_without_smallest_budgets(table: ResultsTable, params: float, tokens: float) -> list[dict]:
    """Approach 3 refitted on the budgets from the second smallest up, then from the third, ..., while two
    budgets remain, and each refit's prediction at (N, D); a refit the remaining runs cannot support stops
    the list."""
    refits = []
    for min_budget in table.budgets[1:-1]:
        kept = from_budget(table, float(min_budget))
        try:
            fit = fit_parametric_loss_table(kept)
        except NotEnoughData:
            break
        refits.append({"min_budget": float(min_budget), "runs": kept.n_runs,
                       "predicted_loss": float(fit.predict(params, tokens)), "converged": fit.converged,
                       "law": {k: float(getattr(fit, k)) for k in LAW_SAMPLE_KEYS}})
    return refits


def forecast_run(report: FitReport, params: float, tokens: float, pinned_E: float | None = None,
                 pinned_E_source: str = "pure power law (E = 0)", pinned_E_exact: bool = False) -> dict:
    """The forecast of a run of N = `params`, D = `tokens` (see the module docstring)."""
    law = report.approach3
    if law is None:
        raise ValueError("a forecast needs approach 3's law; the fit report has none")
    point = float(law.predict(params, tokens))
    draws = bootstrap_predictions(report, params, tokens)
    level = report.bootstrap.level if report.bootstrap is not None else None
    boot = _percentile_interval(draws, level)
    E = 0.0 if pinned_E is None else float(pinned_E)
    pinned_fit = fit_parametric_loss_table(report.table, fixed_E=E, warm_start=law if E > 0 else None)
    pinned_point = float(pinned_fit.predict(params, tokens))
    without_smallest = forecast_without_smallest_budgets(report.table, params, tokens)
    refit_points = [refit["predicted_loss"] for refit in without_smallest]
    ends = [point, pinned_point, *(boot or []), *refit_points]
    exact = bool(pinned_E_exact and pinned_E is not None)
    window_mean = float(np.mean([point, *refit_points]))
    point_from = "pinned_E" if exact else "window_mean" if without_smallest else "free_E"
    return {
        "approach": "approach3",
        "params": float(params),
        "tokens": float(tokens),
        "predicted_loss": {"pinned_E": pinned_point, "window_mean": window_mean, "free_E": point}[point_from],
        "point_from": point_from,
        "free_E_predicted_loss": point,
        "interval": [min(ends), max(ends)],
        "bootstrap_interval": boot,
        "bootstrap_level": level,
        "bootstrap_resamples": int(len(draws)),
        "free_E": float(law.E),
        "pinned_E": {"E": E, "source": pinned_E_source if pinned_E is not None else "pure power law (E = 0)",
                     "exact": exact, "predicted_loss": pinned_point, "converged": pinned_fit.converged,
                     "law": {k: float(getattr(pinned_fit, k)) for k in LAW_SAMPLE_KEYS}},
        "without_smallest_budgets": without_smallest,
        "window_mean": {"predicted_loss": window_mean, "fits": 1 + len(refit_points)},
        "fit_runs": report.table.n_runs,
        "fit_input_sha256": fit_input_sha256(report.table),
        "extrapolation_factor": float(report.table.flops_per_param_token * params * tokens
                                      / report.table.runs["flops"].max()),
    }


def grade(forecast: dict, actual: float | None) -> dict:
    """The forecast against the loss the run reached: relative error and whether the interval held it."""
    if actual is None:
        return {"actual_loss": None, "relative_error": None, "inside_interval": None}
    low, high = forecast["interval"]
    graded = {"actual_loss": float(actual),
              "relative_error": (float(actual) - forecast["predicted_loss"]) / forecast["predicted_loss"],
              "inside_interval": bool(low <= actual <= high)}
    for name, predicted in (("free_E", forecast.get("free_E_predicted_loss")),
                            ("pinned_E", (forecast.get("pinned_E") or {}).get("predicted_loss")),
                            ("unconstrained", forecast.get("unconstrained_predicted_loss")),
                            ("window_mean", (forecast.get("window_mean") or {}).get("predicted_loss"))):
        if predicted is not None:
            graded[f"{name}_relative_error"] = (float(actual) - predicted) / predicted
    if forecast.get("without_smallest_budgets"):
        graded["without_smallest_budgets"] = [
            {"min_budget": refit["min_budget"],
             "relative_error": (float(actual) - refit["predicted_loss"]) / refit["predicted_loss"]}
            for refit in forecast["without_smallest_budgets"]]
    return graded
