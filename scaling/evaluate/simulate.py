"""Simulation-based inference: prompt a trained model with each patient's history, sample K futures,
decode them into events.

    prompts = history_prompts(cohort, times, vocab)
    futures, tokens = simulate_futures(model, vocab, prompts, samples=8, horizon_minutes=365 * DAY)

A prompt is exactly what the tokenizer makes of the history rows (scaling.data.tokenizer.encode), without
the closing [EOS], so it is a prefix of the patient's sequence in the token store. Futures are rows
prediction x sample (row i * K + k). The sampler's clock counts each interval token at its class's
lower bound, so it stops only when a future is surely past the horizon; the decoded events then carry
minutes counted at each class's middle (scaling.data.scheme.interval_minutes), the best guess of the
real gap.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models.decoder import Decoder
from models.sampling import SamplingSettings, generate
from scaling.common.atomic import atomic_directory, refuse_existing
from scaling.common.errors import InputError
from scaling.data.codes import DEATH_CODE
from scaling.data.decoding import TokenTable, detokenize
from scaling.data.meds_io import read_meds
from scaling.data.scheme import DAY, INTERVAL_TOKENS, TIME_INTERVALS, US_PER_MINUTE, interval_minutes
from scaling.data.token_store import TokenStore, meds_dir_of_store
from scaling.data.vocab import Vocabulary
from scaling.evaluate.labels import Cohort, history_prompts, prediction_gap_minutes, prediction_times
from scaling.evaluate.outcomes import Futures, shift_futures
from scaling.evaluate.tasks import PredictionRule
from scaling.train.run_dir import load_trained_model

# Prompt widths are rounded up to a multiple of this, so that the jitted sampler compiles a few times.
WIDTH_BUCKET = 64
# Keep the prefill's largest float32 tensors, the MLP's (rows, width, 2 d_ff) and the attention scores
# (rows, heads, width, width + new tokens), under about this many bytes per call.
PREFILL_BYTES = 256 * 2**20


@dataclass(frozen=True)
class SimulationSettings:
    samples: int = 8  # futures per prompt (K)
    max_new_tokens: int = 256  # token budget of one future
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    max_rows: int = 512  # sequences sampled in one call

    def __post_init__(self) -> None:
        for name in ("samples", "max_new_tokens", "max_rows"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} = {getattr(self, name)}; expected 1 or more", field=name)
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise InputError(f"temperature = {self.temperature}; expected a positive number", field="temperature")
        if self.top_k < 0:
            raise InputError(f"top_k = {self.top_k}; expected 0 (all tokens) or more", field="top_k")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top_p = {self.top_p}; expected a number in (0, 1]", field="top_p")


def clock_minutes(vocab: Vocabulary) -> np.ndarray:
    """(vocab,) minutes each token advances the sampler's clock: lower bounds of interval classes."""
    minutes = np.zeros(vocab.size, np.float32)
    for name, lower in TIME_INTERVALS:
        if name in vocab.index:
            minutes[vocab.id(name)] = lower
    return minutes


def cut_prompt(prompt: np.ndarray, limit: int, vocab: Vocabulary) -> np.ndarray:
    """A prompt of at most `limit` tokens: its head (the static codes and the age token, which say who
    the patient is) and as many of its last events as fit (the tail starts where an event starts)."""
    if len(prompt) <= limit:
        return prompt
    # A model may have more output ids than the store's vocabulary (model.vocab_size): those are unknown.
    kinds = [vocab.kinds[t] if t < vocab.size else "unknown" for t in prompt.tolist()]
    head = kinds.index("age") + 1 if "age" in kinds[:16] else 0
    head = head if head <= limit // 2 else 0
    start = len(prompt) - (limit - head)
    while start < len(prompt) and kinds[start] not in ("time", "code", "unknown"):
        start += 1
    return np.concatenate([prompt[:head], prompt[start:]])


def decode_futures(tokens: np.ndarray, vocab: Vocabulary, pad_id: int) -> Futures:
    """(rows, T) sampled tokens (pad after the end) -> the events of each row, minutes from its start."""
    owners, minutes, codes, values = [], [], [], []
    code_ids: dict[str, int] = {}
    six_months = INTERVAL_TOKENS[-1]
    middle = {name: interval_minutes(name) for name in INTERVAL_TOKENS}
    table = TokenTable.of(vocab)
    for row, sampled in enumerate(tokens):
        kept = sampled[(sampled != pad_id) & (sampled < vocab.size)]
        end = np.flatnonzero(kept == vocab.eos_id)
        kept = kept[: end[0]] if len(end) else kept
        clock = 0.0
        for events in detokenize(kept, vocab, table)[:1]:
            for event in events:
                clock += sum(middle[t] for t in event.time_tokens)
                if event.time_tokens and event.time_tokens[-1] == six_months:
                    clock += middle[six_months] / 2  # the run of 6-month tokens: the middle of the last one
                owners.append(row)
                minutes.append(clock)
                codes.append(code_ids.setdefault(event.code, len(code_ids)))
                values.append(np.nan if event.numeric_value is None else event.numeric_value)
    return Futures(np.asarray(owners, np.int64), np.asarray(minutes, np.float64), np.asarray(codes, np.int64),
                   list(code_ids), len(tokens), np.asarray(values, np.float64))


def simulate_futures(model: Decoder, vocab: Vocabulary, prompts: list[np.ndarray], horizon_minutes: float,
                     settings: SimulationSettings = SimulationSettings(), log=None,
                     max_prompt_tokens: int | None = None, outcome_masks: np.ndarray | None = None,
                     gap_minutes: np.ndarray | None = None):
    """K futures of each prompt, up to the horizon, [EOS], death or the token budget.

    `gap_minutes` (len(prompts),): time already passed since each prompt's last event at the prediction time
    (labels.prediction_gap_minutes); each row then runs that much longer, so that it reaches the horizon
    counted from the prediction time, and the futures' minutes count from the prediction time (events in the
    gap get minutes <= 0). The sampled tokens are not re-timed: give the gaps to outcomes.probability_values.

    Returns the decoded futures (row i * K + k is sample k of prompt i) and the sampled tokens
    (rows, max_new_tokens), padding after each row's end; with `outcome_masks` (M, model vocab) also each
    step's probability of each mask's tokens (rows, max_new_tokens, M) (models.sampling.generate).

    A model never sees more tokens than its context (positions past the trained ones are guesses). When
    the longest prompt and the whole budget fit in it, futures are sampled in one round. Otherwise they
    are sampled in rounds of at most a quarter of the context: each round prompts the model with
    `cut_prompt` of the history and what the row has sampled so far, at most `max_prompt_tokens`
    (default and cap: the context minus one round), and rows that stopped drop out.
    """
    round_tokens, limit = sampling_rounds(model.shape.max_seq_len, prompts, settings.max_new_tokens,
                                          max_prompt_tokens)
    K = settings.samples
    rows = [p for p in prompts for _ in range(K)]
    stop_ids = stop_token_ids(vocab)
    minutes = np.zeros(model.shape.vocab_size, np.float32)
    minutes[: vocab.size] = clock_minutes(vocab)
    out = np.full((len(rows), settings.max_new_tokens), vocab.pad_id, np.int32)
    masks = None if outcome_masks is None else np.asarray(outcome_masks, bool)
    probs = np.zeros((len(rows), settings.max_new_tokens, 0 if masks is None else len(masks)), np.float32)
    gaps = np.zeros(len(prompts)) if gap_minutes is None else np.asarray(gap_minutes, float)
    clock = -np.repeat(gaps, K)  # minutes each row's sampled tokens advanced its clock, from minus its gap
    active = np.arange(len(rows))  # rows that used every token of every round so far
    key = jax.random.key(settings.seed)
    done = rounds = 0  # done: tokens sampled by every active row
    started = time.perf_counter()
    while len(active) and done < settings.max_new_tokens:
        new = min(round_tokens, settings.max_new_tokens - done)
        round_prompts = [cut_prompt(np.concatenate([rows[i], out[i, :done]]), limit, vocab) for i in active]
        key, sub = jax.random.split(key)
        sampled, round_probs = _sample_round(model, round_prompts, sub, replace(settings, max_new_tokens=new),
                                             vocab.pad_id, stop_ids, minutes, horizon_minutes - clock[active],
                                             masks)  # (len(active), new), (len(active), new, M)
        out[active, done : done + new] = sampled
        probs[active, done : done + new] = round_probs
        clock[active] += minutes[sampled].sum(1)
        stopped = (sampled == vocab.pad_id).any(1) | np.isin(sampled, stop_ids).any(1)
        active, done, rounds = active[~stopped], done + new, rounds + 1
    if log:
        log(f"sampled {len(rows):,} futures in {rounds} round(s) of up to {round_tokens} tokens "
            f"({time.perf_counter() - started:.1f} s); {len(active):,} hit the budget of {settings.max_new_tokens}")
    futures = shift_futures(decode_futures(out, vocab, vocab.pad_id), gaps, K)
    return (futures, out) if masks is None else (futures, out, probs)


def sampling_rounds(context: int, prompts: list[np.ndarray], max_new_tokens: int,
                    max_prompt_tokens: int | None = None) -> tuple[int, int]:
    """(tokens sampled per round, the most prompt tokens a round shows the model): one round of the whole
    budget when the longest prompt and the budget fit the context, else rounds of a quarter context."""
    longest = max((len(p) for p in prompts), default=0)
    if longest + max_new_tokens <= context and (max_prompt_tokens is None or longest <= max_prompt_tokens):
        round_tokens = max_new_tokens
    else:
        round_tokens = min(max_new_tokens, max(1, context // 4))
    return round_tokens, min(max_prompt_tokens or context, context - round_tokens)


def cut_history_fraction(context: int, prompts: list[np.ndarray], max_new_tokens: int) -> float:
    """The fraction of prompts whose history the model cannot see whole (longer than a round's prompt)."""
    _, limit = sampling_rounds(context, prompts, max_new_tokens)
    return float(np.mean([len(p) > limit for p in prompts])) if prompts else 0.0


def stop_token_ids(vocab: Vocabulary) -> tuple[int, ...]:
    """The tokens that end a future: end of timeline and death."""
    return tuple(vocab.id(t) for t in (vocab.tokens[vocab.eos_id], DEATH_CODE) if t in vocab.index)


def _sample_round(model: Decoder, prompts: list[np.ndarray], key: jax.Array, settings: SimulationSettings,
                  pad_id: int, stop_ids: tuple[int, ...], minutes: np.ndarray, horizons: np.ndarray,
                  masks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One round of `simulate_futures`: (len(prompts), settings.max_new_tokens) sampled tokens and each step's
    mass on each outcome mask (len(prompts), settings.max_new_tokens, M) (M = 0 without masks).

    Prompts are sorted by length so that one call holds prompts of similar widths; widths are bucketed
    and calls padded with filler rows to a power of four, so the jitted sampler compiles a few times.
    """
    sampling = SamplingSettings(settings.max_new_tokens, settings.temperature, settings.top_k, settings.top_p)
    order = np.argsort([len(p) for p in prompts], kind="stable")
    out = np.empty((len(prompts), settings.max_new_tokens), np.int32)
    probs = np.zeros((len(prompts), settings.max_new_tokens, 0 if masks is None else len(masks)), np.float32)
    widest = _bucket(len(prompts[order[-1]]))
    shape = model.shape
    row_bytes = 4 * widest * max(2 * shape.d_ff, shape.n_heads * (widest + settings.max_new_tokens))
    n = max(1, min(settings.max_rows, PREFILL_BYTES // row_bytes))
    for start in range(0, len(prompts), n):
        chunk = order[start : start + n]
        width = _bucket(max(len(prompts[i]) for i in chunk))
        # The fillers stop at once (horizon 0); one of them has the bucket's width.
        fillers = min(n, _power_of_four(len(chunk))) + 1 - len(chunk)
        batch = [prompts[i] for i in chunk] + [np.full(width, pad_id, np.int32)] * fillers
        horizon = np.r_[horizons[chunk], np.zeros(fillers)]
        key, sub = jax.random.split(key)
        sampled = generate(model, batch, sub, sampling, pad_id=pad_id, stop_ids=stop_ids, minutes_per_token=minutes,
                           horizon_minutes=horizon, outcome_masks=masks)
        if masks is not None:
            sampled, chunk_probs = sampled
            probs[chunk] = chunk_probs[: len(chunk)]
        out[chunk] = sampled[: len(chunk)]
    return out, probs


def _power_of_four(n: int) -> int:
    """The least power of four at least n."""
    return 4 ** ((max(n, 1) - 1).bit_length() + 1 >> 1)


def _bucket(width: int) -> int:
    return max(WIDTH_BUCKET, -(-width // WIDTH_BUCKET) * WIDTH_BUCKET)


def futures_table(futures: Futures, subject_ids: np.ndarray, prediction_us: np.ndarray, samples: int) -> pa.Table:
    """Futures as MEDS-like rows: subject_id, sample, prediction_time, time (prediction time + the
    event's minutes), code, numeric_value (the value bin's median train value), minutes."""
    prediction = futures.owner // samples
    time_us = prediction_us[prediction] + np.round(futures.minutes * US_PER_MINUTE).astype(np.int64)
    value = futures.value if futures.value is not None else np.full(len(futures.owner), np.nan)
    return pa.table({
        "subject_id": pa.array(subject_ids[prediction], pa.int64()),
        "sample": pa.array(futures.owner % samples, pa.int32()),
        "prediction_time": pa.array(prediction_us[prediction], pa.int64()).cast(pa.timestamp("us")),
        "time": pa.array(time_us, pa.int64()).cast(pa.timestamp("us")),
        "code": pa.array([futures.codes[c] for c in futures.code.tolist()], pa.string()),
        "numeric_value": pa.array(value.astype(np.float32), pa.float32(), mask=np.isnan(value)),
        "minutes": pa.array(futures.minutes, pa.float64()),
    })


def simulate_run(run_dir: str | Path, out: str | Path, rule: PredictionRule, patients: int, horizon_days: float,
                 settings: SimulationSettings = SimulationSettings(), split: str = "held_out",
                 meds_dir: str | Path | None = None, overwrite: bool = False, log=None) -> dict:
    """`scaling simulate`: K futures of `patients` patients of a split, written as a MEDS-like dataset:

        OUT/data/futures.parquet        one row per simulated event (futures_table)
        OUT/metadata/prompts.parquet    subject_id, prediction_time, prompt_tokens (what the model saw)
        OUT/metadata/simulation.json    the run, checkpoint step, rule, settings and counts
    """
    out = Path(out)
    refuse_existing(out, overwrite)
    if not horizon_days > 0:
        raise InputError(f"horizon_days = {horizon_days}; expected a positive number of days", field="horizon_days")
    model, config, step = load_trained_model(run_dir)
    store = TokenStore.open(config.data)
    meds_dir = Path(meds_dir) if meds_dir else meds_dir_of_store(store)
    cohort = Cohort.from_dataset(read_meds(meds_dir, store.settings.get("split_aliases")))
    times = prediction_times(cohort, rule, split, patients)
    if not len(times):
        raise InputError(f"{meds_dir}: no patient of split '{split}' has a prediction time under rule '{rule.name}'")
    prompts = history_prompts(cohort, times, store.vocab)
    started = time.perf_counter()
    gaps = prediction_gap_minutes(cohort, times)  # 0 unless the rule reads a label file
    futures, tokens = simulate_futures(model, store.vocab, prompts, horizon_days * DAY, settings, log=log,
                                       gap_minutes=gaps)
    seconds = time.perf_counter() - started
    subject_ids = cohort.subject_ids[times.subject]
    summary = {
        "run_dir": str(run_dir), "checkpoint_step": step, "data": str(meds_dir), "split": split,
        "rule": asdict(rule), "horizon_days": horizon_days, "settings": asdict(settings),
        "patients": len(times), "futures": len(tokens), "events": len(futures.owner),
        "generated_tokens": int((tokens != store.vocab.pad_id).sum()),
        "truncated_fraction": float((tokens[:, -1] != store.vocab.pad_id).mean()),
        "seconds": round(seconds, 2), "tokens_per_s": round(float((tokens != store.vocab.pad_id).sum()) / seconds, 1),
    }
    with atomic_directory(out, overwrite=overwrite) as tmp:
        (tmp / "data").mkdir()
        (tmp / "metadata").mkdir()
        pq.write_table(futures_table(futures, subject_ids, times.time_us, settings.samples),
                       tmp / "data" / "futures.parquet")
        pq.write_table(pa.table({
            "subject_id": pa.array(subject_ids, pa.int64()),
            "prediction_time": pa.array(times.time_us, pa.int64()).cast(pa.timestamp("us")),
            "prompt_tokens": pa.array([p.astype(np.int32) for p in prompts], pa.list_(pa.int32())),
        }), tmp / "metadata" / "prompts.parquet")
        (tmp / "metadata" / "simulation.json").write_text(json.dumps(summary, indent=2) + "\n")
    return {"out": str(out), **summary}
