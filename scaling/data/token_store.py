"""The token store: per split a flat, memory-mappable token array and per-patient offsets.

Layout of a token store directory:

    vocab.json            token strings, ids, categories (scaling.data.vocab.Vocabulary)
    tokenizer.json        the settings the store was made with
    stats.json            patients, events, tokens per split, tokens per event, vocabulary by category
    <split>/tokens.npy    all patients' tokens of the split, one after another (uint16, or int32 for
                          vocabularies over 65,535 tokens)
    <split>/offsets.npy   int64, n_patients + 1: patient i is tokens[offsets[i]:offsets[i + 1]]
    <split>/subject_ids.npy  int64, n_patients: the MEDS subject_id of each patient

Every patient's sequence ends with the [EOS] token.

The store's size as the data-constrained fits see it: `TokenStore.unique_train_tokens` and
`unique_train_patients` (the train split's arrays; stats.json's splits.train holds the same numbers).
`TokenSplit.nested_subset(unique_tokens)` is the one place a run's subset of train patients is chosen
(`train.unique_tokens`; `train_subset` adds the checks against the store): patients in a fixed order
that depends on their subject_id alone (never on a seed), and the shortest prefix of that order whose
tokens reach the requested count, so the subsets of one store are nested (the 10% subset lies inside
the 30% one).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from scaling.common.atomic import atomic_directory
from scaling.common.errors import InputError
from scaling.data.vocab import Vocabulary

SPLITS = ("train", "tuning", "held_out")


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max else np.dtype(np.int32)


@dataclass(frozen=True)
class TokenSplit:
    name: str
    tokens: np.ndarray  # (n_tokens,) memory-mapped
    offsets: np.ndarray  # (n_patients + 1,) int64
    subject_ids: np.ndarray  # (n_patients,) int64

    @property
    def n_patients(self) -> int:
        return len(self.subject_ids)

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1])

    @cached_property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def patient(self, i: int) -> np.ndarray:
        return np.asarray(self.tokens[self.offsets[i] : self.offsets[i + 1]])

    @cached_property
    def nested_order(self) -> np.ndarray:
        """The patients (indices into this split) in the fixed order subsets are prefixes of."""
        return nested_patient_order(self.subject_ids)

    def nested_subset(self, unique_tokens: float) -> np.ndarray:
        """The patients (sorted indices into this split) of the shortest prefix of `nested_order` whose
        tokens reach `unique_tokens`: deterministic, independent of any seed, and nested (a larger count's
        subset holds a smaller count's). `unique_tokens` is positive and at most `n_tokens` (`train_subset`
        checks it against the store)."""
        reached = np.cumsum(self.lengths[self.nested_order])
        count = int(np.searchsorted(reached, unique_tokens, side="left")) + 1
        return np.sort(self.nested_order[:count])


def nested_patient_order(subject_ids: np.ndarray) -> np.ndarray:
    """Patients ordered by a fixed hash of their subject_id (splitmix64's finalizer, a bijection on 64-bit
    integers): the same order on every call and for every seed, and a patient's place relative to another
    does not depend on which other patients the split holds. Ties (a repeated subject_id) keep file order."""
    with np.errstate(over="ignore"):
        z = np.asarray(subject_ids, dtype=np.int64).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return np.argsort(z, kind="stable")


class TokenStore:
    """A token store directory opened for reading; splits are memory-mapped on first use."""

    def __init__(self, path: Path, vocab: Vocabulary, stats: dict, settings: dict):
        self.path = Path(path)
        self.vocab = vocab
        self.stats = stats
        self.settings = settings
        self._splits: dict[str, TokenSplit] = {}

    @classmethod
    def open(cls, path: str | Path) -> TokenStore:
        path = Path(path)
        if not (path / "vocab.json").is_file():
            raise InputError(f"{path}: not a token store (no vocab.json); make one with `scaling data tokenize`")
        stats = json.loads((path / "stats.json").read_text()) if (path / "stats.json").is_file() else {}
        settings = (
            json.loads((path / "tokenizer.json").read_text()) if (path / "tokenizer.json").is_file() else {}
        )
        return cls(path, Vocabulary.load(path / "vocab.json"), stats, settings)

    @property
    def unique_train_tokens(self) -> int:
        """Tokens in the train split: the unique tokens a run can draw from (epochs = tokens trained / this)."""
        return self.split("train").n_tokens

    @property
    def unique_train_patients(self) -> int:
        """Patients in the train split."""
        return self.split("train").n_patients

    @property
    def split_names(self) -> list[str]:
        return [s for s in SPLITS if (self.path / s / "tokens.npy").is_file()]

    def split(self, name: str) -> TokenSplit:
        if name not in self._splits:
            folder = self.path / name
            if not (folder / "tokens.npy").is_file():
                raise InputError(f"{self.path}: token store has no split '{name}'; has {self.split_names}")
            self._splits[name] = TokenSplit(
                name=name,
                tokens=np.load(folder / "tokens.npy", mmap_mode="r"),
                offsets=np.load(folder / "offsets.npy"),
                subject_ids=np.load(folder / "subject_ids.npy"),
            )
        return self._splits[name]


@dataclass(frozen=True)
class TrainSubset:
    """The train patients a run draws its windows from (`train_subset`)."""

    patients: np.ndarray | None  # sorted indices into the train split; None: every train patient
    tokens: int  # the unique tokens of the run: the patients' tokens
    n_patients: int
    requested: float | None = None  # train.unique_tokens, None when left out


def train_subset(store: TokenStore, unique_tokens: float | None, window: int, *, field: str = "train.unique_tokens",
                 source: str | None = None) -> TrainSubset:
    """The subset of train patients for `unique_tokens` (None: every patient): `TokenSplit.nested_subset`,
    checked against the store. An InputError naming `field` (and starting with `source`, the file it came
    from, when given) for a count larger than the train split or a subset shorter than one `window`
    (seq_len + 1 tokens)."""
    split = store.split("train")
    if unique_tokens is None:
        return TrainSubset(None, split.n_tokens, split.n_patients)
    prefix = f"{source}: " if source else ""
    if not (math.isfinite(unique_tokens) and unique_tokens > 0):
        raise InputError(f"{prefix}{field} = {unique_tokens!r} must be a positive, finite number of tokens")
    if unique_tokens > split.n_tokens:
        raise InputError(f"{prefix}{field} = {unique_tokens:g} is more than the {split.n_tokens:,} tokens of the "
                         f"train split of the token store {store.path}")
    patients = split.nested_subset(unique_tokens)
    tokens = int(split.lengths[patients].sum())
    if tokens < window:
        raise InputError(f"{prefix}{field} = {unique_tokens:g} selects {len(patients):,} train patients of {tokens:,} "
                         f"tokens, fewer than one window of seq_len + 1 = {window} tokens; raise it")
    whole = len(patients) == split.n_patients
    return TrainSubset(None if whole else patients, tokens, len(patients), float(unique_tokens))


def write_split(folder: Path, tokens: np.ndarray, offsets: np.ndarray, subject_ids: np.ndarray) -> None:
    """Write one split's arrays into `folder` (part of a directory written atomically by the caller)."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "tokens.npy", tokens)
    np.save(folder / "offsets.npy", offsets.astype(np.int64))
    np.save(folder / "subject_ids.npy", subject_ids.astype(np.int64))


class SplitWriter:
    """Writes one split's arrays a part at a time, so memory holds one part, not the split.

    `add` appends a part's patients (tokens, offsets from 0, subject ids) to a raw file in `folder`;
    `close` writes tokens.npy, offsets.npy and subject_ids.npy with the patients in subject_id order
    (the order of a store made in one piece), copying `chunk_tokens` tokens at a time."""

    def __init__(self, folder: Path, dtype: np.dtype, chunk_tokens: int = 1 << 22):
        self.folder, self.dtype, self.chunk_tokens = Path(folder), np.dtype(dtype), chunk_tokens
        self.folder.mkdir(parents=True, exist_ok=True)
        self.raw_path = self.folder / "tokens.raw"
        self.raw = self.raw_path.open("wb")
        self.lengths: list[np.ndarray] = []
        self.subject_ids: list[np.ndarray] = []

    def add(self, tokens: np.ndarray, offsets: np.ndarray, subject_ids: np.ndarray) -> None:
        self.raw.write(np.ascontiguousarray(tokens, self.dtype).tobytes())
        self.lengths.append(np.diff(offsets).astype(np.int64))
        self.subject_ids.append(np.asarray(subject_ids, np.int64))

    def close(self) -> None:
        self.raw.close()
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
        subject_ids = np.concatenate(self.subject_ids) if self.subject_ids else np.zeros(0, np.int64)
        order = np.argsort(subject_ids, kind="stable")
        starts = np.cumsum(lengths) - lengths  # (n_patients,) where each patient lies in the raw file
        n_tokens = int(lengths.sum())
        with (self.folder / "tokens.npy").open("wb") as out:
            np.lib.format.write_array_header_1_0(out, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                       "fortran_order": False, "shape": (n_tokens,)})
            if np.array_equal(order, np.arange(len(order))):
                with self.raw_path.open("rb") as raw:  # plain reads: a mapping would count the file as resident
                    shutil.copyfileobj(raw, out, self.chunk_tokens * self.dtype.itemsize)
            elif n_tokens:
                raw = np.memmap(self.raw_path, self.dtype, "r")
                for patients in _chunks_of(order, lengths[order], self.chunk_tokens):
                    n = lengths[patients]
                    within = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
                    out.write(np.asarray(raw[np.repeat(starts[patients], n) + within]).tobytes())
                del raw
        self.raw_path.unlink()
        np.save(self.folder / "offsets.npy", np.r_[0, np.cumsum(lengths[order])].astype(np.int64))
        np.save(self.folder / "subject_ids.npy", subject_ids[order])


def _chunks_of(patients: np.ndarray, lengths: np.ndarray, chunk_tokens: int):
    """`patients` cut into consecutive runs of about `chunk_tokens` tokens (at least one patient each)."""
    ends = np.cumsum(lengths)
    a = 0
    while a < len(patients):
        b = max(int(np.searchsorted(ends, ends[a] - lengths[a] + chunk_tokens, side="right")), a + 1)
        yield patients[a:b]
        a = b


def write_token_store(
    out: Path,
    vocab: Vocabulary,
    splits: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    stats: dict,
    settings: dict,
    overwrite: bool = False,
) -> None:
    """Write a whole token store atomically: splits maps name -> (tokens, offsets, subject_ids)."""
    with atomic_directory(Path(out), overwrite=overwrite) as tmp:
        write_token_files(tmp, vocab, splits, settings)
        write_stats(tmp, stats)


def write_token_files(folder: Path, vocab: Vocabulary, splits: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                      settings: dict) -> None:
    """Everything of a token store but stats.json into `folder` (a directory the caller writes atomically)."""
    vocab.save(folder / "vocab.json")
    dtype = token_dtype(vocab.size)
    for name, (tokens, offsets, subject_ids) in splits.items():
        write_split(folder / name, tokens.astype(dtype, copy=False), offsets, subject_ids)
    (folder / "tokenizer.json").write_text(json.dumps(settings, indent=2) + "\n")


def write_stats(folder: Path, stats: dict) -> None:
    (folder / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")


def meds_dir_of_store(store: TokenStore) -> Path:
    """The MEDS dataset a token store was made from (tokenizer.json's source)."""
    source = store.settings.get("source")
    if not source:
        raise InputError(f"{store.path}/tokenizer.json: no 'source'; pass meds_dir", field="meds_dir")
    path = Path(source)
    if not path.is_absolute() and not path.exists() and (store.path.parent / path).exists():
        path = store.path.parent / path
    if not path.is_dir():
        raise InputError(f"{store.path}/tokenizer.json: source {source!r} is not a directory; pass meds_dir",
                         field="meds_dir")
    return path
