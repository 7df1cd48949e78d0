"""`scaling final`: the recommended model is trained, its predicted and actual losses written, and a
re-run reuses the recommendation and the finished run."""

import json

import numpy as np
import pytest
from train_builders import random_token_store

from analysis.example_table import KnownLaw, synthetic_isoflop_table


@pytest.mark.slow
def test_final_run_trains_the_recommendation_and_reuses_it(tmp_path, run_cli):
    store = random_token_store(tmp_path / "tok")
    law = KnownLaw(E=1.5, A=40.0, B=60.0, alpha=0.35, beta=0.35)
    runs, _ = synthetic_isoflop_table(law, np.array([1e9, 3e9, 1e10]), seed=1)
    results = tmp_path / "results.csv"
    runs.to_csv(results, index=False)
    out = tmp_path / "final"
    code, stdout, err = run_cli("final", results, "--compute", "2e10", "--data", store, "--out", out,
                                "--bootstrap", "20", "--json")
    assert code == 0, err
    prediction = json.loads(stdout)
    rec = json.loads((out / "recommendation.json").read_text())["recommendation"]
    summary = json.loads((out / "summary.json").read_text())
    fit = rec["law"]
    n, d = summary["params"], summary["tokens"]
    expected = fit["E"] + fit["A"] / n ** fit["alpha"] + fit["B"] / d ** fit["beta"]
    assert prediction["predicted_loss"] == pytest.approx(expected)
    # the fit recovers the law the table was drawn from, so its prediction is the law's, within noise
    assert prediction["predicted_loss_at_recommendation"] == pytest.approx(law.loss(rec["params"], rec["tokens"]),
                                                                           rel=0.02)
    assert summary["status"] == "finished" and prediction["actual_loss"] == summary["val_loss"]
    assert abs(summary["params"] - rec["params"]) / rec["params"] < 0.15  # the ladder hits the target
    before = (out / "summary.json").read_bytes()
    code, stdout, err = run_cli("final", results, "--compute", "2e10", "--data", store, "--out", out, "--json")
    assert code == 0 and "reusing" in err
    assert (out / "summary.json").read_bytes() == before


def test_final_refuses_a_table_it_cannot_read(tmp_path, run_cli):
    bad = tmp_path / "results.csv"
    bad.write_text("params,tokens\n1,2\n")
    code, _, err = run_cli("final", bad, "--compute", "1e10", "--data", tmp_path, "--out", tmp_path / "f")
    assert code == 2 and len(err.strip().splitlines()) == 1
