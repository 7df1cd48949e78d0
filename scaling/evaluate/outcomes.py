"""A task's outcome, computed the same way on a patient's real future, a model's simulated futures
and the oracle's: one definition, so labels and estimates can only differ by what happened.

A future is a flat list of events (`Futures`): for each, the row it belongs to (a prediction, or a
prediction x sample), its code, and its minutes after the prediction time. Events at 0 minutes share
the prediction time and belong to the history, so they never count.

Two estimators turn a prompt's K simulated futures into a prediction:
- `estimate_from_samples`: the outcome each future drew (0/1, a count, a duration), averaged;
- `probability_values` (binary and count tasks): along each future, the model's own probability that the
  next token is an outcome event, summed over the steps in (0, horizon] up to and including the first
  outcome (binary) or over all of them (count). That sum is the compensator of the future's outcome
  process, so its expectation is exactly the outcome's probability (expected count), like the 0/1 draw's,
  but it does not throw away the probabilities: it varies less from future to future.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from scaling.data.scheme import DAY, INTERVAL_TOKENS, interval_minutes
from scaling.data.vocab import Vocabulary
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


def shift_futures(futures: Futures, gap_minutes: np.ndarray, samples: int) -> Futures:
    """Futures timed from each history's last event, re-timed from the prediction time (row i * K + k belongs
    to prediction i): events in the gap get minutes <= 0, which no outcome counts."""
    if not np.any(gap_minutes):
        return futures
    shift = np.repeat(gap_minutes, samples)[futures.owner]
    return replace(futures, minutes=futures.minutes - shift)


def estimate_from_samples(task: Task, values: np.ndarray) -> np.ndarray:
    """(n, K) outcomes of K simulated futures per prediction -> (n,) estimates: the fraction of futures
    with the outcome (binary), the mean count (count), the median duration (duration; a future that
    did not reach the event within the simulated horizon counts as horizon_days)."""
    if task.kind == "duration":
        return np.median(np.where(np.isnan(values), task.horizon_days, values), axis=1)
    return values.mean(axis=1)


def outcome_token_mask(task: Task, vocab: Vocabulary, size: int | None = None) -> np.ndarray | None:
    """(size or vocab.size,) bool: the code tokens whose emission is an outcome event of `task`, or None when
    the task has no such set (a duration, or a code prefix longer than a code token, which the token alone
    does not decide). A code's first token (its head) starts every code it begins, so a head that starts
    with one of the task's prefixes is an outcome."""
    if task.kind == "duration":
        return None
    heads = [(i, t) for i, (t, kind) in enumerate(zip(vocab.tokens, vocab.kinds)) if kind == "code"]
    if any(p.startswith(t) and p != t for _, t in heads for p in task.codes):
        return None
    mask = np.zeros(size or vocab.size, bool)
    mask[[i for i, t in heads if t.startswith(task.codes)]] = True
    return mask


def event_minutes(tokens: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """(rows, T) sampled tokens -> (rows, T) the minutes after the prediction time an event starting at each
    step would carry, counted as decode_futures counts them: each interval token at its class's middle,
    and a run of 6-month tokens ending before an event at the middle of its last one."""
    middle = np.zeros(max(vocab.size, int(tokens.max(initial=0)) + 1))
    for name in INTERVAL_TOKENS:
        if name in vocab.index:
            middle[vocab.id(name)] = interval_minutes(name)
    is_time = middle > 0
    six_months = vocab.index.get(INTERVAL_TOKENS[-1], -1)
    half = interval_minutes(INTERVAL_TOKENS[-1]) / 2 if six_months >= 0 else 0.0
    before = np.zeros(tokens.shape, np.float64)  # minutes of the tokens before each step
    before[:, 1:] = np.cumsum(middle[tokens[:, :-1]], axis=1)
    # a 6-month run ends at step s when the token after it is not an interval token: +half from then on
    run_ends = (tokens == six_months) & ~np.c_[is_time[tokens[:, 1:]], np.zeros(len(tokens), bool)]
    ended = np.zeros(tokens.shape, np.float64)
    ended[:, 2:] = np.cumsum(run_ends[:, :-2], axis=1) * half  # runs that ended before step t - 1
    ended[:, 1:] += (tokens[:, :-1] == six_months) * half  # a run right before step t ends at t
    return before + ended


def probability_values(task: Task, tokens: np.ndarray, probs: np.ndarray, vocab: Vocabulary,
                       gap_minutes: np.ndarray | None = None) -> np.ndarray:
    """(rows,) each future's probability estimate of the task's outcome (see the module docstring).

    tokens (rows, T) sampled; probs (rows, T) the sampling distribution's mass on the task's outcome tokens
    at each step (outcome_token_mask), 0 after the future stopped; gap_minutes (rows,) the time from each
    row's last prompt event to its prediction time (steps before the prediction time do not count)."""
    minutes = event_minutes(tokens, vocab)
    if gap_minutes is not None:
        minutes = minutes - np.asarray(gap_minutes, float)[:, None]
    inside = (minutes > 0) & (minutes <= task.horizon_minutes)  # (rows, T)
    if task.kind == "binary":
        mask = outcome_token_mask(task, vocab, int(tokens.max(initial=0)) + 1)
        hit = inside & mask[tokens]
        first = np.where(hit.any(1), hit.argmax(1), tokens.shape[1])  # (rows,) the first outcome's step
        inside &= np.arange(tokens.shape[1])[None] <= first[:, None]
    return np.where(inside, probs, 0.0).sum(1)


def estimate_from_probabilities(task: Task, values: np.ndarray) -> np.ndarray:
    """(n, K) probability_values of K futures per prediction -> (n,) estimates: their mean, at most 1 for a
    binary task (one future's sum can pass 1; the probability it estimates cannot)."""
    mean = values.mean(axis=1)
    return np.minimum(mean, 1.0) if task.kind == "binary" else mean
