"""Token sequences -> events: the one decoder of the token grammar (the inverse of scaling.data.tokenizer).

A sequence is read as follows; [EOS] closes a patient and the tokens after it start the next one.
- A code or unknown token starts an event; its code is the token's text (the token itself for UNK//...).
- The code_suffix tokens after it add their text to its code, until its first value-bin token.
- Its first value-bin token gives its value bin; later value and suffix tokens are ignored.
- The time tokens since the event before it (in the same patient) are its interval tokens.
- Events before the patient's age token are static.
Tokens that fit none of these (a suffix or a value before any event, [PAD], ...) are ignored.

`decode_events` reads many sequences at once with whole-array operations (the synthetic generator's
replay decodes whole token stores with it); `detokenize` gives one sequence's events as objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scaling.data.scheme import AGE_TOKENS, INTERVAL_LOWER, INTERVAL_TOKENS
from scaling.data.vocab import EOS, Vocabulary, value_bin_of


@dataclass(frozen=True)
class TokenTable:
    """What the decoder does with each token id of a vocabulary (V,), as lookup arrays."""

    event: np.ndarray  # bool: starts an event (a code or an unknown token)
    suffix: np.ndarray  # bool: a code_suffix token
    value: np.ndarray  # bool: a value-bin token
    value_bin: np.ndarray  # the bin of a value token, -1 for other tokens
    time: np.ndarray  # bool: an interval token
    interval: np.ndarray  # the interval class of a time token, -1 for other tokens
    lower_minutes: np.ndarray  # float: the lower bound of a time token's class, 0 for other tokens
    eos: np.ndarray  # bool
    age: np.ndarray  # bool: an age token
    age_bucket: np.ndarray  # the bucket index of an age token, -1 for other tokens
    text: list[str]  # the code text an event or suffix token stands for

    @classmethod
    def of(cls, vocab: Vocabulary) -> TokenTable:
        kinds, tokens = np.array(vocab.kinds), np.array(vocab.tokens)
        is_time, is_value, is_age = kinds == "time", kinds == "value", kinds == "age"
        class_of = {name: k for k, name in enumerate(INTERVAL_TOKENS)}
        bucket_of = {name: k for k, name in enumerate(AGE_TOKENS)}
        interval = np.array([class_of[t] if k else -1 for t, k in zip(vocab.tokens, is_time)], np.int64)
        return cls(
            event=np.isin(kinds, ["code", "unknown"]) & (tokens != EOS),
            suffix=kinds == "code_suffix",
            value=is_value,
            value_bin=np.array([value_bin_of(t) if v else -1 for t, v in zip(vocab.tokens, is_value)], np.int64),
            time=is_time,
            interval=interval,
            lower_minutes=np.where(is_time, INTERVAL_LOWER[np.maximum(interval, 0)], 0.0),
            eos=tokens == EOS,
            age=is_age,
            age_bucket=np.array([bucket_of.get(t, -1) if a else -1 for t, a in zip(vocab.tokens, is_age)], np.int64),
            text=[t if k == "unknown" else x for t, k, x in zip(vocab.tokens, vocab.kinds, vocab.texts)],
        )


@dataclass
class DecodedEvents:
    """The events of many sequences (E,), in sequence and token order, and their interval tokens (T,)."""

    sequence: np.ndarray  # (E,) the sequence of each event
    patient: np.ndarray  # (E,) its patient in the sequence: the number of [EOS] before it
    code: np.ndarray  # (E,) index into `codes`
    codes: list[str]  # code strings (one per distinct token sequence of an event)
    value_bin: np.ndarray  # (E,) -1 for none
    static: np.ndarray  # (E,) bool: before its patient's age token
    minutes: np.ndarray  # (E,) since its patient's first token, each interval token at its lower bound
    time_event: np.ndarray  # (T,) the event each interval token comes before (sorted)
    time_interval: np.ndarray  # (T,) the interval class of each

    def intervals(self) -> tuple[np.ndarray, np.ndarray]:
        """(E,) the interval class of each event's first interval token (-1: none), and their number."""
        repeats = np.bincount(self.time_event, minlength=len(self.code))
        interval = -np.ones(len(self.code), np.int64)
        first = first_of_runs(self.time_event)
        interval[self.time_event[first]] = self.time_interval[first]
        return interval, repeats


def decode_events(tokens: np.ndarray, offsets: np.ndarray, vocab: Vocabulary, table: TokenTable | None = None
                  ) -> DecodedEvents:
    """The events of flat token sequences (N,) with offsets (P + 1,), as the module docstring reads them."""
    table = table or TokenTable.of(vocab)
    ids = np.asarray(tokens, np.int64)
    n = len(ids)
    lengths = np.diff(offsets)
    sequence = np.repeat(np.arange(len(lengths)), lengths)  # (N,)
    eos_before = np.r_[0, np.cumsum(table.eos[ids])]  # (N + 1,) [EOS] tokens before each position
    segment = eos_before[:-1] + sequence  # (N,) one number per patient of every sequence, non-decreasing
    is_event = table.event[ids]
    start = np.flatnonzero(is_event)  # (E,) position of each event's first token
    ev_segment = segment[start]
    # Each token belongs to the last event that starts at or before it, in the same patient.
    owner = np.cumsum(is_event) - 1  # (N,)
    owned = owner >= 0
    owned[owned] = ev_segment[owner[owned]] == segment[owned]

    value = np.flatnonzero(owned & table.value[ids])
    value = value[first_of_runs(owner[value])]  # each event's first value token
    value_pos = np.full(len(start), n)  # (E,) position of the event's value token, N for none
    value_pos[owner[value]] = value
    value_bin = -np.ones(len(start), np.int64)
    value_bin[owner[value]] = table.value_bin[ids[value]]

    suffix = np.flatnonzero(owned & table.suffix[ids])
    suffix = suffix[suffix < value_pos[owner[suffix]]]
    code, codes = _event_codes(ids[start], owner[suffix], ids[suffix], table)

    time = np.flatnonzero(table.time[ids])
    following = np.searchsorted(start, time)  # (T,) the event after each time token, E for none
    timed = following < len(start)
    timed[timed] = ev_segment[following[timed]] == segment[time[timed]]
    time, following = time[timed], following[timed]

    # Sums over each patient's tokens before an event: differences of running sums from the patient's
    # first token (interval bounds are whole minutes, so the float sums are exact).
    new_patient = np.zeros(n, bool)
    new_patient[offsets[:-1][lengths > 0]] = True
    new_patient[1:] |= table.eos[ids[:-1]]
    patient_start = np.maximum.accumulate(np.where(new_patient, np.arange(n), 0))[start] if n else start
    lower = np.r_[0.0, np.cumsum(table.lower_minutes[ids])]
    ages = np.r_[0, np.cumsum(table.age[ids])]
    return DecodedEvents(
        sequence=sequence[start],
        patient=eos_before[start] - eos_before[offsets[:-1]][sequence[start]],
        code=code, codes=codes, value_bin=value_bin,
        static=ages[start] == ages[patient_start],
        minutes=lower[start] - lower[patient_start],
        time_event=following, time_interval=table.interval[ids[time]],
    )


def _event_codes(heads: np.ndarray, suffix_event: np.ndarray, suffix_ids: np.ndarray, table: TokenTable
                 ) -> tuple[np.ndarray, list[str]]:
    """The code (E,), an index into a list of code strings, of events given their first tokens (E,) and their
    code_suffix tokens (the event of each, sorted, and its id). Strings are built once per distinct sequence."""
    rank = np.arange(len(suffix_event)) - np.searchsorted(suffix_event, suffix_event)  # (S,) place in its event
    width = int(rank.max()) + 1 if len(rank) else 0
    sequence = -np.ones((len(heads), 1 + width), np.int64)  # (E, 1 + width) token ids, -1 padded
    sequence[:, 0] = heads
    sequence[suffix_event, 1 + rank] = suffix_ids
    first, inverse = _distinct_rows(sequence, len(table.text) + 1)
    strings = ["".join(table.text[t] for t in row if t >= 0) for row in sequence[first].tolist()]
    return inverse, strings


def _distinct_rows(rows: np.ndarray, base: int) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(rows, axis=0) of an (n, k) array of integers in [-1, base - 1) as (index of each distinct row,
    inverse (n,)): the columns are folded into one int64 key per row, much faster to sort than rows."""
    key = np.zeros(len(rows), np.int64)
    for column in rows.T:
        if key.max(initial=0) >= np.iinfo(np.int64).max // base - 1:
            key = np.unique(key, return_inverse=True)[1].reshape(-1)  # renumber below n: no overflow
        key = key * base + column + 1
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)


def first_of_runs(keys: np.ndarray) -> np.ndarray:
    """(n,) bool: where a sorted key array starts a run of equal keys."""
    return np.r_[True, keys[1:] != keys[:-1]] if len(keys) else np.zeros(0, bool)


# ----------------------------------------------------------------------------------------------------
# One sequence as objects


@dataclass
class DecodedEvent:
    code: str
    static: bool  # before the age token
    minutes: float  # elapsed since the patient's first token, from the interval tokens' lower bounds
    time_tokens: tuple[str, ...] = ()
    value_bin: int | None = None
    numeric_value: float | None = None  # the bin's median train value


def detokenize(tokens: np.ndarray, vocab: Vocabulary, table: TokenTable | None = None) -> list[list[DecodedEvent]]:
    """Token ids -> events, one list per patient ([EOS] ends a patient; a trailing one may be open).
    Pass `table` (TokenTable.of(vocab)) when decoding many sequences of one vocabulary."""
    ids = np.asarray(tokens, np.int64)
    table = table or TokenTable.of(vocab)
    ev = decode_events(ids, np.array([0, len(ids)]), vocab, table)
    patients: list[list[DecodedEvent]] = [[] for _ in range(int(table.eos[ids].sum()) + 1)]
    time_bounds = np.searchsorted(ev.time_event, np.arange(len(ev.code) + 1))
    for e, (patient, code, bin_, static, minutes) in enumerate(zip(
            ev.patient.tolist(), ev.code.tolist(), ev.value_bin.tolist(), ev.static.tolist(), ev.minutes.tolist())):
        event = DecodedEvent(ev.codes[code], static, minutes,
                             tuple(INTERVAL_TOKENS[k] for k in ev.time_interval[time_bounds[e]:time_bounds[e + 1]]))
        if bin_ >= 0:
            event.value_bin = bin_
            centers = vocab.value_bin_centers.get(event.code)
            if centers and bin_ < len(centers):
                event.numeric_value = centers[bin_]
        patients[patient].append(event)
    if not patients[-1]:
        patients.pop()
    return patients
