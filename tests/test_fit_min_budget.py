"""`--min-budget`: fit only the runs of the larger IsoFLOP budgets (`fit`, `recommend`, `plot`, `final`).

The tables are drawn from a known law; the smallest budget is made steeper than the law (its losses raised),
as runs too short or too small to be on the law are, and leaving it out recovers the law."""

import json
import subprocess

import numpy as np
import pytest

from analysis.example_table import EXAMPLE_LAW, synthetic_isoflop_table
from analysis.forecast import fit_input_sha256
from analysis.loss_law import LossLaw
from analysis.results_table import load_results
from tests.test_final_run import final_command, known_law_sweep, run_final, without_ray_address

BUDGETS = (1e14, 3e14, 1e15, 3e15, 1e16)
SMALL = 1e14
EXCESS = 0.08  # the smallest budget's losses sit 8% above the law


@pytest.fixture(scope="module")
def results_csv(tmp_path_factory):
    runs, _ = synthetic_isoflop_table(EXAMPLE_LAW, BUDGETS, noise=0.002, seed=3)
    runs.loc[runs["budget"] == SMALL, "loss"] *= 1 + EXCESS
    path = tmp_path_factory.mktemp("min_budget") / "results.csv"
    runs.to_csv(path, index=False)
    return path


def _fit_json(run_cli, results_csv, *extra) -> dict:
    code, out, err = run_cli("fit", results_csv, "--approach", "3", "--holdout", "0", "--json", *extra)
    assert code == 0, err
    return json.loads(out)


def test_load_results_keeps_exactly_the_runs_of_budgets_at_least_min_budget(results_csv):
    everything = load_results(results_csv)
    kept = load_results(results_csv, min_budget=3e14)
    expected = everything.runs[everything.runs["budget"] >= 3e14]["run_id"]
    assert sorted(kept.runs["run_id"]) == sorted(expected)
    assert kept.n_runs == 4 * everything.n_runs // 5  # 7 runs per budget, 4 budgets of 5
    assert list(kept.budgets) == list(BUDGETS[1:])
    assert any("left out 7 runs of budgets 1e+14" in note for note in kept.notes)
    # a budget written a hair off (3.0e14 vs 2.9999999e14) still counts as at the minimum
    assert load_results(results_csv, min_budget=3e14 * (1 + 1e-9)).n_runs == kept.n_runs
    assert load_results(results_csv, min_budget=SMALL).notes == everything.notes  # nothing left out, no note


def test_fit_without_the_steeper_budget_recovers_the_law(run_cli, results_csv):
    every = _fit_json(run_cli, results_csv)
    upper = _fit_json(run_cli, results_csv, "--min-budget", "3e14")
    assert (every["n_runs"], upper["n_runs"]) == (35, 28) and upper["n_budgets"] == 4
    assert any("fitted on budgets >= 3e+14" in w for w in upper["warnings"])
    truth = EXAMPLE_LAW.loss(1e8, 1e10)  # a run at 6e18 FLOPs, 600x past the top budget
    law = LossLaw.from_json(upper["approach3"])
    assert abs(law.a - EXAMPLE_LAW.a) < 0.02 and abs(law.loss(1e8, 1e10) / truth - 1) < 0.01
    # the budget off the law biases the law fitted with it: its far forecast misses by more than 1%
    assert abs(LossLaw.from_json(every["approach3"]).loss(1e8, 1e10) / truth - 1) > 0.01


def test_recommend_and_plot_take_min_budget(run_cli, results_csv, tmp_path):
    code, out, err = run_cli("recommend", results_csv, "--compute", "1e17", "--bootstrap", "0", "--min-budget", "3e14",
                             "--json")
    assert code == 0, err
    assert any("fitted on budgets >= 3e+14" in w for w in json.loads(out)["warnings"])
    code, _, err = run_cli("plot", results_csv, "--out", tmp_path / "fig", "--bootstrap", "0", "--min-budget", "1e15")
    assert code == 0, err
    assert json.loads((tmp_path / "fig" / "fit.json").read_text())["n_budgets"] == 3


@pytest.mark.parametrize("value, message", [
    ("0", "--min-budget 0 is not a positive number of FLOPs"),
    ("-3e14", "--min-budget -3e+14 is not a positive number of FLOPs"),
    ("1e17", "results.csv: --min-budget 1e+17 leaves no runs; the table's budgets are 1e+14, 3e+14, 1e+15, 3e+15, "
             "1e+16 FLOPs"),
])
def test_bad_min_budget_exits_2_with_one_line(run_cli, results_csv, value, message):
    code, out, err = run_cli("fit", results_csv, "--min-budget", value)
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.strip() == f"error: {message}"


def test_final_fits_its_forecast_on_the_budgets_kept_and_refuses_another_choice(tmp_path):
    store, results = known_law_sweep(tmp_path)  # budgets 1e9, 3e9, 1e10
    out = tmp_path / "final"
    prediction = run_final(final_command(results, store, out, "--min-budget", "3e9"), without_ray_address())
    kept = load_results(results, min_budget=3e9)
    forecast = json.loads((out / "forecast.json").read_text())
    assert forecast["fit_runs"] == kept.n_runs == 14
    assert forecast["fit_input_sha256"] == fit_input_sha256(kept) != fit_input_sha256(load_results(results))
    assert json.loads((out / "recommendation.json").read_text())["recommendation"]["min_budget"] == 3e9
    assert prediction["forecast"]["predicted_loss"] == forecast["predicted_loss"]
    # the same out with the whole table would grade the run against a law fitted on other runs: refused
    result = subprocess.run(final_command(results, store, out), env=without_ray_address(), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "was made with --min-budget 3e+09, this run asks for all budgets; use another --out" in result.stderr
    assert np.isfinite(prediction["actual_loss"])
