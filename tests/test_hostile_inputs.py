"""Inputs that were once dropped, crashed or half-accepted: each now gives one line naming the file, field
and value (exit 2 from the command line), or, where the data is still usable, a warning."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from meds_builders import t, write_dataset

from scaling.common.errors import InputError
from scaling.data.meds_io import read_meds
from scaling.evaluate.simulate import SimulationSettings
from scaling.evaluate.tasks import parse_tasks

ROWS = {
    "a.parquet": [(1, t(1990, 1, 1), "MEDS_BIRTH", None), (1, t(2015, 1, 1), "DIAGNOSIS//ICD//10//E11", None),
                  (2, t(1980, 1, 1), "MEDS_BIRTH", None), (2, t(2016, 1, 1), "DIAGNOSIS//ICD//10//I10", None)],
    "sub/b.parquet": [(3, t(1970, 1, 1), "MEDS_BIRTH", None), (3, t(2017, 1, 1), "DIAGNOSIS//ICD//10//E11", None),
                      (4, t(1975, 1, 1), "MEDS_BIRTH", None), (4, t(2018, 1, 1), "DIAGNOSIS//ICD//10//I10", None)],
}


def test_a_data_folder_that_cannot_be_listed_is_an_error_not_a_smaller_cohort(tmp_path, monkeypatch):
    root = write_dataset(tmp_path / "meds", ROWS, {1: "train", 2: "train", 3: "tuning", 4: "held_out"})
    unreadable = root / "data" / "sub"
    real_scandir = os.scandir

    def scandir(path="."):  # root reads any folder, so the permission error is raised here for it
        if Path(path) == unreadable:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(InputError, match=r"data/sub: cannot be read \(Permission denied\)"):
        read_meds(root)
    monkeypatch.setattr(os, "scandir", real_scandir)
    assert read_meds(root).events.num_rows == 8  # both shards, once the folder can be read


def test_a_split_with_another_name_is_refused_or_mapped_explicitly(tmp_path, run_cli):
    root = write_dataset(tmp_path / "meds", ROWS, {1: "train", 2: "train", 3: "validation", 4: "held_out"})
    with pytest.raises(InputError, match=r"split 'validation' \(1 subjects\) is not one of"):
        read_meds(root)
    code, out, err = run_cli("data", "tokenize", str(root), "--out", str(tmp_path / "tok"), "--min-count", "1")
    assert code == 2 and out == "" and "--split-alias (e.g. validation=tuning)" in err
    assert not (tmp_path / "tok").exists()
    code, out, err = run_cli("data", "tokenize", str(root), "--out", str(tmp_path / "tok"), "--min-count", "1",
                             "--split-alias", "validation=tuning", "--json")
    assert code == 0, err
    stats = json.loads(out)
    assert {name: s["patients"] for name, s in stats["splits"].items()} == {"train": 2, "tuning": 1, "held_out": 1}
    settings = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())
    assert settings["split_aliases"] == {"validation": "tuning"}
    code, _, err = run_cli("data", "tokenize", str(root), "--out", str(tmp_path / "t2"), "--split-alias", "x=dev")
    assert code == 2 and "'dev' is not one of ['train', 'tuning', 'held_out']" in err


@pytest.mark.parametrize("overwrite", [False, True])
def test_tokenize_never_writes_over_its_input(tmp_path, run_cli, overwrite):
    root = write_dataset(tmp_path / "meds", ROWS, {1: "train", 2: "train", 3: "tuning", 4: "held_out"})
    before = sorted(str(p) for p in root.rglob("*"))
    for out in (root, tmp_path):  # the input itself, and a folder that holds it
        flags = ["--overwrite"] if overwrite else []
        code, _, err = run_cli("data", "tokenize", str(root), "--out", str(out), *flags)
        assert code == 2 and "is the input" in err and err.startswith("error: --out ")
    assert sorted(str(p) for p in root.rglob("*")) == before


def test_an_edited_synthetic_cohort_tokenizes_with_a_warning_and_no_floor(tmp_path, run_cli):
    code, _, err = run_cli("data", "synth", "--patients", "40", "--seed", "0", "--out", str(tmp_path / "c"))
    assert code == 0, err
    # An edit the generator cannot have made: a patient's last event moved to the year 2300.
    shard = next((tmp_path / "c" / "data").rglob("*.parquet"))
    table = pq.read_table(shard)
    rows = table.to_pylist()
    first = rows[0]["subject_id"]
    last = max(i for i, r in enumerate(rows) if r["subject_id"] == first and r["time"] is not None)
    rows[last]["time"] = datetime(2300, 1, 1)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), shard)
    code, out, err = run_cli("data", "tokenize", str(tmp_path / "c"), "--out", str(tmp_path / "tok"), "--json")
    assert code == 0, err
    assert "warning:" in err and "not the generator's output" in err and "Traceback" not in err
    stats = json.loads(out)
    assert stats["entropy_floor"] is None and len(stats["warnings"]) == 1


@pytest.mark.parametrize(("changes", "message"), [
    ({"temperature": 0.0}, "temperature = 0.0; expected a positive number"),
    ({"temperature": float("inf")}, "temperature = inf; expected a positive number"),
    ({"top_k": -5}, "top_k = -5; expected 0"),
    ({"top_p": 0.0}, "top_p = 0.0; expected a number in (0, 1]"),
    ({"samples": 0}, "samples = 0; expected 1 or more"),
])
def test_sampling_settings_are_checked_before_anything_runs(changes, message):
    with pytest.raises(InputError, match=re.escape(message)) as error:
        SimulationSettings(**changes)
    assert error.value.cli_message().startswith("--" + next(iter(changes)).replace("_", "-"))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_task_numbers_must_be_finite(value):
    rule = {"rule": "random", "min_history_days": value}
    good = {"name": "x", "kind": "binary", "prediction": "r", "codes": ["A"], "horizon_days": 30}
    with pytest.raises(InputError, match="min_history_days = "):
        parse_tasks({"prediction": {"r": rule}, "task": [good]}, source="t.toml")
    with pytest.raises(InputError, match="horizon_days = "):
        parse_tasks({"prediction": {"r": {"rule": "random"}}, "task": [{**good, "horizon_days": value}]},
                    source="t.toml")


def test_text_files_that_are_not_utf8_and_nan_bin_edges_are_refused(tmp_path, run_cli):
    toml = tmp_path / "run.toml"
    toml.write_bytes(b'data = "x"\n# caf\xe9\n')
    code, out, err = run_cli("train", str(toml))
    assert code == 2 and out == "" and "not UTF-8 text" in err and "Traceback" not in err
    root = write_dataset(tmp_path / "meds", ROWS, {1: "train", 2: "train", 3: "tuning", 4: "held_out"})
    (root / "metadata" / "dataset.json").write_bytes(b'{"dataset_name": "caf\xe9"}')
    with pytest.raises(InputError, match="dataset.json: not UTF-8 text"):
        read_meds(root)
    (root / "metadata" / "dataset.json").write_text("{}")
    codes = pa.table({"code": ["LAB//X"], "description": ["x"], "parent_codes": [[]],
                      "value_bin_edges": pa.array([[1.0, float("nan"), 3.0]], pa.list_(pa.float64()))})
    pq.write_table(codes, root / "metadata" / "codes.parquet")
    with pytest.raises(InputError, match=r"value_bin_edges of 'LAB//X' = \[1.0, nan, 3.0\]"):
        read_meds(root).bin_edges()


@pytest.mark.parametrize(("edit", "message"), [
    ({"budgets = [2e+08, 4e+08]": "budgets = [2e+08, inf]"}, "grid.budgets[1] = inf must be a finite number"),
    ({'name = "tiny"': 'name = ".."'}, "name = '..' must be a non-empty name"),
])
def test_grid_numbers_and_names_that_would_escape(tmp_path, edit, message):
    from sweep_builders import tiny_store, write_grid

    from sweeps.grid import load_grid

    grid = write_grid(tmp_path / "g.toml", tiny_store(tmp_path / "tok"), **edit)
    with pytest.raises(InputError, match=re.escape(message)):
        load_grid(grid)
