"""MEDS input: valid datasets of any shape are read; bad ones are refused with one line and exit 2."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from meds_builders import rows_table, t, write_dataset

from scaling.common.errors import InputError
from scaling.data.meds_io import read_meds

MIXED_ROWS = {
    # shard names are arbitrary, shards mix splits, one sits in a subfolder
    "part-000.parquet": [
        (7, None, "GENDER//M", None),
        (7, t(1970, 3, 1), "MEDS_BIRTH", None),
        (7, t(2015, 1, 1, 8), "HOSPITAL_ADMISSION//EW EMER.//EMERGENCY ROOM", None),
        (7, t(2015, 1, 1, 8), "LAB//50912//mg/dL", 1.1, "1.1 mg/dL"),
        (3, t(1990, 1, 1), "MEDS_BIRTH", None),
        (3, t(2016, 2, 2), "DIAGNOSIS//ICD//10//J45909", None),
    ],
    "deep/x.parquet": [
        (11, None, "RACE//ASIAN", None),
        (11, t(2001, 1, 1), "LAB//50912//mg/dL", None),  # a lab without a value
        (11, t(2002, 1, 1), "PROCEDURE//CPT//99213", None),
    ],
}
MIXED_SPLITS = {7: "train", 3: "tuning", 11: "held_out"}


def test_reads_every_shard_with_static_rows_nulls_and_text(tmp_path):
    root = write_dataset(tmp_path / "meds", MIXED_ROWS, MIXED_SPLITS)
    dataset = read_meds(root)
    assert dataset.events.num_rows == 9
    assert dataset.events["time"].null_count == 2  # the two static rows
    assert dataset.events["numeric_value"].null_count == 8
    assert dataset.events.schema.field("subject_id").type == pa.int64()
    assert set(dataset.events["code"].to_pylist()) >= {"HOSPITAL_ADMISSION//EW EMER.//EMERGENCY ROOM"}


def test_accepts_castable_types(tmp_path):
    """float64 values and timestamp[ns] times are cast to the MEDS schema, as the meds package aligns."""
    root = write_dataset(tmp_path / "meds", MIXED_ROWS, MIXED_SPLITS)
    table = pq.read_table(root / "data" / "part-000.parquet")
    table = table.set_column(3, "numeric_value", table["numeric_value"].cast(pa.float64()))
    table = table.set_column(1, "time", table["time"].cast(pa.timestamp("ns")))
    pq.write_table(table, root / "data" / "part-000.parquet")
    assert read_meds(root).events.schema.field("numeric_value").type == pa.float32()


def _break(root, what):
    data = root / "data" / "part-000.parquet"
    if what == "truncated":
        data.write_bytes(data.read_bytes()[:100])
    elif what == "missing_column":
        pq.write_table(pq.read_table(data).drop_columns(["code"]), data)
    elif what == "wrong_type":
        table = pq.read_table(data)
        ids = pa.array([f"p{i}" for i in table["subject_id"].to_pylist()])
        pq.write_table(table.set_column(0, "subject_id", ids), data)
    elif what == "null_code":
        pq.write_table(rows_table([(7, t(2015, 1, 1), None, None)]), data)
    elif what == "no_data":
        for f in (root / "data").rglob("*.parquet"):
            f.unlink()
    elif what == "no_splits":
        (root / "metadata" / "subject_splits.parquet").unlink()
    elif what == "subject_without_split":
        pq.write_table(pa.table({"subject_id": pa.array([7, 3], pa.int64()), "split": ["train", "tuning"]}),
                       root / "metadata" / "subject_splits.parquet")
    elif what == "duplicate_split":
        pq.write_table(pa.table({"subject_id": pa.array([7, 3, 11, 3], pa.int64()),
                                 "split": ["train", "tuning", "held_out", "train"]}),
                       root / "metadata" / "subject_splits.parquet")
    elif what == "no_train":
        pq.write_table(pa.table({"subject_id": pa.array([7, 3, 11], pa.int64()),
                                 "split": ["tuning", "tuning", "held_out"]}),
                       root / "metadata" / "subject_splits.parquet")
    elif what == "bad_json":
        (root / "metadata" / "dataset.json").write_text("{not json")


BAD_INPUTS = {
    "truncated": "unreadable parquet",
    "missing_column": "Missing required columns: code",
    "wrong_type": "subject_id (want int64, got string)",
    "null_code": "should have no nulls but do: code",
    "no_data": "no parquet files",
    "no_splits": "subject_splits.parquet: missing",
    "subject_without_split": "1 subjects of the data have no split (e.g. subject_id 11)",
    "duplicate_split": "subject_id 3 appears 2 times",
    "no_train": "no subject in split 'train'",
    "bad_json": "dataset.json: not valid JSON",
}


@pytest.mark.parametrize("what", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, run_cli, what):
    root = write_dataset(tmp_path / "meds", MIXED_ROWS, MIXED_SPLITS)
    _break(root, what)
    with pytest.raises(InputError, match=BAD_INPUTS[what].replace("(", r"\(").replace(")", r"\)")):
        read_meds(root)
    code, out, err = run_cli("data", "tokenize", root, "--out", tmp_path / "tokens")
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("error: ") and str(root) in err
    assert not (tmp_path / "tokens").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["meds"]  # no temporary sibling left either


def test_missing_path_is_refused(tmp_path, run_cli):
    code, _, err = run_cli("data", "tokenize", tmp_path / "nowhere", "--out", tmp_path / "tokens")
    assert code == 2 and "no such directory" in err


def test_bin_edges_must_increase(tmp_path, run_cli):
    codes = pa.table({"code": ["LAB//50912//mg/dL"], "description": ["creatinine"],
                      "parent_codes": pa.array([None], pa.list_(pa.string())),
                      "value_bin_edges": pa.array([[1.0, 0.5]], pa.list_(pa.float64()))})
    root = write_dataset(tmp_path / "meds", MIXED_ROWS, MIXED_SPLITS, codes=codes)
    code, _, err = run_cli("data", "tokenize", root, "--out", tmp_path / "tokens")
    assert code == 2 and "value_bin_edges of code 'LAB//50912//mg/dL'" in err


def test_existing_output_is_not_overwritten(tmp_path, run_cli):
    root = write_dataset(tmp_path / "meds", MIXED_ROWS, MIXED_SPLITS)
    assert run_cli("data", "tokenize", root, "--out", tmp_path / "tokens", "--min-count", "1")[0] == 0
    before = json.loads((tmp_path / "tokens" / "stats.json").read_text())
    code, _, err = run_cli("data", "tokenize", root, "--out", tmp_path / "tokens")
    assert code == 2 and "already exists" in err
    assert json.loads((tmp_path / "tokens" / "stats.json").read_text()) == before
