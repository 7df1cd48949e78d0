"""Approach 1 (Chinchilla): the envelope of training curves. Every run's loss curve is placed on a common
grid of compute levels; at each level the run with the lowest loss is the compute-optimal one there, and
N_opt(C), D_opt(C) are power laws fitted through those (C, N, D) points.

Curves come from the results table's `curve` column or its side file (see `analysis.results_table`). The
compute of a curve point is the run's FLOPs per token times the tokens seen so far. Each run's learning
rate schedule should be sized to its own length (as in a sweep of token budgets); a point in the middle of
a long cosine schedule is worse than a run stopped there would be, which biases the envelope towards small
models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.power_law import ComputeAllocation, PowerLaw, fit_power_law
from analysis.results_table import NotEnoughData, ResultsTable

N_COMPUTE_LEVELS = 1500  # as in Chinchilla
MIN_RUNS_PER_LEVEL = 2  # a level where only one curve reaches has no choice to make


@dataclass(frozen=True)
class EnvelopeFit(ComputeAllocation):
    compute: np.ndarray  # (levels,) FLOPs
    params: np.ndarray  # (levels,) N of the lowest-loss run at each level
    tokens: np.ndarray  # (levels,) D of that run at that compute
    loss: np.ndarray  # (levels,)
    params_law: PowerLaw
    tokens_law: PowerLaw

    def to_json(self) -> dict:
        return {
            **self.laws_json(),
            "n_levels": len(self.compute),
            "compute_range": [float(self.compute.min()), float(self.compute.max())],
            "sizes_on_envelope": sorted(float(n) for n in np.unique(self.params)),
        }


def loss_on_compute_grid(
    table: ResultsTable, levels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each run's curve interpolated (linearly in log compute) at `levels`; NaN outside the run's range.

    Returns (loss (runs, levels), params (runs,), flops_per_token (runs,)).
    """
    # a bootstrap resample repeats runs; a repeated curve changes no envelope
    runs = table.runs.drop_duplicates("run_id").set_index("run_id")
    curves = table.curves  # sorted by run_id, then tokens (ResultsTable)
    curve_ids = curves["run_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, curve_ids[1:] != curve_ids[:-1]])
    segments = dict(zip(curve_ids[starts], zip(starts, np.r_[starts[1:], len(curve_ids)], strict=True), strict=True))
    run_ids = [r for r in runs.index if r in segments]
    params = runs.loc[run_ids, "params"].to_numpy(float)
    flops_per_token = (runs.loc[run_ids, "flops"] / runs.loc[run_ids, "tokens"]).to_numpy(float)
    tokens, loss = curves["tokens"].to_numpy(float), curves["loss"].to_numpy(float)
    losses = np.full((len(run_ids), len(levels)), np.nan)
    log_levels = np.log(levels)
    for i, run_id in enumerate(run_ids):
        start, end = segments[run_id]
        log_compute = np.log(flops_per_token[i] * tokens[start:end])
        inside = (log_levels >= log_compute[0]) & (log_levels <= log_compute[-1])
        losses[i, inside] = np.interp(log_levels[inside], log_compute, loss[start:end])
    return losses, params, flops_per_token


def fit_training_curve_envelope(table: ResultsTable, n_levels: int = N_COMPUTE_LEVELS) -> EnvelopeFit:
    """Approach 1 on a results table with per-run curves (raises NotEnoughData without them)."""
    if table.curves is None or len(table.curves) == 0:
        raise NotEnoughData(
            "approach1: needs per-run loss curves: a 'curve' column or a <results>_curves.parquet side file"
        )
    flops_per_token = (table.runs["flops"] / table.runs["tokens"]).to_numpy(float)
    per_run = table.runs.assign(flops_per_token=flops_per_token).drop_duplicates("run_id").set_index("run_id")
    curves = table.curves[table.curves["run_id"].isin(per_run.index)]
    if curves["run_id"].nunique() < 3:
        raise NotEnoughData(f"approach1: needs curves of 3+ runs, found {curves['run_id'].nunique()}")
    flops_per_token_of_point = per_run.loc[curves["run_id"], "flops_per_token"].to_numpy()
    point_compute = curves["tokens"].to_numpy(float) * flops_per_token_of_point
    levels = np.geomspace(point_compute.min(), point_compute.max(), n_levels)
    losses, params, flops_per_token = loss_on_compute_grid(table, levels)
    # distinct sizes reaching each level: two seeds of one size leave no choice to make
    sizes_at_level = [len(np.unique(params[~np.isnan(losses[:, j])])) for j in range(losses.shape[1])]
    covered = np.array(sizes_at_level) >= MIN_RUNS_PER_LEVEL
    if covered.sum() < 2:
        raise NotEnoughData("approach1: the curves do not overlap in compute; no envelope to take")
    levels, losses = levels[covered], losses[:, covered]
    best = np.nanargmin(losses, axis=0)
    envelope_params = params[best]
    if len(np.unique(envelope_params)) < 2:
        raise NotEnoughData("approach1: a single model size is best at every compute level; no trend to fit")
    envelope_tokens = levels / flops_per_token[best]
    return EnvelopeFit(
        compute=levels,
        params=envelope_params,
        tokens=envelope_tokens,
        loss=losses[best, np.arange(len(levels))],
        params_law=fit_power_law(levels, envelope_params),
        tokens_law=fit_power_law(levels, envelope_tokens),
    )
