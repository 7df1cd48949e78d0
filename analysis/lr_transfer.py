"""Learning-rate transfer across width: from sweeps that cross width x learning rate (at one token count), the
loss against the learning rate per width, and the best rate of each width (the minimum of a parabola in
log lr through the three runs around the best, else the best run). Under the standard parametrization the
best rate falls as the model widens; under muP it should stay put (models.parametrization).

    scaling bench lr-transfer runs/lr_standard/results.parquet runs/lr_mup/results.parquet --out docs/img
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import figure
from matplotlib.backends.backend_agg import FigureCanvasAgg

from analysis.hyperparameter_laws import parabola_minimum
from analysis.results_table import NotEnoughData


def best_lr(runs: pd.DataFrame) -> float:
    """The loss-minimising learning rate of one width's runs (parabola in log lr through the best run and its
    neighbours when the best is inside the swept rates; else the best run's rate)."""
    runs = runs.groupby("lr", as_index=False)["loss"].mean().sort_values("lr")
    lrs, losses = runs["lr"].to_numpy(float), runs["loss"].to_numpy(float)
    i = int(np.argmin(losses))
    if 0 < i < len(lrs) - 1 and (found := parabola_minimum(np.log(lrs[i - 1:i + 2]), losses[i - 1:i + 2])):
        return float(np.exp(found[0]))
    return float(lrs[i])


def transfer_summary(runs: pd.DataFrame) -> dict:
    """{"best_lr": {d_model: lr}, "drift": best lr at the widest / at the narrowest width}."""
    if "d_model" not in runs.columns or "lr" not in runs.columns:
        raise NotEnoughData("lr transfer: the results need d_model and lr columns (a sweep's results.parquet)")
    best = {int(d): best_lr(g) for d, g in runs.groupby("d_model") if g["lr"].nunique() >= 3}
    if len(best) < 2:
        raise NotEnoughData("lr transfer: needs 2+ widths with runs at 3+ learning rates")
    widths = sorted(best)
    return {"best_lr": best, "drift": best[widths[-1]] / best[widths[0]]}


def lr_transfer_figure(tables: dict[str, pd.DataFrame]) -> figure.Figure:
    """Loss against learning rate per width, one panel per table (label -> its runs)."""
    fig = figure.Figure(figsize=(6.0 * len(tables), 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    for k, (label, runs) in enumerate(tables.items()):
        ax = fig.add_subplot(1, len(tables), k + 1)
        summary = transfer_summary(runs)
        for d_model, group in sorted(runs.groupby("d_model")):
            mean = group.groupby("lr")["loss"].mean()
            line, = ax.plot(mean.index, mean.to_numpy(), marker="o", label=f"d_model {d_model}")
            ax.axvline(summary["best_lr"][int(d_model)], color=line.get_color(), alpha=0.4, linestyle=":")
        ax.set_xscale("log")
        ax.set_xlabel("peak learning rate")
        ax.set_ylabel("validation loss (nats per token)")
        ax.set_title(f"{label}: best lr drifts {summary['drift']:.2g}x from narrowest to widest")
        ax.legend(fontsize=8)
    return fig
