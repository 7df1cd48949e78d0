"""Prediction times and labels from a file in the MEDS label schema, as ACES (and MEDS-DEV's task
extraction) writes them: `subject_id` int64, `prediction_time` timestamp, and the label in
`boolean_value` (binary tasks), `integer_value` (counts) or `float_value` (durations). A directory stands
for every parquet file under it (ACES writes one per shard).

    labels = read_label_file("aces/mortality.parquet")   # LabelRows, sorted by subject and time
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scaling.common.errors import InputError

VALUE_COLUMN = {"binary": "boolean_value", "count": "integer_value", "duration": "float_value"}


@dataclass(frozen=True)
class LabelRows:
    subject_id: np.ndarray  # (n,) int64
    time_us: np.ndarray  # (n,) int64 microseconds since the epoch
    values: dict[str, np.ndarray]  # value column -> (n,) float64, NaN where null


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
        if not files:
            raise InputError(f"{path}: a directory with no .parquet file; expected labels in the MEDS label schema")
        return files
    if not path.is_file():
        raise InputError(f"{path}: no such file; expected a parquet file of labels in the MEDS label schema")
    return [path]


def read_label_file(path: str | Path) -> LabelRows:
    """Read and check a label file (see the module docstring); cached per path and modification time."""
    path = Path(path)
    files = _files(path)
    return _read(tuple(str(f) for f in files), tuple(f.stat().st_mtime_ns for f in files))


@lru_cache(maxsize=8)
def _read(files: tuple[str, ...], _mtimes: tuple[int, ...]) -> LabelRows:
    tables = []
    for file in files:
        try:
            tables.append(pq.read_table(file))
        except (pa.ArrowInvalid, OSError) as error:
            raise InputError(f"{file}: not a parquet file ({error}); expected labels in the MEDS label schema") \
                from None
    subject, times, values = [], [], {name: [] for name in VALUE_COLUMN.values()}
    for file, table in zip(files, tables):
        for column, expected in (("subject_id", "an integer"), ("prediction_time", "a timestamp")):
            if column not in table.column_names:
                raise InputError(f"{file}: no column '{column}'; expected the MEDS label schema (subject_id, "
                                 "prediction_time, boolean_value | integer_value | float_value)")
            kind = table.schema.field(column).type
            if not (pa.types.is_integer(kind) if column == "subject_id" else pa.types.is_timestamp(kind)):
                raise InputError(f"{file}: column '{column}' is {kind}; expected {expected}")
            if table[column].null_count:
                raise InputError(f"{file}: column '{column}' has {table[column].null_count} null values; "
                                 "expected none")
        subject.append(table["subject_id"].cast(pa.int64()).to_numpy())
        times.append(table["prediction_time"].cast(pa.timestamp("us")).cast(pa.int64()).to_numpy())
        for name in values:
            if name in table.column_names:
                column = table[name]
                if not (pa.types.is_boolean(column.type) or pa.types.is_integer(column.type)
                        or pa.types.is_floating(column.type)):
                    raise InputError(f"{file}: column '{name}' is {column.type}; expected a number or boolean")
                values[name].append(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False))
            else:
                values[name].append(np.full(len(table), np.nan))
    subject_id, time_us = np.concatenate(subject), np.concatenate(times)
    order = np.lexsort((time_us, subject_id))
    merged = {name: np.concatenate(v)[order] for name, v in values.items()}
    for name, column in merged.items():
        bad = ~np.isnan(column) & ~np.isfinite(column)
        if bad.any():
            source = files[0] if len(files) == 1 else Path(files[0]).parent
            raise InputError(f"{source}: column '{name}' holds {column[bad][0]}; expected finite values")
    return LabelRows(subject_id[order], time_us[order], merged)


def labels_for(rows: LabelRows, kind: str, source: str) -> np.ndarray:
    """(n,) the label column of a task of `kind`; every row must have a value."""
    name = VALUE_COLUMN[kind]
    column = rows.values[name]
    missing = int(np.isnan(column).sum())
    if missing:
        raise InputError(f"{source}: {missing} of {len(column)} rows have no {name}; a {kind} task reads its "
                         f"labels from {name}")
    if kind != "binary" and (column < 0).any():
        raise InputError(f"{source}: {name} = {column[column < 0][0]}; expected {kind}s of 0 or more")
    return column
