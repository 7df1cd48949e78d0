"""Small MEDS datasets written by hand for the tests (plain pyarrow, independent of scaling.data.meds_io)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DATA_SCHEMA = pa.schema([
    ("subject_id", pa.int64()),
    ("time", pa.timestamp("us")),
    ("code", pa.string()),
    ("numeric_value", pa.float32()),
    ("text_value", pa.large_string()),
])


def rows_table(rows: list[tuple], schema: pa.Schema = DATA_SCHEMA) -> pa.Table:
    """rows: (subject_id, time or None, code, numeric_value or None[, text_value])."""
    cols = list(zip(*[(r + (None,) * (5 - len(r))) for r in rows]))
    return pa.table({f.name: pa.array(list(c), f.type) for f, c in zip(schema, cols)}, schema=schema)


def write_dataset(root: Path, shards: dict[str, list[tuple]], splits: dict[int, str],
                  codes: pa.Table | None = None, dataset_json: dict | None = None) -> Path:
    root = Path(root)
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    for name, rows in shards.items():
        path = root / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(rows_table(rows), path)
    pq.write_table(
        pa.table({"subject_id": pa.array(list(splits), pa.int64()), "split": list(splits.values())}),
        root / "metadata" / "subject_splits.parquet",
    )
    if codes is None:
        codes = pa.table({"code": pa.array([], pa.string()), "description": pa.array([], pa.string()),
                          "parent_codes": pa.array([], pa.list_(pa.string()))})
    pq.write_table(codes, root / "metadata" / "codes.parquet")
    (root / "metadata" / "dataset.json").write_text(json.dumps(dataset_json or {"dataset_name": "test"}))
    return root


def t(*args: int) -> datetime:
    return datetime(*args)
