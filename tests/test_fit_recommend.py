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


def test_the_recommended_shape_stays_in_the_swept_family_and_says_so():
    from analysis.recommend import family_check, swept_family
    from models.accounting import count_params
    from models.ladder import family_shape

    runs, _ = synthetic_isoflop_table(EXAMPLE_LAW, EXAMPLE_BUDGETS, seed=0)
    # give every run a shape of the family d_model = 16 x n_layers (2 to 8 layers), as a sweep's table has
    layers = np.clip(np.round(np.log2(runs["params"] / runs["params"].min())).astype(int) + 2, 2, 8)
    runs["n_layers"], runs["d_model"] = layers, 16 * layers
    report = fit_all(results_from_frame(runs, "family"), approaches=("approach3",), holdout=0)
    family = swept_family(report.table)
    assert family["aspect_ratio"] == 16 and family["min_layers"] == 2 and family["max_layers"] == 8
    rec = recommend_compute_optimal(report, 30 * max(EXAMPLE_BUDGETS), vocab_size=512, seq_len=128)
    shape = rec["shape"]
    assert rec["family"]["inside"] and shape["n_layers"] >= 2
    assert 16 / 1.25 <= shape["d_model"] / shape["n_layers"] <= 16 * 1.25
    assert not any("outside the swept family" in w for w in rec["warnings"])
    # a one-layer shape of aspect 64 is outside that family, and the check says so
    wide = family_shape(64, 512, 128, n_layers=1).to_dict()
    check, warnings = family_check(family, wide)
    assert not check["inside"] and "outside the swept family" in warnings[0]
    assert count_params(family_shape(shape["d_model"], 512, 128, n_layers=shape["n_layers"]))["total"] > 0
