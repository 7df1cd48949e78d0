"""The oracle of a synthetic cohort: the generator itself continues each patient's timeline.

The synthetic cohort's clinical process (scaling.synth.process) has no hidden state: its next-token
distribution is a function of the tokens so far. So replaying a patient's history through it and
then sampling gives futures from the true conditional distribution, and the fraction of K such futures
with an outcome is the best estimate any model could make (up to Monte Carlo noise, which shrinks with
K). It is what a perfectly trained model would score.

The history is tokenized with a vocabulary of every code of the dataset (min_count 1, the cohort's
own value-bin edges), so a code the run's vocabulary maps to UNK still replays exactly.
"""

from __future__ import annotations

import numpy as np

from scaling.common.errors import InputError
from scaling.data.meds_io import MedsDataset
from scaling.data.scheme import SECONDS_PER_MINUTE
from scaling.data.tokenizer import TokenizerSettings, TrainCodes, build_vocabulary
from scaling.evaluate.labels import Cohort, PredictionTimes, history_prompts, prediction_gap_minutes
from scaling.evaluate.outcomes import Futures, shift_futures
from scaling.synth.generate import WORLD_FILE, gap_seconds, world_settings
from scaling.synth.process import HOLD, ClinicalProcess, ProcessState, Timelines
from scaling.synth.replay import timelines_from_tokens
from scaling.synth.world import make_world


class Oracle:
    def __init__(self, dataset: MedsDataset, cohort: Cohort):
        settings = world_settings(dataset.root)
        if settings is None:
            raise InputError(f"{dataset.root}: no {WORLD_FILE}; the oracle needs a cohort made by `scaling data synth`")
        self.world = make_world(settings["world_seed"])
        self.max_tokens = settings["max_tokens"]
        self.process = ClinicalProcess(self.world, self.max_tokens)
        self.cohort = cohort
        self.vocab = build_vocabulary(TrainCodes.of(cohort.events), TokenizerSettings(min_count=1), dataset.bin_edges())

    def futures(self, times: PredictionTimes, samples: int, horizon_minutes: float = np.inf,
                seed: int | list[int] = 0
                ) -> tuple[Futures, np.ndarray]:
        """K continuations of each history (row i * K + k) up to the horizon, minutes after the
        prediction time, and a mask of the predictions the generator could replay (all of them on an
        unmodified cohort). Each history is replayed once; its end state is copied K times."""
        if not len(times):
            empty = np.zeros(0, np.int64)
            return Futures(empty, empty.astype(np.float64), empty, list(self.world.codes), 0), np.zeros(0, bool)
        prompts = history_prompts(self.cohort, times, self.vocab)
        forced, ok = timelines_from_tokens(prompts, self.vocab, self.world, self.max_tokens)
        rng = np.random.default_rng(seed)
        state = self.replay_histories(forced, rng)
        # A prediction time after the history's last event (a label file's): continue from that event until
        # the horizon counted from the prediction time, then re-time the events from it.
        gaps = prediction_gap_minutes(self.cohort, times)
        future = self.process.advance(state.repeat(samples), rng, horizon_minutes=horizon_minutes + gaps.max())
        return shift_futures(self._to_futures(future, rng), gaps, samples), ok

    def replay_histories(self, forced: Timelines, rng: np.random.Generator) -> ProcessState:
        """The process's state just after each history (forced timelines without [EOS]): every row waits
        (HOLD) once its events are replayed."""
        n_events = (forced.code >= 0).sum(axis=1)
        forced.code[np.arange(forced.code.shape[1])[None] >= n_events[:, None]] = HOLD
        state = self.process.start(len(forced.sex), rng, given=forced)
        self.process.advance(state, rng, forced=forced, max_steps=int(n_events.max(initial=0)) + 1)
        return state

    def _to_futures(self, tl: Timelines, rng: np.random.Generator) -> Futures:
        """Sampled timelines as events, each gap drawn inside its interval class as the cohort's own times
        were (generate.gap_seconds): futures carry the true distribution of event times, not class middles,
        which would bias a median duration and put events on the wrong side of a horizon."""
        clock = np.cumsum(gap_seconds(tl.gap, tl.repeats, rng.random(tl.gap.shape)) / SECONDS_PER_MINUTE, axis=1)
        has = tl.code >= 0
        owner = np.broadcast_to(np.arange(len(tl.code))[:, None], tl.code.shape)
        return Futures(owner[has].astype(np.int64), clock[has], tl.code[has].astype(np.int64),
                       list(self.world.codes), len(tl.code))
