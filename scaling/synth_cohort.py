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
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from scaling.errors import InputError
from scaling.meds_io import write_meds
from scaling.synth import LONG_GAP, ClinicalProcess, Timelines
from scaling.synth_world import SEX_CODES, World, make_world
from scaling.tokenizer import TIME_BOUNDS_MINUTES, detokenize
from scaling.vocab import TIME_INTERVALS, Vocabulary

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
    n = len(patients)
    code_index = {c: i for i, c in enumerate(world.codes)}
    time_class = {name: k for k, (name, _) in enumerate(TIME_INTERVALS)}
    tl = Timelines(sex=np.zeros(n, np.int64), age_bucket=np.zeros(n, np.int64),
                   gap=-np.ones((n, max_tokens), np.int8), repeats=np.zeros((n, max_tokens), np.int8),
                   code=-np.ones((n, max_tokens), np.int32), value_bin=-np.ones((n, max_tokens), np.int8),
                   token_nll=np.empty(0), n_tokens=np.zeros(n, np.int64))
    ok = np.ones(n, bool)
    for i, tokens in enumerate(patients):
        decoded = detokenize(tokens, vocab)
        if len(tokens) < 3 or len(decoded) != 1 or not vocab.tokens[tokens[1]].startswith("AGE//"):
            ok[i] = False
            continue
        events = decoded[0]
        if events[0].code not in SEX_CODES:
            ok[i] = False
            continue
        tl.sex[i] = SEX_CODES.index(events[0].code)
        tl.age_bucket[i] = int(vocab.tokens[tokens[1]].split("//")[1].split("-")[0].rstrip("+")) // 5
        for s, event in enumerate(events[1:]):
            if event.code not in code_index or s >= max_tokens:
                ok[i] = False
                break
            tl.code[i, s] = code_index[event.code]
            tl.value_bin[i, s] = -1 if event.value_bin is None else event.value_bin
            if event.time_tokens:
                tl.gap[i, s] = time_class[event.time_tokens[0]]
                tl.repeats[i, s] = len(event.time_tokens)
    return tl, ok


def score_token_split(tokens: np.ndarray, offsets: np.ndarray, vocab: Vocabulary, world_settings: dict
                      ) -> dict:
    """-log p of every token of a split under the generator, summed the ways the floor is stated."""
    world = make_world(world_settings["world_seed"])
    max_tokens = world_settings["max_tokens"]
    process = ClinicalProcess(world, max_tokens)
    patients = [np.asarray(tokens[a:b]) for a, b in zip(offsets[:-1], offsets[1:])]
    tl, ok = timelines_from_tokens(patients, vocab, world, max_tokens)
    scored = np.flatnonzero(ok)
    sub = Timelines(tl.sex[scored], tl.age_bucket[scored], tl.gap[scored], tl.repeats[scored], tl.code[scored],
                    tl.value_bin[scored], np.empty(0), np.zeros(len(scored), np.int64))
    result = process.run(len(scored), np.random.default_rng(0), forced=sub)
    lengths = np.array([len(patients[i]) for i in scored])
    if not np.array_equal(result.n_tokens, lengths):
        bad = int(np.flatnonzero(result.n_tokens != lengths)[0])
        raise RuntimeError(f"generator replay of patient {scored[bad]} gave {result.n_tokens[bad]} tokens, "
                           f"the store has {lengths[bad]}")
    nll = result.token_nll
    inside = np.arange(nll.shape[1])[None] < lengths[:, None]
    total = float(np.nansum(np.where(inside, nll, 0.0)))
    first = float(nll[:, 0].sum()) if len(scored) else 0.0
    return {
        "patients": len(patients),
        "patients_scored": int(len(scored)),
        "tokens_scored": int(lengths.sum()),
        "nats_per_token_all": total / max(lengths.sum(), 1),
        "nats_per_token_after_first": (total - first) / max(lengths.sum() - len(scored), 1),
        "per_patient_nll": np.where(inside, nll, 0.0).sum(1),
    }
