"""MEDS events -> token sequences (CoMET/ETHOS scheme); scaling.data.decoding reads them back.

A patient's sequence is

    [static codes] [AGE//40-44] event ... event [EOS]

where each timed event is `[time-interval token(s)] code token(s) [value-bin token]`:
- static rows (null time) come first, in file order; the age bucket (5 years) at the first timed event
  follows them (no age token when the subject has no MEDS_BIRTH row; the birth row itself is not a
  token);
- a gap of 5 minutes or more since the previous timed event gets one of 13 interval tokens (5m-15m ...
  3mo-6mo, and one `TIME//6mo` per full 6 months beyond; scaling.data.scheme); events closer in time
  get none;
- a code is one token, or a head and sub-tokens when its system is recognised (scaling.data.codes);
- a numeric value adds a bin token after the code: deciles of the code's train-split values, or the
  edges in `metadata/codes.parquet` (column `value_bin_edges`) when given;
- sub-tokens seen fewer than `min_count` times in the train split are unknown: an unknown head becomes
  `UNK//<category>` (and its value is dropped), an unknown sub-token cuts the code at its parent.

Everything after reading is vectorised with numpy over events; Python loops run over unique codes only.
"""

from __future__ import annotations

import json
import time as _time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scaling.common.atomic import atomic_directory, refuse_existing
from scaling.common.errors import InputError
from scaling.data.codes import BIRTH_CODE, code_category, code_pieces
from scaling.data.meds_io import MedsDataset, open_meds_shards
from scaling.data.scheme import (
    AGE_TOKENS,
    INTERVAL_TOKENS,
    US_PER_MINUTE,
    US_PER_YEAR,
    age_bucket,
    interval_class,
)
from scaling.data.token_store import SPLITS, SplitWriter, TokenStore, token_dtype, write_stats
from scaling.data.vocab import (
    CATEGORIES,
    EOS,
    MAX_VALUE_BINS,
    PAD,
    Vocabulary,
    unknown_token,
    value_token,
)


@dataclass(frozen=True)
class TokenizerSettings:
    min_count: int = 5  # sub-tokens seen fewer times than this in the train split become UNK//<category>
    n_value_bins: int = 10  # quantile bins per numeric code when metadata gives no edges (10 = deciles)
    split_aliases: dict[str, str] = field(default_factory=dict)  # the dataset's split name -> train|tuning|held_out

    def __post_init__(self) -> None:
        if self.min_count < 1:
            raise InputError(f"min_count = {self.min_count}; expected an integer >= 1")
        if not 2 <= self.n_value_bins <= MAX_VALUE_BINS:
            raise InputError(f"n_value_bins = {self.n_value_bins}; expected 2 to {MAX_VALUE_BINS}")


@dataclass
class EventArrays:
    """A MEDS events table as numpy arrays, sorted by subject, statics first, then time (stable)."""

    subject: np.ndarray  # (n,) int64
    time_us: np.ndarray  # (n,) int64, 0 for static rows
    static: np.ndarray  # (n,) bool
    code_index: np.ndarray  # (n,) int32 index into `codes`
    value: np.ndarray  # (n,) float32, NaN when null
    codes: list[str]  # the unique code strings

    @classmethod
    def from_table(cls, events: pa.Table) -> EventArrays:
        encoded = pc.dictionary_encode(events["code"]).combine_chunks()
        time_col = events["time"]
        static = time_col.is_null().to_numpy(zero_copy_only=False)
        time_us = pc.fill_null(time_col.cast(pa.int64()), 0).to_numpy()
        value = events["numeric_value"].to_numpy(zero_copy_only=False).astype(np.float32)
        arrays = cls(
            subject=events["subject_id"].to_numpy(),
            time_us=time_us,
            static=static,
            code_index=encoded.indices.to_numpy().astype(np.int32),
            value=value,
            codes=encoded.dictionary.to_pylist(),
        )
        return arrays.sorted()

    def sorted(self) -> EventArrays:
        s, t, timed = self.subject, self.time_us, ~self.static
        in_order = np.all(
            (s[1:] > s[:-1])
            | ((s[1:] == s[:-1]) & ((timed[1:] > timed[:-1]) | ((timed[1:] == timed[:-1]) & (t[1:] >= t[:-1]))))
        )
        if in_order:
            return self
        order = np.lexsort((t, timed, s))  # lexsort is stable: same-time rows keep their file order
        return self.take(order)

    def take(self, rows: np.ndarray) -> EventArrays:
        return EventArrays(self.subject[rows], self.time_us[rows], self.static[rows], self.code_index[rows],
                           self.value[rows], self.codes)


# ----------------------------------------------------------------------------------------------------
# Vocabulary


@dataclass
class TrainCodes:
    """What the vocabulary needs from the train split, gathered a part of the data at a time: each code's
    train count and its train numeric values. Codes are kept in order of first appearance in the data."""

    counts: dict[str, int] = field(default_factory=dict)
    values: dict[str, list[np.ndarray]] = field(default_factory=dict)  # float32 chunks per code

    @classmethod
    def of(cls, train: EventArrays) -> TrainCodes:
        codes = cls()
        codes.add(train)
        return codes

    def add(self, train: EventArrays) -> None:
        """Count a part's train rows; every code of the part (train or not) takes its place in the order."""
        for code in train.codes:
            self.counts.setdefault(code, 0)
        code_counts = np.bincount(train.code_index, minlength=len(train.codes))
        for index in np.flatnonzero(code_counts):
            self.counts[train.codes[index]] += int(code_counts[index])
        rows = np.flatnonzero(np.isfinite(train.value))
        rows = rows[np.argsort(train.code_index[rows], kind="stable")]
        codes = train.code_index[rows]
        bounds = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1], True]) if len(rows) else []
        for a, b in zip(bounds[:-1], bounds[1:]):
            self.values.setdefault(train.codes[codes[a]], []).append(train.value[rows[a:b]])

    @property
    def n_events(self) -> int:
        return sum(self.counts.values())


def build_vocabulary(train: TrainCodes, settings: TokenizerSettings,
                     given_edges: dict[str, list[float]] | None = None) -> Vocabulary:
    """The vocabulary from the train split: sub-token counts, thresholded; value-bin edges per code."""
    piece_counts: Counter[str] = Counter()
    piece_info: dict[str, tuple[str, str, str]] = {}
    for code, count in train.counts.items():
        if code == BIRTH_CODE or count == 0:
            continue
        category = code_category(code)
        for piece in code_pieces(code):
            piece_counts[piece.token] += count
            piece_info.setdefault(piece.token, (category, piece.kind, piece.text))
    kept = sorted(
        (t for t, n in piece_counts.items() if n >= settings.min_count),
        key=lambda t: (CATEGORIES.index(piece_info[t][0]), t),
    )
    edges, centers = value_bins(train, settings.n_value_bins, given_edges or {})
    n_value_tokens = max((len(e) + 1 for e in edges.values()), default=0)

    tokens: list[tuple[str, str, str, str]] = [(PAD, "special", "special", ""), (EOS, "special", "special", "")]
    unknown_categories = [c for c in CATEGORIES if c not in ("special", "age", "time", "value")]
    tokens += [(unknown_token(c), c, "unknown", "") for c in unknown_categories]
    tokens += [(name, "time", "time", "") for name in INTERVAL_TOKENS]
    tokens += [(name, "age", "age", "") for name in AGE_TOKENS]
    tokens += [(value_token(b), "value", "value", "") for b in range(n_value_tokens)]
    tokens += [(t, *piece_info[t]) for t in kept]
    return Vocabulary(
        tokens=[t[0] for t in tokens],
        categories=[t[1] for t in tokens],
        kinds=[t[2] for t in tokens],
        texts=[t[3] for t in tokens],
        value_bin_edges=edges,
        value_bin_centers=centers,
    )


def value_bins(train: TrainCodes, n_bins: int, given_edges: dict[str, list[float]]
               ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per numeric code: bin edges (given, or train quantiles) and each bin's median train value."""
    edges_by_code, centers_by_code = {}, {}
    for code in train.counts:
        if code not in train.values:
            continue
        values = np.sort(np.concatenate(train.values[code]).astype(np.float64))
        if code in given_edges:
            edges = np.asarray(given_edges[code], dtype=np.float64)
        else:
            edges = np.unique(np.quantile(values, np.arange(1, n_bins) / n_bins, method="linear"))
        if len(edges) == 0:
            continue  # a constant value carries no information: no bin token
        bins = np.searchsorted(edges, values, side="right")
        centers = [float(np.median(values[bins == k])) if np.any(bins == k) else float("nan")
                   for k in range(len(edges) + 1)]
        edges_by_code[code] = [float(e) for e in edges]
        centers_by_code[code] = _fill_empty_centers(centers, edges)
    for code, edges in given_edges.items():  # codes with metadata edges but no train values
        if code not in edges_by_code:
            edges_by_code[code] = [float(e) for e in edges]
            centers_by_code[code] = _fill_empty_centers([float("nan")] * (len(edges) + 1), np.asarray(edges))
    return edges_by_code, centers_by_code


def _fill_empty_centers(centers: list[float], edges: np.ndarray) -> list[float]:
    """Bins without train values get the middle of their edges (the edge itself for open bins)."""
    out = []
    for k, c in enumerate(centers):
        if np.isnan(c):
            lo = edges[k - 1] if k > 0 else edges[0]
            hi = edges[k] if k < len(edges) else edges[-1]
            c = float((lo + hi) / 2)
        out.append(c)
    return out


# ----------------------------------------------------------------------------------------------------
# Encoding


@dataclass
class CodeTable:
    """Token ids of each unique code of an EventArrays, padded: ids (U, K), lengths (U,)."""

    ids: np.ndarray
    lengths: np.ndarray
    known_head: np.ndarray  # (U,) bool: the code's head is in the vocabulary (its value may be binned)
    edges: list[np.ndarray | None]  # per unique code: bin edges, or None

    @classmethod
    def build(cls, codes: list[str], vocab: Vocabulary, cache: dict | None = None) -> CodeTable:
        """`cache` (code -> its row, kept between calls) saves re-splitting codes seen in an earlier part."""
        rows, known, edges = [], [], []
        for code in codes:
            if cache is not None and code in cache:
                row, is_known, code_edges = cache[code]
                rows.append(row)
                known.append(is_known)
                edges.append(code_edges)
                continue
            pieces = code_pieces(code)
            head = vocab.index.get(pieces[0].token)
            if head is None:
                rows.append([vocab.id(unknown_token(code_category(code)))])
                known.append(False)
            else:
                ids = [head]
                for piece in pieces[1:]:
                    if piece.token not in vocab.index:
                        break
                    ids.append(vocab.index[piece.token])
                rows.append(ids)
                known.append(True)
            code_edges = vocab.value_bin_edges.get(code)
            edges.append(np.asarray(code_edges) if code_edges and known[-1] else None)
            if cache is not None:
                cache[code] = (rows[-1], known[-1], edges[-1])
        width = max((len(r) for r in rows), default=1)
        ids = np.zeros((len(rows), width), np.int32)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
        return cls(ids, np.array([len(r) for r in rows], np.int64), np.array(known, bool), edges)


def encode(events: EventArrays, vocab: Vocabulary, table: CodeTable | None = None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted events -> (tokens (n_tokens,) int32, offsets (n_patients + 1,), subject_ids (n_patients,))."""
    table = table or CodeTable.build(events.codes, vocab)
    n = len(events.subject)
    birth_index = events.codes.index(BIRTH_CODE) if BIRTH_CODE in events.codes else -1
    is_birth = events.code_index == birth_index
    emit = ~is_birth
    timed = emit & ~events.static
    subject = events.subject

    # Time-interval tokens between consecutive timed events of the same subject.
    timed_rows = np.flatnonzero(timed)
    gap_minutes = np.diff(events.time_us[timed_rows]) / US_PER_MINUTE
    same_subject = subject[timed_rows[1:]] == subject[timed_rows[:-1]]
    interval, repeats = interval_class(gap_minutes)
    interval[~same_subject] = -1
    time_count = np.zeros(n, np.int64)
    time_count[timed_rows[1:]] = np.where(interval >= 0, repeats, 0)
    time_id = np.zeros(n, np.int32)
    time_id[timed_rows[1:]] = vocab.id(INTERVAL_TOKENS[0]) + np.maximum(interval, 0)

    # The age token goes before the first timed event of each subject with a birth row.
    first_timed = timed_rows[np.r_[True, ~same_subject]] if len(timed_rows) else timed_rows
    birth_rows = np.flatnonzero(is_birth)
    birth_subjects, first_birth = np.unique(subject[birth_rows], return_index=True)
    birth_time = dict(zip(birth_subjects.tolist(), events.time_us[birth_rows[first_birth]].tolist()))
    age_flag = np.zeros(n, np.int64)
    age_id = np.zeros(n, np.int32)
    if len(birth_subjects):
        has_birth = np.isin(subject[first_timed], birth_subjects)
        rows = first_timed[has_birth]
        births = np.array([birth_time[s] for s in subject[rows].tolist()], np.int64)
        years = (events.time_us[rows] - births) / US_PER_YEAR
        age_flag[rows] = 1
        age_id[rows] = vocab.id(AGE_TOKENS[0]) + age_bucket(years).astype(np.int32)

    code_len = np.where(emit, table.lengths[events.code_index], 0)
    bin_id, has_bin = _value_bin_ids(events, table, vocab, emit)

    # [EOS] after the last emitted row of each subject.
    emitted = np.flatnonzero(emit)
    last_emitted = emitted[np.r_[subject[emitted[1:]] != subject[emitted[:-1]], True]] if len(emitted) else emitted
    eos_flag = np.zeros(n, np.int64)
    eos_flag[last_emitted] = 1

    # Layout of one row: [age] [time tokens] [code tokens] [value bin] [EOS].
    row_tokens = age_flag + time_count + code_len + has_bin + eos_flag
    ends = np.cumsum(row_tokens)
    starts = ends - row_tokens
    out = np.empty(int(ends[-1]) if n else 0, np.int32)
    out[starts[age_flag == 1]] = age_id[age_flag == 1]
    time_start = starts + age_flag
    total_time = int(time_count.sum())
    within = np.arange(total_time) - np.repeat(np.cumsum(time_count) - time_count, time_count)
    out[np.repeat(time_start, time_count) + within] = np.repeat(time_id, time_count)
    code_start = time_start + time_count
    for j in range(table.ids.shape[1]):
        rows = np.flatnonzero(code_len > j)
        out[code_start[rows] + j] = table.ids[events.code_index[rows], j]
    out[(code_start + code_len)[has_bin == 1]] = bin_id[has_bin == 1]
    out[ends[eos_flag == 1] - 1] = vocab.eos_id

    subject_rows = last_emitted
    first_rows = np.r_[0, subject_rows[:-1] + 1] if len(subject_rows) else subject_rows
    offsets = np.r_[starts[first_rows], ends[subject_rows][-1:]] if len(subject_rows) else np.zeros(1, np.int64)
    return out, offsets.astype(np.int64), subject[subject_rows]


def _value_bin_ids(events: EventArrays, table: CodeTable, vocab: Vocabulary, emit: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the value-bin token id and whether there is one (a finite value of a binned code)."""
    n = len(events.subject)
    bin_id = np.zeros(n, np.int32)
    has_bin = np.zeros(n, np.int64)
    binned_codes = np.array([e is not None for e in table.edges], bool)
    rows = np.flatnonzero(emit & np.isfinite(events.value) & binned_codes[events.code_index])
    if not len(rows):
        return bin_id, has_bin
    rows = rows[np.argsort(events.code_index[rows], kind="stable")]
    codes = events.code_index[rows]
    bounds = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1], True])
    first_value_id = vocab.id(value_token(0))
    for a, b in zip(bounds[:-1], bounds[1:]):
        r = rows[a:b]
        bins = np.searchsorted(table.edges[codes[a]], events.value[r].astype(np.float64), side="right")
        bin_id[r] = first_value_id + bins
    has_bin[rows] = 1
    return bin_id, has_bin


# ----------------------------------------------------------------------------------------------------
# The `scaling data tokenize` stage


# A hook of `tokenize_dataset`: (the MEDS directory, the token store written but not yet in place) -> more
# entries of stats.json (the synthetic cohort's entropy floor: scaling.synth.replay.entropy_floor_stats).
ExtraStats = Callable[[Path, TokenStore], dict]
# Per split: (tokens, offsets from 0, subject_ids) -> None, called once per group of shards.
SplitSinks = dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], None]]


def tokenize_dataset(meds_dir: Path, out_dir: Path, settings: TokenizerSettings | None = None,
                     overwrite: bool = False, extra_stats: ExtraStats | None = None,
                     stage: Callable[[str], None] | None = None) -> dict:
    """Read a MEDS dataset, build the vocabulary on train, write the token store; return stats.json.

    The dataset is read twice, a group of shards at a time (scaling.data.meds_io.MedsShards): once for
    the vocabulary, once to encode, and each group's tokens go straight to the store's files, so memory
    follows the largest shard and the store, not the dataset's events.
    `extra_stats`, when given, is called before the store is moved into place; what it returns is
    merged into stats.json (before `seconds`, which counts its time too). `stage`, when given, is told the
    name of each stage as it starts (the command line shows it with the time spent)."""
    settings = settings or TokenizerSettings()
    stage = stage or (lambda name: None)
    out_dir = Path(out_dir)
    refuse_existing(out_dir, overwrite, inputs=[meds_dir])
    started = _time.perf_counter()
    stage(f"reading {meds_dir} (the vocabulary from its train split)")
    shards = open_meds_shards(meds_dir, settings.split_aliases)
    vocab = build_vocabulary(train_codes(shards.event_groups(), shards.split_of), settings, shards.bin_edges())
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        stage(f"encoding {len(shards.files)} shards, {len(shards.groups)} group(s) at a time, into the token store")
        vocab.save(tmp / "vocab.json")
        writers = {name: SplitWriter(tmp / name, token_dtype(vocab.size)) for name in SPLITS}
        per_split = encode_groups(shards.event_groups(), shards.split_of, vocab,
                                  {name: writer.add for name, writer in writers.items()})
        for writer in writers.values():
            writer.close()
        (tmp / "tokenizer.json").write_text(json.dumps({"source": str(meds_dir), **asdict(settings)}, indent=2)
                                            + "\n")
        stats = split_stats(shards.root, vocab, per_split)
        if extra_stats is not None:
            stage("extra statistics (the synthetic world's entropy floor)")
            stats.update(extra_stats(Path(meds_dir), TokenStore.open(tmp)))
        stats["seconds"] = round(_time.perf_counter() - started, 3)
        write_stats(tmp, stats)
    return stats


def tokenize_events(dataset: MedsDataset, settings: TokenizerSettings, stage: Callable[[str], None] | None = None
                    ) -> tuple[dict, Vocabulary, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """A dataset in memory -> (stats, vocabulary, per split (tokens, offsets, subject_ids)), as the store
    holds them."""
    stage = stage or (lambda name: None)
    stage("the vocabulary from the train split")
    vocab = build_vocabulary(train_codes([dataset.events], dataset.split_of), settings, dataset.bin_edges())
    splits: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    # one group, sorted by subject: each split arrives as one part, patients already in subject_id order
    per_split = encode_groups([dataset.events], dataset.split_of, vocab,
                              {name: lambda *part, name=name: splits.__setitem__(name, part) for name in SPLITS})
    return split_stats(dataset.root, vocab, per_split), vocab, splits


def train_codes(groups: Iterable[pa.Table], split_of: Callable[[np.ndarray], np.ndarray]) -> TrainCodes:
    """The train split's codes and values, gathered over groups of events."""
    codes = TrainCodes()
    for table in groups:
        events = EventArrays.from_table(table)
        codes.add(events.take(np.flatnonzero(split_of(events.subject) == "train")))
    return codes


def encode_groups(groups: Iterable[pa.Table], split_of: Callable[[np.ndarray], np.ndarray], vocab: Vocabulary,
                  sinks: SplitSinks) -> dict[str, dict[str, int]]:
    """Encode each group's events split by split, hand each part to its split's sink; return per split the
    counts stats.json reports (patients, events, tokens, unknown tokens)."""
    unknown_ids = np.array([i for i, k in enumerate(vocab.kinds) if k == "unknown"])
    counts = {name: {"patients": 0, "events": 0, "tokens": 0, "unknown": 0} for name in SPLITS}
    code_rows: dict = {}
    for table in groups:
        events = EventArrays.from_table(table)
        code_table = CodeTable.build(events.codes, vocab, code_rows)
        split_of_row = split_of(events.subject)
        for name in SPLITS:
            part = events.take(np.flatnonzero(split_of_row == name))
            tokens, offsets, subject_ids = encode(part, vocab, code_table)
            sinks[name](tokens, offsets, subject_ids)
            c = counts[name]
            c["patients"] += len(subject_ids)
            c["events"] += len(part.subject)
            c["tokens"] += len(tokens)
            c["unknown"] += int(np.isin(tokens, unknown_ids).sum())
    return counts


def split_stats(root: Path, vocab: Vocabulary, per_split: dict[str, dict[str, int]]) -> dict:
    """stats.json's description of the store (without `seconds` and extra statistics)."""
    splits = {
        name: {
            "patients": c["patients"],
            "events": c["events"],
            "tokens": c["tokens"],
            "tokens_per_event": round(c["tokens"] / max(c["events"], 1), 4),
            "tokens_per_patient": round(c["tokens"] / max(c["patients"], 1), 2),
        }
        for name, c in per_split.items()
    }
    return {
        "source": str(root),
        "vocab_size": vocab.size,
        "vocab_by_category": vocab.size_by_category(),
        "splits": splits,
        "unknown_token_rate": {name: round(c["unknown"] / c["tokens"], 6) if c["tokens"] else 0.0
                               for name, c in per_split.items()},
    }
