"""All fits of one results table in one place: approaches 1-3, the single-variable laws, the bootstrap and
the extrapolation backtest, with the warnings that explain every approach reported as null. This is what
`scaling fit`, `scaling recommend`, `scaling plot` and the notebooks call; `to_json()` is the contract of
`scaling fit --json` (docs/contracts.md, "JSON contracts")."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from analysis.backtest import Backtest, backtest_extrapolation, leave_future_out
from analysis.blas_threads import single_threaded_blas
from analysis.bootstrap import BootstrapResult, bootstrap_fits
from analysis.compute_pricing import ComputePricing, reprice, table_pricing
from analysis.data_constrained import DataConstrainedFit, fit_data_constrained_table
from analysis.envelope import EnvelopeFit, fit_training_curve_envelope
from analysis.hyperparameter_laws import HyperparameterLaws, fit_hyperparameter_laws, has_hyperparameter_sweep
from analysis.isoflop import IsoflopFit, fit_isoflop_profiles
from analysis.parametric_fit import ParametricLossFit, fit_parametric_loss_table
from analysis.results_table import NotEnoughData, ResultsTable
from analysis.shape_family import swept_family
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
    leave_future_out: list[dict] = field(default_factory=list)  # analysis.backtest.leave_future_out rows
    pricing: ComputePricing | None = None  # what C means: the table's flops column, 6N or the detailed count
    compute: float | None = None  # the budget the bootstrap and `optimum_by_pricing` were evaluated at
    optimum_by_pricing: dict = field(default_factory=dict)  # approach 3's optimum at `compute`, priced both ways
    hyperparameters: HyperparameterLaws | None = None  # lr_opt(C), B_opt(C) when the table is a side sweep
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
                "leave_future_out": list(self.leave_future_out),
                "compute_pricing": None if self.pricing is None else self.pricing.to_json(),
                "optimum_by_pricing": dict(self.optimum_by_pricing) or None,
                "hyperparameters": None if self.hyperparameters is None else self.hyperparameters.to_json(),
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
    flops: str | None = None,
) -> FitReport:
    """Fit everything the table allows. `holdout`: None holds out the top budget, 0 skips the backtest,
    K > 0 holds out the K highest-compute runs. `compute` adds the recommendation to the bootstrap, and,
    with the data-constrained law, its optimum under `unique_tokens` (default: the table's largest).
    `flops` ("6N" or "detailed"; default: the table's own flops column) prices compute
    (analysis.compute_pricing): the table is repriced, and approach 3's optimum is found under that price."""
    if flops is not None:
        table = reprice(table, flops)
    report = FitReport(table=table, warnings=list(table.notes), compute=compute)
    report.pricing = table_pricing(table, flops or "table", swept_family(table))
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
        if report.approach3 is not None and (reason := degenerate(report.approach3)):
            report.warnings.append(f"approach3: {reason}; reported as null")
            report.approach3 = None
        if "approach3" in approaches:  # the data-constrained law extends approach 3 (and starts from it)
            try:
                report.data_constrained = fit_data_constrained_table(table, warm_start=report.approach3)
                report.warnings += report.data_constrained.warnings
            except NotEnoughData as e:
                report.warnings.append(str(e))
        if compute is not None and report.approach3 is not None:
            report.optimum_by_pricing = optimum_by_pricing(report, compute)
        if has_hyperparameter_sweep(table):
            try:
                report.hyperparameters = fit_hyperparameter_laws(table, bootstrap, compute, seed)
                report.warnings += report.hyperparameters.warnings
            except NotEnoughData as e:
                report.warnings.append(str(e))
        report.single_variable, warnings = fit_single_variable_laws(table)
        report.warnings += warnings
        if holdout != 0:
            try:
                report.backtest = backtest_extrapolation(table, holdout)
            except NotEnoughData as e:
                report.warnings.append(str(e))
            if report.approach3 is not None:  # a table approach 3 cannot fit (a side sweep) has no future to predict
                report.leave_future_out = leave_future_out(table)
        if bootstrap > 0:
            if all(report.fit(name) is None for name in APPROACHES):
                report.warnings.append("bootstrap: no approach ran on the full table")
            else:
                report.bootstrap = bootstrap_fits(
                    table, bootstrap, approach1=report.approach1, approach2=report.approach2,
                    approach3=report.approach3, compute=compute, seed=seed, progress=progress,
                    data_constrained=report.data_constrained, unique_tokens=report.unique_tokens,
                    pricing=report.pricing, single_variable=report.single_variable,
                )  # fmt: skip
    return report



DEGENERATE = 1e-6  # an exponent, or a term's share of the loss at the runs, below this is no dependence at all


def degenerate(fit) -> str | None:
    """Why an approach-3 fit says nothing about allocation (None when it does): a law whose loss does not fall
    with N or with D (an exponent or a coefficient of about 0, as for losses that are all equal)."""
    if fit.alpha < DEGENERATE or fit.beta < DEGENERATE:
        return (f"degenerate fit (alpha = {fit.alpha:.3g}, beta = {fit.beta:.3g}): the loss does not fall with "
                f"{'N' if fit.alpha < DEGENERATE else 'D'} over these runs, so there is no compute-optimal allocation")
    if fit.A < DEGENERATE * fit.E or fit.B < DEGENERATE * fit.E:
        flat = "N" if fit.A < DEGENERATE * fit.E else "D"
        return (f"degenerate fit (A = {fit.A:.3g}, B = {fit.B:.3g}, E = {fit.E:.3g}): the loss is flat in {flat} "
                "over these runs, so there is no compute-optimal allocation")
    return None


def answered_nothing(report: FitReport) -> str | None:
    """The reasons, joined, when no fit of any kind could be made from the table (None otherwise)."""
    if any(report.fit(name) is not None for name in APPROACHES) or report.data_constrained is not None \
            or report.hyperparameters is not None:
        return None
    reasons = [w for w in report.warnings if w.startswith(APPROACHES) and "not requested" not in w]
    return "; ".join(reasons) or "no approach was requested"


def optimum_by_pricing(report: FitReport, compute: float) -> dict:
    """Approach 3's N_opt, D_opt and D/N at `compute` FLOPs priced as 6N and as the detailed count (null with a
    reason where the table cannot price it in detail)."""
    law = report.approach3.law
    out = {}
    for method in ("6N", "detailed"):
        try:
            pricing = table_pricing(report.table, method, swept_family(report.table))
        except NotEnoughData as e:
            out[method] = {"error": str(e)}
            continue
        params, tokens = pricing.optimum(law, compute)
        out[method] = {"params": params, "tokens": tokens, "tokens_per_param": tokens / params,
                       "predicted_loss": float(law.loss(params, tokens)),
                       "flops_per_token_over_6n": float(pricing.flops_per_token(params) / (6.0 * params))}
    return out
