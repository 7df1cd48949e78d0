"""The synthetic cohort's clinical process, generated at token resolution, and its exact scoring.

A patient is a sequence of events drawn one at a time by a process whose state is a function of the
tokens emitted so far (sex, age bucket and elapsed interval tokens, the conditions diagnosed, the last
value bin of each lab, the current encounter, the token count). No hidden variable: the probability
of every token given the tokens before it is known exactly, so the generator can

- sample patients (`ClinicalProcess.run`), recording each token's -log p as it goes;
- score any token sequence of its vocabulary (`run(..., forced=...)`, the same code path with the
  choices forced), which gives the exact entropy floor of a token store (scaling.synth.replay);
- continue patients from any state, up to a horizon (`start`, `advance`, `ProcessState.repeat`): the
  oracle for evaluation (scaling.evaluate.oracle).

One step draws one event for every active patient (vectorised over patients):

    phase start      -> the first encounter (no interval token)
    in an encounter  -> another item at the same time (diagnosis, lab + value bin, medication,
                        procedure), or leave: [EOS], or an interval token and the next encounter / death
    admitted         -> items, or an interval (length of stay) and the discharge or death
    dead             -> [EOS]

A timeline ends with [EOS]; every patient has at most `max_tokens` tokens (the process stops early
enough), so a window of that length holds a whole timeline.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import scipy.sparse

from scaling.data.codes import code_pieces
from scaling.data.scheme import (
    AGE_BUCKET_YEARS,
    INTERVAL_MIDDLE,
    LONG_INTERVAL,
    N_AGE_BUCKETS,
    SIX_MONTHS,
    YEAR,
    elapsed_minutes,
)
from scaling.synth.world import KIND_DEATH, KIND_DISCHARGE, KIND_ENCOUNTER, World

N_BINS = 10
# Age at the first encounter, by 5-year bucket (0-4 ... 100+): adults, most between 30 and 80.
AGE_BUCKET_WEIGHTS = np.array([0, 0, 0, 0.5, 1, 1.2, 1.4, 1.6, 1.8, 2, 2.2, 2.4, 2.4, 2.2, 2, 1.6, 1.2, 0.7, 0.3, 0, 0])
LONG_GAP = LONG_INTERVAL  # the ">= 6 months" class, repeated once per 6 months
MAX_LONG_REPEATS = 6
LONG_CONTINUE = 0.35  # P(one more 6-month token) after each, below the cap
OUT_GAPS = np.array([8, 9, 10, 11, LONG_GAP])  # 1w-2w ... >= 6 months between encounters
STAY_GAPS = np.array([6, 7, 8])  # 1d-3d, 3d-1w, 1w-2w lengths of stay
MAX_EVENT_TOKENS = MAX_LONG_REPEATS + 4 + 1
CAP_MARGIN = 4 * MAX_EVENT_TOKENS  # near the token cap: no more items, then [EOS]
STEP_ROWS = 2048  # rows per _step call: its (rows, C) arrays stay in cache (13 MB at 605 codes)

START, VISIT, ADMITTED, DISCHARGED, DEAD, DONE = range(6)
HOLD = -3  # a forced code that makes the row wait at that step (`ClinicalProcess.advance`)

# Years an interval moves the age on: the middle of its class (6 months per token for the long class).
GAP_REPRESENTATIVE_YEARS = INTERVAL_MIDDLE / YEAR
SIX_MONTHS_YEARS = SIX_MONTHS / YEAR


@dataclass
class Timelines:
    """Patients as events: the column s of each array is a patient's s-th event (-1: none)."""

    sex: np.ndarray  # (n,) 0 female, 1 male
    age_bucket: np.ndarray  # (n,) 5-year bucket at the first encounter
    gap: np.ndarray  # (n, S) interval class before the event, -1 for none (same time)
    repeats: np.ndarray  # (n, S) number of 6-month tokens when gap is the long class
    code: np.ndarray  # (n, S) world code id, -1 after the end
    value_bin: np.ndarray  # (n, S) lab value bin, -1 for none
    token_nll: np.ndarray  # (n, max_tokens) -log p of each token given the ones before, NaN after the end
    n_tokens: np.ndarray  # (n,) tokens per patient, [EOS] included

    def events(self, step: int, rows: np.ndarray) -> Events:
        """The events of `rows` at column `step`."""
        return Events(self.gap[rows, step], self.repeats[rows, step], self.code[rows, step],
                      self.value_bin[rows, step])


@dataclass
class Events:
    """One event per row (a column of Timelines), as a replay forces them."""

    gap: np.ndarray  # interval class before the event, -1 for none
    repeats: np.ndarray  # number of 6-month tokens of the long class
    code: np.ndarray  # world code id; -1: the timeline ends ([EOS]); HOLD: the row waits
    value_bin: np.ndarray  # lab value bin, -1 for none

    def take(self, rows: slice | np.ndarray) -> Events:
        return Events(*(getattr(self, f.name)[rows] for f in fields(self)))


@dataclass
class Draws:
    """The uniform draws of one step, one per row for each choice, drawn together for every active row
    (one row of `rng.random((n, 6))` per patient, its columns in field order)."""

    stay: np.ndarray  # stay in the encounter
    end: np.ndarray  # end the timeline when leaving
    gap: np.ndarray  # the interval class
    repeats: np.ndarray  # the number of 6-month tokens
    code: np.ndarray  # the code
    value_bin: np.ndarray  # a lab's value bin

    @classmethod
    def draw(cls, rng: np.random.Generator, n: int) -> Draws:
        u = rng.random((n, len(fields(cls))))
        return cls(*(u[:, k] for k in range(u.shape[1])))

    def take(self, rows: slice | np.ndarray) -> Draws:
        return Draws(*(getattr(self, f.name)[rows] for f in fields(self)))


class ClinicalProcess:
    def __init__(self, world: World, max_tokens: int = 256):
        self.world = world
        self.max_tokens = max_tokens
        n_codes = len(world.codes)
        # Token paths of every code, as prefixes ("nodes"): node_of[c, j] is the prefix of code c's
        # first j + 1 tokens; member[node] marks the codes that share it.
        pieces = [tuple(p.token for p in code_pieces(c)) for c in world.codes]
        self.code_tokens = pieces
        self.code_length = np.array([len(p) for p in pieces])
        # Token paths of every code: in codes sorted by their token tuples, the codes that share the
        # first j + 1 tokens of code c are the contiguous range node_range[c, j] = (lo, hi).
        self.path_order = np.array(sorted(range(n_codes), key=lambda c: pieces[c]))
        sorted_pieces = [pieces[c] for c in self.path_order]
        depth = int(self.code_length.max())
        self.node_range = np.zeros((n_codes, depth, 2), np.int64)
        for c, p in enumerate(pieces):
            for j in range(len(p)):
                same = [k for k, q in enumerate(sorted_pieces) if q[: j + 1] == p[: j + 1]]
                self.node_range[c, j] = (same[0], same[-1] + 1)
        effects = world.medication_weight + world.procedure_weight
        effects[:, world.lab_code] += world.lab_weight
        # Sparse: a condition has a few medications, procedures and labs. The products with the sparse
        # conditions add the same terms in the same order as the dense ones, so they are bit-identical.
        self.effects = scipy.sparse.csr_matrix(effects)  # (K, C)
        self.links = scipy.sparse.csr_matrix(world.links)  # (K, K)
        self.condition_columns = _columns(world.condition_code)
        self.lab_columns = _columns(world.lab_code)
        self.lab_index = -np.ones(n_codes, np.int64)
        self.lab_index[world.lab_code] = np.arange(len(world.lab_code))
        self.condition_index = -np.ones(n_codes, np.int64)
        self.condition_index[world.condition_code] = np.arange(world.n_conditions)
        self.encounter_codes = np.flatnonzero(world.kind == KIND_ENCOUNTER)
        self.discharge_code = int(np.flatnonzero(world.kind == KIND_DISCHARGE)[0])
        self.death_code = int(np.flatnonzero(world.kind == KIND_DEATH)[0])
        self.inpatient_code = int(self.encounter_codes[-1])

    # ------------------------------------------------------------------------------------------------
    # The distributions at one step, for a batch of patients in state `s`

    def item_distribution(self, s: ProcessState, rows: np.ndarray) -> np.ndarray:
        """(r, C) probabilities of the next same-time item of an encounter."""
        w = self.world
        cond = s.cond[rows].astype(np.float64)  # (r, K)
        sparse_cond = scipy.sparse.csr_matrix(s.cond[rows])  # bool, faster to build; products use exact 1.0s
        age = s.age[rows]
        log_hazard = np.log(np.maximum(w.base_rate, 1e-300))[None] + w.age_slope[None] * (age[:, None] - 50) / 10
        log_hazard = log_hazard + np.where(s.sex[rows, None] == 0, np.log(w.female_multiplier)[None], 0.0)
        hazard = np.exp(log_hazard + (sparse_cond @ self.links).toarray()) * (1 - cond)
        hazard[:, w.dialysis] += 0.02 * cond[:, w.ckd] * (1 - cond[:, w.dialysis])
        hazard = np.minimum(hazard, 0.5)
        n_cond = cond.sum(1, keepdims=True)
        weights = (sparse_cond @ self.effects).toarray()  # (r, C)
        weights += w.routine_procedure[None]
        weights[:, self.condition_columns] += hazard + 0.3 * cond / np.maximum(n_cond, 1)
        lab_weight = np.where(s.phase[rows] == ADMITTED, 2.0, 1.0)[:, None]
        weights[:, self.lab_columns] = (weights[:, self.lab_columns] + 0.15) * lab_weight
        weights /= weights.sum(1, keepdims=True)
        return weights

    def lab_bin_distribution(self, s: ProcessState, rows: np.ndarray, labs: np.ndarray) -> np.ndarray:
        """(r, 10) value-bin probabilities of lab `labs[i]` for patient rows[i]."""
        shift = (s.cond[rows].astype(np.float64) * self.world.lab_shift[:, labs].T).sum(1)
        centre = 4.5 + shift + 0.5 * (s.age[rows] - 50) / 20
        last = s.last_bin[rows, labs]
        centre = np.where(last >= 0, 0.5 * centre + 0.5 * last, centre)
        logits = -((np.arange(N_BINS)[None] - centre[:, None]) ** 2) / (2 * 1.3**2)
        p = np.exp(logits - logits.max(1, keepdims=True))
        return p / p.sum(1, keepdims=True)

    def continue_probability(self, s: ProcessState, rows: np.ndarray) -> np.ndarray:
        phase, items = s.phase[rows], s.items[rows]
        p = np.select([phase == VISIT, phase == ADMITTED, phase == DISCHARGED],
                      [0.9 * 0.85**items, 0.95 * 0.9**items, 0.6 * 0.7**items], 0.0)
        return np.where(s.n_tokens[rows] >= self.max_tokens - CAP_MARGIN, 0.0, p)

    def end_probability(self, s: ProcessState, rows: np.ndarray) -> np.ndarray:
        """P([EOS]) when leaving an outpatient encounter or a discharge."""
        forced = (s.n_tokens[rows] >= self.max_tokens - CAP_MARGIN) | (s.age[rows] >= 100)
        return np.where(forced, 1.0, 0.025)

    def out_gap_distribution(self, s: ProcessState, rows: np.ndarray) -> np.ndarray:
        burden = np.minimum(s.cond[rows].sum(1), 6)[:, None]
        logits = np.array([-1.5, -0.6, 0.6, 0.6, 0.4])[None] + burden * np.array([0.35, 0.3, 0.1, -0.2, -0.45])
        p = np.exp(logits)
        return p / p.sum(1, keepdims=True)

    def out_code_distribution(self, s: ProcessState, rows: np.ndarray) -> np.ndarray:
        burden = s.cond[rows].sum(1)
        weights = np.zeros((len(rows), len(self.world.codes)))
        ones = np.ones(len(rows))
        weights[:, self.encounter_codes] = np.stack(
            [0.6 * ones, 0.15 * ones, 0.1 * (1 + 0.15 * burden), 0.04 * (1 + 0.3 * burden)], 1)
        weights[:, self.death_code] = np.minimum(0.002 * np.exp((s.age[rows] - 65) / 9) * (1 + 0.25 * burden), 1.0)
        return weights / weights.sum(1, keepdims=True)

    def stay_distribution(self, s: ProcessState, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        burden = np.minimum(s.cond[rows].sum(1), 6)
        gap = np.stack([0.5 - 0.04 * burden, 0.35 + 0.02 * burden, 0.15 + 0.02 * burden], 1)
        death = np.minimum(0.02 * (1 + 0.2 * burden) * np.exp((s.age[rows] - 70) / 15), 0.5)
        codes = np.zeros((len(rows), len(self.world.codes)))
        codes[:, self.discharge_code] = 1 - death
        codes[:, self.death_code] = death
        return gap, codes

    # ------------------------------------------------------------------------------------------------
    # Running the process: sampled (forced=None) or replaying given timelines (forced)

    def run(self, n: int, rng: np.random.Generator, forced: Timelines | None = None,
            max_steps: int | None = None) -> Timelines:
        """`n` new patients, sampled, or the timelines `forced` replayed (each token's -log p recorded)."""
        return self.advance(self.start(n, rng, forced), rng, forced, max_steps)

    def start(self, n: int, rng: np.random.Generator, given: Timelines | None = None) -> ProcessState:
        """The state of `n` new patients after their first two tokens: sex and age bucket, drawn or `given`."""
        s = ProcessState.new(n, self.world, self.max_tokens)
        if given is None:
            s.sex[:] = rng.integers(0, 2, n)
            p_age = AGE_BUCKET_WEIGHTS / AGE_BUCKET_WEIGHTS.sum()
            s.age_bucket[:] = _sample(np.broadcast_to(p_age, (n, N_AGE_BUCKETS)), rng.random(n))
        else:
            s.sex[:], s.age_bucket[:] = given.sex, given.age_bucket
        s.emit(np.arange(n), np.full(n, np.log(2.0)))
        s.emit(np.arange(n), -np.log(AGE_BUCKET_WEIGHTS[s.age_bucket] / AGE_BUCKET_WEIGHTS.sum()))
        s.age[:] = s.age_bucket * AGE_BUCKET_YEARS + AGE_BUCKET_YEARS / 2
        return s

    def advance(self, s: ProcessState, rng: np.random.Generator, forced: Timelines | None = None,
                max_steps: int | None = None, horizon_minutes: float = np.inf) -> Timelines:
        """Continue every patient of state `s` (updated in place) by at most `max_steps` events (default
        max_tokens), sampled or, with `forced`, the events of step k of `forced` at step k. A forced row
        whose code is HOLD at a step waits there, so a replay of histories of any lengths leaves each
        row just after its history. A row stops (without [EOS]) once its interval tokens, each at its
        class's lower bound, reach `horizon_minutes`: from there it is surely past that horizon.
        Returns the events of these steps (token_nll and n_tokens are the state's, whole timelines)."""
        n = len(s.phase)
        max_steps = max_steps or self.max_tokens
        out = Timelines(
            sex=s.sex.copy(), age_bucket=s.age_bucket.copy(),
            gap=-np.ones((n, max_steps), np.int8), repeats=np.zeros((n, max_steps), np.int8),
            code=-np.ones((n, max_steps), np.int32), value_bin=-np.ones((n, max_steps), np.int8),
            token_nll=s.token_nll, n_tokens=s.n_tokens,
        )
        clock = np.zeros(n) if np.isfinite(horizon_minutes) else None
        for step in range(max_steps):
            active = np.flatnonzero(s.phase != DONE)
            if not len(active):
                break
            draws = Draws.draw(rng, len(active))
            events = None if forced is None else forced.events(step, active)
            # Rows are independent within a step, so blocks of rows give the same result, faster.
            for first in range(0, len(active), STEP_ROWS):
                block = slice(first, first + STEP_ROWS)
                rows, block_draws = active[block], draws.take(block)
                block_events = None if events is None else events.take(block)
                if block_events is not None and (block_events.code == HOLD).any():
                    moving = block_events.code != HOLD
                    rows, block_draws, block_events = rows[moving], block_draws.take(moving), block_events.take(moving)
                if len(rows):
                    self._step(s, rows, block_draws, block_events, out, step)
                if clock is not None:
                    clock[rows] += elapsed_minutes(out.gap[rows, step], out.repeats[rows, step], middle=False)
                    s.phase[rows[clock[rows] >= horizon_minutes]] = DONE
        return out

    def _step(self, s: ProcessState, rows: np.ndarray, draws: Draws, forced: Events | None, out: Timelines,
              step: int) -> None:
        """One event for each of `rows`, chosen with `draws` or taken from `forced`, recorded at `step`."""
        phase = s.phase[rows]
        stay, leave_out, go, logp_first = self._stay_or_end(s, rows, phase, draws, forced)
        go_rows, gap, code_p = self._intervals(s, rows, phase, stay, leave_out, go, draws, forced, logp_first)
        reps = self._emit_time_tokens(s, rows, go_rows, gap, draws, forced, logp_first)
        code, bins = self._emit_code_and_value(s, rows, go_rows, gap, reps, code_p, draws, forced, logp_first)
        self._record(s, rows[go_rows], gap[go_rows], reps[go_rows], code, bins, out, step)

    def _stay_or_end(self, s, rows, phase, draws, forced):
        """Steps 1 and 2: stay in the encounter (an item at the same time) or leave it; leaving an
        outpatient encounter or a discharge, or being dead, may end the timeline ([EOS] emitted here).
        Returns stay, leave_out and go (the rows that draw an event) (r,) bool, and the log-probability
        carried into the first token of the event."""
        n = len(rows)
        logp_first = np.zeros(n)
        in_encounter = np.isin(phase, (VISIT, ADMITTED, DISCHARGED))
        p_cont = self.continue_probability(s, rows)
        if forced is None:
            stay = draws.stay < p_cont
        else:
            stay = (forced.code >= 0) & (forced.gap < 0) & (phase != START)
        stay &= in_encounter
        logp_first += np.where(in_encounter, np.log(np.where(stay, p_cont, 1 - p_cont)), 0.0)
        leave_out = ~stay & np.isin(phase, (VISIT, DISCHARGED))
        may_end = leave_out | (phase == DEAD)
        p_end = np.where(leave_out, self.end_probability(s, rows), 0.0)
        p_end = np.where(phase == DEAD, 1.0, p_end)
        ends = (draws.end < p_end) if forced is None else (forced.code < 0)
        ends &= may_end
        logp_first += np.where(may_end, np.log(np.where(ends, p_end, 1 - p_end)), 0.0)
        done = np.flatnonzero(ends)
        s.emit(rows[done], -logp_first[done])
        s.phase[rows[done]] = DONE
        return stay, leave_out, ~ends & (phase != DEAD), logp_first

    def _intervals(self, s, rows, phase, stay, leave_out, go, draws, forced, logp_first):
        """Step 3: the interval class before each event that goes on, and the distribution of its code,
        by group of rows. Returns the rows that go on (indices into `rows`, in group order: the rows are
        independent, so any order gives the same result), the interval class (r,) (-1: none), the code
        distributions (one (r_group, C) per group); adds the interval's log-probability to logp_first."""
        gap = -np.ones(len(rows), np.int64)
        start_rows = np.flatnonzero(go & (phase == START))
        start_p = np.zeros((len(start_rows), len(self.world.codes)))
        start_p[:, self.encounter_codes] = np.array([0.6, 0.15, 0.15, 0.1])
        item_rows = np.flatnonzero(go & stay)
        row_groups = [start_rows, item_rows]
        code_p = [start_p, self.item_distribution(s, rows[item_rows])]
        out_rows = np.flatnonzero(go & leave_out)
        stay_rows = np.flatnonzero(go & ~stay & (phase == ADMITTED))
        groups = []
        if len(out_rows):
            groups.append((out_rows, self.out_gap_distribution(s, rows[out_rows]), OUT_GAPS,
                           self.out_code_distribution(s, rows[out_rows])))
        if len(stay_rows):
            gap_p, codes = self.stay_distribution(s, rows[stay_rows])
            groups.append((stay_rows, gap_p, STAY_GAPS, codes))
        for group, gap_p, gaps, codes in groups:
            k = _sample(gap_p, draws.gap[group]) if forced is None else np.searchsorted(gaps, forced.gap[group])
            gap[group] = gaps[k]
            logp_first[group] += np.log(gap_p[np.arange(len(group)), k])
            row_groups.append(group)
            code_p.append(codes)
        return np.concatenate(row_groups), gap, code_p

    def _emit_time_tokens(self, s, rows, go_rows, gap, draws, forced, logp_first):
        """Step 4: the time tokens, the interval class or 1..6 tokens of 6 months; the first carries
        logp_first. Returns the number of time tokens (r,)."""
        reps = np.where(gap >= 0, 1, 0)
        long_rows = np.flatnonzero(gap == LONG_GAP)
        if len(long_rows):
            if forced is None:
                extra = np.minimum(np.floor(np.log(draws.repeats[long_rows]) / np.log(LONG_CONTINUE)),
                                   MAX_LONG_REPEATS - 1)
                reps[long_rows] = 1 + extra.astype(np.int64)
            else:
                reps[long_rows] = forced.repeats[long_rows]
        time_rows = go_rows[gap[go_rows] >= 0]
        s.emit(rows[time_rows], -logp_first[time_rows])
        for r in range(1, MAX_LONG_REPEATS + 1):
            # after the r-th 6-month token: another one (p = LONG_CONTINUE) or the code
            more = time_rows[(gap[time_rows] == LONG_GAP) & (reps[time_rows] > r)]
            s.emit(rows[more], np.full(len(more), -np.log(LONG_CONTINUE)))
        return reps

    def _emit_code_and_value(self, s, rows, go_rows, gap, reps, code_p, draws, forced, logp_first):
        """Step 5: the code, token by token (prefix masses), then a lab's value bin. The first code token
        carries the end of a run of 6-month tokens, or logp_first when there is no time token. Returns
        the code and value bin (-1: none) of each of go_rows."""
        cdf = self._path_cdf(code_p)  # (g, C + 1), row i is go_rows[i]
        if forced is None:
            below = (cdf[:, 1:] < draws.code[go_rows][:, None] * cdf[:, -1:]).sum(1)
            code = self.path_order[np.minimum(below, len(self.path_order) - 1)]
        else:
            code = forced.code[go_rows]
        stop_nll = np.where((gap == LONG_GAP) & (reps < MAX_LONG_REPEATS), -np.log(1 - LONG_CONTINUE), 0.0)
        node_nll = self._code_token_nll(cdf, code)  # (g, depth), NaN past the code's length
        node_nll[:, 0] += np.where(gap[go_rows] >= 0, stop_nll[go_rows], -logp_first[go_rows])
        for j in range(node_nll.shape[1]):
            has = ~np.isnan(node_nll[:, j])
            s.emit(rows[go_rows[has]], node_nll[has, j])
        bins = -np.ones(len(go_rows), np.int64)
        lab_rows = np.flatnonzero(self.lab_index[code] >= 0)
        if len(lab_rows):
            labs = self.lab_index[code[lab_rows]]
            patients = rows[go_rows[lab_rows]]
            bin_p = self.lab_bin_distribution(s, patients, labs)
            if forced is None:
                b = _sample(bin_p, draws.value_bin[go_rows[lab_rows]])
            else:
                b = forced.value_bin[go_rows[lab_rows]]
            bins[lab_rows] = b
            s.emit(patients, -np.log(bin_p[np.arange(len(lab_rows)), b]))
            s.last_bin[patients, labs] = b
        return code, bins

    def _record(self, s, g_rows, gap, reps, code, bins, out, step):
        """Step 6: record the events of patients g_rows at `step` and update their state."""
        out.gap[g_rows, step] = gap
        out.repeats[g_rows, step] = reps
        out.code[g_rows, step] = code
        out.value_bin[g_rows, step] = bins
        years = np.where(gap == LONG_GAP, (reps + 0.5) * SIX_MONTHS_YEARS,
                         np.where(gap >= 0, GAP_REPRESENTATIVE_YEARS[np.maximum(gap, 0)], 0.0))
        s.age[g_rows] += years
        cond_index = self.condition_index[code]
        diag = cond_index >= 0
        s.cond[g_rows[diag], cond_index[diag]] = True
        kind = self.world.kind[code]
        new_phase = s.phase[g_rows].copy()
        s.items[g_rows] += 1
        opened = (kind == KIND_ENCOUNTER) | (kind == KIND_DISCHARGE)
        new_phase[kind == KIND_ENCOUNTER] = VISIT
        new_phase[code == self.inpatient_code] = ADMITTED
        new_phase[kind == KIND_DISCHARGE] = DISCHARGED
        new_phase[kind == KIND_DEATH] = DEAD
        s.items[g_rows[opened]] = 0
        s.phase[g_rows] = new_phase

    def _path_cdf(self, code_p: list[np.ndarray]) -> np.ndarray:
        """(g, C + 1) CDF in token-path order of the code distributions of groups of rows (each (r, C), g rows
        in all, stacked): column k is the mass of the first k codes, so column 0 is 0."""
        cdf = np.empty((sum(len(p) for p in code_p), len(self.path_order) + 1))
        cdf[:, 0] = 0.0
        first = 0
        for p in code_p:
            np.cumsum(np.take(p, self.path_order, axis=1), axis=1, out=cdf[first : first + len(p), 1:])
            first += len(p)
        return cdf

    def _code_token_nll(self, cdf: np.ndarray, code: np.ndarray) -> np.ndarray:
        """-log p of each token of `code` given the tokens before it, from the prefix masses of the
        code distribution's CDF in token-path order (`_path_cdf`); (g, depth), NaN past each code's length."""
        g, depth = len(code), self.node_range.shape[1]
        nll = np.full((g, depth), np.nan)
        previous = np.ones(g)
        rows = np.arange(g)
        for j in range(depth):
            has = j < self.code_length[code]
            lo, hi = self.node_range[code[has], j, 0], self.node_range[code[has], j, 1]
            mass = cdf[rows[has], hi] - cdf[rows[has], lo]
            nll[has, j] = -np.log(mass / previous[has])
            previous[has] = mass
        return nll


@dataclass
class ProcessState:
    """Where each patient is: a function of the tokens emitted so far."""

    sex: np.ndarray
    age_bucket: np.ndarray
    age: np.ndarray  # years, from the age token and the interval tokens
    cond: np.ndarray  # (n, K) diagnosed conditions
    last_bin: np.ndarray  # (n, L) last value bin of each lab, -1 before the first
    phase: np.ndarray
    items: np.ndarray  # items so far in the current encounter
    n_tokens: np.ndarray
    token_nll: np.ndarray  # (n, max_tokens)

    @classmethod
    def new(cls, n: int, world: World, max_tokens: int) -> ProcessState:
        return cls(np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n), np.zeros((n, world.n_conditions), bool),
                   -np.ones((n, len(world.lab_code)), np.int64), np.full(n, START), np.zeros(n, np.int64),
                   np.zeros(n, np.int64), np.full((n, max_tokens), np.nan))

    def repeat(self, k: int) -> ProcessState:
        """Each patient k times (row i * k + j): k copies to continue independently."""
        return ProcessState(**{f.name: np.repeat(getattr(self, f.name), k, axis=0) for f in fields(self)})

    def emit(self, rows: np.ndarray, nll: np.ndarray) -> None:
        """Record one token for each of `rows` with its -log p."""
        self.token_nll[rows, self.n_tokens[rows]] = nll
        self.n_tokens[rows] += 1


def _columns(ids: np.ndarray) -> slice | np.ndarray:
    """Column ids as a slice when they are a contiguous range (much faster to index), else as they are."""
    if len(ids) and np.array_equal(ids, np.arange(ids[0], ids[0] + len(ids))):
        return slice(int(ids[0]), int(ids[0]) + len(ids))
    return ids


def _sample(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """One draw per row of the categorical distributions p (r, k), by inverse CDF with uniforms u (r,)."""
    cdf = np.cumsum(p, axis=1)
    return np.minimum((cdf < u[:, None] * cdf[:, -1:]).sum(1), p.shape[1] - 1)
