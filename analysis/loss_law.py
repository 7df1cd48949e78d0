"""The parametric loss law L(N, D) = E + A/N^alpha + B/D^beta and what follows from it under C = k·N·D.

The one type for this law: approach 3 fits it, synthetic tables are drawn from it, the final run's
prediction evaluates it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.results_table import FLOPS_PER_PARAM_TOKEN

LAW_KEYS = ("E", "A", "B", "alpha", "beta")


@dataclass(frozen=True)
class LossLaw:
    E: float
    A: float
    B: float
    alpha: float
    beta: float

    @classmethod
    def from_json(cls, law: dict) -> LossLaw:
        """From any mapping with the keys E, A, B, alpha, beta (fit.json's approach3, recommendation.json's law)."""
        return cls(**{k: float(law[k]) for k in LAW_KEYS})

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in LAW_KEYS}

    def loss(self, params: np.ndarray | float, tokens: np.ndarray | float) -> np.ndarray | float:
        return self.E + self.A * np.power(params, -self.alpha) + self.B * np.power(tokens, -self.beta)

    @property
    def a(self) -> float:
        """Exponent of N_opt ∝ C^a."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """Exponent of D_opt ∝ C^b."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def G(self) -> float:
        """N_opt = G·(C/k)^a and D_opt = (C/k)^b / G, minimising L under C = k·N·D."""
        return (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))

    def optimal_params(self, compute, flops_per_param_token: float = FLOPS_PER_PARAM_TOKEN):
        return self.G * np.power(np.asarray(compute) / flops_per_param_token, self.a)

    def optimal_tokens(self, compute, flops_per_param_token: float = FLOPS_PER_PARAM_TOKEN):
        return np.power(np.asarray(compute) / flops_per_param_token, self.b) / self.G


DATA_CONSTRAINED_KEYS = (*LAW_KEYS, "R_D_star")


def effective_tokens(tokens, unique_tokens, R_D_star: float):
    """Muennighoff et al. (2023) effective data D' = U + U·R*_D·(1 - exp(-R_D / R*_D)), R_D = D/U - 1 the
    epochs beyond the first; D' = D when D <= U (a fresh subset). U = inf means unlimited fresh data."""
    tokens = np.asarray(tokens, dtype=float)
    seen = np.minimum(np.asarray(unique_tokens, dtype=float), tokens)  # unique tokens actually drawn
    repeats = tokens / seen - 1.0
    return seen * (1.0 - R_D_star * np.expm1(-repeats / R_D_star))


@dataclass(frozen=True)
class DataConstrainedLaw:
    """L(N, D, U) = law.loss(N, D'(D, U)): the law with fresh data, fed the effective data of Muennighoff et
    al. (2023). R_D_star is the number of repeated epochs after which a repeat's worth has decayed by 1/e;
    unlimited repetition of U tokens is worth at most U·(1 + R_D_star) fresh ones."""

    law: LossLaw
    R_D_star: float

    @classmethod
    def from_json(cls, law: dict) -> DataConstrainedLaw:
        return cls(LossLaw.from_json(law), float(law["R_D_star"]))

    def to_json(self) -> dict:
        return {**self.law.to_json(), "R_D_star": self.R_D_star}

    def effective_tokens(self, tokens, unique_tokens):
        return effective_tokens(tokens, unique_tokens, self.R_D_star)

    def loss(self, params, tokens, unique_tokens):
        return self.law.loss(params, self.effective_tokens(tokens, unique_tokens))
