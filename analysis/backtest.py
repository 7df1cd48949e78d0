"""Extrapolation backtest: fit without the highest-compute runs and see how well the fit predicts them.

A scaling law is used to extrapolate, so the useful check is an extrapolation the data can still grade:
hold out the top IsoFLOP budget (default) or the K highest-compute runs, fit approach 3 on the rest, and
report the relative error of each held-out loss. When a whole budget is held out, the compute-optimal size
that approaches 2 and 3 predict for it is also compared with the minimum of its own IsoFLOP profile.

`leave_future_out` repeats that for every budget b a fit can reach: fit approach 3 on the budgets below b
only, predict every run at b, and report one row per b (how far the fit extrapolated, and how well). Read
down the table to see whether the error grows with the extrapolation factor: the forecast of a final run
far past the sweep is only as good as that trend.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.blas_threads import single_threaded_blas
from analysis.isoflop import fit_isoflop_profiles, isoflop_minimum
from analysis.parametric_fit import ParametricLossFit, fit_parametric_loss_table
from analysis.results_table import NotEnoughData, ResultsTable


@dataclass(frozen=True)
class Backtest:
    held_out_by: str  # "top_budget" or "highest_compute_runs"
    held_out: pd.DataFrame  # run_id, params, tokens, flops, loss, predicted_loss, relative_error
    fit_runs: int
    extrapolation_factor: float  # largest held-out compute / largest fitted compute
    law: ParametricLossFit
    optimal_params_check: dict | None = None

    @property
    def median_abs_rel_error(self) -> float:
        return float(np.median(np.abs(self.held_out["relative_error"])))

    @property
    def max_abs_rel_error(self) -> float:
        return float(np.max(np.abs(self.held_out["relative_error"])))

    def to_json(self) -> dict:
        return {
            "held_out_by": self.held_out_by,
            "held_out_runs": len(self.held_out),
            "fit_runs": self.fit_runs,
            "extrapolation_factor": self.extrapolation_factor,
            "median_abs_rel_error": self.median_abs_rel_error,
            "max_abs_rel_error": self.max_abs_rel_error,
            "mean_rel_error": float(np.mean(self.held_out["relative_error"])),
            "optimal_params_check": self.optimal_params_check,
            "runs": self.held_out.to_dict(orient="records"),
        }


def backtest_extrapolation(table: ResultsTable, holdout_runs: int | None = None) -> Backtest:
    """Hold out the top budget (holdout_runs None) or the `holdout_runs` highest-compute runs."""
    runs = table.runs
    if holdout_runs is None:
        if len(table.budgets) < 3:
            raise NotEnoughData(f"holdout: needs 3+ budgets to hold out the top one, found {len(table.budgets)}")
        held = (runs["budget"] == table.budgets[-1]).to_numpy()
        held_out_by = "top_budget"
    else:
        if not 0 < holdout_runs < table.n_runs:
            raise NotEnoughData(f"holdout: cannot hold out {holdout_runs} of {table.n_runs} runs")
        held = np.zeros(table.n_runs, dtype=bool)
        held[np.argsort(runs["flops"].to_numpy(), kind="stable")[-holdout_runs:]] = True
        held_out_by = "highest_compute_runs"
    fit_table = table.select(np.flatnonzero(~held))
    with single_threaded_blas():
        law = fit_parametric_loss_table(fit_table)
    held_out = runs.loc[held, ["run_id", "params", "tokens", "flops", "loss"]].reset_index(drop=True)
    held_out["predicted_loss"] = law.predict(held_out["params"].to_numpy(), held_out["tokens"].to_numpy())
    held_out["relative_error"] = held_out["predicted_loss"] / held_out["loss"] - 1.0
    check = _optimal_params_check(table, fit_table, law) if held_out_by == "top_budget" else None
    return Backtest(
        held_out_by=held_out_by,
        held_out=held_out,
        fit_runs=fit_table.n_runs,
        extrapolation_factor=float(held_out["flops"].max() / fit_table.runs["flops"].max()),
        law=law,
        optimal_params_check=check,
    )


def _optimal_params_check(table: ResultsTable, fit_table: ResultsTable, law: ParametricLossFit) -> dict | None:
    """The held-out budget's own IsoFLOP minimum against what the fits without it predict."""
    budget = float(table.budgets[-1])
    group = table.runs[table.runs["budget"] == budget]
    try:
        observed = isoflop_minimum(
            budget, group["params"].to_numpy(float), group["tokens"].to_numpy(float),
            group["loss"].to_numpy(float), group["run_id"].to_numpy(),
        )  # fmt: skip
    except NotEnoughData:
        return None
    check = {
        "budget": budget,
        "observed_params": observed.params,
        "approach3_params": float(law.optimal_params(budget)),
        "approach3_rel_error": float(law.optimal_params(budget) / observed.params - 1),
    }
    try:
        approach2 = fit_isoflop_profiles(fit_table)
        check["approach2_params"] = float(approach2.optimal_params(budget))
        check["approach2_rel_error"] = float(approach2.optimal_params(budget) / observed.params - 1)
    except NotEnoughData:
        pass
    return check


def leave_future_out(table: ResultsTable) -> list[dict]:
    """One row per budget b after the first two: approach 3 fitted on the runs of the budgets below b
    predicts every run at b. A budget whose past is too thin for approach 3 gets a row with `error`."""
    rows = []
    budgets = table.budgets
    budget_of_run = table.runs["budget"].to_numpy()
    for i in range(2, len(budgets)):
        budget = float(budgets[i])
        past = np.flatnonzero(budget_of_run < budget)
        at_b = (budget_of_run == budget)
        fit_table = table.select(past)
        row = {"budget": budget, "fit_budgets": [float(b) for b in budgets[:i]], "fit_runs": len(past),
               "predicted_runs": int(at_b.sum()),
               "extrapolation_factor": float(table.runs.loc[at_b, "flops"].max() / fit_table.runs["flops"].max())}
        try:
            with single_threaded_blas():
                law = fit_parametric_loss_table(fit_table)
        except NotEnoughData as e:
            rows.append({**row, "error": str(e)})
            continue
        runs = table.runs.loc[at_b]
        errors = law.predict(runs["params"].to_numpy(float), runs["tokens"].to_numpy(float)) / runs["loss"] - 1.0
        rows.append({**row, "median_abs_rel_error": float(np.median(np.abs(errors))),
                     "max_abs_rel_error": float(np.max(np.abs(errors))), "mean_rel_error": float(np.mean(errors)),
                     "converged": law.converged})
    return rows
