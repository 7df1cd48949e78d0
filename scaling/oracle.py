"""The oracle of a synthetic cohort: the generator itself continues each patient's timeline.

The synthetic cohort's clinical process (scaling.synth) has no hidden state: its next-token
distribution is a function of the tokens so far. So replaying a patient's history through it and
then sampling gives futures from the true conditional distribution, and the fraction of K such futures
with an outcome is the best estimate any model could make (up to Monte Carlo noise, which shrinks with
K). It is what a perfectly trained model would score.

The history is tokenized with a vocabulary of every code of the dataset (min_count 1, the cohort's
own value-bin edges), so a code the run's vocabulary maps to UNK still replays exactly.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np

from scaling.errors import InputError
from scaling.labels import Cohort, PredictionTimes, history_events
from scaling.meds_io import MedsDataset
from scaling.outcomes import Futures
from scaling.simulate import interval_minutes
from scaling.synth import DONE, LONG_GAP, ClinicalProcess, Timelines
from scaling.synth_cohort import WORLD_FILE, timelines_from_tokens
from scaling.synth_world import make_world
from scaling.tokenizer import CodeTable, TokenizerSettings, build_vocabulary, encode
from scaling.vocab import TIME_INTERVALS

# In a forced timeline, this code marks the steps after a history: the row waits there.
HOLD = -3
LOWER_BOUNDS = np.array([lower for _, lower in TIME_INTERVALS])


class ContinuedProcess(ClinicalProcess):
    """The clinical process with two additions: a forced row waits (does nothing) at steps whose
    forced code is HOLD, so a forced run leaves every row just after its history; and a sampled row
    stops once its clock (interval classes at their lower bounds) reaches `horizon_minutes`, when it is
    surely past the horizon. `last_state` is the state of the last run."""

    horizon_minutes: float = np.inf
    last_state = None
    _clock: np.ndarray | None = None

    def _step(self, s, rows, u, f, out, step):
        self.last_state = s
        if f is not None:
            moving = f[2] != HOLD
            if moving.any():
                super()._step(s, rows[moving], u[moving], tuple(x[moving] for x in f), out, step)
            return
        super()._step(s, rows, u, None, out, step)
        if self._clock is not None:
            gap = out.gap[rows, step].astype(np.int64)
            lower = np.where(gap == LONG_GAP, out.repeats[rows, step] * LOWER_BOUNDS[LONG_GAP],
                             LOWER_BOUNDS[np.maximum(gap, 0)])
            self._clock[rows] += np.where(gap >= 0, lower, 0.0)
            s.phase[rows[self._clock[rows] >= self.horizon_minutes]] = DONE

    def continue_from(self, state, samples: int, horizon_minutes: float, rng: np.random.Generator) -> Timelines:
        """Sample `samples` futures of every row of a state (row i * samples + k), up to the horizon."""
        repeated = type(state)(**{f.name: np.repeat(getattr(state, f.name), samples, axis=0) for f in fields(state)})
        self.horizon_minutes, self._clock = horizon_minutes, np.zeros(len(repeated.phase))
        try:
            return self.run(len(repeated.phase), rng, start=repeated)
        finally:
            self._clock = None


def world_settings(dataset_root: str | Path) -> dict | None:
    """metadata/synthetic_world.json of a cohort made by `scaling data synth`, or None."""
    path = Path(dataset_root) / WORLD_FILE
    return json.loads(path.read_text()) if path.is_file() else None


class Oracle:
    def __init__(self, dataset: MedsDataset, cohort: Cohort):
        settings = world_settings(dataset.root)
        if settings is None:
            raise InputError(f"{dataset.root}: no {WORLD_FILE}; the oracle needs a cohort made by `scaling data synth`")
        self.world = make_world(settings["world_seed"])
        self.max_tokens = settings["max_tokens"]
        self.process = ContinuedProcess(self.world, self.max_tokens)
        self.cohort = cohort
        self.vocab = build_vocabulary(cohort.events, TokenizerSettings(min_count=1), dataset.bin_edges())

    def futures(self, times: PredictionTimes, samples: int, horizon_minutes: float = np.inf, seed: int = 0
                ) -> tuple[Futures, np.ndarray]:
        """K continuations of each history (row i * K + k) up to the horizon, minutes after the
        prediction time, and a mask of the predictions the generator could replay (all of them on an
        unmodified cohort). Each history is replayed once; its end state is copied K times."""
        if not len(times):
            empty = np.zeros(0, np.int64)
            return Futures(empty, empty.astype(np.float64), empty, list(self.world.codes), 0), np.zeros(0, bool)
        history = history_events(self.cohort, times)
        tokens, offsets, _ = encode(history, self.vocab, CodeTable.build(history.codes, self.vocab))
        prompts = [tokens[a : b - 1] for a, b in zip(offsets[:-1], offsets[1:])]
        forced, ok = timelines_from_tokens(prompts, self.vocab, self.world, self.max_tokens)
        n_events = (forced.code >= 0).sum(axis=1)
        forced.code[np.arange(forced.code.shape[1])[None] >= n_events[:, None]] = HOLD
        rng = np.random.default_rng(seed)
        self.process.run(len(prompts), rng, forced=forced, max_steps=int(n_events.max(initial=0)) + 1)
        future = self.process.continue_from(self.process.last_state, samples, horizon_minutes, rng)
        return self._to_futures(future), ok

    def _to_futures(self, tl: Timelines) -> Futures:
        """Sampled timelines as events, with minutes at the middle of each interval class."""
        middle = np.array([interval_minutes(name) for name, _ in TIME_INTERVALS])
        gap = tl.gap.astype(np.int64)
        minutes = np.where(gap == LONG_GAP, (tl.repeats + 0.5) * middle[LONG_GAP], middle[np.maximum(gap, 0)])
        clock = np.cumsum(np.where(gap >= 0, minutes, 0.0), axis=1)
        has = tl.code >= 0
        owner = np.broadcast_to(np.arange(len(tl.code))[:, None], tl.code.shape)
        return Futures(owner[has].astype(np.int64), clock[has], tl.code[has].astype(np.int64),
                       list(self.world.codes), len(tl.code))
