"""The standard figures of a fit, as matplotlib Figures (no pyplot state, so this works under any backend:
Agg for `scaling plot`, inline in notebooks):

- isoflop_profiles: loss against N per budget, with the approach-2 parabolas and their minima;
- compute_optimal: N_opt(C) and D_opt(C) from each approach, the approach-3 bootstrap band, and the
  extrapolation to a target budget;
- loss_contours: L(N, D) of approach 3 over (C, N), the runs, and the efficient frontier;
- loss_curves: every run's loss against tokens (or the final losses when there are no curves);
- residuals: approach 3's relative error on every run, and on the runs the backtest held out;
- single_variable_laws: L(N), L(D) and L(C) = E + A x^-alpha, each over the runs (and, for L(C), the lowest
  loss of each budget, the points it is fitted to), extrapolated 10x past them, with the bootstrap's band.

N is the table's `params` (all parameters, embeddings included); C is its `flops` (default 6·N·D).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib import colors, figure
from matplotlib.backends.backend_agg import FigureCanvasAgg

from analysis.fit_report import FitReport

LOSS_LABEL = "loss (nats per token)"
PARAMS_LABEL = "parameters N (incl. embeddings)"
TOKENS_LABEL = "training tokens D"
COMPUTE_LABEL = "compute C (FLOPs)"
APPROACH_STYLE = {
    "approach1": {"color": "tab:green", "linestyle": "-.", "label": "approach 1 (curve envelope)"},
    "approach2": {"color": "tab:orange", "linestyle": "--", "label": "approach 2 (IsoFLOP parabolas)"},
    "approach3": {"color": "tab:blue", "linestyle": "-", "label": "approach 3 (parametric L(N, D))"},
}


def _new_figure(n_columns: int = 1) -> tuple[figure.Figure, list]:
    fig = figure.Figure(figsize=(6.4 * n_columns, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, n_columns, i + 1) for i in range(n_columns)]
    return fig, axes


def _budget_colors(budgets: np.ndarray):
    norm = colors.LogNorm(vmin=budgets.min(), vmax=max(budgets.max(), budgets.min() * 1.01))
    return norm, lambda budget: matplotlib.colormaps["viridis"](norm(budget))


def plot_isoflop_profiles(report: FitReport) -> figure.Figure:
    fig, (ax,) = _new_figure()
    runs = report.table.runs
    norm, color_of = _budget_colors(report.table.budgets)
    minima = {m.budget: m for m in (report.approach2.minima if report.approach2 else [])}
    for budget in report.table.budgets:
        group = runs[runs["budget"] == budget]
        ax.scatter(group["params"], group["loss"], color=color_of(budget), s=18, zorder=3)
        if budget in minima:
            m = minima[budget]
            n_grid = np.geomspace(group["params"].min() / 1.2, group["params"].max() * 1.2, 100)
            ax.plot(n_grid, np.polyval(m.parabola, np.log(n_grid)), color=color_of(budget), lw=1)
            ax.scatter([m.params], [m.loss], marker="*", s=120, color=color_of(budget), edgecolor="black", zorder=4)
    ax.set(xscale="log", xlabel=PARAMS_LABEL, ylabel=LOSS_LABEL, title="IsoFLOP profiles (stars: parabola minima)")
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=ax, label="budget (FLOPs)")
    return fig


def _approach3_band(report: FitReport, compute: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """2.5-97.5% bands of N_opt(C), D_opt(C) over the approach-3 bootstrap refits."""
    boot = report.bootstrap
    if boot is None or "approach3.alpha" not in boot.samples or len(boot.samples["approach3.alpha"]) < 10:
        return None
    s = {k: boot.samples[f"approach3.{k}"][:, None] for k in ("A", "B", "alpha", "beta")}
    g = (s["alpha"] * s["A"] / (s["beta"] * s["B"])) ** (1 / (s["alpha"] + s["beta"]))
    scaled = compute[None, :] / report.approach3.flops_per_param_token
    params = g * scaled ** (s["beta"] / (s["alpha"] + s["beta"]))
    tokens = scaled ** (s["alpha"] / (s["alpha"] + s["beta"])) / g
    return (*np.percentile(params, [2.5, 97.5], axis=0), *np.percentile(tokens, [2.5, 97.5], axis=0))


def plot_compute_optimal(report: FitReport, target_compute: float | None = None) -> figure.Figure:
    fig, (ax_n, ax_d) = _new_figure(2)
    runs = report.table.runs
    c_max = max(runs["flops"].max(), target_compute or 0) * 1.5
    compute = np.geomspace(runs["flops"].min() / 1.5, c_max, 200)
    for name, style in APPROACH_STYLE.items():
        fit = report.fit(name)
        if fit is None:
            continue
        label = f"{style['label']}: a={fit.a:.3f}, b={fit.b:.3f}"
        ax_n.plot(compute, fit.optimal_params(compute), **{**style, "label": label})
        ax_d.plot(compute, fit.optimal_tokens(compute), **{**style, "label": label})
    band = _approach3_band(report, compute)
    if band is not None:
        ax_n.fill_between(compute, band[0], band[1], color="tab:blue", alpha=0.2, label="approach 3, 95% bootstrap")
        ax_d.fill_between(compute, band[2], band[3], color="tab:blue", alpha=0.2, label="approach 3, 95% bootstrap")
    if report.approach2 is not None:
        minima = report.approach2.minima
        ax_n.scatter([m.budget for m in minima], [m.params for m in minima], color="tab:orange", zorder=3,
                     label="IsoFLOP minima")  # fmt: skip
        ax_d.scatter([m.budget for m in minima], [m.tokens for m in minima], color="tab:orange", zorder=3,
                     label="IsoFLOP minima")  # fmt: skip
    if target_compute is not None:
        for ax in (ax_n, ax_d):
            ax.axvline(target_compute, color="gray", linestyle=":", label=f"target {target_compute:.2g} FLOPs")
        ax_n.axvspan(runs["flops"].max(), c_max, color="gray", alpha=0.07)
        ax_d.axvspan(runs["flops"].max(), c_max, color="gray", alpha=0.07)
    ax_n.set(xscale="log", yscale="log", xlabel=COMPUTE_LABEL, ylabel="compute-optimal " + PARAMS_LABEL,
             title="N_opt(C) (shaded: beyond the largest run)" if target_compute else "N_opt(C)")  # fmt: skip
    ax_d.set(xscale="log", yscale="log", xlabel=COMPUTE_LABEL, ylabel="compute-optimal " + TOKENS_LABEL,
             title="D_opt(C)")  # fmt: skip
    ax_n.legend(fontsize=7)
    ax_d.legend(fontsize=7)
    return fig


def plot_loss_contours(report: FitReport) -> figure.Figure | None:
    if report.approach3 is None:
        return None
    fit = report.approach3
    fig, (ax,) = _new_figure()
    runs = report.table.runs
    compute = np.geomspace(runs["flops"].min() / 3, runs["flops"].max() * 30, 200)
    params = np.geomspace(runs["params"].min() / 3, runs["params"].max() * 3, 200)
    c_grid, n_grid = np.meshgrid(compute, params)
    loss = fit.predict(n_grid, c_grid / (fit.flops_per_param_token * n_grid))
    # contour levels spanning the observed losses and a little below (where the extrapolation goes)
    observed = runs["loss"].to_numpy()
    levels = np.linspace(observed.min() - 0.3 * np.ptp(observed), observed.max(), 10)
    contours = ax.contour(c_grid, n_grid, loss, levels=levels, cmap="magma", linewidths=0.8)
    ax.clabel(contours, fontsize=7, fmt="%.2f")
    points = ax.scatter(runs["flops"], runs["params"], c=runs["loss"], cmap="magma", s=16, edgecolor="black",
                        linewidth=0.3, norm=colors.Normalize(levels.min(), levels.max()), zorder=3)  # fmt: skip
    ax.plot(compute, fit.optimal_params(compute), color="tab:blue", lw=2, label="efficient frontier N_opt(C)")
    ax.set(xscale="log", yscale="log", xlabel=COMPUTE_LABEL, ylabel=PARAMS_LABEL,
           xlim=(compute[0], compute[-1]), ylim=(params[0], params[-1]),
           title="Approach 3: contours of L(N, D = C / (k·N))")  # fmt: skip
    fig.colorbar(points, ax=ax, label="observed " + LOSS_LABEL)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def plot_loss_curves(report: FitReport) -> figure.Figure:
    fig, (ax,) = _new_figure()
    runs = report.table.runs.drop_duplicates("run_id")
    norm = colors.LogNorm(vmin=runs["params"].min(), vmax=max(runs["params"].max(), runs["params"].min() * 1.01))
    cmap = matplotlib.colormaps["plasma"]
    curves = report.table.curves
    if curves is not None and len(curves):
        params_of = dict(zip(runs["run_id"], runs["params"], strict=True))
        for run_id, curve in curves.groupby("run_id"):
            if run_id in params_of:
                ax.plot(curve["tokens"], curve["loss"], color=cmap(norm(params_of[run_id])), lw=0.8, alpha=0.8)
        title = "Training curves (colour: model size)"
    else:
        title = "Final losses (no per-run curves in the table)"
    ax.scatter(runs["tokens"], runs["loss"], c=runs["params"], cmap=cmap, norm=norm, s=14, zorder=3)
    ax.set(xscale="log", xlabel=TOKENS_LABEL, ylabel=LOSS_LABEL, title=title)
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=PARAMS_LABEL)
    return fig


def plot_residuals(report: FitReport) -> figure.Figure | None:
    if report.approach3 is None:
        return None
    fit = report.approach3
    runs = report.table.runs
    relative_error = 100 * (fit.predict(runs["params"], runs["tokens"]) / runs["loss"] - 1)
    fig, (ax_c, ax_r) = _new_figure(2)
    for ax, x, label in ((ax_c, runs["flops"], COMPUTE_LABEL),
                         (ax_r, runs["tokens"] / runs["params"], "tokens per parameter D/N")):  # fmt: skip
        points = ax.scatter(x, relative_error, c=runs["params"], cmap="plasma", norm=colors.LogNorm(), s=14,
                            label="fit on all runs")
        ax.axhline(0, color="gray", lw=0.8)
        ax.set(xscale="log", xlabel=label, ylabel="predicted / observed loss - 1 (%)")
    if report.backtest is not None:
        held = report.backtest.held_out
        ax_c.scatter(held["flops"], 100 * held["relative_error"], marker="x", color="black", s=40,
                     label=f"backtest: held out, fit on the other {report.backtest.fit_runs} runs")  # fmt: skip
        ax_r.scatter(held["tokens"] / held["params"], 100 * held["relative_error"], marker="x", color="black", s=40)
    fig.colorbar(points, ax=ax_r, label=PARAMS_LABEL)
    ax_c.set_title("Approach 3 residuals against compute")
    ax_r.set_title("... and against tokens per parameter")
    ax_c.legend(fontsize=7)
    return fig


def _law_band(report: FitReport, prefix: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The bootstrap's percentile band of E + A x^-alpha at each x (None without enough resamples)."""
    samples = report.bootstrap.samples if report.bootstrap is not None else {}
    if any(len(samples.get(f"{prefix}.{k}", [])) < 2 for k in ("E", "A", "alpha")):
        return None
    E, A, alpha = (np.asarray(samples[f"{prefix}.{k}"])[:, None] for k in ("E", "A", "alpha"))
    curves = E + A * np.power(x[None, :], -alpha)  # (resamples, len(x))
    tail = 100 * (1 - report.bootstrap.level) / 2
    return np.percentile(curves, tail, axis=0), np.percentile(curves, 100 - tail, axis=0)


def plot_single_variable_laws(report: FitReport) -> figure.Figure | None:
    panels = [(name, law) for name, law in report.single_variable.items() if law is not None]
    if not panels:
        return None
    runs = report.table.runs
    column = {"params": ("params", PARAMS_LABEL), "tokens": ("tokens", TOKENS_LABEL),
              "compute": ("flops", COMPUTE_LABEL)}
    fig, axes = _new_figure(len(panels))
    for ax, (name, law) in zip(axes, panels, strict=True):
        key, label = column[law.variable]
        ax.scatter(runs[key], runs["loss"], s=12, color="gray", alpha=0.6,
                   label="runs (final loss, each at its own N and D)")
        if law.variable == "compute":
            frontier = runs.loc[runs.groupby("budget")["loss"].idxmin()]
            ax.scatter(frontier["flops"], frontier["loss"], s=30, color="tab:blue", zorder=3,
                       label="lowest loss per budget (fitted)")
        x = np.geomspace(runs[key].min() / 1.5, runs[key].max() * 10, 200)
        held = "" if law.held_at is None else f" at {'D' if law.variable == 'params' else 'N'} = {law.held_at:.3g}"
        ax.plot(x, law(x), color="tab:blue", label=f"L = {law.E:.3f} + {law.A:.3g} x^-{law.alpha:.3f}{held}")
        band = _law_band(report, f"single_variable.{name}", x)
        if band is not None:
            ax.fill_between(x, *band, color="tab:blue", alpha=0.15,
                            label=f"{100 * report.bootstrap.level:.0f}% bootstrap band")
        ax.axhline(law.E, color="tab:blue", lw=0.8, linestyle=":", label=f"E = {law.E:.3f}")
        ax.axvspan(runs[key].max(), x[-1], color="gray", alpha=0.07)
        ax.set(xscale="log", xlabel=label, ylabel=LOSS_LABEL, title=name.replace("_", " "))
        ax.legend(fontsize=7)
    return fig


def standard_figures(report: FitReport, target_compute: float | None = None) -> dict[str, figure.Figure]:
    figures = {
        "isoflop_profiles": plot_isoflop_profiles(report),
        "compute_optimal": plot_compute_optimal(report, target_compute),
        "loss_contours": plot_loss_contours(report),
        "loss_curves": plot_loss_curves(report),
        "residuals": plot_residuals(report),
        "single_variable_laws": plot_single_variable_laws(report),
    }
    return {name: fig for name, fig in figures.items() if fig is not None}


def write_standard_figures(report: FitReport, out_dir: Path, target_compute: float | None = None) -> list[Path]:
    """Save every standard figure as PNG and SVG in `out_dir` (the caller makes the directory atomic)."""
    written = []
    for name, fig in standard_figures(report, target_compute).items():
        for extension in ("png", "svg"):
            path = Path(out_dir) / f"{name}.{extension}"
            fig.savefig(path, dpi=150)
            written.append(path)
    return written
