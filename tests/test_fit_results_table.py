"""Loading and validating results tables: clear one-line errors, compute defaults, budget grouping, curves."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis.results_table import group_isoflop_budgets, load_results, results_from_frame
from scaling.common.errors import InputError


def _frame(n=6):
    params = np.geomspace(1e5, 1e7, n)
    return pd.DataFrame({"params": params, "tokens": 1e15 / (6 * params), "loss": np.linspace(3.0, 2.5, n)})


def test_missing_column_error_names_file_and_column(tmp_path):
    path = tmp_path / "runs.csv"
    _frame().drop(columns=["loss"]).to_csv(path, index=False)
    with pytest.raises(InputError, match=r"^runs.csv: missing column 'loss'; expected columns params, tokens, loss$"):
        load_results(path)


def test_non_positive_losses_are_counted_in_the_message(tmp_path):
    frame = _frame()
    frame.loc[[0, 2, 4], "loss"] = [0.0, -1.0, 0.0]
    path = tmp_path / "runs.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(InputError) as error:
        load_results(path)
    assert str(error.value) == "runs.csv: column 'loss' has 3 non-positive values; expected positive losses"


def test_nan_and_non_numeric_values_are_rejected():
    frame = _frame()
    frame.loc[1, "tokens"] = np.nan
    with pytest.raises(InputError, match="column 'tokens' has 1 missing, NaN or infinite values"):
        results_from_frame(frame, "t.csv")
    frame = _frame().astype({"params": object})
    frame.loc[2, "params"] = "big"
    with pytest.raises(InputError, match="column 'params' has 1 non-numeric values"):
        results_from_frame(frame, "t.csv")


def test_unreadable_missing_and_unknown_files_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_results(tmp_path / "absent.parquet")
    corrupt = tmp_path / "results.parquet"
    corrupt.write_bytes(b"not a parquet file")
    with pytest.raises(InputError, match="cannot read as parquet"):
        load_results(corrupt)
    other = tmp_path / "results.xlsx"
    other.write_text("x")
    with pytest.raises(InputError, match="unknown extension"):
        load_results(other)


def test_flops_default_to_six_n_d_and_only_finished_runs_are_kept():
    frame = _frame().assign(status=["finished"] * 5 + ["diverged"])
    table = results_from_frame(frame)
    assert table.n_runs == 5
    np.testing.assert_allclose(table.runs["flops"], 6 * table.runs["params"] * table.runs["tokens"])
    assert table.flops_per_param_token == pytest.approx(6.0)
    assert any("not 'finished'" in note for note in table.notes)


def test_budgets_are_grouped_by_gaps_in_log_compute():
    rng = np.random.default_rng(0)
    nominal = np.repeat([1e18, 1e19, 3e19, 1e20], 5)
    flops = nominal * np.exp(rng.uniform(-0.05, 0.05, len(nominal)))  # +-2% jitter within a budget
    labels = group_isoflop_budgets(flops)
    # independent: the same budget iff the same nominal value
    for i in range(len(flops)):
        assert np.array_equal(labels == labels[i], nominal == nominal[i])
    np.testing.assert_allclose(np.unique(labels), [1e18, 1e19, 3e19, 1e20], rtol=0.06)


def test_curves_from_side_file_and_from_curve_column_agree(tmp_path):
    frame = _frame(3).assign(run_id=["r0", "r1", "r2"])
    curve_rows = [(r, d, 4.0 - 0.1 * k) for r in frame["run_id"] for k, d in enumerate((1e6, 2e6, 4e6))]
    curves = pd.DataFrame(curve_rows, columns=["run_id", "tokens", "loss"])
    frame.to_csv(tmp_path / "sweep.csv", index=False)
    curves.to_csv(tmp_path / "sweep_curves.csv", index=False)
    from_side_file = load_results(tmp_path / "sweep.csv").curves
    with_column = frame.assign(
        curve=[json.dumps([[d, v] for run, d, v in curve_rows if run == r]) for r in frame["run_id"]]
    )
    with_column.to_csv(tmp_path / "inline.csv", index=False)
    from_column = load_results(tmp_path / "inline.csv").curves
    pd.testing.assert_frame_equal(from_side_file, from_column, check_dtype=False)
    assert len(from_column) == 9


def test_duplicate_run_ids_are_rejected():
    with pytest.raises(InputError, match="duplicate value 'x'"):
        results_from_frame(_frame(2).assign(run_id=["x", "x"]), "t.csv")


def test_runs_with_an_empty_budget_are_grouped_by_compute():
    frame = _frame(4).assign(budget=[1e15, 1e15, 1e15, np.nan])
    frame.loc[3, "tokens"] = 1e18 / (6 * frame.loc[3, "params"])  # a larger run outside the IsoFLOP grid
    table = results_from_frame(frame)
    assert sorted(table.runs["budget"]) == pytest.approx([1e15, 1e15, 1e15, 1e18])
