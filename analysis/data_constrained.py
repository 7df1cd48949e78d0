"""The data-constrained law L(N, D, U) of Muennighoff et al. (2023, "Scaling Data-Constrained Language
Models"): approach 3's L(N, D) = E + A/N^alpha + B/D^beta evaluated at the effective data
D' = U + U·R*_D·(1 - exp(-R_D / R*_D)), R_D = D/U - 1 the epochs beyond the first (D' = D when D <= U).
Their excess-parameter term (R*_N) is left out; docs/fitting.md says why.

The effective data can only flatten the loss as epochs grow, never raise it; a small model on a small
subset does more than flatten: it memorises, and its validation loss rises. Such runs (`overfit_runs`: a
loss above that of a run of the same N and U with fewer tokens, by more than the noise tolerance) are left
out of the fit and named in its output, and the epoch count they stopped helping at bounds the optimum
under a cap (its last helpful epochs): the law is not asked where the sweep saw it fail.

The fit is approach 3's, with one more parameter: Huber loss (delta = 1e-3) on log loss summed over runs,
log-sum-exp form, L-BFGS-B with the analytic gradient in theta = (e, a, b, alpha, beta, log R*_D). Starts:
approach 3's optimum (when it ran) with R*_D on a grid, and the best points of a variable-projection grid
(Chinchilla's (alpha, beta) pairs x the R*_D grid, E, A, B solved by NNLS at each). Then the optimum under a
data cap: minimise L(N, C/(k·N), U) over N, and what doubling compute or unique data buys there.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import minimize, minimize_scalar

from analysis.blas_threads import single_threaded_blas
from analysis.loss_law import DataConstrainedLaw, LossLaw
from analysis.parametric_fit import (
    AGREEMENT_TOLERANCE,
    EXPONENT_BOUNDS,
    GRADIENT_TOLERANCE,
    HUBER_DELTA,
    INIT_ALPHA,
    INIT_BETA,
    MIN_DISTINCT,
    MIN_RUNS,
    LogData,
    ParametricLossFit,
    huber_objective_parts,
    project_linear_terms,
    theta_from_linear,
)
from analysis.results_table import FLOPS_PER_PARAM_TOKEN, NotEnoughData, ResultsTable

FORM = "muennighoff2023_effective_data"
R_D_STAR_BOUNDS = (0.1, 1e4)
INIT_R_D_STAR = (1.0, 3.0, 10.0, 30.0, 100.0)
N_PROJECTED_STARTS = 12
MIN_REPEATED_RUNS = 3  # runs with more than one epoch
MIN_EPOCH_LEVELS = 3  # distinct epoch counts (everything up to one epoch counts as one level)
EPOCH_LEVEL_DECADES = 0.05  # epoch counts closer than this in log10 are one level
REPEATED = 1.0 + 1e-6  # epochs above this repeat data
WARN_EPOCHS = 4.0  # Muennighoff et al.: up to about 4 epochs are worth nearly as much as fresh data
# A repeating run this much (relative) worse than a run of the same N and U with fewer tokens got worse from
# the extra epochs; below it, a difference is within seed noise (two seeds differ by up to ~0.5% here).
OVERFIT_TOLERANCE = 0.01


@dataclass(frozen=True)
class DataConstrainedFit:
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    R_D_star: float
    objective: float
    converged: bool
    max_abs_gradient: float
    n_points: int
    n_repeated_runs: int
    max_epochs: float
    n_epoch_levels: int
    n_starts: int
    n_starts_at_best: int
    flops_per_param_token: float = FLOPS_PER_PARAM_TOKEN
    fit_seconds: float = 0.0
    overfit_run_ids: tuple[str, ...] = ()  # left out: more epochs made them worse (overfit_runs)
    overfit_epochs: float = np.inf  # the fewest epochs of a left-out run
    last_helpful_epochs: float = np.inf  # the most epochs that still helped where a run then got worse

    @property
    def law(self) -> DataConstrainedLaw:
        return DataConstrainedLaw(LossLaw(self.E, self.A, self.B, self.alpha, self.beta), self.R_D_star)

    def predict(self, params, tokens, unique_tokens):
        return self.law.loss(params, tokens, unique_tokens)

    @property
    def warnings(self) -> list[str]:
        out = []
        if not self.converged:
            out.append(f"data_constrained: did not converge (largest gradient {self.max_abs_gradient:.2g})")
        if self.R_D_star >= 10 * max(self.max_epochs - 1, 1):
            out.append(
                f"data_constrained: R*_D = {self.R_D_star:.3g} is far beyond the {self.max_epochs:.3g} epochs "
                "of the runs: repetition cost nothing measurable there, and R*_D is barely constrained"
            )
        if self.overfit_run_ids:
            out.append(
                f"data_constrained: {len(self.overfit_run_ids)} run(s) got worse with more epochs (the fewest at "
                f"{self.overfit_epochs:.3g} epochs) and are left out of the fit; the law is trusted, and a "
                f"capped optimum searched, up to {self.last_helpful_epochs:.3g} epochs"
            )
        if self.max_epochs < WARN_EPOCHS:
            out.append(
                f"data_constrained: the runs repeat data at most {self.max_epochs:.3g} epochs; R*_D is "
                "extrapolated beyond that"
            )
        return out

    def to_json(self) -> dict:
        law = self.law.law
        return {
            "form": FORM, "E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta,
            "R_D_star": self.R_D_star, "a": law.a, "b": law.b, "G": law.G,
            "max_effective_epochs": 1.0 + self.R_D_star, "converged": self.converged,
            "objective": self.objective, "max_abs_gradient": self.max_abs_gradient, "n_points": self.n_points,
            "n_repeated_runs": self.n_repeated_runs, "max_epochs": self.max_epochs,
            "n_epoch_levels": self.n_epoch_levels, "n_starts": self.n_starts,
            "n_starts_at_best": self.n_starts_at_best, "flops_per_param_token": self.flops_per_param_token,
            "fit_seconds": self.fit_seconds, "overfit_run_ids": list(self.overfit_run_ids),
            "overfit_epochs": _finite_or_none(self.overfit_epochs),
            "last_helpful_epochs": _finite_or_none(self.last_helpful_epochs),
        }  # fmt: skip


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def overfit_runs(params, tokens, unique_tokens, loss, tolerance: float = OVERFIT_TOLERANCE
                 ) -> tuple[np.ndarray, float]:  # fmt: skip
    """(mask, last helpful epochs). The mask is True for each run that repeats data and ends more than
    `tolerance` (relative) above the lowest loss of the runs of the same N and U with fewer tokens: the extra
    epochs made it worse. The last helpful epochs are the fewest, over the (N, U) groups with such a run, of
    the epochs of the group's best run before its first one: how far repetition was seen to help before it
    hurt (inf when no run got worse)."""
    params, tokens, unique_tokens, loss = (np.asarray(v, float) for v in (params, tokens, unique_tokens, loss))
    mask = np.zeros(len(loss), dtype=bool)
    limit = np.inf
    for n, u in set(zip(params.tolist(), unique_tokens.tolist(), strict=True)):
        group = np.flatnonzero((params == n) & (unique_tokens == u))
        best = None  # the lowest-loss run so far, in order of tokens
        for i in group[np.argsort(tokens[group], kind="stable")]:
            worse = best is not None and tokens[i] > u * REPEATED and loss[i] > loss[best] * (1 + tolerance)
            if worse and not mask[group].any():  # the group's first run that got worse
                limit = min(limit, float(tokens[best] / min(u, tokens[best])))
            mask[i] = worse
            if best is None or loss[i] < loss[best]:
                best = i
    return mask, limit


@dataclass(frozen=True)
class RepeatData:
    """The runs in the form the objective uses: log N, the unique tokens drawn (min(U, D)), the repeats
    R_D = D / min(U, D) - 1 >= 0, log loss."""

    log_params: np.ndarray
    seen: np.ndarray
    repeats: np.ndarray
    log_loss: np.ndarray
    delta: float = HUBER_DELTA

    @classmethod
    def from_arrays(cls, params, tokens, unique_tokens, loss, delta: float = HUBER_DELTA) -> RepeatData:
        tokens = np.asarray(tokens, float)
        seen = np.minimum(np.asarray(unique_tokens, float), tokens)
        return cls(np.log(params), seen, tokens / seen - 1.0, np.log(loss), delta)

    def log_effective_tokens(self, R_D_star: float) -> np.ndarray:
        return np.log(self.seen) + np.log1p(-R_D_star * np.expm1(-self.repeats / R_D_star))

    def at(self, R_D_star: float) -> LogData:
        """The unconstrained fit's data with D replaced by D'(R*_D)."""
        return LogData(self.log_params, self.log_effective_tokens(R_D_star), self.log_loss, self.delta)


def objective_and_gradient(theta: np.ndarray, data: RepeatData) -> tuple[float, np.ndarray]:
    """Summed Huber loss of log L(N, D'(R*_D)) - log loss and its gradient; theta = (e, a, b, alpha, beta,
    log R*_D): approach 3's objective on the effective data, chained through
    d log D' / d log R*_D = (R*(1 - x) - R_D·x) / (1 + R*(1 - x)), x = exp(-R_D / R*)."""
    r_star = np.exp(theta[5])
    x = np.exp(-data.repeats / r_star)
    kept = -r_star * np.expm1(-data.repeats / r_star)  # R*(1 - x)
    dlog_effective = (kept - data.repeats * x) / (1.0 + kept)
    objective, gradient, token_gradient = huber_objective_parts(theta[:5], data.at(r_star))
    return objective, np.append(gradient, token_gradient @ dlog_effective)


def _bounds():
    return [(None, None)] * 3 + [EXPONENT_BOUNDS] * 2 + [tuple(np.log(R_D_STAR_BOUNDS))]


def _polish(theta: np.ndarray, data: RepeatData):
    return minimize(
        objective_and_gradient, theta, args=(data,), jac=True, method="L-BFGS-B", bounds=_bounds(),
        options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-12},
    )  # fmt: skip


def _theta(E: float, A: float, B: float, alpha: float, beta: float, R_D_star: float) -> np.ndarray:
    return np.append(theta_from_linear(np.array([E, A, B], dtype=float), alpha, beta), np.log(R_D_star))


def _starts(data: RepeatData, warm_start: ParametricLossFit | None) -> list[np.ndarray]:
    starts = []
    if warm_start is not None:
        w = warm_start
        starts += [_theta(w.E, w.A, w.B, w.alpha, w.beta, r) for r in INIT_R_D_STAR]
    projected = []
    for r in INIT_R_D_STAR:
        at_r = data.at(r)
        for alpha, beta in itertools.product(INIT_ALPHA, INIT_BETA):
            theta = _theta(*project_linear_terms(alpha, beta, at_r), alpha, beta, r)
            projected.append((objective_and_gradient(theta, data)[0], theta))
    projected.sort(key=lambda pair: pair[0])
    return starts + [theta for _, theta in projected[:N_PROJECTED_STARTS]]


def epoch_levels(epochs: np.ndarray) -> int:
    """Distinct epoch counts, everything up to one epoch counting as one level."""
    levels = np.round(np.log10(np.maximum(epochs, 1.0)) / EPOCH_LEVEL_DECADES)
    return len(np.unique(levels))


def fit_data_constrained(
    params, tokens, unique_tokens, loss, *, delta: float = HUBER_DELTA,
    flops_per_param_token: float = FLOPS_PER_PARAM_TOKEN, warm_start: ParametricLossFit | None = None,
    refit_from: DataConstrainedFit | None = None,
) -> DataConstrainedFit:  # fmt: skip
    """Fit L(N, D, U) to runs (N, D, U, final loss); U = inf for a run on fresh data. `warm_start`: approach
    3's fit, a start for E, A, B, alpha, beta. `refit_from` (a bootstrap refit): only the search from that
    fit runs, and the full search if it does not converge."""
    with single_threaded_blas():
        started = time.perf_counter()
        data = RepeatData.from_arrays(params, tokens, unique_tokens, loss, delta)
        epochs = np.asarray(tokens, float) / np.asarray(unique_tokens, float)
        counts = (int(np.sum(epochs > REPEATED)), float(np.max(epochs, initial=0.0)), epoch_levels(epochs))
        if refit_from is not None:
            f = refit_from
            result = _polish(_theta(f.E, f.A, f.B, f.alpha, f.beta, f.R_D_star), data)
            fit = _make_fit(result, data, counts, 1, 1, flops_per_param_token, started)
            if fit.converged:
                return fit
        starts = _starts(data, warm_start)
        results = [_polish(theta, data) for theta in starts]
        objectives = np.array([r.fun for r in results])
        best = results[int(np.argmin(objectives))]
        n_at_best = int(np.sum(objectives <= best.fun * (1 + AGREEMENT_TOLERANCE)))
        return _make_fit(best, data, counts, len(starts), n_at_best, flops_per_param_token, started)


def _make_fit(result, data: RepeatData, counts, n_starts: int, n_at_best: int, k: float, started: float):
    objective, gradient = objective_and_gradient(result.x, data)
    projected = gradient.copy()
    for i, (low, high) in enumerate(_bounds()):  # a gradient pointing out of the box at a bound is no failure
        if (low is not None and result.x[i] <= low and gradient[i] > 0) or (
            high is not None and result.x[i] >= high and gradient[i] < 0
        ):
            projected[i] = 0.0
    max_abs_gradient = float(np.max(np.abs(projected)))
    n = len(data.log_loss)
    e, a, b, alpha, beta, log_r = result.x
    n_repeated, max_epochs, n_levels = counts
    return DataConstrainedFit(
        E=float(np.exp(e)), A=float(np.exp(a)), B=float(np.exp(b)), alpha=float(alpha), beta=float(beta),
        R_D_star=float(np.exp(log_r)), objective=objective,
        converged=bool(max_abs_gradient <= GRADIENT_TOLERANCE * data.delta * n),
        max_abs_gradient=max_abs_gradient, n_points=n, n_repeated_runs=n_repeated, max_epochs=max_epochs,
        n_epoch_levels=n_levels, n_starts=n_starts, n_starts_at_best=n_at_best, flops_per_param_token=k,
        fit_seconds=time.perf_counter() - started,
    )  # fmt: skip


def check_repeated_data(table: ResultsTable, context: str = "") -> None:
    """Raise NotEnoughData, with the reason (and `context`), when the table cannot identify R*_D."""
    if not table.has_unique_tokens:
        raise NotEnoughData(
            f"data_constrained: {table.source} records no unique_tokens (or epochs) per run; the "
            "repetition-aware law needs runs that repeat data, at several epoch counts"
        )
    params, tokens, loss = table.arrays()
    n_sizes, n_token_counts = len(np.unique(params)), len(np.unique(tokens))
    if len(loss) < MIN_RUNS or n_sizes < MIN_DISTINCT or n_token_counts < MIN_DISTINCT:
        raise NotEnoughData(
            f"data_constrained: needs {MIN_RUNS}+ runs with {MIN_DISTINCT}+ distinct sizes and token counts, "
            f"found {len(loss)} runs, {n_sizes} sizes, {n_token_counts} token counts{context}"
        )
    epochs = table.epochs_array()
    n_repeated, n_levels = int(np.sum(epochs > REPEATED)), epoch_levels(epochs)
    if n_repeated < MIN_REPEATED_RUNS or n_levels < MIN_EPOCH_LEVELS:
        raise NotEnoughData(
            f"data_constrained: needs {MIN_REPEATED_RUNS}+ runs that repeat data (epochs > 1) and "
            f"{MIN_EPOCH_LEVELS}+ distinct epoch counts, found {n_repeated} repeating runs and {n_levels} "
            f"epoch counts (max {float(np.max(epochs)):.3g} epochs){context}"
        )


def fit_data_constrained_table(
    table: ResultsTable, warm_start: ParametricLossFit | None = None,
    refit_from: DataConstrainedFit | None = None, delta: float = HUBER_DELTA,
) -> DataConstrainedFit:  # fmt: skip
    """The data-constrained law on a results table, without the runs more epochs made worse (raises
    NotEnoughData without enough repeated-data runs left)."""
    check_repeated_data(table)
    params, tokens, loss = table.arrays()
    unique_tokens = table.unique_tokens_array()
    overfit, last_helpful = overfit_runs(params, tokens, unique_tokens, loss)
    kept = table.select(np.flatnonzero(~overfit)) if overfit.any() else table
    if overfit.any():
        check_repeated_data(kept, f" once the {int(overfit.sum())} run(s) more epochs made worse are left out")
    kept_params, kept_tokens, kept_loss = kept.arrays()
    fit = fit_data_constrained(
        kept_params, kept_tokens, kept.unique_tokens_array(), kept_loss, delta=delta,
        flops_per_param_token=table.flops_per_param_token, warm_start=warm_start, refit_from=refit_from,
    )  # fmt: skip
    if not overfit.any():
        return fit
    return replace(
        fit, overfit_run_ids=tuple(str(r) for r in table.runs["run_id"].to_numpy()[overfit]),
        overfit_epochs=float(np.min(table.epochs_array()[overfit])), last_helpful_epochs=last_helpful,
    )  # fmt: skip


# --- the optimum under a data cap -------------------------------------------------------------------------

SEARCH_DECADES = 5.0  # the constrained optimum is searched within this many decades of the unconstrained one
SEARCH_POINTS = 1001


def _point(law: DataConstrainedLaw, params: float, compute: float, unique_tokens: float, k: float) -> dict:
    tokens = compute / (k * params)
    return {
        "params": params, "tokens": tokens, "tokens_per_param": tokens / params,
        "epochs": tokens / unique_tokens if np.isfinite(unique_tokens) else 0.0,
        "predicted_loss": float(law.loss(params, tokens, unique_tokens)),
    }  # fmt: skip


def unconstrained_optimum(law: DataConstrainedLaw, compute: float, unique_tokens: float,
                          k: float = FLOPS_PER_PARAM_TOKEN) -> dict:  # fmt: skip
    """The optimum of the law with fresh data (U = inf) at `compute`; `epochs` says how often it would pass
    over `unique_tokens`, and `loss_at_unique_tokens` what it would reach if it had only those."""
    params = float(law.law.optimal_params(compute, k))
    point = _point(law, params, compute, np.inf, k)
    point["epochs"] = point["tokens"] / unique_tokens
    point["loss_at_unique_tokens"] = float(law.loss(params, point["tokens"], unique_tokens))
    return point


def constrained_optimum(law: DataConstrainedLaw, compute: float, unique_tokens: float,
                        k: float = FLOPS_PER_PARAM_TOKEN, max_epochs: float = np.inf) -> dict:  # fmt: skip
    """argmin over N of L(N, C/(k·N), U) with at most `max_epochs` passes over U: a grid over ±5 decades
    around the unconstrained optimum, then Brent's method between the grid neighbours of the best point.
    `limited_by_epochs` says whether the bound, not the law, set the answer."""
    centre = np.log(float(law.law.optimal_params(compute, k)))
    grid = centre + np.linspace(-1, 1, SEARCH_POINTS) * SEARCH_DECADES * np.log(10)
    smallest = np.log(compute / (k * unique_tokens * max_epochs)) if np.isfinite(max_epochs) else -np.inf
    grid = np.unique(np.append(grid[grid > smallest], smallest)) if np.isfinite(smallest) else grid

    def loss_at(log_params):
        params = np.exp(log_params)
        return law.loss(params, compute / (k * params), unique_tokens)

    values = loss_at(grid)
    i = int(np.argmin(values))
    low, high = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    log_params = float(grid[i])
    if high > low:
        result = minimize_scalar(loss_at, bounds=(low, high), method="bounded", options={"xatol": 1e-9})
        log_params = float(result.x) if result.fun <= values[i] else log_params
    point = _point(law, float(np.exp(log_params)), compute, unique_tokens, k)
    point["limited_by_epochs"] = bool(np.isfinite(max_epochs) and point["epochs"] >= max_epochs * (1 - 1e-6))
    return point


def cap_analysis(law: DataConstrainedLaw, compute: float, unique_tokens: float,
                 k: float = FLOPS_PER_PARAM_TOKEN, max_epochs: float = np.inf) -> dict:  # fmt: skip
    """The unconstrained and data-constrained optima at `compute`, the loss the cap costs, and the exchange
    rate: the constrained optimum's loss with 2C (same data) and with 2U (same compute). The constrained
    optima train at most `max_epochs` (the fit's `last_helpful_epochs`)."""
    free = unconstrained_optimum(law, compute, unique_tokens, k)
    capped = constrained_optimum(law, compute, unique_tokens, k, max_epochs)
    more_compute = constrained_optimum(law, 2 * compute, unique_tokens, k, max_epochs)
    more_data = constrained_optimum(law, compute, 2 * unique_tokens, k, max_epochs)
    gain_compute = capped["predicted_loss"] - more_compute["predicted_loss"]
    gain_data = capped["predicted_loss"] - more_data["predicted_loss"]
    return {
        "unconstrained": free,
        "constrained": capped,
        "max_epochs": _finite_or_none(max_epochs),
        "loss_cost": capped["predicted_loss"] - free["predicted_loss"],
        "double_compute": {"compute": 2 * compute, **more_compute, "loss_gain": gain_compute},
        "double_unique_tokens": {"unique_tokens": 2 * unique_tokens, **more_data, "loss_gain": gain_data},
        "better": "compute" if gain_compute > gain_data else "unique_tokens",
    }


def cap_values(law: DataConstrainedLaw, compute: float, unique_tokens: float, k: float,
               max_epochs: float = np.inf) -> dict[str, float]:  # fmt: skip
    """The scalars of `cap_analysis` the bootstrap gives intervals for, by their dotted names."""
    cap = cap_analysis(law, compute, unique_tokens, k, max_epochs)
    values = {f"constrained.{key}": cap["constrained"][key] for key in
              ("params", "tokens", "tokens_per_param", "epochs", "predicted_loss")}  # fmt: skip
    values["unconstrained.predicted_loss"] = cap["unconstrained"]["predicted_loss"]
    values["loss_cost"] = cap["loss_cost"]
    values["double_compute.predicted_loss"] = cap["double_compute"]["predicted_loss"]
    values["double_unique_tokens.predicted_loss"] = cap["double_unique_tokens"]["predicted_loss"]
    return {key: float(v) for key, v in values.items() if np.isfinite(v)}
