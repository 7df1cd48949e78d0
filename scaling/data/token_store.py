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
"""

from __future__ import annotations

import json
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


def write_split(folder: Path, tokens: np.ndarray, offsets: np.ndarray, subject_ids: np.ndarray) -> None:
    """Write one split's arrays into `folder` (part of a directory written atomically by the caller)."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "tokens.npy", tokens)
    np.save(folder / "offsets.npy", offsets.astype(np.int64))
    np.save(folder / "subject_ids.npy", subject_ids.astype(np.int64))


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
