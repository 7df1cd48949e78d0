"""The recommendation at a budget, its shape, and the final run's config."""

import tomllib

import numpy as np
import pytest

from analysis.example_table import EXAMPLE_BUDGETS, EXAMPLE_LAW, synthetic_isoflop_table
from analysis.fit_report import fit_all
from analysis.recommend import final_run_settings, recommend_compute_optimal, run_config_toml
from analysis.results_table import results_from_frame

COMPUTE = 1e18


@pytest.fixture(scope="module")
def report():
    runs, _ = synthetic_isoflop_table(EXAMPLE_LAW, EXAMPLE_BUDGETS, seed=0)
    return fit_all(results_from_frame(runs.assign(vocab_size=1024)), bootstrap=30, holdout=0, compute=COMPUTE)


def test_recommendation_follows_approach3_and_is_consistent(report):
    rec = recommend_compute_optimal(report, COMPUTE)
    assert rec["approach"] == "approach3"
    assert rec["params"] == pytest.approx(report.approach3.optimal_params(COMPUTE))
    assert rec["tokens_per_param"] == pytest.approx(rec["tokens"] / rec["params"])
    assert 6 * rec["params"] * rec["tokens"] == pytest.approx(COMPUTE, rel=1e-4)
    assert rec["predicted_loss"] == pytest.approx(EXAMPLE_LAW.loss(rec["params"], rec["tokens"]), rel=0.02)
    assert rec["params"] == pytest.approx(EXAMPLE_LAW.optimal_params(COMPUTE), rel=0.25)
    for key in ("params", "tokens", "predicted_loss"):
        low, high = rec["ci"][key]
        assert low <= rec[key] <= high
    assert rec["approaches"]["approach2"]["params"] == pytest.approx(report.approach2.optimal_params(COMPUTE))
    assert rec["vocab_size"] == 1024  # from the table's vocab_size column


def test_recommended_shape_comes_from_the_ladder(report):
    ladder = pytest.importorskip("models.ladder")
    rec = recommend_compute_optimal(report, COMPUTE, seq_len=256)
    assert rec["shape"] == ladder.shape_for_params(rec["params"], 1024, 256).to_dict()


def test_final_run_settings_train_whole_steps():
    train = final_run_settings(1.0e9, seq_len=256, batch_size=16, lr=1e-3)
    steps = int(np.ceil(1.0e9 / (16 * 256)))
    assert train["tokens"] == steps * 16 * 256
    assert 0 < train["warmup_steps"] < steps
    assert train["checkpoint_every"] % train["eval_every"] == 0


def test_run_config_is_valid_toml_that_the_trainer_accepts(report):
    rec = recommend_compute_optimal(report, COMPUTE, seq_len=128)
    shape = rec["shape"] or {"d_model": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4, "d_ff": 192,
                             "vocab_size": 1024, "max_seq_len": 128}
    text = run_config_toml(shape, final_run_settings(rec["tokens"], seq_len=128), data=None, note="a\nb")
    parsed = tomllib.loads(text)
    assert parsed["data"].startswith("EDIT-ME")
    assert "EDIT the data path" in text
    assert {k: parsed["model"][k] for k in shape} == shape
    assert parsed["train"]["tokens"] >= rec["tokens"]
    run_config = pytest.importorskip("scaling.train.config")
    config = run_config.parse_run_config(parsed, "final.toml")
    assert config.model.d_model == shape["d_model"]
    assert config.total_steps * 16 * 128 == parsed["train"]["tokens"]
