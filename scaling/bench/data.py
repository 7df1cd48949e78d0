"""Throughput of the data stage: synthetic cohort generation and tokenization, on this machine."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from scaling.data.meds_io import read_meds
from scaling.data.tokenizer import TokenizerSettings, tokenize_events
from scaling.synth.generate import generate_cohort


def bench_data(patients: int = 20_000, repeats: int = 3, log=print) -> dict:
    """Generate a cohort once, then tokenize it `repeats` times (read + vocabulary + encoding)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cohort"
        generated = generate_cohort(root, patients, seed=0)
        log(f"generated {generated['events']:,} events in {generated['seconds']} s")
        best_read = best_tokenize = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            dataset = read_meds(root)
            read = time.perf_counter() - started
            stats, _, _ = tokenize_events(dataset, TokenizerSettings())
            best_tokenize = min(best_tokenize, time.perf_counter() - started)
            best_read = min(best_read, read)
        events = generated["events"]
        tokens = sum(s["tokens"] for s in stats["splits"].values())
    return {
        "events": events,
        "tokens": tokens,
        "events_per_s": round(events / best_tokenize),
        "tokens_per_s": round(tokens / best_tokenize),
        "read_seconds": round(best_read, 3),
        "tokenize_seconds": round(best_tokenize, 3),
        "generate_patients": patients,
        "generate_seconds": generated["seconds"],
        "generate_events_per_s": generated["events_per_s"],
    }
