"""`scaling demo` end to end on a tiny cohort and grid: every stage's files, the report's sections, the
downstream evaluation of sweep runs (at each budget the best and the best of the next larger size), of the
final shape's ladder and of the final run, a downstream law from each, and a re-run that redoes nothing."""

import json
from pathlib import Path

import pandas as pd
import pytest
from test_notebooks import NOTEBOOK_DIR, run_notebook

from scaling.pipeline.demo import FiniteStudy, run_demo
from scaling.train.run_dir import RunDir

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
""" + TINY_TRAINING.replace("seq_len = 32\n", "seq_len = 32\nshort_seq_len = 16\nshort_seq_fraction = 0.75\n")

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
    sizes = sorted(results["params"].unique())
    chosen = []  # at each budget the lowest-loss run, then the lowest-loss run of the next larger size
    for budget in sorted(results["budget"].unique()):
        runs = results[results["budget"] == budget].sort_values("loss")
        best = runs.iloc[0]
        larger = [n for n in sizes if n > best["params"] and n in set(runs["params"])]
        chosen.append(best["run_id"])
        if larger:
            chosen.append(runs[runs["params"] == larger[0]].iloc[0]["run_id"])
    assert len(chosen) > len(results["budget"].unique())  # the tiny grid has a larger size at some budget
    evaluation = json.loads((root / "evaluation" / "evaluation.json").read_text())
    evaluated = [Path(run["run"]["run_dir"]).name for run in evaluation["runs"]]
    # the ladder: the final run's config at 1/30, 1/10 and 1/3 of its steps, scored between the sweep and the final
    def config_without_length(run_dir):
        config = RunDir(run_dir).read_config().to_dict()
        return {**config, "train": {k: v for k, v in config["train"].items() if k not in ("tokens", "steps")}}

    final_steps = json.loads((root / "final" / "summary.json").read_text())["steps"]
    final_train = RunDir(root / "final").read_config().train  # the sweep's short context, as the demo's grid has
    assert (final_train.short_seq_len, final_train.short_seq_fraction) == (16, 0.75)
    rungs = ["frac0.0333", "frac0.1", "frac0.333"]
    for rung, fraction in zip(rungs, (1 / 30, 1 / 10, 1 / 3), strict=True):
        rung_dir = root / "final-ladder" / "runs" / rung
        summary = json.loads((rung_dir / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["steps"] == round(fraction * final_steps)
        assert config_without_length(rung_dir) == config_without_length(root / "final")
    assert evaluated == [*chosen, *rungs, "final"]
    assert not (root / "evaluation.partial").exists()  # the per-run reports kept while it ran are gone
    assert {t["kind"] for t in evaluation["runs"][-1]["tasks"]} == {"binary", "count", "duration"}
    # the final run's metrics were predicted from the sweep's runs before it was evaluated, at its forecast loss
    downstream = json.loads((root / "downstream_forecast.json").read_text())
    assert downstream["registered_before_evaluation"]
    assert [Path(r).name for r in downstream["fitted_on"]] == chosen
    assert downstream["target"]["forecast_loss"] == json.loads((root / "final" / "forecast.json").read_text())[
        "predicted_loss"]
    fitted = [(t["name"], e) for t in downstream["tasks"] for e, b in t["estimators"].items() if "law_vs_loss" in b]
    assert ("length_of_stay", "model") in fitted  # MAE is defined on every run; AUROC needs enough positives
    assert (root / "downstream_law.png").is_file()
    along = json.loads((root / "downstream_forecast_ladder.json").read_text())  # the second law: on the rungs only
    assert along["registered_before_evaluation"] and [Path(r).name for r in along["fitted_on"]] == rungs
    assert along["target"] == downstream["target"]

    report = (root / "report.md").read_text()
    for heading in ("## Fitted laws", "## The final run", "## Downstream evaluation by simulation",
                    "### The downstream law: the final run's metrics predicted from the sweep",
                    "### The downstream law: the final run's metrics predicted along its own shape"):
        assert heading in report
    final_tasks = evaluation["runs"][-1]["tasks"]
    starts = tuple(f"| {t['name']} | {t['kind']} |" for t in final_tasks)
    table_rows = [line for line in report.splitlines() if line.startswith(starts)]
    assert len(table_rows) == len(final_tasks)
    prediction = json.loads((root / "final" / "prediction.json").read_text())
    assert f"actual {prediction['actual_loss']:.4f}" in report
    forecast = json.loads((root / "final" / "forecast.json").read_text())
    how = (f"(the mean of the law fitted on all budgets, {forecast['free_E_predicted_loss']:.4f}, and its "
           f"{forecast['window_mean']['fits'] - 1} refits without the smallest budgets) "
           if forecast["point_from"] == "window_mean" else "")
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
                                          root / "downstream_forecast.json", root / "downstream_forecast_ladder.json",
                                          *(root / "final-ladder" / "runs" / r / "summary.json" for r in rungs)]}
    messages = []
    second = run_demo(root, patients=1500, grid=grid, final_multiple=2.0, finite=finite, log=messages.append)
    for stage in ("cohort", "tokens", "fit", "evaluation", "finite cohort", "finite tokens"):
        assert f"{stage}: done before, reused" in messages
    assert second["prediction"] == first["prediction"]
    assert second["finite_prediction"] == first["finite_prediction"]
    assert all(p.read_bytes() == content for p, content in before.items())


def test_report_reads_the_verdicts_against_the_true_risk():
    """The report's true-risk table and verdicts come from each task's auroc_true_risk and its own paired
    differences (versus_baselines_true_risk), not from the label AUROC's."""
    from scaling.pipeline.report import against_best_baseline, true_risk_lines

    def block(auroc, true_risk):
        return {"auroc": auroc, "auroc_true_risk": true_risk, "ci": {"auroc_true_risk": [true_risk - 0.01,
                                                                                            true_risk + 0.01]}}

    def versus(verdict):
        return {"metric": "auroc_true_risk", "difference": 0.0, "ci": [-0.01, 0.01], "verdict": verdict}

    task = {"name": "death_1y", "kind": "binary", "model": block(0.70, 0.80), "model_probability": block(0.72, 0.84),
            "baselines": {"logistic": block(0.75, 0.83), "gbdt": block(0.78, 0.82)}, "oracle": block(0.79, 0.86),
            # on the labels the model is behind LightGBM (the better baseline there); on the true risk logistic
            # regression is the better baseline, and the model level with it, its probabilities ahead
            "versus_baselines": {"model": {"gbdt": {**versus("behind"), "metric": "auroc"}}},
            "versus_baselines_true_risk": {"model": {"logistic": versus("level"), "gbdt": versus("behind")},
                                           "model_probability": {"logistic": versus("ahead")}}}
    assert against_best_baseline(task) == "behind"
    assert against_best_baseline(task, true_risk=True) == "level with"
    assert against_best_baseline(task, "model_probability", true_risk=True) == "ahead of"
    lines = true_risk_lines([task, {"name": "stay", "kind": "duration", "model": {"mae": 2.0}}], 32,
                            lambda verdicts: ",".join(verdicts))
    assert "| death_1y | 0.800 [0.790, 0.810] | 0.840 [0.830, 0.850] | 0.830 [0.820, 0.840] | " \
           "0.820 [0.810, 0.830] | 0.860 [0.850, 0.870] |" in lines
    assert lines[-2] == ("On it, the final model's fraction of futures is level with; with its own probabilities, "
                         "ahead of.")
    assert true_risk_lines([{"name": "stay", "kind": "duration", "model": {"mae": 2.0}}], 32, str) == []


def test_evaluation_stage_is_done_only_when_every_laws_runs_were_scored(tmp_path):
    """A demo evaluated before it had a ladder holds none of the rungs: the stage must run again (not be reused
    with a ladder law that has nothing to fit)."""
    from scaling.pipeline.demo import LawSource, evaluated_all, reports_of

    sweep = [tmp_path / "sweep" / "runs" / name for name in ("a", "b")]
    rungs = [tmp_path / "final-ladder" / "runs" / name for name in ("frac0.1", "frac0.333")]
    sources = [LawSource("sweep", sweep, tmp_path / "f.json", tmp_path / "f.png"),
               LawSource("ladder", rungs, tmp_path / "g.json", tmp_path / "g.png")]
    out = tmp_path / "evaluation"
    assert not evaluated_all(out, sources)  # nothing evaluated yet
    out.mkdir()

    def write(runs):
        (out / "evaluation.json").write_text(json.dumps({"runs": [{"run": {"run_dir": str(r)}} for r in runs]}))

    write([*sweep, tmp_path / "final"])
    assert not evaluated_all(out, sources)
    assert evaluated_all(out, sources[:1])
    write([*sweep, *rungs, tmp_path / "final"])
    assert evaluated_all(out, sources)
    reports = json.loads((out / "evaluation.json").read_text())["runs"]
    assert [Path(r["run"]["run_dir"]).name for r in reports_of(reports, rungs[::-1])] == ["frac0.1", "frac0.333"]
