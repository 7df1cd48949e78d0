"""Training and evaluation windows drawn from a token store split.

A training batch is a pure function of (seed, step): resuming at step k draws exactly the windows an
uninterrupted run would have drawn, and two splits never mix because a sampler reads one split.

Two ways to treat patient boundaries (`mode`):

- "packed" (default): windows are slices of the split's flat token array at uniform random offsets.
  Patients follow one another, each ending with [EOS], so a window may hold the end of one patient and
  the start of the next; the [EOS] separator and the demographic tokens that open every patient tell
  the model where a new timeline starts. No token is padding, so every token of compute trains.
- "patient" (CoMET-like): a window never spans two patients. A patient is drawn with probability
  proportional to its length, a start uniformly among the positions where a full window fits (or
  the patient's start when it is shorter than a window), and the rest of a short window is padded
  with [PAD] and left out of the loss.

Both return `windows` (B, T + 1) int32 and `loss_mask` (B, T) float32 for the targets windows[:, 1:].

`patients` (sorted indices into the split; `TokenSplit.nested_subset`, from train.unique_tokens) limits
the draws to those patients: packed windows are slices of their tokens read one patient after another
(in the split's order, without copying the array), patient windows are drawn among them alone. Without
it, or with every patient of the split, the draws are exactly those of the whole split.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from scaling.common.errors import InputError
from scaling.data.token_store import TokenSplit

WINDOW_MODES = ("packed", "patient")


@dataclass(frozen=True)
class WindowSampler:
    split: TokenSplit
    batch_size: int
    seq_len: int
    seed: int
    pad_id: int
    mode: str = "packed"
    patients: np.ndarray | None = field(default=None, compare=False)  # a subset of the split's patients

    def __post_init__(self) -> None:
        if self.mode not in WINDOW_MODES:
            raise InputError(f"window mode '{self.mode}' is not one of {WINDOW_MODES}")
        if self.n_tokens < self.seq_len + 1:
            subset = "" if self._whole else f" (its subset of {len(self.patients):,} patients)"
            raise InputError(
                f"split '{self.split.name}'{subset} has {self.n_tokens} tokens, fewer than one window of "
                f"seq_len + 1 = {self.seq_len + 1}"
            )

    @cached_property
    def _whole(self) -> bool:
        return self.patients is None or len(self.patients) == self.split.n_patients

    @cached_property
    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(starts, ends) in the split's flat array of the patients drawn from."""
        offsets = self.split.offsets
        if self._whole:
            return offsets[:-1], offsets[1:]
        patients = np.asarray(self.patients, dtype=np.int64)
        return offsets[patients], offsets[patients + 1]

    @cached_property
    def _lengths(self) -> np.ndarray:
        if self._whole:
            return self.split.lengths
        starts, ends = self._bounds
        return ends - starts

    @cached_property
    def _packed_offsets(self) -> np.ndarray:
        """Where each drawn patient starts in their tokens read one after another (n + 1 values)."""
        return np.concatenate([[0], np.cumsum(self._lengths)])

    @property
    def n_tokens(self) -> int:
        """Tokens the windows are drawn from (the unique tokens of the run)."""
        return self.split.n_tokens if self._whole else int(self._lengths.sum())

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, step])
        if self.mode == "packed":
            starts = rng.integers(0, self.n_tokens - self.seq_len, size=self.batch_size)
            mask = np.ones((self.batch_size, self.seq_len), np.float32)
            if self._whole:
                return gather_windows(self.split.tokens, starts, self.seq_len + 1), mask
            return self._gather_subset(starts), mask
        lengths = self._lengths
        bounds_start, bounds_end = self._bounds
        patients = rng.choice(len(lengths), size=self.batch_size, p=lengths / lengths.sum())
        room = np.maximum(lengths[patients] - (self.seq_len + 1), 0)
        starts = bounds_start[patients] + np.floor(rng.random(self.batch_size) * (room + 1)).astype(np.int64)
        ends = bounds_end[patients]
        return patient_windows(self.split.tokens, starts, ends, self.seq_len + 1, self.pad_id)

    def _gather_subset(self, starts: np.ndarray) -> np.ndarray:
        """Packed windows of the subset: positions in its tokens read one patient after another, mapped
        to the split's flat array."""
        positions = starts[:, None] + np.arange(self.seq_len + 1)
        patient = np.searchsorted(self._packed_offsets, positions, side="right") - 1
        flat = self._bounds[0][patient] + (positions - self._packed_offsets[patient])
        return np.asarray(self.split.tokens[flat], dtype=np.int32)


@dataclass(frozen=True)
class ShortThenLongSampler:
    """The batches of `short` before step `switch` and of `long` from it on (train.short_seq_len: a shorter
    context for the first steps, the same tokens per step)."""

    short: WindowSampler
    long: WindowSampler
    switch: int

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        return (self.short if step < self.switch else self.long).batch(step)


def gather_windows(tokens: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """(B,) start offsets -> (B, length) int32 windows of the flat token array."""
    return np.asarray(tokens[starts[:, None] + np.arange(length)], dtype=np.int32)


def patient_windows(
    tokens: np.ndarray, starts: np.ndarray, ends: np.ndarray, length: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """Windows that stop at each patient's end: (B, length) int32 padded with pad_id, (B, length - 1) mask."""
    positions = starts[:, None] + np.arange(length)  # (B, length)
    inside = positions < ends[:, None]
    windows = np.where(inside, tokens[np.minimum(positions, len(tokens) - 1)], pad_id).astype(np.int32)
    return windows, inside[:, 1:].astype(np.float32)


def patient_evaluation_windows(split: TokenSplit, seq_len: int, max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """The patient-mode validation windows: (starts, ends of their patients) (W,), each patient's timeline cut
    into consecutive windows of `seq_len` targets, evenly thinned to about `max_tokens` targets."""
    starts_list, ends_list = [], []
    for p in range(split.n_patients):
        begin, end = int(split.offsets[p]), int(split.offsets[p + 1])
        for s in range(begin, end - 1, seq_len):
            starts_list.append(s)
            ends_list.append(end)
    starts_all, ends_all = np.asarray(starts_list, np.int64), np.asarray(ends_list, np.int64)
    keep = max(1, min(len(starts_all), max_tokens // seq_len))
    pick = np.linspace(0, len(starts_all) - 1, keep).round().astype(np.int64)
    return starts_all[pick], ends_all[pick]


def evaluation_batches(
    split: TokenSplit, batch_size: int, seq_len: int, max_tokens: int, pad_id: int, mode: str = "packed"
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """A fixed, deterministic set of windows for validation loss, each target scored at most once.

    packed: consecutive windows of the flat array (window k covers tokens kT .. kT + T), evenly thinned
    to about `max_tokens` targets; patient: each patient's timeline cut into consecutive windows.
    """
    if mode == "packed":
        n_windows = (split.n_tokens - 1) // seq_len
        keep = max(1, min(n_windows, max_tokens // seq_len))
        starts = (np.linspace(0, n_windows - 1, keep).round().astype(np.int64)) * seq_len
        for i in range(0, len(starts), batch_size):
            chunk = starts[i : i + batch_size]
            yield gather_windows(split.tokens, chunk, seq_len + 1), np.ones((len(chunk), seq_len), np.float32)
        return
    starts_all, ends_all = patient_evaluation_windows(split, seq_len, max_tokens)
    for i in range(0, len(starts_all), batch_size):
        yield patient_windows(split.tokens, starts_all[i : i + batch_size], ends_all[i : i + batch_size],
                              seq_len + 1, pad_id)
