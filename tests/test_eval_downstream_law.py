"""The downstream law (analysis.downstream_law) and the two-step forecast of a larger run's metric
(scaling.evaluate.downstream, `scaling downstream`): recovered from points on a known curve, with the
target run left out of the fit, graded against the run's evaluation, and bad input refused."""

import json
import math

import numpy as np
import pytest
from scipy.special import expit

from analysis.downstream_law import fit_downstream_law
from analysis.results_table import NotEnoughData
from scaling.evaluate.downstream import downstream_forecast, grade_downstream, two_step_auroc_errors

LOSSES = np.array([2.3, 2.1, 2.0, 1.95, 1.9])


def auroc_curve(loss):  # a = 9, b = -4: AUROC 0.5 + 0.5 sigmoid(9 - 4 L)
    return 0.5 + 0.5 * expit(9.0 - 4.0 * np.asarray(loss))


def mae_curve(loss):  # MAE = exp(-1 + 1.5 L)
    return np.exp(-1.0 + 1.5 * np.asarray(loss))


@pytest.mark.parametrize(("metric", "link", "curve", "params"), [("auroc", "sigmoid", auroc_curve, (9.0, -4.0)),
                                                              ("mae", "log", mae_curve, (-1.0, 1.5))])
def test_law_recovers_a_known_curve_and_extrapolates_it(metric, link, curve, params):
    law = fit_downstream_law(metric, LOSSES, curve(LOSSES), n_bootstrap=50, link=link)
    np.testing.assert_allclose(law.params, params, atol=1e-4)
    prediction = law.predict(1.7)
    assert prediction["value"] == pytest.approx(float(curve(1.7)), rel=1e-5)
    assert prediction["extrapolated"] and not law.predict(2.0)["extrapolated"]


def test_leave_one_run_out_picks_the_curve_that_made_the_points():
    """Points on a sigmoid, on a line, and scattered about a constant: each picks its own curve (the held-out
    errors computed here by hand for the constant, whose fit without run i is the others' weighted mean)."""
    ci = np.stack([np.full(5, -0.01), np.full(5, 0.01)], 1)
    on_sigmoid = auroc_curve(LOSSES)
    assert fit_downstream_law("auroc", LOSSES, on_sigmoid, on_sigmoid[:, None] + ci, n_bootstrap=20).link == "sigmoid"
    on_line = 0.9 - 0.2 * (LOSSES - 1.9)
    assert fit_downstream_law("auroc", LOSSES, on_line, on_line[:, None] + ci, n_bootstrap=20).link == "linear"
    flat = np.array([0.70, 0.72, 0.69, 0.71, 0.70])
    law = fit_downstream_law("auroc", LOSSES, flat, flat[:, None] + 5 * ci, n_bootstrap=20)
    sigma = 0.05 / 1.959964
    by_hand = np.mean([((flat[i] - np.delete(flat, i).mean()) / sigma) ** 2 for i in range(5)])
    assert law.link == "constant" and law.loo_errors["constant"] == pytest.approx(by_hand)
    assert law.predict(1.5)["value"] == pytest.approx(flat.mean())


def test_predictions_stay_in_the_metrics_range():
    steep = np.array([0.50, 0.60, 0.75, 0.85, 0.95])
    law = fit_downstream_law("auroc", LOSSES, steep, n_bootstrap=50, link="linear")
    assert law.predict(1.0)["value"] == 1.0 and law.predict(1.0)["interval"][1] <= 1.0
    assert fit_downstream_law("mae", LOSSES, [5.0, 4.0, 3.0, 2.0, 1.0], link="linear",
                              n_bootstrap=20).predict(0.5)["value"] == 0.0


def test_oracle_bounds_the_curves_and_the_predictions():
    """With the oracle's metric as `best`: the log curve falls toward the oracle's MAE and the sigmoid rises
    toward its AUROC (both recovered from points on them), and no curve predicts past the oracle."""
    floor, ceiling = 2.0, 0.9
    mae = floor + np.exp(-1.0 + 1.5 * LOSSES)
    law = fit_downstream_law("mae", LOSSES, mae, n_bootstrap=20, link="log", best=floor)
    np.testing.assert_allclose(law.params, (-1.0, 1.5), atol=1e-4)
    assert law.predict(1.0)["value"] == pytest.approx(floor + math.exp(0.5), rel=1e-5)
    auroc = 0.5 + (ceiling - 0.5) * expit(9.0 - 4.0 * LOSSES)
    law = fit_downstream_law("auroc", LOSSES, auroc, n_bootstrap=20, link="sigmoid", best=ceiling)
    np.testing.assert_allclose(law.params, (9.0, -4.0), atol=1e-4)
    # a line through MAEs falling 1 per 0.1 of loss reaches 0 at loss 1.4; the oracle stops it at its floor
    falling = [5.0, 4.0, 3.0, 2.5, 2.1]
    line = fit_downstream_law("mae", LOSSES, falling, n_bootstrap=50, link="linear", best=floor)
    assert line.predict(1.4)["value"] == floor and line.predict(1.4)["interval"][0] >= floor
    steep = fit_downstream_law("auroc", LOSSES, [0.50, 0.60, 0.75, 0.85, 0.88], n_bootstrap=50, link="linear",
                               best=ceiling)
    assert steep.predict(1.0)["value"] == ceiling and steep.predict(1.0)["interval"][1] <= ceiling


def test_interval_follows_the_evaluations_noise():
    rng = np.random.default_rng(0)
    y = auroc_curve(LOSSES) + rng.normal(0, 0.01, len(LOSSES))
    narrow = fit_downstream_law("auroc", LOSSES, y, np.stack([y - 0.02, y + 0.02], 1), n_bootstrap=300,
                                link="sigmoid")
    wide = fit_downstream_law("auroc", LOSSES, y, np.stack([y - 0.2, y + 0.2], 1), n_bootstrap=300, link="sigmoid")
    width = lambda law: np.diff(law.predict(1.8)["interval"])[0]  # noqa: E731
    assert width(wide) > 4 * width(narrow)
    low, high = narrow.predict(1.8)["interval"]
    assert low <= narrow.predict(1.8)["value"] <= high


def test_law_needs_three_scored_runs():
    with pytest.raises(NotEnoughData):
        fit_downstream_law("auroc", [2.0, 1.9, 1.8], [0.7, float("nan"), 0.8])


def report(run_dir, loss, flops, auroc, mae, patients=100, oracle=None):
    """A run's evaluation report, as `scaling evaluate` writes it (the fields the forecast reads); `oracle`
    (AUROC, MAE) the oracle's metrics."""
    return {"run": {"run_dir": str(run_dir), "val_loss": loss, "flops": flops},
            "settings": {"patients": patients, "samples": 8, "seed": 0, "max_new_tokens": 64, "temperature": 1.0,
                         "top_k": 0, "top_p": 1.0, "min_positives": 10},
            "tasks": [
                {"name": "death", "kind": "binary",
                 "model": {"auroc": auroc, "ci": {"auroc": [auroc - 0.05, auroc + 0.05]}},
                 "model_probability": {"auroc": None, "ci": {"auroc": None}},
                 "oracle": {"auroc": oracle[0]} if oracle else None},
                {"name": "stay", "kind": "duration", "model": {"mae": mae, "ci": {"mae": [mae - 0.1, mae + 0.1]}},
                 "model_probability": None, "oracle": {"mae": oracle[1]} if oracle else None}]}


def sweep_reports(tmp_path):
    # loss falls with compute as L = 3.5 - 0.15 log10 C; the metrics sit exactly on the curves
    flops = [1e10, 3e10, 1e11, 3e11, 1e12]
    loss = [3.5 - 0.15 * math.log10(c) for c in flops]
    return [report(tmp_path / f"sweep{i}", x, c, float(auroc_curve(x)), float(mae_curve(x)))
            for i, (x, c) in enumerate(zip(loss, flops))]


def test_forecast_predicts_the_target_from_its_forecast_loss_and_leaves_it_out(tmp_path):
    reports = sweep_reports(tmp_path)
    target = {"run_dir": str(tmp_path / "final"), "forecast_loss": 1.6, "flops": 1e13}
    # the target's own evaluation, with a wrong metric, in the same list: it must not move the fit
    reports.append(report(tmp_path / "final", 1.62, 1e13, 0.51, 50.0))
    forecast = downstream_forecast(reports, target, n_bootstrap=50)
    assert str(tmp_path / "final") not in forecast["fitted_on"] and len(forecast["fitted_on"]) == 5
    death, stay = forecast["tasks"]
    assert death["estimators"]["model"]["from_forecast_loss"]["value"] == pytest.approx(float(auroc_curve(1.6)),
                                                                                         rel=1e-4)
    # 1e13 sits on the same loss-compute line: L = 3.5 - 0.15 * 13 = 1.55
    assert stay["estimators"]["model"]["from_compute"]["value"] == pytest.approx(float(mae_curve(1.55)), rel=1e-3)
    assert "reason" in death["estimators"]["model_probability"]

    graded = grade_downstream(forecast, reports[-1])
    block = graded["tasks"][0]["estimators"]["model"]
    assert block["actual"] == 0.51
    assert block["from_forecast_loss"]["error"] == pytest.approx(0.51 - float(auroc_curve(1.6)), rel=1e-4)
    assert block["from_actual_loss"]["value"] == pytest.approx(float(auroc_curve(1.62)), rel=1e-4)
    # grading leaves the forecast itself untouched
    assert "error" not in forecast["tasks"][0]["estimators"]["model"]["from_forecast_loss"]


def write_evaluation_json(path, reports):
    path.mkdir(parents=True)
    (path / "evaluation.json").write_text(json.dumps({"samples": 8, "runs": reports}))


def test_cli_writes_the_forecast_then_grades_it(tmp_path, run_cli):
    reports = sweep_reports(tmp_path)
    write_evaluation_json(tmp_path / "sweep-eval", reports)
    final = tmp_path / "final"
    final.mkdir()
    (final / "forecast.json").write_text(json.dumps({"predicted_loss": 1.6, "params": 1e6, "tokens": 1e7}))
    code, out, err = run_cli("downstream", tmp_path / "sweep-eval", "--run", final, "--out", tmp_path / "f.json",
                             "--bootstrap", 50, "--json")
    assert code == 0, err
    written = json.loads((tmp_path / "f.json").read_text())
    assert json.loads(out) == written
    assert written["target"]["flops"] == 6e13  # no summary.json yet: 6 N D of the forecast
    assert "actual" not in written["tasks"][0]["estimators"]["model"]
    # a registered forecast is not replaced
    code, _, err = run_cli("downstream", tmp_path / "sweep-eval", "--run", final, "--out", tmp_path / "f.json")
    assert code == 2 and "already exists" in err
    write_evaluation_json(tmp_path / "final-eval", [report(final, 1.62, 6e13, 0.9, 1.0)])
    code, out, err = run_cli("downstream", tmp_path / "sweep-eval", "--run", final, "--actual",
                             tmp_path / "final-eval", "--bootstrap", 50, "--json")
    assert code == 0, err
    assert json.loads(out)["tasks"][0]["estimators"]["model"]["actual"] == 0.9
    # the sweep's runs may come from several evaluations with the same settings: the same forecast
    write_evaluation_json(tmp_path / "eval-a", reports[:2])
    write_evaluation_json(tmp_path / "eval-b", reports[2:])
    code, out, err = run_cli("downstream", tmp_path / "eval-a", tmp_path / "eval-b", "--run", final,
                             "--bootstrap", 50, "--json")
    assert code == 0, err
    split = json.loads(out)
    assert split["fitted_on"] == written["fitted_on"]
    assert split["tasks"][0]["estimators"]["model"]["from_forecast_loss"]["value"] == pytest.approx(
        written["tasks"][0]["estimators"]["model"]["from_forecast_loss"]["value"])


def test_cli_refuses_what_it_cannot_compare(tmp_path, run_cli):
    reports = sweep_reports(tmp_path)
    write_evaluation_json(tmp_path / "sweep-eval", reports)
    final = tmp_path / "final"
    final.mkdir()
    code, _, err = run_cli("downstream", tmp_path / "sweep-eval", "--run", final)
    assert code == 2 and "forecast.json" in err and len(err.strip().splitlines()) == 1
    (final / "forecast.json").write_text(json.dumps({"predicted_loss": 1.6, "params": 1e6, "tokens": 1e7}))
    write_evaluation_json(tmp_path / "final-eval", [report(final, 1.62, 6e13, 0.9, 1.0, patients=50)])
    code, _, err = run_cli("downstream", tmp_path / "sweep-eval", "--run", final, "--actual", tmp_path / "final-eval",
                           "--out", tmp_path / "graded.json")
    assert code == 2 and "patients = 50" in err and not (tmp_path / "graded.json").exists()
    (tmp_path / "bad-eval").mkdir()
    (tmp_path / "bad-eval" / "evaluation.json").write_text("{not json")
    code, _, err = run_cli("downstream", tmp_path / "bad-eval", "--run", final)
    assert code == 2 and "bad-eval" in err and "not JSON" in err


def test_runs_of_one_budget_still_get_the_law_against_loss(tmp_path):
    """An IsoFLOP slice: every run has the same compute, so only the law against loss can be fitted."""
    reports = [report(tmp_path / f"r{i}", loss, 1e11, float(auroc_curve(loss)), float(mae_curve(loss)))
               for i, loss in enumerate(LOSSES)]
    forecast = downstream_forecast(reports, {"run_dir": str(tmp_path / "final"), "forecast_loss": 1.8,
                                             "flops": 1e12}, n_bootstrap=20)
    block = forecast["tasks"][0]["estimators"]["model"]
    assert block["from_forecast_loss"]["value"] == pytest.approx(float(auroc_curve(1.8)), rel=1e-3)
    assert "from_compute" not in block and "distinct x" in block["law_vs_compute"]["reason"]


def test_forecast_is_bounded_by_the_oracle_of_the_evaluations(tmp_path):
    """Length of stay's MAE falling by a constant step per run: a line would predict below the oracle's MAE at
    the target's loss; the forecast reads the oracle from the reports and stops there."""
    losses, flops = [2.0, 1.9, 1.8], [1e11, 3e11, 1e12]
    reports = [report(tmp_path / f"sweep{i}", x, c, 0.6 + 0.1 * i, 20.0 - 8.0 * i, oracle=(0.8, 2.5))
               for i, (x, c) in enumerate(zip(losses, flops))]
    target = {"run_dir": str(tmp_path / "final"), "forecast_loss": 1.7, "flops": 3e13}
    death, stay = downstream_forecast(reports, target, n_bootstrap=50)["tasks"]
    assert (death["oracle"], stay["oracle"]) == (0.8, 2.5)
    block = stay["estimators"]["model"]
    assert block["law_vs_loss"]["best"] == 2.5 and block["from_forecast_loss"]["value"] >= 2.5
    assert death["estimators"]["model"]["from_forecast_loss"]["value"] <= 0.8
    # without an oracle the same points predict a better-than-possible stay: the bound is what stopped it
    unbounded = downstream_forecast([{**r, "tasks": [{**t, "oracle": None} for t in r["tasks"]]} for r in reports],
                                    target, n_bootstrap=50)["tasks"][1]
    assert unbounded["oracle"] is None and unbounded["estimators"]["model"]["from_forecast_loss"]["value"] < 2.5


def test_a_binary_task_scored_against_the_true_risk_gets_its_own_law(tmp_path):
    """Evaluations with an oracle carry each binary task's AUROC against the true risk: the forecast fits it as
    a second entry (the same task, metric auroc_true_risk), on its own values, bounded by the oracle's, and
    grades it against the target's."""
    losses, flops = [2.0, 1.9, 1.8, 1.75], [1e11, 3e11, 1e12, 2e12]
    reports = [report(tmp_path / f"sweep{i}", x, c, 0.6, 10.0, oracle=(0.8, 2.5))
               for i, (x, c) in enumerate(zip(losses, flops))]
    for r, x in zip(reports, losses):  # the true-risk AUROC on a line in loss: 0.62 at L = 2.0, 0.68 at 1.8
        value = 0.62 + 0.3 * (2.0 - x)
        death = r["tasks"][0]
        death["model"] = {**death["model"], "auroc_true_risk": value,
                          "ci": {**death["model"]["ci"], "auroc_true_risk": [value - 0.01, value + 0.01]}}
        death["oracle"] = {**death["oracle"], "auroc_true_risk": 0.85}
    target = {"run_dir": str(tmp_path / "final"), "forecast_loss": 1.7, "flops": 3e13}
    forecast = downstream_forecast(reports, target, n_bootstrap=50)
    assert [(t["name"], t["metric"]) for t in forecast["tasks"]] == [
        ("death", "auroc"), ("death", "auroc_true_risk"), ("stay", "mae")]
    true_risk = forecast["tasks"][1]
    assert true_risk["oracle"] == 0.85
    block = true_risk["estimators"]["model"]
    assert block["law_vs_loss"]["link"] == "linear" and block["law_vs_loss"]["best"] == 0.85
    assert block["from_forecast_loss"]["value"] == pytest.approx(0.62 + 0.3 * 0.3, abs=1e-6)
    # the plain AUROC, flat at 0.6 in every run, keeps its own law
    assert forecast["tasks"][0]["estimators"]["model"]["from_forecast_loss"]["value"] == pytest.approx(0.6)
    final = report(tmp_path / "final", 1.7, 3e13, 0.6, 10.0, oracle=(0.8, 2.5))
    final["tasks"][0]["model"]["auroc_true_risk"] = 0.70
    graded_all = grade_downstream(forecast, final)
    graded = graded_all["tasks"][1]["estimators"]["model"]
    assert graded["actual"] == 0.70 and graded["from_forecast_loss"]["error"] == pytest.approx(0.70 - 0.71, abs=1e-6)
    # the errors the report tallies: one per graded AUROC pair, per metric (the stay's MAE is not among them)
    errors = two_step_auroc_errors(graded_all)
    assert set(errors) == {"auroc", "auroc_true_risk"}
    assert errors["auroc"] == [pytest.approx(0.0, abs=1e-9)] and errors["auroc_true_risk"] == [pytest.approx(0.01)]
    # one report without it (an evaluation without an oracle): no true-risk entry at all
    reports[0]["tasks"][0]["model"].pop("auroc_true_risk")
    assert [t["metric"] for t in downstream_forecast(reports, target, n_bootstrap=20)["tasks"]] == ["auroc", "mae"]
