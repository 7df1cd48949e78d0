"""`scaling data synth`: sample a synthetic cohort and write it as a MEDS dataset; score token stores.

The process (scaling.synth) draws tokens; this module turns them into MEDS events whose tokenization
gives those tokens back exactly: an interval class becomes a gap drawn uniformly inside the class,
a value bin a value drawn inside the bin (edges written to `metadata/codes.parquet`), the age bucket
a birth date inside the bucket. `metadata/synthetic_world.json` records how the cohort was made, so
the tokenizer can score the token store with the generator and state the exact entropy floor.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from scaling.errors import InputError
from scaling.meds_io import write_meds
from scaling.synth import LONG_GAP, ClinicalProcess, Timelines
from scaling.synth_world import SEX_CODES, World, make_world
from scaling.tokenizer import TIME_BOUNDS_MINUTES
from scaling.vocab import EOS, TIME_INTERVALS, Vocabulary

WORLD_FILE = "metadata/synthetic_world.json"
SPLIT_FRACTIONS = {"train": 0.8, "tuning": 0.1, "held_out": 0.1}
CHUNK = 5_000
US_PER_S = 1_000_000
EPOCH_START = int(datetime(2005, 1, 1).timestamp()) * US_PER_S
YEAR_US = int(365.25 * 86400 * US_PER_S)
PRESETS = {"test": 600, "demo": 60_000, "bench": 20_000}


def generate_cohort(out: Path, patients: int, seed: int, world_seed: int = 0, max_tokens: int = 256,
                    overwrite: bool = False, log=None) -> dict:
    """Sample `patients` timelines and write them as a MEDS dataset; return a summary."""
    if patients < 10:
        raise InputError(f"--patients {patients}; expected at least 10 (train, tuning and held_out need some)")
    if max_tokens < 64:
        raise InputError(f"--max-tokens {max_tokens}; expected at least 64")
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"{out}: already exists; pass --overwrite to replace it")
    started = time.perf_counter()
    world = make_world(world_seed)
    process = ClinicalProcess(world, max_tokens)
    tables = []
    for chunk, first in enumerate(range(0, patients, CHUNK)):
        n = min(CHUNK, patients - first)
        rng = np.random.default_rng([seed, chunk])
        timelines = process.run(n, rng)
        tables.append(timelines_to_events(timelines, world, np.arange(first, first + n) + 1, rng))
        if log:
            log(f"sampled {first + n:,}/{patients:,} patients")
    events = pa.concat_tables(tables)
    subject_ids = np.arange(1, patients + 1)
    split_rng = np.random.default_rng([seed, 7])
    u = split_rng.random(patients)
    names = np.where(u < SPLIT_FRACTIONS["train"], "train",
                     np.where(u < SPLIT_FRACTIONS["train"] + SPLIT_FRACTIONS["tuning"], "tuning", "held_out"))
    splits = pa.table({"subject_id": pa.array(subject_ids, pa.int64()), "split": names.tolist()})
    settings = {"world_seed": world_seed, "seed": seed, "patients": patients, "max_tokens": max_tokens}
    write_meds(out, events, splits, code_metadata(world),
               {"dataset_name": "scaling-synth", "dataset_version": "1", "etl_name": "scaling data synth",
                "meds_version": "0.4"}, overwrite=overwrite)
    (out / WORLD_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    seconds = time.perf_counter() - started
    return {"out": str(out), "patients": patients, "events": events.num_rows, "seconds": round(seconds, 3),
            "events_per_s": round(events.num_rows / seconds), **settings}


def code_metadata(world: World) -> pa.Table:
    edges = [None] * len(world.codes)
    for lab, lab_edges in zip(world.lab_code, world.lab_edges):
        edges[lab] = list(lab_edges)
    codes = list(world.codes) + list(SEX_CODES) + ["MEDS_BIRTH"]
    descriptions = list(world.descriptions) + ["female", "male", "birth"]
    return pa.table({
        "code": codes,
        "description": descriptions,
        "parent_codes": pa.array([None] * len(codes), pa.list_(pa.string())),
        "value_bin_edges": pa.array(edges + [None] * 3, pa.list_(pa.float64())),
    })


def timelines_to_events(tl: Timelines, world: World, subject_ids: np.ndarray, rng: np.random.Generator) -> pa.Table:
    """Sampled timelines -> MEDS rows (static sex, birth, events), sorted by subject and time."""
    n, steps = tl.code.shape
    has = tl.code >= 0  # (n, S)
    # Gaps in seconds, uniform inside the interval class (integer seconds keep the class exact).
    lower = np.r_[TIME_BOUNDS_MINUTES, 2 * TIME_BOUNDS_MINUTES[-1]] * 60
    gap = tl.gap.astype(np.int64)
    u = rng.random((n, steps))
    lo = np.where(gap == LONG_GAP, tl.repeats * lower[-2], lower[np.maximum(gap, 0)])
    width = np.where(gap == LONG_GAP, lower[-2], lower[np.maximum(gap, 0) + 1] - lower[np.maximum(gap, 0)])
    seconds = np.where(gap >= 0, lo + np.floor(u * (width - 1)), 0).astype(np.int64)
    first = EPOCH_START + (rng.random(n) * 10 * YEAR_US).astype(np.int64)
    times = first[:, None] + np.cumsum(seconds * US_PER_S, axis=1)  # (n, S) us
    birth = first - ((tl.age_bucket * 5 + 0.02 + rng.random(n) * 4.96) * YEAR_US).astype(np.int64)
    # Lab values uniform inside their bin, away from the edges.
    values = np.full((n, steps), np.nan, np.float32)
    lab_of_code = -np.ones(len(world.codes), np.int64)
    lab_of_code[world.lab_code] = np.arange(len(world.lab_code))
    labs = np.where(has, lab_of_code[np.maximum(tl.code, 0)], -1)
    for j, (edges, (low, high)) in enumerate(zip(world.lab_edges, world.lab_limits)):
        bounds = np.r_[low, edges, high]
        mask = labs == j
        b = tl.value_bin[mask].astype(np.int64)
        values[mask] = bounds[b] + (0.001 + 0.998 * rng.random(mask.sum())) * (bounds[b + 1] - bounds[b])
    codes = np.array(list(world.codes) + list(SEX_CODES) + ["MEDS_BIRTH"], dtype=object)
    sex_code, birth_code = len(world.codes) + tl.sex, len(world.codes) + 2
    # Rows per patient: sex (static), birth, then the events in order.
    row_code = np.concatenate([sex_code[:, None], np.full((n, 1), birth_code), np.where(has, tl.code, -1)], 1)
    row_time = np.concatenate([np.zeros((n, 1), np.int64), birth[:, None], times], 1)
    row_value = np.concatenate([np.full((n, 2), np.nan, np.float32), values], 1)
    keep = row_code >= 0
    subject = np.broadcast_to(subject_ids[:, None], row_code.shape)[keep]
    time_col = pa.array(row_time[keep], pa.int64()).cast(pa.timestamp("us"))
    static = np.zeros(row_code.shape, bool)
    static[:, 0] = True
    time_col = pa.compute.if_else(pa.array(static[keep]), pa.scalar(None, pa.timestamp("us")), time_col)
    value = row_value[keep]
    return pa.table({
        "subject_id": pa.array(subject, pa.int64()),
        "time": time_col,
        "code": pa.array(codes[row_code[keep]].tolist(), pa.string()),
        "numeric_value": pa.array(value, pa.float32(), mask=np.isnan(value)),
    })


# ----------------------------------------------------------------------------------------------------
# Scoring token sequences with the generator


def timelines_from_tokens(patients: list[np.ndarray], vocab: Vocabulary, world: World, max_tokens: int
                          ) -> tuple[Timelines, np.ndarray]:
    """Token sequences (each a whole timeline from its first token) -> forced timelines, and a mask of
    the patients the generator can score (no unknown token, no code outside the world)."""
    offsets = np.r_[0, np.cumsum([len(p) for p in patients], dtype=np.int64)]
    tokens = np.concatenate(patients) if patients else np.zeros(0, np.int64)
    return decode_timelines(tokens, offsets, vocab, world, max_tokens)


def decode_timelines(tokens: np.ndarray, offsets: np.ndarray, vocab: Vocabulary, world: World, max_tokens: int
                     ) -> tuple[Timelines, np.ndarray]:
    """`timelines_from_tokens` on flat token sequences (N,) with patient offsets (P + 1,), as whole-array
    operations. A patient can be scored when its sequence has at least 3 tokens, the second an age token,
    at most one [EOS] and no event after it, its first event (see `_decode_events`) is a sex code, and the
    events after that are at most `max_tokens`, all with codes of the world. As the loop over detokenize
    this replaces did, the events after the sex code are written up to the first that fails."""
    n = len(offsets) - 1
    table = _TokenTable.build(vocab, world)
    ids = np.asarray(tokens, np.int64)
    lengths = np.diff(offsets)
    patient = np.repeat(np.arange(n), lengths)  # (N,)
    eos_seen = np.r_[0, np.cumsum(table.eos[ids])]  # (N + 1,) [EOS] tokens before each position
    before_eos = eos_seen[:-1] == eos_seen[offsets[:-1]][patient]  # (N,) before the patient's first [EOS]
    ev = _decode_events(ids, patient, before_eos, table)
    n_events = np.bincount(ev.patient, minlength=n)
    ev_rank = np.arange(len(ev.patient)) - (np.cumsum(n_events) - n_events)[ev.patient]  # (E,)

    # detokenize gives exactly one patient: one [EOS] at most, and no event after it.
    n_eos = eos_seen[offsets[1:]] - eos_seen[offsets[:-1]]
    events_after_eos = np.bincount(patient[table.event[ids] & ~before_eos], minlength=n)
    one_patient = (n_events > 0) & ((n_eos == 0) | ((n_eos == 1) & (events_after_eos == 0)))
    age = np.full(n, -1)
    long_enough = lengths >= 3
    age[long_enough] = table.age_bucket[ids[offsets[:-1][long_enough] + 1]]
    sex = np.full(n, -1)
    sex[ev.patient[ev_rank == 0]] = ev.sex[ev_rank == 0]
    header = long_enough & one_patient & (age >= 0) & (sex >= 0)  # (P,)

    step = ev_rank - 1  # (E,) the column of each event after the sex code
    bad = np.flatnonzero((step >= 0) & ((ev.code < 0) | (step >= max_tokens)))
    limit = np.full(n, max_tokens)  # (P,) the events written: steps below the first bad one
    bad_patients, first_bad = np.unique(ev.patient[bad], return_index=True)
    limit[bad_patients] = step[bad[first_bad]]
    ok = header.copy()
    ok[bad_patients] = False

    tl = Timelines(sex=np.zeros(n, np.int64), age_bucket=np.zeros(n, np.int64),
                   gap=-np.ones((n, max_tokens), np.int8), repeats=np.zeros((n, max_tokens), np.int8),
                   code=-np.ones((n, max_tokens), np.int32), value_bin=-np.ones((n, max_tokens), np.int8),
                   token_nll=np.empty(0), n_tokens=np.zeros(n, np.int64))
    tl.sex[header], tl.age_bucket[header] = sex[header], age[header]
    write = header[ev.patient] & (step >= 0) & (step < limit[ev.patient])  # (E,)
    rows, cols = ev.patient[write], step[write]
    tl.code[rows, cols] = ev.code[write]
    tl.value_bin[rows, cols] = ev.value_bin[write]
    timed = write & (ev.repeats > 0)
    tl.gap[ev.patient[timed], step[timed]] = ev.gap[timed]
    tl.repeats[ev.patient[timed], step[timed]] = ev.repeats[timed]
    return tl, ok


@dataclass
class _TokenTable:
    """What `detokenize` does with each token id of a vocabulary (V,), as lookup arrays."""

    event: np.ndarray  # bool: starts an event (a code or an unknown token)
    suffix: np.ndarray  # bool: a code_suffix token, appended to the code of the event before it
    value: np.ndarray  # bool: a value-bin token
    value_bin: np.ndarray  # the bin of a value token
    time: np.ndarray  # bool: an interval token
    time_class: np.ndarray  # the interval class of a time token
    eos: np.ndarray  # bool
    age_bucket: np.ndarray  # the 5-year bucket of an AGE// token, -1 for other tokens
    text: list[str]  # the code text an event or suffix token stands for
    world_code: dict[str, int]  # code string -> world code id

    @classmethod
    def build(cls, vocab: Vocabulary, world: World) -> _TokenTable:
        kinds = np.array(vocab.kinds)
        time_class = {name: k for k, (name, _) in enumerate(TIME_INTERVALS)}
        is_time = kinds == "time"
        is_value = kinds == "value"
        return cls(
            event=np.isin(kinds, ["code", "unknown"]) & (np.array(vocab.tokens) != EOS),
            suffix=kinds == "code_suffix",
            value=is_value,
            value_bin=np.array([int(t.rsplit("Q", 1)[1]) - 1 if v else -1 for t, v in zip(vocab.tokens, is_value)]),
            time=is_time,
            time_class=np.array([time_class[t] if k else -1 for t, k in zip(vocab.tokens, is_time)]),
            eos=np.array(vocab.tokens) == EOS,
            age_bucket=np.array([_age_bucket(t) for t in vocab.tokens]),
            text=[t if k == "unknown" else x for t, k, x in zip(vocab.tokens, vocab.kinds, vocab.texts)],
            world_code={c: i for i, c in enumerate(world.codes)},
        )


def _age_bucket(token: str) -> int:
    if not token.startswith("AGE//"):
        return -1
    try:
        return int(token.split("//")[1].split("-")[0].rstrip("+")) // 5
    except ValueError:
        return -1


@dataclass
class _Events:
    """The decoded events of every patient (E,), in patient and token order."""

    patient: np.ndarray
    code: np.ndarray  # world code id, -1 for a code outside the world
    sex: np.ndarray  # index in SEX_CODES, -1 for other codes
    value_bin: np.ndarray  # -1 for none
    gap: np.ndarray  # interval class of the event's first time token, -1 for none
    repeats: np.ndarray  # number of time tokens before the event


def _decode_events(ids: np.ndarray, patient: np.ndarray, before_eos: np.ndarray, table: _TokenTable) -> _Events:
    """The events before each patient's first [EOS], as `detokenize` builds them: a code or unknown token
    starts one; the code_suffix tokens after it are appended to its code until its first value token,
    which gives its value bin (later value and suffix tokens are ignored); the time tokens since the
    event before it are its interval."""
    n_tokens = len(ids)
    is_event = table.event[ids] & before_eos  # (N,)
    start = np.flatnonzero(is_event)  # (E,) position of each event's first token
    ev_patient = patient[start]
    # Each token belongs to the last event that starts at or before it, in the same patient.
    owner = np.cumsum(is_event) - 1  # (N,)
    owned = before_eos & (owner >= 0)
    owned[owned] = ev_patient[owner[owned]] == patient[owned]

    value = np.flatnonzero(owned & table.value[ids])
    value = value[_first_of_runs(owner[value])]  # each event's first value token
    value_pos = np.full(len(start), n_tokens)  # (E,) position of the event's value token, N for none
    value_pos[owner[value]] = value
    value_bin = -np.ones(len(start), np.int64)
    value_bin[owner[value]] = table.value_bin[ids[value]]

    suffix = np.flatnonzero(owned & table.suffix[ids])
    suffix = suffix[suffix < value_pos[owner[suffix]]]
    code, sex = _event_codes(ids[start], owner[suffix], ids[suffix], table)

    time = np.flatnonzero(before_eos & table.time[ids])
    following = np.searchsorted(start, time)  # (T,) the event after each time token, E for none
    timed = following < len(start)
    timed[timed] = ev_patient[following[timed]] == patient[time[timed]]
    time, following = time[timed], following[timed]
    repeats = np.bincount(following, minlength=len(start))
    gap = -np.ones(len(start), np.int64)
    first_time = _first_of_runs(following)
    gap[following[first_time]] = table.time_class[ids[time[first_time]]]
    return _Events(ev_patient, code, sex, value_bin, gap, repeats)


def _event_codes(heads: np.ndarray, suffix_event: np.ndarray, suffix_ids: np.ndarray, table: _TokenTable
                 ) -> tuple[np.ndarray, np.ndarray]:
    """World code id and sex index (E,) of events given their first tokens (E,) and their code_suffix tokens
    (the event of each, sorted, and its id). Code strings are built once per distinct token sequence."""
    rank = np.arange(len(suffix_event)) - np.searchsorted(suffix_event, suffix_event)  # (S,) place in its event
    width = int(rank.max()) + 1 if len(rank) else 0
    sequence = -np.ones((len(heads), 1 + width), np.int64)  # (E, 1 + width) token ids, -1 padded
    sequence[:, 0] = heads
    sequence[suffix_event, 1 + rank] = suffix_ids
    first, inverse = _distinct_rows(sequence, len(table.text) + 1)
    strings = ["".join(table.text[t] for t in row if t >= 0) for row in sequence[first].tolist()]
    code = np.array([table.world_code.get(s, -1) for s in strings], np.int64)
    sex = np.array([SEX_CODES.index(s) if s in SEX_CODES else -1 for s in strings], np.int64)
    return code[inverse], sex[inverse]


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


def _first_of_runs(keys: np.ndarray) -> np.ndarray:
    """(n,) bool: where a sorted key array starts a run of equal keys."""
    return np.r_[True, keys[1:] != keys[:-1]] if len(keys) else np.zeros(0, bool)


def score_token_split(tokens: np.ndarray, offsets: np.ndarray, vocab: Vocabulary, world_settings: dict
                      ) -> dict:
    """-log p of every token of a split under the generator, summed the ways the floor is stated."""
    world = make_world(world_settings["world_seed"])
    max_tokens = world_settings["max_tokens"]
    process = ClinicalProcess(world, max_tokens)
    tl, ok = decode_timelines(tokens, offsets, vocab, world, max_tokens)
    scored = np.flatnonzero(ok)
    sub = Timelines(tl.sex[scored], tl.age_bucket[scored], tl.gap[scored], tl.repeats[scored], tl.code[scored],
                    tl.value_bin[scored], np.empty(0), np.zeros(len(scored), np.int64))
    result = process.run(len(scored), np.random.default_rng(0), forced=sub)
    lengths = np.diff(offsets)[scored]
    if not np.array_equal(result.n_tokens, lengths):
        bad = int(np.flatnonzero(result.n_tokens != lengths)[0])
        raise RuntimeError(f"generator replay of patient {scored[bad]} gave {result.n_tokens[bad]} tokens, "
                           f"the store has {lengths[bad]}")
    nll = result.token_nll
    inside = np.arange(nll.shape[1])[None] < lengths[:, None]
    total = float(np.nansum(np.where(inside, nll, 0.0)))
    first = float(nll[:, 0].sum()) if len(scored) else 0.0
    return {
        "patients": len(offsets) - 1,
        "patients_scored": int(len(scored)),
        "tokens_scored": int(lengths.sum()),
        "nats_per_token_all": total / max(lengths.sum(), 1),
        "nats_per_token_after_first": (total - first) / max(lengths.sum() - len(scored), 1),
        "per_patient_nll": np.where(inside, nll, 0.0).sum(1),
    }
