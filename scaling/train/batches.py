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
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

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

    def __post_init__(self) -> None:
        if self.mode not in WINDOW_MODES:
            raise InputError(f"window mode '{self.mode}' is not one of {WINDOW_MODES}")
        if self.split.n_tokens < self.seq_len + 1:
            raise InputError(
                f"split '{self.split.name}' has {self.split.n_tokens} tokens, fewer than one window of "
                f"seq_len + 1 = {self.seq_len + 1}"
            )

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, step])
        if self.mode == "packed":
            starts = rng.integers(0, self.split.n_tokens - self.seq_len, size=self.batch_size)
            return gather_windows(self.split.tokens, starts, self.seq_len + 1), np.ones(
                (self.batch_size, self.seq_len), np.float32
            )
        lengths = self.split.lengths
        patients = rng.choice(len(lengths), size=self.batch_size, p=lengths / lengths.sum())
        room = np.maximum(lengths[patients] - (self.seq_len + 1), 0)
        starts = self.split.offsets[patients] + np.floor(rng.random(self.batch_size) * (room + 1)).astype(np.int64)
        ends = self.split.offsets[patients + 1]
        return patient_windows(self.split.tokens, starts, ends, self.seq_len + 1, self.pad_id)


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
    starts_list, ends_list = [], []
    for p in range(split.n_patients):
        begin, end = int(split.offsets[p]), int(split.offsets[p + 1])
        for s in range(begin, end - 1, seq_len):
            starts_list.append(s)
            ends_list.append(end)
    starts_all, ends_all = np.asarray(starts_list, np.int64), np.asarray(ends_list, np.int64)
    keep = max(1, min(len(starts_all), max_tokens // seq_len))
    pick = np.linspace(0, len(starts_all) - 1, keep).round().astype(np.int64)
    starts_all, ends_all = starts_all[pick], ends_all[pick]
    for i in range(0, len(starts_all), batch_size):
        yield patient_windows(split.tokens, starts_all[i : i + batch_size], ends_all[i : i + batch_size],
                              seq_len + 1, pad_id)
