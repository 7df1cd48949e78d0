"""A power law y = coefficient · x^exponent, fitted by least squares in log space. Approaches 1 and 2
both end here: the compute-optimal N_opt(C) and D_opt(C)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.results_table import NotEnoughData


@dataclass(frozen=True)
class PowerLaw:
    coefficient: float
    exponent: float
    n_points: int = 0

    def __call__(self, x: np.ndarray | float) -> np.ndarray | float:
        return self.coefficient * np.power(x, self.exponent)

    def to_json(self) -> dict:
        return {"coefficient": self.coefficient, "exponent": self.exponent, "n_points": self.n_points}


class ComputeAllocation:
    """What approaches 1 and 2 share: N_opt(C) and D_opt(C) as two power laws, `params_law` and
    `tokens_law` (fields of the dataclass that mixes this in)."""

    params_law: PowerLaw
    tokens_law: PowerLaw

    @property
    def a(self) -> float:
        return self.params_law.exponent

    @property
    def b(self) -> float:
        return self.tokens_law.exponent

    def optimal_params(self, compute: float | np.ndarray) -> float | np.ndarray:
        return self.params_law(compute)

    def optimal_tokens(self, compute: float | np.ndarray) -> float | np.ndarray:
        return self.tokens_law(compute)

    def laws_json(self) -> dict:
        return {"a": self.a, "b": self.b, "params_coefficient": self.params_law.coefficient,
                "tokens_coefficient": self.tokens_law.coefficient}


def fit_power_law(x: np.ndarray, y: np.ndarray) -> PowerLaw:
    """Least squares of log y on log x. Needs at least two distinct x values."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(np.unique(x)) < 2:
        raise NotEnoughData(f"a power law needs 2 or more distinct x values, got {len(np.unique(x))}")
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    return PowerLaw(coefficient=float(np.exp(intercept)), exponent=float(slope), n_points=len(x))
