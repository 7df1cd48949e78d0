"""All fits of one results table in one place: approaches 1-3, the single-variable laws, the bootstrap and
the extrapolation backtest, with the warnings that explain every approach reported as null. This is what
`scaling fit`, `scaling recommend`, `scaling plot` and the notebooks call; `to_json()` is the contract of
`scaling fit --json` (docs/contracts.md, "JSON contracts")."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from analysis.backtest import Backtest, backtest_extrapolation
from analysis.blas_threads import single_threaded_blas
from analysis.bootstrap import BootstrapResult, bootstrap_fits
from analysis.data_constrained import DataConstrainedFit, fit_data_constrained_table
from analysis.envelope import EnvelopeFit, fit_training_curve_envelope
from analysis.isoflop import IsoflopFit, fit_isoflop_profiles
from analysis.parametric_fit import ParametricLossFit, fit_parametric_loss_table
from analysis.results_table import NotEnoughData, ResultsTable
from analysis.single_variable_laws import fit_single_variable_laws
from scaling.common.jsonable import jsonable

APPROACHES = ("approach1", "approach2", "approach3")
AUTO_HOLDOUT = None  # hold out the top budget when there are enough budgets


@dataclass
class FitReport:
    table: ResultsTable
    approach1: EnvelopeFit | None = None
    approach2: IsoflopFit | None = None
    approach3: ParametricLossFit | None = None
    data_constrained: DataConstrainedFit | None = None  # L(N, D, U), with the table's unique_tokens
    unique_tokens: float | None = None  # U at which the bootstrap evaluated the data-constrained optimum
    single_variable: dict = field(default_factory=dict)
    bootstrap: BootstrapResult | None = None
    backtest: Backtest | None = None
    warnings: list[str] = field(default_factory=list)

    def fit(self, approach: str):
        return getattr(self, approach)

    def to_json(self) -> dict:
        fits = {name: (None if self.fit(name) is None else self.fit(name).to_json()) for name in APPROACHES}
        return jsonable(
            {
                "source": self.table.source,
                "n_runs": self.table.n_runs,
                "n_budgets": len(self.table.budgets),
                "flops_per_param_token": self.table.flops_per_param_token,
                **fits,
                "data_constrained": None if self.data_constrained is None else self.data_constrained.to_json(),
                "single_variable": {
                    name: (None if law is None else law.to_json()) for name, law in self.single_variable.items()
                },
                "bootstrap": None if self.bootstrap is None else self.bootstrap.to_json(),
                "holdout": None if self.backtest is None else self.backtest.to_json(),
                "warnings": list(self.warnings),
            }
        )


def fit_all(
    table: ResultsTable,
    approaches: tuple[str, ...] = APPROACHES,
    bootstrap: int = 0,
    holdout: int | None = AUTO_HOLDOUT,
    compute: float | None = None,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    unique_tokens: float | None = None,
) -> FitReport:
    """Fit everything the table allows. `holdout`: None holds out the top budget, 0 skips the backtest,
    K > 0 holds out the K highest-compute runs. `compute` adds the recommendation to the bootstrap, and,
    with the data-constrained law, its optimum under `unique_tokens` (default: the table's largest)."""
    report = FitReport(table=table, warnings=list(table.notes))
    report.unique_tokens = unique_tokens if unique_tokens is not None else table.unique_tokens
    fitters = {
        "approach1": fit_training_curve_envelope,
        "approach2": fit_isoflop_profiles,
        "approach3": fit_parametric_loss_table,
    }
    with single_threaded_blas():
        for name in APPROACHES:
            if name not in approaches:
                report.warnings.append(f"{name}: not requested")
                continue
            try:
                fit = fitters[name](table)
            except NotEnoughData as e:
                message = str(e)
                report.warnings.append(message if message.startswith(f"{name}:") else f"{name}: {message}")
                continue
            setattr(report, name, fit)
            report.warnings += getattr(fit, "warnings", [])
        if report.approach3 is not None and not report.approach3.converged:
            report.warnings.append(
                f"approach3: did not converge (largest gradient {report.approach3.max_abs_gradient:.2g})"
            )
        if "approach3" in approaches:  # the data-constrained law extends approach 3 (and starts from it)
            try:
                report.data_constrained = fit_data_constrained_table(table, warm_start=report.approach3)
                report.warnings += report.data_constrained.warnings
            except NotEnoughData as e:
                report.warnings.append(str(e))
        report.single_variable, warnings = fit_single_variable_laws(table)
        report.warnings += warnings
        if holdout != 0:
            try:
                report.backtest = backtest_extrapolation(table, holdout)
            except NotEnoughData as e:
                report.warnings.append(str(e))
        if bootstrap > 0:
            if all(report.fit(name) is None for name in APPROACHES):
                report.warnings.append("bootstrap: no approach ran on the full table")
            else:
                report.bootstrap = bootstrap_fits(
                    table, bootstrap, approach1=report.approach1, approach2=report.approach2,
                    approach3=report.approach3, compute=compute, seed=seed, progress=progress,
                    data_constrained=report.data_constrained, unique_tokens=report.unique_tokens,
                )  # fmt: skip
    return report

