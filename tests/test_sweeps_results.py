"""Results rows: unique_tokens and epochs from a run's summary (or, for runs trained before summaries had them,
the plan), and results.parquet carries them."""

import math

import pandas as pd
import pytest

from sweeps.run_store import RESULT_COLUMNS, SweepDir, make_run_id, result_row

SUMMARY = {"status": "finished", "params": 1000, "params_nonembed": 400, "tokens": 28_000, "flops": 1.68e8,
           "flops_detailed": 2e8, "train_loss": 2.0, "val_loss": 2.1, "steps": 100, "shape": {"d_model": 16}}
RECORD = {"run_id": "n1k-d28k-u10k-abc", "role": "run", "budget": None, "size": 1000.0, "unique_tokens": 10_500,
          "config": {"seed": 0, "train": {"seq_len": 24, "batch_size": 4, "lr": 3e-3, "unique_tokens": 1e4}}}


def test_result_row_carries_unique_tokens_and_epochs(tmp_path):
    row = result_row(RECORD, {**SUMMARY, "unique_tokens": 10_000, "epochs": 2.8}, tmp_path)
    assert row["unique_tokens"] == 10_000 and row["epochs"] == pytest.approx(2.8)
    assert set(row) == set(RESULT_COLUMNS)
    older = result_row(RECORD, SUMMARY, tmp_path)  # a summary written before it had unique_tokens: the plan's
    assert older["unique_tokens"] == 10_500 and older["epochs"] == pytest.approx(28_000 / 10_500)
    unknown = result_row({**RECORD, "unique_tokens": None}, SUMMARY, tmp_path)
    assert math.isnan(unknown["unique_tokens"]) and math.isnan(unknown["epochs"])


def test_results_parquet_has_the_columns(tmp_path):
    sweep = SweepDir(tmp_path / "sweep")
    sweep.add_results([result_row(RECORD, {**SUMMARY, "unique_tokens": 10_000}, tmp_path)], [])
    frame = pd.read_parquet(sweep.results_path)
    assert frame.loc[0, "unique_tokens"] == 10_000 and frame.loc[0, "epochs"] == pytest.approx(2.8)


def test_run_ids_name_the_unique_tokens_only_when_set():
    base = {"data": "/x", "seed": 0, "model": {"d_model": 16}, "train": {"steps": 10}}
    plain = make_run_id(base, "store:abc", 1000, 960, None, None)
    limited = make_run_id({**base, "train": {"steps": 10, "unique_tokens": 7.07e6}}, "store:abc", 1000, 960, None, None)
    assert plain.count("-") == 2 and limited.startswith("n1k-d960-u7.07M-") and limited != plain
