"""Synthetic results tables drawn from a known law L(N, D) = E + A/N^alpha + B/D^beta with noise: the
ground truth that tests and the example notebook check the fits against.

An IsoFLOP sweep is simulated: for each budget C, model sizes log-spaced around the true optimum (shifted
a little so the grid is not perfectly centred, as in a real sweep), D = C / (6 N), and a final loss with
multiplicative log-normal noise. Optional per-run curves give the loss at earlier token counts as if each
run had been stopped there (a schedule sized to every length).

    python -m analysis.example_table --out notebooks/data   # writes the table the notebook ships with
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.loss_law import DataConstrainedLaw, LossLaw
from analysis.results_table import FLOPS_PER_PARAM_TOKEN

# A law in the regime of medical event models (about 1,000 tokens per parameter at 1e16 FLOPs, a ≈ 0.52).
EXAMPLE_LAW = LossLaw(E=1.2, A=70.0, B=900.0, alpha=0.30, beta=0.33)
EXAMPLE_BUDGETS = (1e14, 3e14, 1e15, 3e15, 1e16, 3e16)
# Epoch's fit of the Chinchilla runs, for tests at language-model scale.
CHINCHILLA_LAW = LossLaw(E=1.82, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)
# The example law with repetition as Muennighoff et al. (2023) measured it (R*_D = 15.4).
EXAMPLE_DATA_CONSTRAINED_LAW = DataConstrainedLaw(EXAMPLE_LAW, R_D_star=15.4)
EXAMPLE_SIZES = (3e5, 1e6, 3e6, 1e7, 3e7)
EXAMPLE_UNIQUE_TOKENS = (3e6, 3e7, 3e8)
EXAMPLE_EPOCHS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def synthetic_isoflop_table(
    law: LossLaw,
    budgets: tuple[float, ...] | np.ndarray,
    sizes_per_budget: int = 7,
    span_decades: float = 1.2,
    noise: float = 0.005,
    seed: int = 0,
    curve_points: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(runs, curves): a results table with columns run_id, params, tokens, flops, budget, loss, and, when
    curve_points > 0, long-format curves (run_id, tokens, loss) from 5% of each run's tokens to all."""
    rng = np.random.default_rng(seed)
    rows, curve_rows = [], []
    for budget in budgets:
        centre = np.log10(law.optimal_params(budget)) + rng.uniform(-0.15, 0.15)
        for log_params in centre + np.linspace(-span_decades / 2, span_decades / 2, sizes_per_budget):
            params = float(round(10**log_params))
            tokens = budget / (FLOPS_PER_PARAM_TOKEN * params)
            run_id = f"C{budget:.0e}-N{params:.3g}".replace("+", "")
            loss = law.loss(params, tokens) * np.exp(noise * rng.standard_normal())
            rows.append((run_id, params, tokens, budget, budget, float(loss)))
            if curve_points:
                seen = tokens * np.geomspace(0.05, 1.0, curve_points)
                curve_loss = law.loss(params, seen) * np.exp(noise * rng.standard_normal(curve_points))
                curve_loss[-1] = loss  # the curve ends at the run's final loss
                curve_rows += [(run_id, float(d), float(v)) for d, v in zip(seen, curve_loss, strict=True)]
    runs = pd.DataFrame(rows, columns=["run_id", "params", "tokens", "flops", "budget", "loss"])
    curves = pd.DataFrame(curve_rows, columns=["run_id", "tokens", "loss"]) if curve_points else None
    return runs, curves


def synthetic_data_constrained_table(
    law: DataConstrainedLaw,
    sizes: tuple[float, ...] = EXAMPLE_SIZES,
    unique_tokens: tuple[float, ...] = EXAMPLE_UNIQUE_TOKENS,
    epochs: tuple[float, ...] = EXAMPLE_EPOCHS,
    noise: float = 0.005,
    seed: int = 0,
) -> pd.DataFrame:
    """A grid sizes x unique-data levels x epochs (tokens = epochs x U; below one epoch a run sees a fresh
    subset) with final losses from L(N, D, U) and log-normal noise: columns run_id, params, tokens, flops,
    unique_tokens, epochs, loss (no budget: runs are grouped by compute)."""
    rng = np.random.default_rng(seed)
    rows = []
    for params in sizes:
        for unique in unique_tokens:
            for passes in epochs:
                tokens = passes * unique
                loss = law.loss(params, tokens, unique) * np.exp(noise * rng.standard_normal())
                run_id = f"N{params:.3g}-U{unique:.3g}-x{passes:g}".replace("+", "")
                rows.append((run_id, params, tokens, FLOPS_PER_PARAM_TOKEN * params * tokens, unique, passes,
                             float(loss)))  # fmt: skip
    return pd.DataFrame(rows, columns=["run_id", "params", "tokens", "flops", "unique_tokens", "epochs", "loss"])


def write_example_table(out_dir: Path, seed: int = 0) -> tuple[Path, Path]:
    """The example table of the notebook: example_results.csv and its side file example_results_curves.csv."""
    runs, curves = synthetic_isoflop_table(EXAMPLE_LAW, EXAMPLE_BUDGETS, seed=seed, curve_points=20)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path, curves_path = out_dir / "example_results.csv", out_dir / "example_results_curves.csv"
    runs.to_csv(results_path, index=False, float_format="%.6g")
    curves.to_csv(curves_path, index=False, float_format="%.6g")
    return results_path, curves_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("notebooks/data"))
    parser.add_argument("--seed", type=int, default=0)
    for path in write_example_table(parser.parse_args().out, parser.parse_args().seed):
        print(path)


if __name__ == "__main__":
    main()
