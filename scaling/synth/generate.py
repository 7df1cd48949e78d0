"""`scaling data synth`: sample a synthetic cohort and write it as a MEDS dataset.

The process (scaling.synth.process) draws tokens; this module turns them into MEDS events whose tokenization
gives those tokens back exactly: an interval class becomes a gap drawn uniformly inside the class,
a value bin a value drawn inside the bin (edges written to `metadata/codes.parquet`), the age bucket
a birth date inside the bucket. `metadata/synthetic_world.json` records how the cohort was made, so
its token store can be scored with the generator (scaling.synth.replay: the exact entropy floor).
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from scaling.common.atomic import refuse_existing
from scaling.common.errors import InputError
from scaling.data.codes import BIRTH_CODE
from scaling.data.meds_io import write_meds
from scaling.data.scheme import AGE_BUCKET_YEARS, INTERVAL_EDGES, SECONDS_PER_MINUTE, US_PER_SECOND, US_PER_YEAR
from scaling.synth.process import LONG_GAP, ClinicalProcess, Timelines
from scaling.synth.world import SEX_CODES, World, make_world

WORLD_FILE = "metadata/synthetic_world.json"
SPLIT_FRACTIONS = {"train": 0.8, "tuning": 0.1, "held_out": 0.1}
CHUNK = 5_000
EPOCH_START = int(datetime(2005, 1, 1).timestamp()) * US_PER_SECOND
PRESETS = {"test": 600, "demo": 60_000, "bench": 20_000}


def world_settings(dataset_root: str | Path) -> dict | None:
    """metadata/synthetic_world.json of a cohort made by `scaling data synth` (world_seed, seed, patients,
    max_tokens), or None for any other dataset."""
    path = Path(dataset_root) / WORLD_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def generate_cohort(out: Path, patients: int, seed: int, world_seed: int = 0, max_tokens: int = 256,
                    overwrite: bool = False, log=None) -> dict:
    """Sample `patients` timelines and write them as a MEDS dataset; return a summary."""
    if patients < 10:
        raise InputError(f"patients = {patients}; expected at least 10 (train, tuning and held_out need some)",
                         field="patients")
    if max_tokens < 64:
        raise InputError(f"max_tokens = {max_tokens}; expected at least 64", field="max_tokens")
    out = Path(out)
    refuse_existing(out, overwrite)
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
    codes = list(world.codes) + list(SEX_CODES) + [BIRTH_CODE]
    descriptions = list(world.descriptions) + ["female", "male", "birth"]
    return pa.table({
        "code": codes,
        "description": descriptions,
        "parent_codes": pa.array([None] * len(codes), pa.list_(pa.string())),
        "value_bin_edges": pa.array(edges + [None] * 3, pa.list_(pa.float64())),
    })


def gap_seconds(gap: np.ndarray, repeats: np.ndarray, u: np.ndarray) -> np.ndarray:
    """(n, S) seconds of each event's gap, drawn uniformly inside its interval class from `u` (uniform in
    [0, 1), one per event); integer seconds keep the class exact. 0 for an event without a gap."""
    lower = INTERVAL_EDGES * SECONDS_PER_MINUTE
    gap = np.asarray(gap).astype(np.int64)
    lo = np.where(gap == LONG_GAP, repeats * lower[-2], lower[np.maximum(gap, 0)])
    width = np.where(gap == LONG_GAP, lower[-2], lower[np.maximum(gap, 0) + 1] - lower[np.maximum(gap, 0)])
    return np.where(gap >= 0, lo + np.floor(u * (width - 1)), 0).astype(np.int64)


def timelines_to_events(tl: Timelines, world: World, subject_ids: np.ndarray, rng: np.random.Generator) -> pa.Table:
    """Sampled timelines -> MEDS rows (static sex, birth, events), sorted by subject and time."""
    n, steps = tl.code.shape
    has = tl.code >= 0  # (n, S)
    seconds = gap_seconds(tl.gap, tl.repeats, rng.random((n, steps)))
    first = EPOCH_START + (rng.random(n) * 10 * US_PER_YEAR).astype(np.int64)
    times = first[:, None] + np.cumsum(seconds * US_PER_SECOND, axis=1)  # (n, S) us
    # A birth date inside the age bucket, 0.02 years away from its edges.
    birth = first - ((tl.age_bucket * AGE_BUCKET_YEARS + 0.02 + rng.random(n) * 4.96) * US_PER_YEAR).astype(np.int64)
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
    codes = np.array(list(world.codes) + list(SEX_CODES) + [BIRTH_CODE], dtype=object)
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
