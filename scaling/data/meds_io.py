"""Reading and writing MEDS datasets (https://github.com/Medical-Event-Data-Standard/meds).

A MEDS dataset directory holds `data/**/*.parquet` (subject_id int64, time timestamp[us] or null for
static rows, code string, numeric_value float32 nullable, optional text_value and extra columns),
`metadata/codes.parquet`, `metadata/dataset.json` and `metadata/subject_splits.parquet`. Shards may
be named anything and may mix splits: a subject's split comes from `subject_splits.parquet`.

Anything that is not a valid dataset is refused with an InputError naming the file and the problem.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import meds
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from flexible_schema.exceptions import SchemaValidationError, TableValidationError

from scaling.common.atomic import atomic_directory
from scaling.common.errors import InputError

EVENT_COLUMNS = ("subject_id", "time", "code", "numeric_value")
# Optional column of metadata/codes.parquet: the value-bin edges the tokenizer must use for a code.
BIN_EDGES_COLUMN = "value_bin_edges"


class _CohortMetadata:
    """What a dataset's metadata answers: value-bin edges per code and each subject's split."""

    root: Path
    subject_splits: pa.Table
    codes: pa.Table | None

    def bin_edges(self) -> dict[str, list[float]]:
        """Value-bin edges given in code metadata, by code."""
        if self.codes is None or BIN_EDGES_COLUMN not in self.codes.column_names:
            return {}
        out = {}
        for code, edges in zip(self.codes["code"].to_pylist(), self.codes[BIN_EDGES_COLUMN].to_pylist()):
            if edges:
                values = [float("nan") if e is None else float(e) for e in edges]
                if not all(np.isfinite(values)) or any(b < a for a, b in zip(values, values[1:])):
                    raise InputError(f"{self.root / meds.code_metadata_filepath}: {BIN_EDGES_COLUMN} of {code!r} = "
                                     f"{values}; expected finite numbers in increasing order")
                out[code] = values
        return out

    def split_of(self, subject_ids: np.ndarray) -> np.ndarray:
        """The split name of each subject id (every subject of the data has one: read_meds checks)."""
        ids = self.subject_splits["subject_id"].to_numpy()
        names = np.asarray(self.subject_splits["split"].to_pylist(), dtype=object)
        order = np.argsort(ids)
        return names[order][np.searchsorted(ids[order], subject_ids)]


@dataclass
class MedsDataset(_CohortMetadata):
    root: Path
    events: pa.Table  # subject_id int64, time timestamp[us] (null: static), code string, numeric_value float32
    subject_splits: pa.Table  # subject_id int64, split string
    codes: pa.Table | None = None  # metadata/codes.parquet when present
    metadata: dict = field(default_factory=dict)


@dataclass
class MedsShards(_CohortMetadata):
    """A MEDS dataset read a part at a time, so that memory follows the part, not the dataset.

    A part is whole subjects: `batch_rows` rows or so of a shard sorted by subject_id (as MEDS shards are),
    or a whole group of shards otherwise. Shards that share a subject are one group (MEDS keeps a subject
    in one shard; a dataset that does not is still read correctly, a group at a time)."""

    root: Path
    files: list[Path]
    groups: list[list[int]]  # indices into files, each group read together, in file order
    subject_splits: pa.Table
    codes: pa.Table | None = None
    metadata: dict = field(default_factory=dict)
    sorted_by_subject: list[bool] = field(default_factory=list)  # per file: rows sorted by subject_id
    batch_rows: int = 1 << 16

    def event_groups(self) -> Iterator[pa.Table]:
        """The dataset's events a part at a time (validated as read_meds validates them), whole subjects each."""
        for group in self.groups:
            if len(group) == 1 and self.sorted_by_subject[group[0]]:
                yield from _subject_batches(self.files[group[0]], self.batch_rows)
            else:
                yield pa.concat_tables([_read_event_shard(self.files[i], self.root) for i in group])


SPLIT_NAMES = (meds.train_split, meds.tuning_split, meds.held_out_split)


def read_meds(root: str | Path, split_aliases: dict[str, str] | None = None) -> MedsDataset:
    """Read a MEDS dataset. Subjects whose split is not train, tuning or held_out are refused unless
    `split_aliases` maps that name to one of them (e.g. {"validation": "tuning"})."""
    root, files = _dataset_files(root)
    events = pa.concat_tables([_read_event_shard(f, root) for f in files])
    splits = _read_subject_splits(root, split_aliases or {})
    _check_splits_cover(pc.unique(events["subject_id"]), splits, root)
    return MedsDataset(root, events, splits, _read_codes(root), _read_dataset_json(root))


def open_meds_shards(root: str | Path, split_aliases: dict[str, str] | None = None) -> MedsShards:
    """A MEDS dataset to read a group of shards at a time (see MedsShards); checks the splits and the
    subjects up front, reading only the subject_id column of each shard."""
    root, files = _dataset_files(root)
    subjects, sorted_ = zip(*[_shard_subjects(f, root) for f in files])
    splits = _read_subject_splits(root, split_aliases or {})
    _check_splits_cover(pa.array(np.unique(np.concatenate(subjects))), splits, root)
    return MedsShards(root, files, _shard_groups(list(subjects)), splits, _read_codes(root), _read_dataset_json(root),
                      sorted_by_subject=list(sorted_))


def _dataset_files(root: str | Path) -> tuple[Path, list[Path]]:
    """The dataset's directory and its data files, or an InputError saying why there is no dataset."""
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root}: no such directory; expected a MEDS dataset")
    if not root.is_dir():
        raise InputError(f"{root}: is a file; expected a MEDS dataset directory")
    files = _data_files(root / meds.data_subdirectory)
    if not files:
        raise InputError(f"{root / meds.data_subdirectory}: no parquet files; expected data/**/*.parquet")
    return root, files


def _shard_subjects(path: Path, root: Path) -> tuple[np.ndarray, bool]:
    """The unique subject ids of one shard, read from its subject_id column alone, and whether its rows are
    sorted by subject_id."""
    try:
        ids = pq.read_table(path, columns=["subject_id"])["subject_id"].cast(pa.int64())
        if ids.null_count == 0:
            ids = ids.to_numpy()
            return np.unique(ids), bool(np.all(ids[1:] >= ids[:-1]))
    except Exception:
        _read_event_shard(path, root)  # names what is wrong with the shard as an InputError
        raise
    _read_event_shard(path, root)
    raise InputError(f"{path}: subject_id has {ids.null_count} null values; expected an int64 id on every row")


def _shard_groups(subjects: list[np.ndarray]) -> list[list[int]]:
    """Shards linked by a shared subject, as groups (union-find over shards), ordered by first shard."""
    parent = list(range(len(subjects)))

    def root_of(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    ids = np.concatenate(subjects) if subjects else np.zeros(0, np.int64)
    shard = np.repeat(np.arange(len(subjects)), [len(s) for s in subjects])
    order = np.argsort(ids, kind="stable")
    ids, shard = ids[order], shard[order]
    for k in np.flatnonzero(ids[1:] == ids[:-1]):  # a subject in two shards joins them
        a, b = root_of(int(shard[k])), root_of(int(shard[k + 1]))
        parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(len(subjects)):
        groups.setdefault(root_of(i), []).append(i)
    return list(groups.values())


def _data_files(data_dir: Path) -> list[Path]:
    """Every parquet file under data/, in a stable order; a folder that cannot be listed is an error, not
    a silent gap in the cohort."""

    def refuse(error: OSError) -> None:
        raise InputError(f"{error.filename}: cannot be read ({error.strerror}); every folder under "
                         f"{data_dir} must be readable")

    files = []
    for folder, _, names in os.walk(data_dir, onerror=refuse, followlinks=True):
        files += [Path(folder) / name for name in names if name.endswith(".parquet")]
    return sorted(files)


def _read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"{path}: unreadable parquet ({str(e).splitlines()[0]})") from None


def _read_event_shard(path: Path, root: Path) -> pa.Table:
    return _aligned_events(_read_parquet(path, _event_columns(path)), path)


def _event_columns(path: Path) -> list[str]:
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"{path}: unreadable parquet ({str(e).splitlines()[0]})") from None
    return [c for c in EVENT_COLUMNS if c in schema.names]


def _aligned_events(table: pa.Table, path: Path) -> pa.Table:
    """A shard's rows in the MEDS data schema, or an InputError naming the shard and the problem."""
    try:
        table = meds.DataSchema.align(table)
    except (SchemaValidationError, TableValidationError) as e:
        raise InputError(f"{path}: {e}; expected the MEDS data schema (subject_id int64, time "
                         "timestamp[us], code string, numeric_value float32)") from None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise InputError(f"{path}: a column cannot be cast to the MEDS data schema ({e})") from None
    return table.select(list(EVENT_COLUMNS))


def _subject_batches(path: Path, batch_rows: int) -> Iterator[pa.Table]:
    """A shard whose rows are sorted by subject_id, as tables of about `batch_rows` rows, each ending where
    a subject ends (a subject longer than a batch makes its table longer)."""
    carry = None
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=_event_columns(path))
        for batch in batches:
            table = _aligned_events(pa.Table.from_batches([batch]), path)
            if carry is not None:
                table = pa.concat_tables([carry, table])
            cut = pc.index(table["subject_id"], table["subject_id"][-1]).as_py()  # the last subject's first row
            if cut > 0:
                yield table.slice(0, cut)
            carry = table.slice(cut)
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"{path}: unreadable parquet ({str(e).splitlines()[0]})") from None
    if carry is not None and len(carry):
        yield carry


def _read_subject_splits(root: Path, split_aliases: dict[str, str]) -> pa.Table:
    path = root / meds.subject_splits_filepath
    if not path.is_file():
        raise InputError(f"{path}: missing; expected subject_id -> split (train, tuning, held_out)")
    table = _read_parquet(path)
    try:
        table = meds.SubjectSplitSchema.align(table)
    except (SchemaValidationError, TableValidationError) as e:
        raise InputError(f"{path}: {e}; expected columns subject_id int64, split string") from None
    ids, counts = np.unique(table["subject_id"].to_numpy(), return_counts=True)
    if (counts > 1).any():
        raise InputError(f"{path}: subject_id {ids[counts > 1][0]} appears {counts[counts > 1][0]} times; "
                         "expected one split per subject")
    table = _apply_split_aliases(table, split_aliases, path)
    if meds.train_split not in set(table["split"].to_pylist()):
        raise InputError(f"{path}: no subject in split 'train'; expected train, tuning and held_out splits")
    return table


def _apply_split_aliases(table: pa.Table, split_aliases: dict[str, str], path: Path) -> pa.Table:
    """Rename splits by `split_aliases`; refuse any split name that is still not train, tuning or held_out."""
    for alias, target in split_aliases.items():
        if target not in SPLIT_NAMES:
            raise InputError(f"split_aliases = {{{alias!r}: {target!r}}}: {target!r} is not one of "
                             f"{list(SPLIT_NAMES)}", field="split_aliases")
    names = [split_aliases.get(name, name) for name in table["split"].to_pylist()]
    unknown, counts = np.unique([n for n in names if n not in SPLIT_NAMES], return_counts=True)
    if len(unknown):
        found = ", ".join(f"{str(name)!r} ({count} subjects)" for name, count in zip(unknown, counts))
        raise InputError(f"{path}: split {found} is not one of {list(SPLIT_NAMES)}; rename it, or map it with "
                         f"split_aliases (e.g. {unknown[0]}=tuning)", field="split_aliases")
    return table.set_column(table.schema.get_field_index("split"), "split", pa.array(names, pa.string()))


def _check_splits_cover(event_ids: pa.Array, splits: pa.Table, root: Path) -> None:
    missing = pc.filter(event_ids, pc.invert(pc.is_in(event_ids, splits["subject_id"])))
    if len(missing):
        raise InputError(
            f"{root / meds.subject_splits_filepath}: {len(missing)} subjects of the data have no split "
            f"(e.g. subject_id {missing[0]}); expected every subject in subject_splits.parquet"
        )


def _read_codes(root: Path) -> pa.Table | None:
    path = root / meds.code_metadata_filepath
    if not path.is_file():
        return None
    table = _read_parquet(path)
    if "code" not in table.column_names:
        raise InputError(f"{path}: missing column 'code'; expected the MEDS code metadata schema")
    if BIN_EDGES_COLUMN in table.column_names:
        type_ = table.schema.field(BIN_EDGES_COLUMN).type
        if not (pa.types.is_list(type_) or pa.types.is_large_list(type_)) or not pa.types.is_floating(
            type_.value_type
        ):
            raise InputError(f"{path}: column '{BIN_EDGES_COLUMN}' has type {type_}; expected list<double>")
        for code, edges in zip(table["code"].to_pylist(), table[BIN_EDGES_COLUMN].to_pylist()):
            if edges and (any(e is None for e in edges) or np.any(np.diff(edges) <= 0)):
                raise InputError(f"{path}: {BIN_EDGES_COLUMN} of code '{code}' is {edges}; expected "
                                 "strictly increasing numbers")
    return table


def _read_dataset_json(root: Path) -> dict:
    path = root / meds.dataset_metadata_filepath
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start}); expected JSON") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None


def write_meds(
    root: Path,
    events: pa.Table,
    subject_splits: pa.Table,
    codes: pa.Table,
    metadata: dict,
    shard_size: int = 1_000_000,
    overwrite: bool = False,
) -> None:
    """Write a MEDS dataset atomically; `events` must be sorted by subject and time.

    Shards hold whole subjects (about `shard_size` rows each), as the standard requires.
    """
    events = meds.DataSchema.align(events)
    with atomic_directory(Path(root), overwrite=overwrite) as tmp:
        (tmp / "data").mkdir()
        (tmp / "metadata").mkdir()
        subject = events["subject_id"].to_numpy()
        starts = np.flatnonzero(np.r_[True, subject[1:] != subject[:-1]]) if len(subject) else np.array([0])
        cut_rows = [0]
        for s in starts[1:]:
            if s - cut_rows[-1] >= shard_size:
                cut_rows.append(int(s))
        cut_rows.append(len(events))
        for i, (a, b) in enumerate(zip(cut_rows[:-1], cut_rows[1:])):
            pq.write_table(events.slice(a, b - a), tmp / "data" / f"{i}.parquet")
        pq.write_table(meds.SubjectSplitSchema.align(subject_splits), tmp / meds.subject_splits_filepath)
        pq.write_table(codes, tmp / meds.code_metadata_filepath)
        (tmp / meds.dataset_metadata_filepath).write_text(json.dumps(metadata, indent=2) + "\n")
