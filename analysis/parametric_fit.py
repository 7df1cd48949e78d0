"""Approach 3 (Chinchilla, as replicated by Epoch AI): the parametric loss L(N, D) = E + A/N^alpha + B/D^beta.

The fit follows Epoch's choices: the log-sum-exp form log L = LSE(e, a - alpha·log N, b - beta·log D) with
E, A, B = exp(e, a, b); the Huber loss with delta = 1e-3 on log loss, SUMMED over runs (a mean shrinks the
gradient below L-BFGS's tolerance and stops it early, the cause of Chinchilla's published misfit);
Chinchilla's grid of initialisations; L-BFGS with analytic gradients; a convergence check.

It is fast because of variable projection. For fixed exponents (alpha, beta) the law is linear in
(E, A, B), so at each of the 25 (alpha, beta) pairs of Chinchilla's grid those three are solved by one
non-negative least-squares step instead of being searched over the grid's 180 (e, a, b) values; the whole
4,500-point grid is still evaluated (vectorised, milliseconds) and its best few points are kept as extra
starts. L-BFGS with the analytic gradient then runs on the exact 5-parameter objective from each of those
30 starts. The convergence check is the size of the gradient at the best optimum; how many starts reached
that optimum is reported as well.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize, nnls
from scipy.special import logsumexp

from analysis.blas_threads import single_threaded_blas
from analysis.loss_law import LossLaw
from analysis.results_table import FLOPS_PER_PARAM_TOKEN, NotEnoughData, ResultsTable

HUBER_DELTA = 1e-3
# Chinchilla's grid (Hoffmann et al. 2022, appendix D.2): 5 x 5 x 5 x 6 x 6 = 4,500 starting points.
INIT_ALPHA = np.arange(0.0, 2.5, 0.5)
INIT_BETA = np.arange(0.0, 2.5, 0.5)
INIT_E = np.arange(-1.0, 1.5, 0.5)
INIT_A = np.arange(0.0, 30.0, 5.0)
INIT_B = np.arange(0.0, 30.0, 5.0)
EXPONENT_BOUNDS = (0.0, 5.0)
# Converged when every component of the gradient is below this fraction of delta·n, the gradient a single
# run at the Huber kink contributes per unit of its log-features.
GRADIENT_TOLERANCE = 1e-4
N_RAW_GRID_STARTS = 5
# Searches whose final objective is within this relative distance of the best count as agreeing with it.
AGREEMENT_TOLERANCE = 1e-6
MIN_RUNS = 8
MIN_DISTINCT = 3


@dataclass(frozen=True)
class ParametricLossFit:
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float  # summed Huber loss at the optimum
    converged: bool
    max_abs_gradient: float
    n_points: int
    n_starts: int  # L-BFGS searches run
    n_starts_at_best: int  # of those, how many reached the best objective (agreement check)
    flops_per_param_token: float = FLOPS_PER_PARAM_TOKEN  # k in C = k·N·D
    fit_seconds: float = 0.0

    @property
    def law(self) -> LossLaw:
        return LossLaw(self.E, self.A, self.B, self.alpha, self.beta)

    @property
    def a(self) -> float:
        return self.law.a

    @property
    def b(self) -> float:
        return self.law.b

    @property
    def G(self) -> float:
        return self.law.G

    def predict(self, params: np.ndarray | float, tokens: np.ndarray | float) -> np.ndarray | float:
        return self.law.loss(params, tokens)

    def optimal_params(self, compute: np.ndarray | float) -> np.ndarray | float:
        return self.law.optimal_params(compute, self.flops_per_param_token)

    def optimal_tokens(self, compute: np.ndarray | float) -> np.ndarray | float:
        return self.law.optimal_tokens(compute, self.flops_per_param_token)

    def to_json(self) -> dict:
        return {
            "E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta,
            "a": self.a, "b": self.b, "G": self.G, "converged": self.converged,
            "objective": self.objective, "max_abs_gradient": self.max_abs_gradient,
            "n_points": self.n_points, "n_starts": self.n_starts, "n_starts_at_best": self.n_starts_at_best,
            "flops_per_param_token": self.flops_per_param_token, "fit_seconds": self.fit_seconds,
        }  # fmt: skip


@dataclass(frozen=True)
class LogData:
    """The runs in the form the objective uses."""

    log_params: np.ndarray
    log_tokens: np.ndarray
    log_loss: np.ndarray
    delta: float = HUBER_DELTA

    @classmethod
    def from_arrays(cls, params, tokens, loss, delta: float = HUBER_DELTA) -> LogData:
        return cls(np.log(params), np.log(tokens), np.log(loss), delta)


def huber(residuals: np.ndarray, delta: float) -> np.ndarray:
    r = np.abs(residuals)
    return np.where(r <= delta, 0.5 * r * r, delta * (r - 0.5 * delta))


def huber_objective_and_gradient(theta: np.ndarray, data: LogData) -> tuple[float, np.ndarray]:
    """Summed Huber loss of log L - log loss and its exact gradient; theta = (e, a, b, alpha, beta).

    log L = log(exp(e) + exp(a - alpha·log N) + exp(b - beta·log D)), computed stably around the largest term;
    d objective / d term = huber'(residual) · (the term's share of L).
    """
    objective, gradient, _ = huber_objective_parts(theta, data)
    return objective, gradient


def huber_objective_parts(theta: np.ndarray, data: LogData) -> tuple[float, np.ndarray, np.ndarray]:
    """`huber_objective_and_gradient` and, per run, d objective / d log D (n,): what a law that makes D a
    function of other parameters (analysis.data_constrained) needs for its chain rule."""
    e, a, b, alpha, beta = theta
    log_size_term = a - alpha * data.log_params  # (n,)
    log_data_term = b - beta * data.log_tokens  # (n,)
    largest = np.maximum(np.maximum(log_size_term, log_data_term), e)
    irreducible = np.exp(e - largest)
    size_term = np.exp(log_size_term - largest)
    data_term = np.exp(log_data_term - largest)
    total = irreducible + size_term + data_term
    residual = largest + np.log(total) - data.log_loss
    weight = np.clip(residual, -data.delta, data.delta) / total  # huber'(r) / (L / exp(largest))
    gradient = np.array(
        [
            weight @ irreducible,
            weight @ size_term,
            weight @ data_term,
            -(weight * size_term) @ data.log_params,
            -(weight * data_term) @ data.log_tokens,
        ]
    )
    return float(huber(residual, data.delta).sum()), gradient, -beta * weight * data_term


def grid_objective(starts: np.ndarray, data: LogData) -> np.ndarray:
    """The objective at many (e, a, b, alpha, beta) points at once; starts is (m, 5)."""
    e, a, b, alpha, beta = (starts[:, i : i + 1] for i in range(5))  # each (m, 1)
    log_terms = np.stack(
        np.broadcast_arrays(e, a - alpha * data.log_params, b - beta * data.log_tokens)
    )  # (3, m, n)
    residual = logsumexp(log_terms, axis=0) - data.log_loss
    return huber(residual, data.delta).sum(axis=1)


def chinchilla_init_grid() -> np.ndarray:
    """The 4,500 starting points as rows (e, a, b, alpha, beta)."""
    grid = itertools.product(INIT_E, INIT_A, INIT_B, INIT_ALPHA, INIT_BETA)
    return np.array(list(grid), dtype=float)


def project_linear_terms(alpha: float, beta: float, data: LogData) -> np.ndarray:
    """For fixed exponents, the non-negative (E, A, B) of least relative squared error: the law is linear in
    them, so this is one NNLS solve (relative residuals are the first-order log residuals)."""
    features = np.stack(
        [np.ones_like(data.log_params), np.exp(-alpha * data.log_params), np.exp(-beta * data.log_tokens)],
        axis=1,
    )  # (n, 3)
    scale = features.max(axis=0)  # columns of order one keep NNLS well conditioned
    relative = features / scale / np.exp(data.log_loss)[:, None]
    q, _ = nnls(relative, np.ones_like(data.log_loss))
    return q / scale


def _polish(theta: np.ndarray, data: LogData, fixed_e: float | None = None):
    e_bounds = (None, None) if fixed_e is None else (fixed_e, fixed_e)  # equal bounds hold e in place
    bounds = [e_bounds] + [(None, None)] * 2 + [EXPONENT_BOUNDS] * 2
    return minimize(
        huber_objective_and_gradient,
        theta,
        args=(data,),
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-12},
    )


def theta_from_linear(p: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    # an exactly-zero term would be log 0; start it tiny instead
    floor = 1e-12 * max(float(p.max()), 1e-12)
    return np.array([*np.log(np.maximum(p, floor)), alpha, beta])


def fit_parametric_loss(
    params: np.ndarray,
    tokens: np.ndarray,
    loss: np.ndarray,
    *,
    delta: float = HUBER_DELTA,
    flops_per_param_token: float = FLOPS_PER_PARAM_TOKEN,
    warm_start: ParametricLossFit | None = None,
    fixed_E: float | None = None,
) -> ParametricLossFit:
    """Fit L(N, D) = E + A/N^alpha + B/D^beta to runs (N, D, final loss).

    With `warm_start` (a bootstrap refit), only the final 5-parameter L-BFGS runs, from that fit; if it does
    not pass the convergence check the full search runs instead. With `fixed_E` the irreducible loss is
    pinned at that value (0 for a pure power law) and only A, B, alpha, beta are fitted.
    """
    with single_threaded_blas():
        return _fit_parametric_loss(params, tokens, loss, delta, flops_per_param_token, warm_start, fixed_E)


PINNED_ZERO_E = 1e-12  # E = 0 in the log-sum-exp form (log 0 is not a number)


def _fit_parametric_loss(params, tokens, loss, delta, flops_per_param_token, warm_start,
                         fixed_E=None) -> ParametricLossFit:
    started = time.perf_counter()
    data = LogData.from_arrays(params, tokens, loss, delta)
    fixed_e = None if fixed_E is None else float(np.log(max(fixed_E, PINNED_ZERO_E)))

    def pinned(theta: np.ndarray) -> np.ndarray:
        return theta if fixed_e is None else np.array([fixed_e, *theta[1:]])

    if warm_start is not None:
        w = warm_start
        theta = pinned(np.array([np.log(w.E), np.log(w.A), np.log(w.B), w.alpha, w.beta]))
        result = _polish(theta, data, fixed_e)
        fit = _make_fit(result, data, n_starts=1, n_at_best=1, k=flops_per_param_token, started=started,
                        fixed_e=fixed_e)
        if fit.converged:
            return fit
    # variable projection: each (alpha, beta) pair of Chinchilla's grid with its (E, A, B) solved
    starts = [
        theta_from_linear(project_linear_terms(alpha, beta, data), alpha, beta)
        for alpha, beta in itertools.product(INIT_ALPHA, INIT_BETA)
    ]
    # safeguard: the best raw points of the full 4,500-point grid as well
    grid = chinchilla_init_grid()
    starts += list(grid[np.argsort(grid_objective(grid, data))[:N_RAW_GRID_STARTS]])
    results = [_polish(pinned(theta), data, fixed_e) for theta in starts]
    objectives = np.array([r.fun for r in results])
    best = results[int(np.argmin(objectives))]
    n_at_best = int(np.sum(objectives <= best.fun * (1 + AGREEMENT_TOLERANCE)))
    return _make_fit(best, data, len(starts), n_at_best, flops_per_param_token, started, fixed_e)


def _make_fit(result, data: LogData, n_starts: int, n_at_best: int, k: float, started: float,
              fixed_e: float | None = None):
    objective, gradient = huber_objective_and_gradient(result.x, data)
    n = len(data.log_loss)
    # a gradient pointing out of the box at an exponent bound (or along a pinned E) is not a failure to converge
    projected = gradient.copy()
    if fixed_e is not None:
        projected[0] = 0.0
    for i in (3, 4):
        if (result.x[i] <= EXPONENT_BOUNDS[0] and gradient[i] > 0) or (
            result.x[i] >= EXPONENT_BOUNDS[1] and gradient[i] < 0
        ):
            projected[i] = 0.0
    max_abs_gradient = float(np.max(np.abs(projected)))
    e, a, b, alpha, beta = result.x
    return ParametricLossFit(
        E=float(np.exp(e)),
        A=float(np.exp(a)),
        B=float(np.exp(b)),
        alpha=float(alpha),
        beta=float(beta),
        objective=objective,
        converged=bool(max_abs_gradient <= GRADIENT_TOLERANCE * data.delta * n),
        max_abs_gradient=max_abs_gradient,
        n_points=n,
        n_starts=n_starts,
        n_starts_at_best=n_at_best,
        flops_per_param_token=k,
        fit_seconds=time.perf_counter() - started,
    )


def fit_parametric_loss_table(
    table: ResultsTable, warm_start: ParametricLossFit | None = None, delta: float = HUBER_DELTA,
    fixed_E: float | None = None,
) -> ParametricLossFit:
    """Approach 3 on a results table (raises NotEnoughData on thin tables)."""
    params, tokens, loss = table.arrays()
    n_sizes, n_token_counts = len(np.unique(params)), len(np.unique(tokens))
    if len(loss) < MIN_RUNS or n_sizes < MIN_DISTINCT or n_token_counts < MIN_DISTINCT:
        raise NotEnoughData(
            f"approach3: needs {MIN_RUNS}+ runs with {MIN_DISTINCT}+ distinct sizes and token counts, "
            f"found {len(loss)} runs, {n_sizes} sizes, {n_token_counts} token counts"
        )
    return fit_parametric_loss(
        params, tokens, loss, delta=delta, flops_per_param_token=table.flops_per_param_token,
        warm_start=warm_start, fixed_E=fixed_E,
    )  # fmt: skip
