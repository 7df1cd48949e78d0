"""`scaling fit`, `scaling recommend`, `scaling plot` and `scaling bench fit` from the command line:
the JSON contracts of docs/contracts.md, exit code 2 with one line on bad input, null approaches on thin data."""

import json
import tomllib

import pytest

from analysis.example_table import EXAMPLE_BUDGETS, EXAMPLE_LAW, synthetic_isoflop_table


@pytest.fixture(scope="module")
def results_csv(tmp_path_factory):
    runs, curves = synthetic_isoflop_table(EXAMPLE_LAW, EXAMPLE_BUDGETS, seed=0, curve_points=8)
    path = tmp_path_factory.mktemp("sweep") / "results.csv"
    runs.to_csv(path, index=False)
    curves.to_csv(path.with_name("results_curves.csv"), index=False)
    return path


def _one_json_object(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, stdout
    return json.loads(lines[0])


def test_fit_json_has_the_contract_keys(run_cli, results_csv):
    code, out, _ = run_cli("fit", results_csv, "--bootstrap", "20", "--json")
    assert code == 0
    data = _one_json_object(out)
    assert data["n_runs"] == 42
    assert set(data["approach2"]) >= {"a", "b", "minima"}
    assert set(data["approach2"]["minima"][0]) >= {"budget", "params", "tokens", "loss"}
    assert set(data["approach3"]) >= {"E", "A", "B", "alpha", "beta", "a", "b", "converged"}
    assert data["approach3"]["a"] == pytest.approx(
        data["approach3"]["beta"] / (data["approach3"]["alpha"] + data["approach3"]["beta"])
    )
    assert data["approach1"]["a"] == pytest.approx(EXAMPLE_LAW.a, abs=0.03)  # curves found beside the table
    assert data["bootstrap"]["n"] == 20 and len(data["bootstrap"]["ci"]["approach3.a"]) == 2
    assert data["holdout"]["held_out_runs"] == 7 and data["holdout"]["median_abs_rel_error"] < 0.02
    assert isinstance(data["warnings"], list)


def test_fit_on_thin_data_reports_null_approaches_with_reasons(run_cli, tmp_path):
    runs, _ = synthetic_isoflop_table(EXAMPLE_LAW, (1e14, 1e15), sizes_per_budget=3)
    path = tmp_path / "thin.csv"
    runs.to_csv(path, index=False)
    code, out, _ = run_cli("fit", path, "--json")
    assert code == 0
    data = _one_json_object(out)
    assert data["approach1"] is None and data["approach3"] is None
    assert data["approach2"] is not None
    assert any(w.startswith("approach3: needs 8+ runs") for w in data["warnings"])
    assert any(w.startswith("approach1:") for w in data["warnings"])
    assert data["holdout"] is None


@pytest.mark.parametrize(
    "content,args,message",
    [
        ("params,tokens\n1,2\n", (), "bad.csv: missing column 'loss'"),
        ("params,tokens,loss\n1e6,1e8,3\n2e6,1e8,0\n3e6,1e8,-2\n4e6,1e8,0\n", (),
         "bad.csv: column 'loss' has 3 non-positive values; expected positive losses"),
        ("params,tokens,loss\n1e6,1e8,nan\n", (), "column 'loss' has 1 missing, NaN or infinite values"),
        ("params,tokens,loss\n1e6,1e8,3\n", ("--approach", "4"), "--approach: '4' is not an approach"),
        ("params,tokens,loss\n1e6,1e8,3\n", ("--bootstrap", "-1"), "--bootstrap: -1 is negative"),
        ("params,tokens,loss\n1e5,1e6,2.0\n2e5,2e6,1.9\n", ("--approach", "3"),
         "bad.csv: no law could be fitted: approach3: needs 8+ runs with 3+ distinct sizes and token counts, found 2"),
        ("params,tokens,loss\n" + "".join(f"{n},{d},2.0\n" for n in (1e5, 2e5, 4e5) for d in (1e6, 3e6, 1e7)),
         ("--approach", "3"), "approach3: degenerate fit (alpha = "),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_traceback(run_cli, tmp_path, content, args, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    code, out, err = run_cli("fit", path, *args, "--json")
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and message in err
    assert "Traceback" not in err


def test_missing_file_exits_2(run_cli, tmp_path):
    code, _, err = run_cli("recommend", tmp_path / "none.parquet", "--compute", "1e18")
    assert code == 2 and "file not found" in err


def test_recommend_json_and_config(run_cli, results_csv, tmp_path):
    config = tmp_path / "final.toml"
    code, out, _ = run_cli("recommend", results_csv, "--compute", "1e18", "--bootstrap", "20", "--seq-len", "128",
                           "--config-out", config, "--data", "runs/tokens", "--json")
    assert code == 0
    rec = _one_json_object(out)
    assert set(rec) >= {"compute", "params", "tokens", "tokens_per_param", "predicted_loss", "ci", "shape", "approach"}
    assert set(rec["ci"]) >= {"params", "tokens", "predicted_loss"}
    assert rec["approach"] == "approach3" and rec["compute"] == 1e18
    assert rec["params"] == pytest.approx(EXAMPLE_LAW.optimal_params(1e18), rel=0.25)
    parsed = tomllib.loads(config.read_text())
    assert parsed["data"] == "runs/tokens" and parsed["train"]["seq_len"] == 128
    if rec["shape"] is not None:
        assert set(rec["shape"]) >= {"d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "vocab_size"}
        assert parsed["model"]["d_model"] == rec["shape"]["d_model"]


@pytest.mark.slow
def test_plot_writes_every_figure_as_png_and_svg(run_cli, results_csv, tmp_path):
    out_dir = tmp_path / "figures"
    code, _, _ = run_cli("plot", results_csv, "--out", out_dir, "--compute", "1e18", "--bootstrap", "20")
    assert code == 0
    names = {"isoflop_profiles", "compute_optimal", "loss_contours", "loss_curves", "residuals", "single_variable_laws"}
    assert {p.name for p in out_dir.iterdir()} == {f"{n}.{e}" for n in names for e in ("png", "svg")} | {"fit.json"}
    assert all(p.stat().st_size > 10_000 for p in out_dir.glob("*.png"))
    assert not list(tmp_path.glob(".figures*"))  # no temporary sibling left behind


def test_bench_fit_json_reports_times_and_the_ratio(run_cli):
    code, out, _ = run_cli("bench", "fit", "--naive-starts", "1", "--bootstrap", "5", "--json")
    assert code == 0
    data = _one_json_object(out)
    assert data["approach3_seconds"] > 0 and data["bootstrap_seconds"] > 0
    assert data["speedup_vs_naive"] == pytest.approx(
        data["naive"]["full_grid_seconds_estimate"] / data["approach3_seconds"]
    )


def test_recommend_with_nothing_fitted_exits_2(run_cli, tmp_path):
    path = tmp_path / "two.csv"
    path.write_text("params,tokens,loss\n1e5,1e6,2.0\n2e5,2e6,1.9\n")
    code, out, err = run_cli("recommend", path, "--compute", "1e15", "--json")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "two.csv: no recommendation at C = 1e+15: no approach could be fitted: approach1: needs per-run" in err
