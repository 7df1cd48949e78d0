"""Prediction times, histories and labels from a MEDS dataset (the real futures of its patients).

    cohort = Cohort.from_dataset(read_meds("runs/cohort"))
    times = prediction_times(cohort, task.prediction, split="held_out", limit=200)
    history = history_events(cohort, times)          # what the model and the baselines may see
    prompts = history_prompts(cohort, times, vocab)  # the same, as tokens
    keep, labels = task_labels(cohort, task, times)  # what happened after

A prediction time t is the time of an event, and the history is every row of the patient up to and
including the last row at time t (static rows too); nothing later ever enters `history_events`. The
label comes from the rows after it (`real_futures`), through the same outcome code that scores
simulated futures (scaling.evaluate.outcomes).

Each patient gets at most one prediction time per rule. Its candidate times (event times with enough
history, before any death; for `at_code` only times of matching codes) are walked in time order and
each is taken with the rule's probability; the first taken is the prediction time. That makes the
choice a stopping time: whether t is chosen depends on nothing after t. (Picking uniformly among all of
a patient's candidates would not be: a patient with fewer events after t would be likelier to be
picked at t, which biases every label towards short, eventful futures.) The coin flips are hashes of
(rule seed, rule name, subject_id, time), so the choice does not depend on which other patients or
splits are read.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from scaling.common.errors import InputError
from scaling.data.codes import BIRTH_CODE, DEATH_CODE
from scaling.data.meds_io import MedsDataset
from scaling.data.scheme import US_PER_DAY, US_PER_MINUTE, US_PER_YEAR
from scaling.data.tokenizer import CodeTable, EventArrays, encode
from scaling.data.vocab import Vocabulary
from scaling.evaluate.label_file import labels_for, read_label_file
from scaling.evaluate.outcomes import Futures, code_matches, outcome_values
from scaling.evaluate.tasks import PredictionRule, Task

NO_TIME = np.iinfo(np.int64).max


@dataclass
class Cohort:
    """A MEDS dataset's events as sorted arrays, with each subject's row range and split."""

    events: EventArrays
    subject_ids: np.ndarray  # (S,) int64, in the events' order
    starts: np.ndarray  # (S,) first row of each subject
    ends: np.ndarray  # (S,) one past the last row
    splits: np.ndarray  # (S,) split name of each subject
    birth_us: np.ndarray  # (S,) time of MEDS_BIRTH, NO_TIME when none
    death_us: np.ndarray  # (S,) first MEDS_DEATH time, NO_TIME when none
    first_us: np.ndarray  # (S,) first timed event that is not the birth, NO_TIME when none
    group_end: np.ndarray  # (n,) per row: one past the last row of the same subject and time

    @classmethod
    def from_dataset(cls, dataset: MedsDataset) -> Cohort:
        ev = EventArrays.from_table(dataset.events)
        n = len(ev.subject)
        starts = np.flatnonzero(np.r_[True, ev.subject[1:] != ev.subject[:-1]]) if n else np.zeros(0, np.int64)
        ends = np.r_[starts[1:], n].astype(np.int64)
        subject_ids = ev.subject[starts]
        splits = dataset.split_of(subject_ids)
        row_subject = np.repeat(np.arange(len(starts)), ends - starts)
        is_birth = code_matches(ev.codes, (BIRTH_CODE,))[ev.code_index] if ev.codes else np.zeros(n, bool)
        is_death = np.array([c == DEATH_CODE for c in ev.codes], bool)[ev.code_index] if n else np.zeros(0, bool)
        birth_us = _first_time(row_subject, ev.time_us, is_birth & ~ev.static, len(starts))
        death_us = _first_time(row_subject, ev.time_us, is_death & ~ev.static, len(starts))
        first_us = _first_time(row_subject, ev.time_us, ~is_birth & ~ev.static, len(starts))
        # Rows of one subject at one time form a group; static rows are groups of their own.
        new_group = np.r_[True, (ev.subject[1:] != ev.subject[:-1]) | (ev.time_us[1:] != ev.time_us[:-1])
                          | ev.static[1:] | ev.static[:-1]] if n else np.zeros(0, bool)
        group_starts = np.flatnonzero(new_group)
        group_end = np.r_[group_starts[1:], n][np.cumsum(new_group) - 1] if n else np.zeros(0, np.int64)
        return cls(ev, subject_ids, starts.astype(np.int64), ends, splits, birth_us, death_us, first_us,
                   group_end.astype(np.int64))

    @property
    def row_subject(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.starts)), self.ends - self.starts)

    def code_rows(self, prefixes: tuple[str, ...]) -> np.ndarray:
        """(n,) bool: rows whose code starts with one of the prefixes."""
        return code_matches(self.events.codes, prefixes)[self.events.code_index]


def _first_time(row_subject: np.ndarray, time_us: np.ndarray, rows: np.ndarray, n_subjects: int) -> np.ndarray:
    out = np.full(n_subjects, NO_TIME, np.int64)
    np.minimum.at(out, row_subject[rows], time_us[rows])
    return out


@dataclass
class PredictionTimes:
    rule: PredictionRule
    subject: np.ndarray  # (n,) index into the cohort's subjects
    time_us: np.ndarray  # (n,) the prediction time
    history_end: np.ndarray  # (n,) one past the last history row: the history is rows [start, history_end)
    label_row: np.ndarray | None = None  # (n,) rule "labels": each prediction's row of the label file

    def __len__(self) -> int:
        return len(self.subject)

    def take(self, rows: np.ndarray) -> PredictionTimes:
        return PredictionTimes(self.rule, self.subject[rows], self.time_us[rows], self.history_end[rows],
                               None if self.label_row is None else self.label_row[rows])


def prediction_times(cohort: Cohort, rule: PredictionRule, split: str | None = None,
                     limit: int | None = None) -> PredictionTimes:
    """One prediction time per eligible patient of `split` (all splits when None), at most `limit`
    patients (a hashed, seed-stable subset), in the cohort's subject order. Rule "labels": the label file's
    rows of the split instead (label_file_times)."""
    if rule.rule == "labels":
        return label_file_times(cohort, rule, split, limit)
    ev = cohort.events
    row_subject = cohort.row_subject
    timed = ~ev.static & ~cohort.code_rows((BIRTH_CODE,))
    candidate = timed & cohort.code_rows(rule.codes) if rule.rule == "at_code" else timed
    rows = np.flatnonzero(candidate)
    # One candidate per (subject, time): the group's last row ends the history.
    rows = rows[np.r_[True, cohort.group_end[rows[1:]] != cohort.group_end[rows[:-1]]]] if len(rows) else rows
    subject, t = row_subject[rows], ev.time_us[rows]
    ok = (t - cohort.first_us[subject] >= rule.min_history_days * US_PER_DAY) & (t < cohort.death_us[subject])
    if split is not None:
        ok &= cohort.splits[subject] == split
    rows, subject = rows[ok], subject[ok]
    if not len(rows):
        return PredictionTimes(rule, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    # Walk each patient's candidates in time order and take each with probability p: the first one
    # taken is the prediction time. Whether a time is taken depends on nothing after it.
    salt = zlib.crc32(rule.name.encode())
    taken = hash_uniform(rule.seed, salt, cohort.subject_ids[subject], ev.time_us[rows]) < rule.probability
    rows, subject = rows[taken], subject[taken]
    firsts = np.flatnonzero(np.r_[True, subject[1:] != subject[:-1]]) if len(rows) else np.zeros(0, np.int64)
    picks, chosen_subject = rows[firsts], subject[firsts]
    if limit is not None and len(picks) > limit:
        order = np.argsort(hash_uniform(rule.seed, salt + 1, cohort.subject_ids[chosen_subject]), kind="stable")
        keep = np.sort(order[:limit])
        picks, chosen_subject = picks[keep], chosen_subject[keep]
    return PredictionTimes(rule, chosen_subject, ev.time_us[picks], cohort.group_end[picks])


def label_file_times(cohort: Cohort, rule: PredictionRule, split: str | None = None,
                     limit: int | None = None) -> PredictionTimes:
    """The prediction times of a label file (every row of the split's subjects; at most `limit`, a hashed
    subset), with each history ending at the last row at or before its time."""
    rows = read_label_file(rule.labels)
    index = np.searchsorted(cohort.subject_ids, rows.subject_id)
    index = np.minimum(index, max(len(cohort.subject_ids) - 1, 0))
    known = (cohort.subject_ids[index] == rows.subject_id) if len(cohort.subject_ids) else np.zeros(0, bool)
    if not known.all():
        unknown = rows.subject_id[~known]
        raise InputError(f"{rule.labels}: {len(unknown)} label rows name subjects the MEDS dataset does not have "
                         f"(subject_id {unknown[0]}, ...); expected labels extracted from this dataset")
    keep = np.ones(len(index), bool) if split is None else cohort.splits[index] == split
    picks = np.flatnonzero(keep)
    if limit is not None and len(picks) > limit:
        salt = zlib.crc32(rule.name.encode())
        order = np.argsort(hash_uniform(salt, rows.subject_id[picks], rows.time_us[picks]), kind="stable")
        picks = np.sort(picks[order[:limit]])
    subject, time_us = index[picks], rows.time_us[picks]
    ev = cohort.events
    history_end = np.empty(len(picks), np.int64)
    for i, (s, t) in enumerate(zip(subject, time_us)):
        first_timed = cohort.starts[s] + int(ev.static[cohort.starts[s]:cohort.ends[s]].sum())  # statics come first
        history_end[i] = first_timed + np.searchsorted(ev.time_us[first_timed:cohort.ends[s]], t, side="right")
    return PredictionTimes(rule, subject.astype(np.int64), time_us.astype(np.int64), history_end, picks)


def prediction_gap_minutes(cohort: Cohort, times: PredictionTimes) -> np.ndarray:
    """(n,) minutes from each history's last timed event to its prediction time: 0 where the prediction time
    is an event time (every rule but "labels"), more where a label file predicts between events (ACES's
    `trigger + 24h`). Simulated futures start at the last event, so their minutes are shifted by this
    (outcomes.shift_futures)."""
    last = times.history_end - 1
    timed = (times.history_end > cohort.starts[times.subject]) & ~cohort.events.static[np.maximum(last, 0)]
    gap = np.where(timed, (times.time_us - cohort.events.time_us[np.maximum(last, 0)]) / US_PER_MINUTE, 0.0)
    return np.maximum(gap, 0.0)


def hash_uniform(*keys: int | np.ndarray) -> np.ndarray:
    """Uniform numbers in [0, 1) from integer keys (scalars or arrays, broadcast), by splitmix64:
    stable, and free of the order or number of the rows."""
    x = np.zeros(np.broadcast_shapes(*(np.shape(k) for k in keys)), np.uint64)
    with np.errstate(over="ignore"):
        for key in keys:
            x = x ^ np.asarray(key, np.int64).astype(np.uint64)
            x = x + np.uint64(0x9E3779B97F4A7C15)
            x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _ranges(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the ranges [starts[i], ends[i]) one after another, and the range each belongs to."""
    lengths = np.maximum(ends - starts, 0)
    owner = np.repeat(np.arange(len(starts)), lengths)
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts, lengths) + np.arange(int(lengths.sum())) - np.repeat(offsets, lengths), owner


def history_rows(cohort: Cohort, times: PredictionTimes) -> tuple[np.ndarray, np.ndarray]:
    """The cohort rows of every history, and the prediction each belongs to."""
    return _ranges(cohort.starts[times.subject], times.history_end)


def history_events(cohort: Cohort, times: PredictionTimes) -> EventArrays:
    """The histories as one EventArrays whose `subject` is the prediction index (0 .. n-1), sorted, so
    `scaling.data.tokenizer.encode` makes one sequence per prediction."""
    rows, owner = history_rows(cohort, times)
    ev = cohort.events
    return EventArrays(owner.astype(np.int64), ev.time_us[rows], ev.static[rows], ev.code_index[rows],
                       ev.value[rows], ev.codes)


def history_prompts(cohort: Cohort, times: PredictionTimes, vocab: Vocabulary) -> list[np.ndarray]:
    """One prompt per prediction: the tokens of its history, without the closing [EOS]; a prefix of the
    patient's sequence in a token store of this vocabulary."""
    history = history_events(cohort, times)
    tokens, offsets, owners = encode(history, vocab, CodeTable.build(history.codes, vocab))
    if len(owners) != len(times):
        raise RuntimeError(f"{len(times)} histories gave {len(owners)} token sequences")
    return [tokens[a : b - 1] for a, b in zip(offsets[:-1], offsets[1:])]


def real_futures(cohort: Cohort, times: PredictionTimes) -> Futures:
    """Every row after each history, with its minutes after the prediction time."""
    rows, owner = _ranges(times.history_end, cohort.ends[times.subject])
    ev = cohort.events
    minutes = (ev.time_us[rows] - times.time_us[owner]) / US_PER_MINUTE
    return Futures(owner, minutes, ev.code_index[rows].astype(np.int64), ev.codes, len(times))


def has_prior(cohort: Cohort, times: PredictionTimes, prefixes: tuple[str, ...]) -> np.ndarray:
    """(n,) bool: the history holds a row whose code starts with one of the prefixes."""
    cumulative = np.r_[0, np.cumsum(cohort.code_rows(prefixes))]
    return cumulative[times.history_end] > cumulative[cohort.starts[times.subject]]


def task_labels(cohort: Cohort, task: Task, times: PredictionTimes) -> tuple[np.ndarray, np.ndarray]:
    """(keep (n,) bool, labels (n,) float): predictions the task scores (not prevalent, an end event
    for durations) and the outcome of each in its real future."""
    if times.label_row is not None:  # the label file's own labels
        labels = labels_for(read_label_file(task.prediction.labels), task.kind, task.prediction.labels)[
            times.label_row]
    else:
        labels = outcome_values(task, real_futures(cohort, times))
    keep = ~np.isnan(labels)
    if task.exclude_prevalent:
        keep &= ~has_prior(cohort, times, task.codes)
    return keep, labels


def age_years(cohort: Cohort, times: PredictionTimes) -> np.ndarray:
    """(n,) age at the prediction time, NaN without a birth row."""
    birth = cohort.birth_us[times.subject]
    return np.where(birth == NO_TIME, np.nan, (times.time_us - birth) / US_PER_YEAR)
