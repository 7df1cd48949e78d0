"""A task's outcome, computed the same way on a patient's real future, a model's simulated futures
and the oracle's: one definition, so labels and estimates can only differ by what happened.

A future is a flat list of events (`Futures`): for each, the row it belongs to (a prediction, or a
prediction x sample), its code, and its minutes after the prediction time. Events at 0 minutes share
the prediction time and belong to the history, so they never count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scaling.data.scheme import DAY
from scaling.evaluate.tasks import Task


@dataclass
class Futures:
    owner: np.ndarray  # (m,) int64: the row each event belongs to, 0 .. n_rows - 1
    minutes: np.ndarray  # (m,) float64: minutes after the prediction time
    code: np.ndarray  # (m,) int64 index into `codes`
    codes: list[str]
    n_rows: int
    value: np.ndarray | None = None  # (m,) float64 numeric value (NaN for none), when known


def code_matches(codes: list[str], prefixes: tuple[str, ...]) -> np.ndarray:
    """(len(codes),) bool: the code starts with one of the prefixes."""
    return np.array([c.startswith(prefixes) for c in codes], bool) if codes else np.zeros(0, bool)


def outcome_values(task: Task, futures: Futures) -> np.ndarray:
    """(n_rows,) float: the task's outcome in each row's future.

    binary: 1.0 if an outcome event falls in (0, horizon]; count: the number of them;
    duration: days to the first outcome event after 0 minutes, NaN when there is none.
    """
    match = code_matches(futures.codes, task.codes)[futures.code] & (futures.minutes > 0)
    if task.kind == "duration":
        first = np.full(futures.n_rows, np.inf)
        np.minimum.at(first, futures.owner[match], futures.minutes[match])
        return np.where(np.isfinite(first), first / DAY, np.nan)
    inside = match & (futures.minutes <= task.horizon_minutes)
    counts = np.bincount(futures.owner[inside], minlength=futures.n_rows).astype(np.float64)
    return (counts > 0).astype(np.float64) if task.kind == "binary" else counts


def estimate_from_samples(task: Task, values: np.ndarray) -> np.ndarray:
    """(n, K) outcomes of K simulated futures per prediction -> (n,) estimates: the fraction of futures
    with the outcome (binary), the mean count (count), the median duration (duration; a future that
    did not reach the event within the simulated horizon counts as horizon_days)."""
    if task.kind == "duration":
        return np.median(np.where(np.isnan(values), task.horizon_days, values), axis=1)
    return values.mean(axis=1)
