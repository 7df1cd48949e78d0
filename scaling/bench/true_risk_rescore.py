"""Rescore a saved multi-run evaluation (`scaling evaluate` over a sweep's runs and a final run, on a synthetic
cohort) with the AUROC against the true risk, from its predictions.parquet files, without simulating again;
then register and grade the final run's downstream forecast on both metrics.

    python -m scaling.bench.true_risk_rescore runs/demo/evaluation --out runs/demo/true_risk.json

The oracle column of predictions.parquet is the true risk; the bootstrap resamples are the evaluation's own
(its settings' bootstrap and seed), so the intervals are those `scaling evaluate` now writes. The last run of
the evaluation is the target (it needs the forecast.json of `scaling final`); the others are the sweep.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scaling.common.jsonable import dumps
from scaling.evaluate.downstream import downstream_forecast, grade_downstream, target_of, two_step_auroc_errors
from scaling.evaluate.evaluation import run_folder_names
from scaling.evaluate.metrics import bootstrap_indices, paired_difference, task_metrics

ESTIMATORS = ("model", "model_probability", "oracle")


def rescore(report: dict, predictions) -> dict:
    """The report with each binary task's auroc_true_risk (and interval) on every estimator, and the paired
    differences against the baselines on it, as `scaling evaluate` writes them with an oracle."""
    settings = report["settings"]
    for task in report["tasks"]:
        if task["kind"] != "binary" or task.get("oracle") is None:
            continue
        rows = predictions.filter(pc.equal(predictions["task"], task["name"]))
        y, risk = rows["label"].to_numpy(), rows["oracle"].to_numpy()
        resamples = bootstrap_indices(len(y), settings["bootstrap"], settings["seed"])
        columns = {name: rows[name].to_numpy() for name in (*ESTIMATORS, *task["baselines"])}
        for name, block in [*((e, task.get(e)) for e in ESTIMATORS), *task["baselines"].items()]:
            if block and "error" not in block and not np.isnan(columns[name]).all():
                scored = task_metrics("binary", y, columns[name], resamples, settings["min_positives"], risk)
                block["auroc_true_risk"] = scored["auroc_true_risk"]
                block.setdefault("ci", {})["auroc_true_risk"] = scored["ci"].get("auroc_true_risk")
        task["versus_baselines_true_risk"] = {
            name: {baseline: paired_difference("binary", y, columns[name], columns[baseline], resamples,
                                               settings["min_positives"], risk)
                   for baseline, block in task["baselines"].items() if block and "error" not in block}
            for name in ESTIMATORS if task.get(name) and not np.isnan(columns[name]).all()}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evaluation", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    reports = json.loads((args.evaluation / "evaluation.json").read_text())["runs"]
    for name, report in zip(run_folder_names(reports), reports):
        rescore(report, pq.read_table(args.evaluation / "runs" / name / "predictions.parquet"))
    target = target_of(reports[-1]["run"]["run_dir"])
    graded = grade_downstream(downstream_forecast(reports[:-1], target), reports[-1])
    for task in graded["tasks"]:
        for estimator, block in task["estimators"].items():
            if "from_forecast_loss" in block and block["from_forecast_loss"].get("error") is not None:
                two_step = block["from_forecast_loss"]
                print(f"{task['name']:18s} {task['metric']:16s} {estimator:18s} {block['law_vs_loss']['link']:8s} "
                      f"predicted {two_step['value']:.3f} actual {block['actual']:.3f} error {two_step['error']:+.3f}")
    for metric, found in two_step_auroc_errors(graded).items():
        print(f"{metric}: within 0.03 on {sum(e <= 0.03 for e in found)} of {len(found)}, median |error| "
              f"{statistics.median(found):.3f}")
    for task in reports[-1]["tasks"]:
        if "versus_baselines_true_risk" in task:
            print(task["name"], {e: {b: (d or {}).get("verdict") for b, d in v.items()}
                                 for e, v in task["versus_baselines_true_risk"].items()},
                  {e: (task.get(e) or {}).get("auroc_true_risk") for e in ESTIMATORS},
                  {b: v.get("auroc_true_risk") for b, v in task["baselines"].items()})
    args.out.write_text(dumps({"reports": reports, "downstream": graded}, indent=1) + "\n")


if __name__ == "__main__":
    main()
