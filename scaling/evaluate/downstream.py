"""The downstream forecast of a larger run, made from the evaluations of a sweep's runs before it is evaluated,
and graded once it is (the two-step prediction of analysis.downstream_law).

    forecast = downstream_forecast(sweep_reports, target_of("runs/final"))   # before evaluating the final run
    graded = grade_downstream(forecast, final_report)                        # after

For each task and each estimator (the futures' drawn outcomes, "model", and the model's own probabilities,
"model_probability"), the primary metric (AUROC, or MAE for counts and durations; for a binary task with an
oracle also its AUROC against the true risk, a second entry in "tasks") of every sweep run is
fitted against its validation loss and against log10 of its compute, bounded by the oracle's metric where
the evaluation has one (no model's AUROC can expect to pass it, no model's MAE to fall below it). The
target run's metric is predicted three ways: from its pre-registered forecast loss (the two-step
prediction: loss from compute, metric from loss), from its compute directly, and, at grading, from the
loss it actually reached (which separates the error of the second step from the first's). The reports
must score every run on the same patients and futures per patient (one `scaling evaluate` over the sweep,
with the same settings for the target).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from analysis.downstream_law import DownstreamLaw, fit_downstream_law
from analysis.results_table import NotEnoughData
from scaling.common.errors import InputError
from scaling.evaluate.metrics import PRIMARY_METRIC
from scaling.train.run_dir import RunDir

ESTIMATORS = ("model", "model_probability")
# Evaluation settings that must match between the sweep's evaluation and the target's for the metrics to be
# comparable (the same patients, futures and bootstrap).
MATCHING_SETTINGS = ("patients", "samples", "seed", "max_new_tokens", "temperature", "top_k", "top_p",
                     "min_positives")


def read_evaluations(path: str | Path) -> list[dict]:
    """The run reports of an evaluation directory (or its evaluation.json), one or several runs."""
    path = Path(path)
    file = path / "evaluation.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise InputError(f"{file}: no such file; expected the --out directory of `scaling evaluate`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{file}: not JSON ({error}); expected the evaluation.json of `scaling evaluate`") from None
    reports = data.get("runs", [data]) if isinstance(data, dict) else None
    if not reports or not all(isinstance(r, dict) and "run" in r and "tasks" in r for r in reports):
        raise InputError(f"{file}: expected the evaluation.json of `scaling evaluate` (run and tasks per run)")
    return reports


def target_of(run_dir: str | Path) -> dict:
    """What a downstream forecast needs of the run it predicts: its pre-registered loss forecast
    (forecast.json, written by `scaling final` before training) and its compute."""
    run_dir = Path(run_dir)
    path = run_dir / "forecast.json"
    if not path.is_file():
        raise InputError(f"{run_dir}: no forecast.json; expected a run trained by `scaling final`, whose loss "
                         "forecast is registered before it trains")
    try:
        forecast = json.loads(path.read_text())
        loss, params, tokens = (float(forecast[k]) for k in ("predicted_loss", "params", "tokens"))
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"{path}: expected predicted_loss, params and tokens ({error})") from None
    summary = RunDir(run_dir).read_summary() or {}
    flops = summary.get("flops") or 6.0 * params * tokens
    if not all(math.isfinite(v) and v > 0 for v in (loss, flops)):
        raise InputError(f"{path}: predicted_loss = {loss}, compute = {flops}; expected positive finite numbers")
    return {"run_dir": str(run_dir), "forecast_loss": loss, "flops": float(flops),
            "forecast_sha256": forecast.get("fit_input_sha256")}


def _metric(task: dict, estimator: str, metric: str) -> tuple[float | None, list[float] | None]:
    block = task.get(estimator) or {}
    return block.get(metric), (block.get("ci") or {}).get(metric)


def task_metrics_to_fit(reports: list[dict], task: dict) -> list[str]:
    """The primary metric, and for a binary task scored against its true risk (a synthetic cohort's oracle) in
    every report, auroc_true_risk: the same ranking without the labels' coin flips."""
    metrics = [PRIMARY_METRIC[task["kind"]]]
    scored = [t for r in reports for t in r["tasks"] if t["name"] == task["name"]]
    if task["kind"] == "binary" and scored and all("auroc_true_risk" in (t.get("model") or {}) for t in scored):
        metrics.append("auroc_true_risk")
    return metrics


def _points(reports: list[dict], name: str, estimator: str, metric: str) -> tuple[np.ndarray, ...]:
    """(val loss, log10 compute, metric, interval (n, 2)) of the runs that scored `name` with `estimator`."""
    rows = []
    for report in reports:
        task = next((t for t in report["tasks"] if t["name"] == name), None)
        run = report["run"]
        if task is None or run.get("val_loss") is None or not run.get("flops"):
            continue
        value, ci = _metric(task, estimator, metric)
        if value is not None:
            rows.append((run["val_loss"], math.log10(run["flops"]), value, *(ci or (np.nan, np.nan))))
    table = np.array(rows, float).reshape(-1, 5)
    return table[:, 0], table[:, 1], table[:, 2], table[:, 3:5]


def oracle_value(reports: list[dict], name: str, metric: str) -> float | None:
    """The oracle's metric on task `name` (the same patients in every report: the first report that has it),
    the best value a model can reach there; None without an oracle (a cohort that is not synthetic)."""
    for report in reports:
        task = next((t for t in report["tasks"] if t["name"] == name), None)
        value = ((task or {}).get("oracle") or {}).get(metric)
        if value is not None and math.isfinite(value):
            return float(value)
    return None


def require_settings(report: dict, expected: dict, against: str) -> None:
    """The report must have scored the same patients with the same sampler settings as `expected`."""
    settings = report.get("settings") or {}
    for key, value in expected.items():
        if settings.get(key) != value:
            raise InputError(f"{report['run']['run_dir']}: evaluation setting {key} = {settings.get(key)}, {against} "
                             f"has {value}; expected the same settings (evaluate the runs with the same --patients, "
                             "--samples, --seed)")


def downstream_forecast(reports: list[dict], target: dict, n_bootstrap: int = 500) -> dict:
    """Fit each task's metric against loss and compute across `reports` (the sweep's runs, the target left
    out) and predict the target's metric. Tasks or estimators that cannot be fitted carry the reason."""
    reports = [r for r in reports if Path(r["run"]["run_dir"]).resolve() != Path(target["run_dir"]).resolve()]
    if not reports:
        raise InputError("no evaluated run besides the target; expected the evaluations of a sweep's runs")
    settings = {k: (reports[0].get("settings") or {}).get(k) for k in MATCHING_SETTINGS}
    for report in reports[1:]:
        require_settings(report, settings, "the sweep's first evaluation")
    tasks = []
    for task, metric in ((t, m) for t in reports[0]["tasks"] for m in task_metrics_to_fit(reports, t)):
        law_metric = "auroc" if metric.startswith("auroc") else "mae"  # the curves and bounds of its kind
        best = oracle_value(reports, task["name"], metric)
        if law_metric == "auroc" and best is not None and best <= 0.5:
            best = None  # an oracle at chance bounds nothing a law could fit
        estimators = {}
        for estimator in ESTIMATORS:
            if not any(t.get(estimator) for r in reports for t in r["tasks"] if t["name"] == task["name"]):
                continue  # the task has no such estimator (a duration has no probabilities)
            loss, log_compute, value, ci = _points(reports, task["name"], estimator, metric)
            try:
                vs_loss = fit_downstream_law(law_metric, loss, value, ci, n_bootstrap, best=best)
            except NotEnoughData as error:
                reason = (f"{metric} scored on {len(value)} of {len(reports)} runs; a law needs 3" if len(value) < 3
                          else str(error))
                estimators[estimator] = {"reason": reason, "runs": len(value)}
                continue
            block = {
                "runs": [{"val_loss": float(x), "log10_flops": float(c), "value": float(v),
                          "ci": [float(b) for b in interval] if np.isfinite(interval).all() else None}
                         for x, c, v, interval in zip(loss, log_compute, value, ci)],
                "law_vs_loss": vs_loss.to_json(),
                "from_forecast_loss": vs_loss.predict(target["forecast_loss"]),
            }
            try:  # runs of one budget have one compute: no law against it, the law against loss stands
                vs_compute = fit_downstream_law(law_metric, log_compute, value, ci, n_bootstrap, best=best)
                block.update(law_vs_compute=vs_compute.to_json(),
                             from_compute=vs_compute.predict(math.log10(target["flops"])))
            except NotEnoughData as error:
                block["law_vs_compute"] = {"reason": str(error)}
            estimators[estimator] = block
        tasks.append({"name": task["name"], "kind": task["kind"], "metric": metric, "oracle": best,
                      "estimators": estimators})
    return {"target": target, "fitted_on": [r["run"]["run_dir"] for r in reports],
            "settings": settings,
            "tasks": tasks}


def grade_downstream(forecast: dict, report: dict) -> dict:
    """The forecast next to the target's evaluation: per task and estimator the actual metric and interval,
    the error of each prediction (actual minus predicted) and whether the prediction's interval held it."""
    require_settings(report, forecast["settings"], "the forecast's evaluations")
    actual_loss = report["run"].get("val_loss")
    graded = {**forecast, "actual_loss": actual_loss, "tasks": []}
    for task in forecast["tasks"]:
        actual_task = next((t for t in report["tasks"] if t["name"] == task["name"]), None)
        estimators = {}
        for estimator, block in task["estimators"].items():
            value, ci = _metric(actual_task, estimator, task["metric"]) if actual_task else (None, None)
            block = {**block, "actual": value, "actual_ci": ci}
            if "law_vs_loss" in block and actual_loss is not None:
                law = DownstreamLaw.from_json(block["law_vs_loss"])
                block["from_actual_loss"] = {"value": float(law(actual_loss))}
            for way in ("from_forecast_loss", "from_compute", "from_actual_loss"):
                if way in block:
                    prediction = block[way] = dict(block[way])
                    prediction["error"] = None if value is None else value - prediction["value"]
                    interval = prediction.get("interval")
                    prediction["inside_interval"] = (None if value is None or interval is None
                                                     else bool(interval[0] <= value <= interval[1]))
            estimators[estimator] = block
        graded["tasks"].append({**task, "estimators": estimators})
    return graded


def two_step_auroc_errors(graded: dict) -> dict[str, list[float]]:
    """|actual - predicted| of each graded two-step AUROC prediction, per metric ("auroc", "auroc_true_risk"),
    one per (task, estimator) pair."""
    errors: dict[str, list[float]] = {}
    for task in graded["tasks"]:
        for block in task["estimators"].values():
            error = (block.get("from_forecast_loss") or {}).get("error")
            if task["metric"].startswith("auroc") and error is not None:
                errors.setdefault(task["metric"], []).append(abs(error))
    return errors
