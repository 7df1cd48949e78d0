"""`scaling ladder`: a run's model and recipe trained at fractions of its steps, as a sweep directory that
`scaling evaluate` takes; only the tokens differ from the run's config, and a re-run redoes nothing."""

import json
from fractions import Fraction

import pytest
from train_builders import random_token_store, tiny_run_config

from scaling.common.errors import InputError
from scaling.evaluate.evaluation import expand_run_dirs
from scaling.pipeline.ladder import ladder_configs, parse_fractions
from scaling.train.config import parse_run_config
from scaling.train.run_dir import RunDir
from scaling.train.trainer import train_run


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ladder")
    store = random_token_store(root / "tokens")
    run = root / "final"
    train_run(tiny_run_config(store, steps=24, warmup_steps=2), run, progress=False)
    return run


def test_fractions_read_as_ratios_or_decimals_and_come_back_sorted():
    assert parse_fractions("1/3, 0.1,1/30") == [float(Fraction(1, 30)), 0.1, float(Fraction(1, 3))]
    for text, message in (("0", "not strictly between 0 and 1"), ("1", "not strictly between 0 and 1"),
                          ("1/0", "not a number"), ("x", "not a number"), ("0.1,1/10", "given twice"),
                          ("0.1,0.10001", "two fractions share the rung name frac0.1")):
        with pytest.raises(InputError, match=message):
            parse_fractions(text)


def test_a_rung_is_the_run_config_with_a_fraction_of_its_steps(tmp_path):
    config = parse_run_config(tiny_run_config(tmp_path, steps=300, warmup_steps=5))
    rungs = ladder_configs(config, [1 / 30, 0.25], "run/config.json")
    assert [name for name, _ in rungs] == ["frac0.0333", "frac0.25"]
    assert [r.total_steps for _, r in rungs] == [10, 75]  # round(300 / 30), round(300 / 4)
    for _, rung in rungs:
        assert rung.train.tokens == rung.total_steps * 4 * 24  # batch 4 x 24 tokens per step
        mine, theirs = rung.to_dict(), config.to_dict()
        for record in (mine, theirs):
            del record["train"]["steps"], record["train"]["tokens"]
        assert mine == theirs


def test_a_rung_shorter_than_the_warmup_is_refused_naming_the_fraction(tmp_path):
    config = parse_run_config(tiny_run_config(tmp_path, steps=300, warmup_steps=100))
    with pytest.raises(InputError, match=r"at fraction 0.1 \(30 steps\): train.warmup_steps = 100 must be"):
        ladder_configs(config, [0.1], "run/config.json")


def test_ladder_trains_each_rung_as_a_sweep_directory_then_redoes_nothing(trained_run, run_cli):
    out = trained_run.parent / "final-ladder"
    code, stdout, err = run_cli("ladder", trained_run, "--fractions", "1/4,1/2", "--quiet", "--json")
    assert code == 0, err
    rows = json.loads(stdout)
    assert [(r["name"], r["steps"], r["status"]) for r in rows] == [("frac0.25", 6, "finished"),
                                                                    ("frac0.5", 12, "finished")]
    assert expand_run_dirs([out]) == [out / "runs" / "frac0.25", out / "runs" / "frac0.5"]
    for row in rows:
        rung = RunDir(out / "runs" / row["name"])
        assert rung.read_summary()["steps"] == row["steps"]
        assert rung.read_shape() == RunDir(trained_run).read_shape()
        assert json.loads((rung.path / "ladder.json").read_text()) == {
            "run": str(trained_run.absolute()), "fraction": row["fraction"], "steps": row["steps"]}
    metrics = out / "runs" / "frac0.5" / "metrics.parquet"
    before = metrics.stat().st_mtime_ns
    code, stdout, err = run_cli("ladder", trained_run, "--fractions", "1/4,1/2", "--quiet", "--json")
    assert code == 0 and json.loads(stdout) == rows
    assert metrics.stat().st_mtime_ns == before


def test_ladder_refuses_a_directory_without_a_run_in_one_line(tmp_path, run_cli):
    code, out, err = run_cli("ladder", tmp_path, "--quiet")
    assert code == 2 and out == ""
    assert err.strip() == f"error: {tmp_path}: not a run directory (no config.json)"


def test_cluster_options_without_an_address_are_refused_in_one_line(trained_run, run_cli, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    code, out, err = run_cli("ladder", trained_run, "--hosts", "2", "--quiet")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "--hosts 2 is for a run on a Ray cluster and needs --address" in err
