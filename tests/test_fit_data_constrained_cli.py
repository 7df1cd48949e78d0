"""`scaling recommend --unique-tokens` and the data-constrained keys of `scaling fit --json` and
`scaling recommend --json`; bad --unique-tokens exits 2 with one line."""

import json

import pytest

from analysis.example_table import EXAMPLE_DATA_CONSTRAINED_LAW, synthetic_data_constrained_table

CONTRACT = {"compute", "params", "tokens", "tokens_per_param", "predicted_loss", "ci", "shape", "approach"}


@pytest.fixture(scope="module")
def results_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("capped") / "results.csv"
    synthetic_data_constrained_table(EXAMPLE_DATA_CONSTRAINED_LAW).to_csv(path, index=False)
    return path


def _one_json_object(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, stdout
    return json.loads(lines[0])


def test_recommend_with_unique_tokens_reports_the_capped_optimum(run_cli, results_csv):
    code, out, _ = run_cli("recommend", results_csv, "--compute", "1e17", "--unique-tokens", "1e8",
                           "--bootstrap", "6", "--json")
    assert code == 0
    rec = _one_json_object(out)
    assert set(rec) >= CONTRACT | {"data_constrained"}
    dc = rec["data_constrained"]
    assert dc["unique_tokens"] == 1e8 and dc["unique_tokens_source"] == "given"
    assert set(dc) >= {"law", "unconstrained", "constrained", "loss_cost", "loss_cost_ci", "double_compute",
                       "double_unique_tokens", "better"}
    capped = dc["constrained"]
    assert set(capped) >= {"params", "tokens", "epochs", "predicted_loss", "ci"}
    assert 6 * capped["params"] * capped["tokens"] == pytest.approx(1e17, rel=1e-6)
    assert capped["epochs"] == pytest.approx(capped["tokens"] / 1e8)
    low, high = capped["ci"]["predicted_loss"]
    assert low <= capped["predicted_loss"] <= high
    assert dc["loss_cost"] == pytest.approx(capped["predicted_loss"] - dc["unconstrained"]["predicted_loss"])
    assert dc["double_compute"]["compute"] == 2e17 and dc["double_unique_tokens"]["unique_tokens"] == 2e8
    assert dc["better"] in ("compute", "unique_tokens")
    assert capped["epochs"] > 4 and any("more than 4" in w for w in rec["warnings"])


def test_recommend_defaults_to_the_tables_unique_tokens(run_cli, results_csv):
    code, out, _ = run_cli("recommend", results_csv, "--compute", "1e16", "--bootstrap", "0", "--json")
    assert code == 0
    dc = _one_json_object(out)["data_constrained"]
    assert dc["unique_tokens"] == 3e8 and dc["unique_tokens_source"].startswith("results table")
    assert dc["constrained"]["ci"]["predicted_loss"] is None  # no bootstrap


def test_recommend_prints_the_cap(run_cli, results_csv):
    code, out, _ = run_cli("recommend", results_csv, "--compute", "1e17", "--unique-tokens", "1e8",
                           "--bootstrap", "0")
    assert code == 0
    flat = " ".join(out.split())
    assert "data-constrained optimum" in flat and "loss the cap costs" in flat and "2x unique data" in flat


def test_fit_json_has_the_data_constrained_key(run_cli, results_csv):
    code, out, _ = run_cli("fit", results_csv, "--approach", "3", "--holdout", "0", "--json")
    assert code == 0
    data = _one_json_object(out)
    assert data["data_constrained"]["R_D_star"] == pytest.approx(EXAMPLE_DATA_CONSTRAINED_LAW.R_D_star, rel=0.2)


@pytest.mark.parametrize("value", ["0", "-5e8", "nan", "inf"])
def test_bad_unique_tokens_exit_2_with_one_line(run_cli, results_csv, value):
    code, out, err = run_cli("recommend", results_csv, "--compute", "1e17", "--unique-tokens", value)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "--unique-tokens" in err
    assert "Traceback" not in err


def test_fit_with_unique_tokens_reports_the_capped_optimum(run_cli, results_csv):
    code, out, _ = run_cli("fit", results_csv, "--approach", "3", "--holdout", "0", "--compute", "1e17",
                           "--unique-tokens", "1e8", "--bootstrap", "6", "--json")
    assert code == 0
    capped = _one_json_object(out)["data_constrained_optimum"]
    assert capped["unique_tokens"] == 1e8 and capped["unique_tokens_source"] == "given"
    best = capped["constrained"]
    assert 6 * best["params"] * best["tokens"] == pytest.approx(1e17, rel=1e-6)
    assert best["epochs"] == pytest.approx(best["tokens"] / 1e8)
    low, high = best["ci"]["predicted_loss"]  # the bootstrap ran at this cap
    assert low <= best["predicted_loss"] <= high
    # the same numbers `scaling recommend` gives at this cap
    code, out, _ = run_cli("recommend", results_csv, "--compute", "1e17", "--unique-tokens", "1e8",
                           "--bootstrap", "0", "--json")
    assert best["params"] == pytest.approx(_one_json_object(out)["data_constrained"]["constrained"]["params"])


def test_fit_prints_the_cap(run_cli, results_csv):
    code, out, _ = run_cli("fit", results_csv, "--approach", "3", "--holdout", "0", "--compute", "1e17",
                           "--unique-tokens", "1e8")
    assert code == 0
    assert "data-constrained optimum" in " ".join(out.split())


def test_fit_unique_tokens_needs_compute(run_cli, results_csv):
    code, out, err = run_cli("fit", results_csv, "--unique-tokens", "1e8")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "--compute" in err and "Traceback" not in err
