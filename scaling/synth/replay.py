"""Replaying token sequences through the synthetic cohort's generator: exact scores and the entropy floor.

A tokenized synthetic cohort decodes (scaling.data.decoding) back into the events the process drew;
replaying them with the choices forced gives every token's -log p under the generator. Averaged over a
token store that is the exact entropy floor no model can beat, written to the store's stats.json:

    tokenize_dataset(meds_dir, out, settings, extra_stats=entropy_floor_stats)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from scaling.data.decoding import TokenTable, decode_events
from scaling.data.token_store import TokenStore
from scaling.data.vocab import Vocabulary
from scaling.synth.generate import world_settings
from scaling.synth.process import ClinicalProcess, Timelines
from scaling.synth.world import SEX_CODES, World, make_world


def timelines_from_tokens(patients: list[np.ndarray], vocab: Vocabulary, world: World, max_tokens: int
                          ) -> tuple[Timelines, np.ndarray]:
    """Token sequences (each a whole timeline from its first token) -> forced timelines, and a mask of
    the patients the generator can score (no unknown token, no code outside the world)."""
    offsets = np.r_[0, np.cumsum([len(p) for p in patients], dtype=np.int64)]
    tokens = np.concatenate(patients) if patients else np.zeros(0, np.int64)
    return decode_timelines(tokens, offsets, vocab, world, max_tokens)


def decode_timelines(tokens: np.ndarray, offsets: np.ndarray, vocab: Vocabulary, world: World, max_tokens: int
                     ) -> tuple[Timelines, np.ndarray]:
    """`timelines_from_tokens` on flat token sequences (N,) with patient offsets (P + 1,). A patient can be
    scored when its sequence has at least 3 tokens, the second an age token, at most one [EOS] and no
    event after it, its first event is a sex code, and the events after that are at most `max_tokens`,
    all with codes of the world. The events after the sex code are written up to the first that fails."""
    n = len(offsets) - 1
    table = TokenTable.of(vocab)
    ids = np.asarray(tokens, np.int64)
    lengths = np.diff(offsets)
    decoded = decode_events(ids, offsets, vocab, table)
    first_patient = decoded.patient == 0
    interval, repeats = decoded.intervals()
    ev_patient = decoded.sequence[first_patient]  # (E,) the events of each sequence's first patient
    n_events = np.bincount(ev_patient, minlength=n)
    ev_rank = np.arange(len(ev_patient)) - (np.cumsum(n_events) - n_events)[ev_patient]  # (E,)
    world_code = {c: i for i, c in enumerate(world.codes)}
    code_of = np.array([world_code.get(c, -1) for c in decoded.codes], np.int64)
    sex_of = np.array([SEX_CODES.index(c) if c in SEX_CODES else -1 for c in decoded.codes], np.int64)
    ev_code = code_of[decoded.code[first_patient]]
    ev_sex = sex_of[decoded.code[first_patient]]

    # One patient per sequence: one [EOS] at most, and no event after it.
    eos_seen = np.r_[0, np.cumsum(table.eos[ids])]
    n_eos = eos_seen[offsets[1:]] - eos_seen[offsets[:-1]]
    events_after_eos = np.bincount(decoded.sequence[~first_patient], minlength=n)
    one_patient = (n_events > 0) & ((n_eos == 0) | ((n_eos == 1) & (events_after_eos == 0)))
    age = np.full(n, -1)
    long_enough = lengths >= 3
    age[long_enough] = table.age_bucket[ids[offsets[:-1][long_enough] + 1]]
    sex = np.full(n, -1)
    sex[ev_patient[ev_rank == 0]] = ev_sex[ev_rank == 0]
    header = long_enough & one_patient & (age >= 0) & (sex >= 0)  # (P,)

    step = ev_rank - 1  # (E,) the column of each event after the sex code
    bad = np.flatnonzero((step >= 0) & ((ev_code < 0) | (step >= max_tokens)))
    limit = np.full(n, max_tokens)  # (P,) the events written: steps below the first bad one
    bad_patients, first_bad = np.unique(ev_patient[bad], return_index=True)
    limit[bad_patients] = step[bad[first_bad]]
    ok = header.copy()
    ok[bad_patients] = False

    tl = Timelines(sex=np.zeros(n, np.int64), age_bucket=np.zeros(n, np.int64),
                   gap=-np.ones((n, max_tokens), np.int8), repeats=np.zeros((n, max_tokens), np.int8),
                   code=-np.ones((n, max_tokens), np.int32), value_bin=-np.ones((n, max_tokens), np.int8),
                   token_nll=np.empty(0), n_tokens=np.zeros(n, np.int64))
    tl.sex[header], tl.age_bucket[header] = sex[header], age[header]
    write = header[ev_patient] & (step >= 0) & (step < limit[ev_patient])  # (E,)
    rows, cols = ev_patient[write], step[write]
    tl.code[rows, cols] = ev_code[write]
    tl.value_bin[rows, cols] = decoded.value_bin[first_patient][write]
    ev_repeats = repeats[first_patient]
    timed = write & (ev_repeats > 0)
    tl.gap[ev_patient[timed], step[timed]] = interval[first_patient][timed]
    tl.repeats[ev_patient[timed], step[timed]] = ev_repeats[timed]
    return tl, ok


def score_token_split(tokens: np.ndarray, offsets: np.ndarray, vocab: Vocabulary, settings: dict) -> dict:
    """-log p of every token of a split under the generator of a cohort's world `settings` (world_seed,
    max_tokens), summed the ways the floor is stated."""
    world = make_world(settings["world_seed"])
    return _score(tokens, offsets, vocab, world, ClinicalProcess(world, settings["max_tokens"]))


def _score(tokens: np.ndarray, offsets: np.ndarray, vocab: Vocabulary, world: World, process: ClinicalProcess,
           first_patient: int = 0) -> dict:
    max_tokens = process.max_tokens
    tl, ok = decode_timelines(tokens, offsets, vocab, world, max_tokens)
    scored = np.flatnonzero(ok)
    sub = Timelines(tl.sex[scored], tl.age_bucket[scored], tl.gap[scored], tl.repeats[scored], tl.code[scored],
                    tl.value_bin[scored], np.empty(0), np.zeros(len(scored), np.int64))
    result = process.run(len(scored), np.random.default_rng(0), forced=sub)
    lengths = np.diff(offsets)[scored]
    if not np.array_equal(result.n_tokens, lengths):
        bad = int(np.flatnonzero(result.n_tokens != lengths)[0])
        raise ReplayMismatch(f"generator replay of patient {first_patient + scored[bad]} gave "
                             f"{result.n_tokens[bad]} tokens, "
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
        "nll_total": total,
        "nll_first_tokens": first,
        "per_patient_nll": np.where(inside, nll, 0.0).sum(1),
        "per_patient_first_nll": nll[:, 0] if len(scored) else np.zeros(0),
        "scored": scored,
    }


def patients_floor(tokens: np.ndarray, offsets: np.ndarray, vocab: Vocabulary, settings: dict) -> dict:
    """The exact floor of a set of whole patients (flat tokens (N,), offsets (P + 1,)), scored as a model
    scores windows that each hold one whole patient from its first token: the generator's -log p summed over
    every token but each patient's first, over the count of those tokens (`nats_per_token`). Patients the
    generator cannot score (a code too rare for the vocabulary) are left out and counted:
    `unscored_patients`, and `unscored_target_fraction` of the targets they hold."""
    scored = score_token_split(tokens, offsets, vocab, settings)
    targets = np.maximum(np.diff(offsets) - 1, 0)
    scored_targets = targets[scored["scored"]].sum()
    return {
        "nats_per_token": float((scored["per_patient_nll"] - scored["per_patient_first_nll"]).sum()
                                / max(scored_targets, 1)),
        "unscored_patients": int(len(targets) - len(scored["scored"])),
        "unscored_target_fraction": float(1 - scored_targets / max(targets.sum(), 1)),
    }


def entropy_floor(settings: dict, store: TokenStore, batch_patients: int = 4096) -> dict:
    """The exact entropy floor of a synthetic cohort's token store: the generator's -log p per token.

    `nats_per_token` averages over every token but each patient's first, which is what a model scores
    on windows that start at a patient's start and hold the whole timeline (window mode "patient" with
    seq_len + 1 >= max_tokens): there the model sees the same history the generator conditioned on, so
    no model can go below it in expectation. `nats_per_token_packed` includes first tokens (a new
    patient's first token after [EOS]); with packed windows cut at random offsets the context is
    shorter than the generator's, so it is a lower bound there, not the exact floor.
    """
    floor = {"max_tokens": settings["max_tokens"], "world_seed": settings["world_seed"]}
    world = make_world(settings["world_seed"])
    process = ClinicalProcess(world, settings["max_tokens"])
    for name in store.split_names:
        split = store.split(name)
        if split.n_patients < 1:
            continue
        sums = dict.fromkeys(("nll_total", "nll_first_tokens", "tokens_scored", "patients_scored"), 0.0)
        for a in range(0, split.n_patients, batch_patients):  # a batch at a time: memory follows the batch
            b = min(a + batch_patients, split.n_patients)
            offsets = split.offsets[a:b + 1]
            scored = _score(np.asarray(split.tokens[offsets[0]:offsets[-1]]), offsets - offsets[0], store.vocab,
                            world, process, first_patient=a)
            for key in sums:
                sums[key] += scored[key]
        floor[name] = {
            "nats_per_token": round((sums["nll_total"] - sums["nll_first_tokens"])
                                    / max(sums["tokens_scored"] - sums["patients_scored"], 1), 6),
            "nats_per_token_packed": round(sums["nll_total"] / max(sums["tokens_scored"], 1), 6),
            "patients_scored": int(sums["patients_scored"]),
            "patients": split.n_patients,
        }
    return floor


class ReplayMismatch(Exception):
    """The generator does not reproduce the store's tokens: the cohort was edited after `scaling data synth`."""


def entropy_floor_stats(meds_dir: Path, store: TokenStore, log=None) -> dict:
    """`{"entropy_floor": ...}` for the token store of a cohort made by `scaling data synth`, `{}` for any
    other dataset: the `extra_stats` hook of scaling.data.tokenizer.tokenize_dataset. A cohort that carries
    the generator's settings but was edited since (rows shuffled, dates moved) has no exact floor: it gets
    `{"entropy_floor": null, "warnings": [...]}` and a warning, and tokenizes like any MEDS dataset."""
    settings = world_settings(meds_dir)
    if settings is None:
        return {}
    try:
        return {"entropy_floor": entropy_floor(settings, store)}
    except ReplayMismatch as e:
        warning = (f"{meds_dir}: carries metadata/synthetic_world.json but is not the generator's output "
                   f"({e}); no entropy floor")
        (log or _warn)(f"warning: {warning}")
        return {"entropy_floor": None, "warnings": [warning]}


def _warn(message: str) -> None:
    print(message, file=sys.stderr)
