"""Figures of downstream evaluation, as matplotlib Figures (no pyplot state):

- metric_vs_samples: for one run, each task's primary metric (AUROC for binary tasks, MAE for counts
  and durations) against K, the number of simulated futures per patient (inference-time compute), for
  both estimators (the outcome each future drew, and the model's probabilities summed along it);
- metric_vs_compute / metric_vs_loss: for several runs, each task's primary metric against the run's
  training compute C (summary.json `flops`, 6·N·D) and against its validation loss;
- downstream_law: a downstream forecast (scaling.evaluate.downstream): each task's runs fitted on, the law
  fitted to them against validation loss, the prediction at the forecast loss with its interval and, once
  graded, the metric the target reached.

Baselines and the oracle do not depend on the run: they are horizontal lines.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib import figure
from matplotlib.backends.backend_agg import FigureCanvasAgg

from analysis.downstream_law import DownstreamLaw
from scaling.evaluate.baselines import BASELINES
from scaling.evaluate.metrics import PRIMARY_METRIC

REFERENCE_STYLE = {
    "logistic": {"color": "tab:orange", "linestyle": "--", "label": "logistic / linear (train split)"},
    "gbdt": {"color": "tab:green", "linestyle": "-.", "label": "LightGBM (train split)"},
    "oracle": {"color": "black", "linestyle": ":", "label": "oracle (the generator)"},
}


def _panels(n: int) -> tuple[figure.Figure, list]:
    columns = min(n, 3)
    rows = math.ceil(n / columns)
    fig = figure.Figure(figsize=(4.6 * columns, 3.6 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(rows, columns, i + 1) for i in range(n)]


def _metric(block: dict | None, name: str) -> float | None:
    if not block or "error" in block:
        return None
    return block.get(name)


def _references(ax, task: dict, metric: str) -> None:
    blocks = {name: (task.get("baselines") or {}).get(name) for name in BASELINES}
    blocks["oracle"] = task.get("oracle")
    for name, block in blocks.items():
        value = _metric(block, metric)
        if value is not None:
            ax.axhline(value, **REFERENCE_STYLE[name], lw=1)


def _scored_tasks(report: dict) -> list[dict]:
    return [t for t in report["tasks"] if t.get("model") and t["model"].get(PRIMARY_METRIC[t["kind"]]) is not None]


def plot_metric_vs_samples(report: dict) -> figure.Figure | None:
    tasks = _scored_tasks(report)
    if not tasks:
        return None
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks):
        metric = PRIMARY_METRIC[task["kind"]]
        points = [(p["samples"], p[metric]) for p in task["by_samples"] if p.get(metric) is not None]
        ax.plot([k for k, _ in points], [v for _, v in points], "o-", color="tab:blue",
                label="model: outcome drawn (K futures)")
        summed = [(p["samples"], p["probability"][metric]) for p in task["by_samples"]
                  if (p.get("probability") or {}).get(metric) is not None]
        if summed:
            ax.plot([k for k, _ in summed], [v for _, v in summed], "s-", color="tab:purple",
                    label="model: probabilities summed (same futures)")
        _references(ax, task, metric)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("simulated futures per patient K")
        ax.set_ylabel(metric.upper())
        ax.set_title(f"{task['name']} (n={task['n']})", fontsize=10)
    axes[0].legend(fontsize=7)
    return fig


def plot_metric_vs_runs(reports: list[dict], x: str) -> figure.Figure | None:
    """x = "flops" (training compute) or "val_loss"."""
    names = [t["name"] for t in _scored_tasks(reports[0])] if reports else []
    if not names:
        return None
    fig, axes = _panels(len(names))
    for ax, name in zip(axes, names):
        points = []
        for report in reports:
            task = next(t for t in report["tasks"] if t["name"] == name)
            metric = PRIMARY_METRIC[task["kind"]]
            value, position = _metric(task.get("model"), metric), report["run"].get(x)
            if value is not None and position is not None:
                points.append((position, value, task["model"]["ci"].get(metric)))
        points.sort()
        below = [v - ci[0] if ci else 0 for _, v, ci in points]
        above = [ci[1] - v if ci else 0 for _, v, ci in points]
        ax.errorbar([p for p, _, _ in points], [v for _, v, _ in points], yerr=[below, above], fmt="o-",
                    color="tab:blue", capsize=3, label=f"model ({reports[0]['samples']} futures)")
        task = next(t for t in reports[0]["tasks"] if t["name"] == name)
        metric = PRIMARY_METRIC[task["kind"]]
        _references(ax, task, metric)
        if x == "flops":
            ax.set_xscale("log")
        ax.set_xlabel("training compute C = 6ND (FLOPs)" if x == "flops" else "validation loss (nats per token)")
        ax.set_ylabel(metric.upper())
        ax.set_title(f"{name} (n={task['n']})", fontsize=10)
    axes[0].legend(fontsize=7)
    return fig


def plot_downstream_law(forecast: dict, estimator: str = "model") -> figure.Figure | None:
    """Metric against validation loss per task: the sweep's runs, the fitted law over the runs and the forecast,
    the two-step prediction (with its interval) and, when graded, the actual metric at the actual loss."""
    tasks = [t for t in forecast["tasks"] if "law_vs_loss" in (t["estimators"].get(estimator) or {})]
    if not tasks:
        return None
    fig, axes = _panels(len(tasks))
    target = forecast["target"]
    for ax, task in zip(axes, tasks):
        block = task["estimators"][estimator]
        law, runs = block["law_vs_loss"], block["runs"]
        below = [r["value"] - r["ci"][0] if r.get("ci") else 0 for r in runs]
        above = [r["ci"][1] - r["value"] if r.get("ci") else 0 for r in runs]
        ax.errorbar([r["val_loss"] for r in runs], [r["value"] for r in runs], yerr=[below, above], fmt="o",
                    color="tab:blue", capsize=3, label="runs fitted on")
        ends = [r["val_loss"] for r in runs] + [target["forecast_loss"]]
        if forecast.get("actual_loss") is not None:
            ends.append(forecast["actual_loss"])
        x = np.linspace(min(ends) - 0.01, max(ends) + 0.01, 200)
        ax.plot(x, DownstreamLaw.from_json(law)(x), "-", color="tab:blue", lw=1, label="law")
        predicted = block["from_forecast_loss"]
        interval = predicted.get("interval") or [predicted["value"]] * 2
        ax.errorbar([target["forecast_loss"]], [predicted["value"]],
                    yerr=[[predicted["value"] - interval[0]], [interval[1] - predicted["value"]]], fmt="D",
                    color="tab:red", capsize=3, label="predicted at the forecast loss")
        if block.get("actual") is not None and forecast.get("actual_loss") is not None:
            ci = block.get("actual_ci") or [block["actual"]] * 2
            ax.errorbar([forecast["actual_loss"]], [block["actual"]],
                        yerr=[[block["actual"] - ci[0]], [ci[1] - block["actual"]]], fmt="*", ms=10,
                        color="black", capsize=3, label="actual")
        ax.invert_xaxis()  # lower loss (larger models) to the right
        ax.set_xlabel("validation loss (nats per token)")
        ax.set_ylabel({"auroc_true_risk": "AUROC against the true risk"}.get(task["metric"], task["metric"].upper()))
        ax.set_title(f"{task['name']} ({law['link']} law)", fontsize=10)
    axes[0].legend(fontsize=7)
    return fig


def write_figures(figures: dict[str, figure.Figure | None], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures.items():
        if fig is not None:
            path = out_dir / f"{name}.png"
            fig.savefig(path, dpi=110)
            paths.append(path)
    return paths
