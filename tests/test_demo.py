"""`scaling demo` end to end on a tiny cohort and grid: every stage's files, the report's sections, the
downstream evaluation of each budget's best run and the final run, and a re-run that redoes nothing."""

import json
from pathlib import Path

import pandas as pd
import pytest
from test_notebooks import NOTEBOOK_DIR, run_notebook

from scaling.pipeline.demo import FiniteStudy, run_demo

TINY_TRAINING = """
[train]
batch_size = 8
seq_len = 32
lr = 5e-3
log_every = 10
eval_every = 200
eval_tokens = 4096
checkpoint_every = 200
steps_per_dispatch = 10

[resources]
cpus_per_run = 1
gpus_per_run = 0
"""

TINY_GRID = """
name = "tiny-demo"
data = "unused"
seed = 0

[grid]
kind = "isoflop"
budgets = [2e9, 6e9, 2e10]
widths = [8, 16, 24, 32, 48]
sizes_per_budget = 3
tokens_per_param = 30.0
min_steps = 8
""" + TINY_TRAINING

TINY_FINITE_GRID = """
name = "tiny-finite"
data = "unused"
seed = 0

[grid]
kind = "params_x_tokens"
widths = [8, 16, 24]
tokens = [3e3, 1e4, 3e4]
unique_tokens = [2e3, 6e3]
min_steps = 8
""" + TINY_TRAINING


@pytest.mark.slow
@pytest.mark.ray
def test_demo_runs_every_stage_then_reuses_them(tmp_path, monkeypatch):
    grid = tmp_path / "grid.toml"
    grid.write_text(TINY_GRID)
    finite_grid = tmp_path / "finite.toml"
    finite_grid.write_text(TINY_FINITE_GRID)
    finite = FiniteStudy(grid=finite_grid, patients=400, compute=8e9, unique_tokens=2e3, bootstrap=10)
    root = tmp_path / "demo"
    first = run_demo(root, patients=1500, grid=grid, final_multiple=2.0, finite=finite, log=lambda m: None)

    for path in ("recommendation.json", "fit.json", "report.md", "final/summary.json", "final/prediction.json",
                 "final/forecast.json",
                 "evaluation/evaluation.json", "evaluation/metric_vs_compute.png", "figures/isoflop_profiles.png"):
        assert (root / path).is_file(), path
    results = pd.read_parquet(root / "sweep" / "results.parquet")
    best = results.loc[results.groupby("budget")["loss"].idxmin()].sort_values("budget")["run_id"].tolist()
    evaluation = json.loads((root / "evaluation" / "evaluation.json").read_text())
    evaluated = [Path(run["run"]["run_dir"]).name for run in evaluation["runs"]]
    assert evaluated == [*best, "final"]  # each budget's lowest-loss run, then the final run
    assert {t["kind"] for t in evaluation["runs"][-1]["tasks"]} == {"binary", "count", "duration"}
    # the final run's metrics were predicted from the sweep's runs before it was evaluated, at its forecast loss
    downstream = json.loads((root / "downstream_forecast.json").read_text())
    assert downstream["registered_before_evaluation"]
    assert [Path(r).name for r in downstream["fitted_on"]] == best
    assert downstream["target"]["forecast_loss"] == json.loads((root / "final" / "forecast.json").read_text())[
        "predicted_loss"]
    fitted = [(t["name"], e) for t in downstream["tasks"] for e, b in t["estimators"].items() if "law_vs_loss" in b]
    assert ("length_of_stay", "model") in fitted  # MAE is defined on every run; AUROC needs enough positives
    assert (root / "downstream_law.png").is_file()

    report = (root / "report.md").read_text()
    for heading in ("## Fitted laws", "## The final run", "## Downstream evaluation by simulation",
                    "### The downstream law"):
        assert heading in report
    final_tasks = evaluation["runs"][-1]["tasks"]
    starts = tuple(f"| {t['name']} | {t['kind']} |" for t in final_tasks)
    table_rows = [line for line in report.splitlines() if line.startswith(starts)]
    assert len(table_rows) == len(final_tasks)
    prediction = json.loads((root / "final" / "prediction.json").read_text())
    assert f"actual {prediction['actual_loss']:.4f}" in report
    forecast = json.loads((root / "final" / "forecast.json").read_text())
    how = (f"(the mean of the law fitted on all budgets, {forecast['free_E_predicted_loss']:.4f}, and its refits "
           "without the smallest budgets) " if forecast["point_from"] == "window_mean" else "")
    assert forecast["made_before_training"] and f"loss {forecast['predicted_loss']:.4f} {how}at the run's" in report
    assert "Leave-future-out" in report and "Shape family" in report
    # the finite-data section: the final run under the cap repeats its subset, graded against both laws
    capped = json.loads((root / "finite" / "final" / "prediction.json").read_text())
    assert capped["approach"] == "data_constrained" and capped["epochs"] > 1
    assert capped == first["finite_prediction"]
    assert "## Finite data" in report and f"actual {capped['actual_loss']:.4f}" in report
    assert f"forecast {capped['unconstrained_predicted_loss']:.4f}" in report

    # the notebook that explores a user's demo runs on this one and shows its figures
    monkeypatch.setenv("SCALING_DEMO_ROOT", str(root))
    run_notebook(NOTEBOOK_DIR / "explore_demo.ipynb")

    before = {p: p.read_bytes() for p in [root / "evaluation" / "evaluation.json", root / "final" / "summary.json",
                                          root / "downstream_forecast.json"]}
    messages = []
    second = run_demo(root, patients=1500, grid=grid, final_multiple=2.0, finite=finite, log=messages.append)
    for stage in ("cohort", "tokens", "fit", "evaluation", "finite cohort", "finite tokens"):
        assert f"{stage}: done before, reused" in messages
    assert second["prediction"] == first["prediction"]
    assert second["finite_prediction"] == first["finite_prediction"]
    assert all(p.read_bytes() == content for p, content in before.items())
