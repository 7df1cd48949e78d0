"""`scaling fit`, `scaling recommend` and `scaling plot`: from a results table to power
laws, a compute-optimal recommendation (and the final run's config), and the standard figures.
The work is done in `analysis`; this module parses options and prints."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from scaling.cli.app import app
from scaling.cli.output import print_json, stderr_console
from scaling.common.errors import InputError

# Each command imports its stage inside the function, so `scaling --help` starts without JAX or Ray.

APPROACH_NAMES = {"1": "approach1", "2": "approach2", "3": "approach3"}

RESULTS_ARGUMENT = typer.Argument(
    ..., help="results table: a sweep's results.parquet or a CSV with params, tokens, loss", show_default=False
)
CURVES_OPTION = typer.Option(
    None, "--curves", help="per-run curves (run_id, tokens, loss); default: <results>_curves.parquet|csv beside it"
)
JSON_OPTION = typer.Option(False, "--json", help="print one JSON object on stdout (progress goes to stderr)")
MIN_BUDGET_OPTION = typer.Option(
    None, "--min-budget",
    help="fit only the runs of IsoFLOP budgets at least this many FLOPs (leave out the smallest) [default: all]",
)
FLOPS_OPTION = typer.Option(
    None, "--flops", help="price compute as 6N or detailed (attention included) [default: the table's flops column]"
)


def _check_flops(value: str | None) -> None:
    from models.accounting import check_flop_method

    if value is not None:
        check_flop_method(value)


def parse_approaches(text: str) -> tuple[str, ...]:
    """'1,3' or 'approach1,approach3' -> ('approach1', 'approach3')."""
    names = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        name = APPROACH_NAMES.get(item.removeprefix("approach"))
        if name is None:
            raise InputError(f"--approach: {item!r} is not an approach; expected a list of 1, 2, 3")
        names.append(name)
    if not names:
        raise InputError("--approach: empty; expected a list of 1, 2, 3")
    return tuple(names)


def _check_compute(value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise InputError(f"--compute: {value} is not a positive number of FLOPs")


def check_unique_tokens(value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise InputError(f"--unique-tokens: {value} is not a positive number of unique train tokens")


def _check_non_negative(option: str, value: int | None) -> None:
    if value is not None and value < 0:
        raise InputError(f"{option}: {value} is negative; expected 0 or more")


def _fit_with_progress(table, json_output: bool, **kwargs):
    from analysis.fit_report import fit_all

    n = kwargs.get("bootstrap", 0)
    if n <= 0:
        return fit_all(table, **kwargs)
    columns = (TextColumn("bootstrap"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    # transient: the bar is gone when the fit returns, so an error after it is the only line left
    with Progress(*columns, console=stderr_console(), transient=True) as progress:
        task = progress.add_task("bootstrap", total=n)
        return fit_all(table, progress=lambda done: progress.update(task, completed=done), **kwargs)


def _refuse_empty_fit(results: Path, report) -> None:
    """A fit that cannot answer anything is an input error (exit 2), not a report of nulls."""
    from analysis.fit_report import answered_nothing

    if (reasons := answered_nothing(report)) is not None:
        raise InputError(f"{results}: no law could be fitted: {reasons}")


def _load(results: Path, curves: Path | None, min_budget: float | None = None):
    from analysis.results_table import load_results

    return load_results(results, curves, min_budget=min_budget)


@app.command("fit")
def fit_command(
    results: Path = RESULTS_ARGUMENT,
    approach: str = typer.Option("1,2,3", "--approach", help="approaches to fit, e.g. 2,3"),
    bootstrap: int = typer.Option(0, "--bootstrap", help="resamples of whole runs for percentile intervals"),
    holdout: int | None = typer.Option(
        None, "--holdout", help="backtest: hold out the K highest-compute runs [default: the top budget; 0: off]"
    ),
    compute: float | None = typer.Option(None, "--compute", help="also bootstrap the optimum at this many FLOPs"),
    seed: int = typer.Option(0, "--seed", help="bootstrap seed"),
    flops: str | None = FLOPS_OPTION,
    unique_tokens: float | None = typer.Option(
        None, "--unique-tokens",
        help="with --compute: the data-constrained optimum under this many unique train tokens "
             "[default: the table's largest unique_tokens]",
    ),
    min_budget: float | None = MIN_BUDGET_OPTION,
    curves: Path | None = CURVES_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Fit compute, data and size power laws to a results table.

    Approach 1: envelope of training curves (needs curves). Approach 2: IsoFLOP parabolas.

    Approach 3: L(N, D) = E + A/N^alpha + B/D^beta (Huber on log loss, Chinchilla's initialisation grid).

    Also single-variable laws L(N), L(D), L(C), an extrapolation backtest, and bootstrap intervals.

    Examples:

      scaling fit runs/sweep/results.parquet

      scaling fit results.csv --approach 2,3 --bootstrap 1000 --holdout 5 --json

      scaling fit runs/sweep/results.parquet --compute 1e18 --flops detailed

      scaling fit runs/finite/sweep/results.parquet --compute 1e12 --unique-tokens 2e5 --bootstrap 200

      scaling fit runs/demo/sweep/results.parquet --min-budget 3e11
    """
    _check_non_negative("--bootstrap", bootstrap)
    _check_non_negative("--holdout", holdout)
    _check_compute(compute)
    _check_flops(flops)
    check_unique_tokens(unique_tokens)
    if unique_tokens is not None and compute is None:
        raise InputError("--unique-tokens: the data-constrained optimum needs --compute C as well")
    approaches = parse_approaches(approach)
    table = _load(results, curves, min_budget)
    report = _fit_with_progress(
        table, json_output, approaches=approaches, bootstrap=bootstrap, holdout=holdout, compute=compute, seed=seed,
        flops=flops, unique_tokens=unique_tokens,
    )
    _refuse_empty_fit(results, report)
    capped = _data_constrained_optimum(report, compute, unique_tokens)
    if json_output:
        print_json({**report.to_json(), "data_constrained_optimum": capped})
    else:
        _print_fit_summary(report)
        if capped is not None:
            _print_data_constrained(Console(), capped)


def _data_constrained_optimum(report, compute: float | None, unique_tokens: float | None) -> dict | None:
    """With --compute and a data cap (given, or the table's): the optimum under the cap with its bootstrap
    intervals, as `scaling recommend` reports it; None without both, or without the law."""
    from analysis.recommend import approach_point, data_constrained_recommendation

    if compute is None or report.data_constrained is None or report.approach3 is None:
        return None
    warnings: list[str] = []
    capped = data_constrained_recommendation(report, compute, unique_tokens,
                                             approach_point(report, "approach3", compute), warnings)
    report.warnings += [w.replace("recommend: ", "fit: ", 1) for w in warnings]
    return capped


@app.command("recommend")
def recommend_command(
    results: Path = RESULTS_ARGUMENT,
    compute: float = typer.Option(..., "--compute", help="training budget in FLOPs, e.g. 1e20", show_default=False),
    approach: str = typer.Option("3", "--approach", help="approach the recommendation follows: 1, 2 or 3"),
    bootstrap: int = typer.Option(200, "--bootstrap", help="resamples for the intervals (0: none)"),
    seed: int = typer.Option(0, "--seed", help="bootstrap seed"),
    vocab_size: int | None = typer.Option(
        None, "--vocab-size", help="vocabulary size of the shape [default: the table's vocab_size column, else 512]"
    ),
    seq_len: int = typer.Option(512, "--seq-len", help="context length of the final run (and the shape)"),
    batch_size: int = typer.Option(16, "--batch-size", help="windows per step of the final run"),
    lr: float = typer.Option(3e-3, "--lr", help="peak learning rate of the final run"),
    unique_tokens: float | None = typer.Option(
        None, "--unique-tokens",
        help="unique train tokens available (the data cap) [default: the table's largest unique_tokens]",
    ),
    data: str | None = typer.Option(None, "--data", help="token store of the final run (written into the config)"),
    config_out: Path | None = typer.Option(None, "--config-out", help="write the final run's config TOML here"),
    flops: str | None = FLOPS_OPTION,
    min_budget: float | None = MIN_BUDGET_OPTION,
    curves: Path | None = CURVES_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """The compute-optimal model at a budget C, with bootstrap intervals and its shape.

    N, D, tokens per parameter and the predicted loss from approach 3 (the others side by side), the shape
    from the model ladder, and with --config-out a run config for `scaling train` (the final run).

    With a data cap (--unique-tokens, or the table's unique_tokens) and runs that repeat data: the
    data-constrained optimum (N, D, epochs, loss), the loss the cap costs, and what 2x compute vs 2x unique
    data would buy.

    Examples:

      scaling recommend runs/sweep/results.parquet --compute 1e18

      scaling recommend results.csv --compute 3e19 --data runs/tokens --config-out final.toml --json

      scaling recommend runs/sweep/results.parquet --compute 3e17 --unique-tokens 5e8
    """
    from analysis.recommend import final_run_settings, recommend_compute_optimal, run_config_toml
    from scaling.common.atomic import write_file_atomic

    _check_compute(compute)
    _check_flops(flops)
    check_unique_tokens(unique_tokens)
    for option, value in (("--seq-len", seq_len), ("--batch-size", batch_size), ("--vocab-size", vocab_size)):
        if value is not None and value < 1:
            raise InputError(f"{option}: {value} is not a positive integer")
    if not (math.isfinite(lr) and lr > 0):
        raise InputError(f"--lr: {lr} is not a positive number")
    _check_non_negative("--bootstrap", bootstrap)
    (chosen,) = parse_approaches(approach)
    table = _load(results, curves, min_budget)
    report = _fit_with_progress(table, json_output, bootstrap=bootstrap, holdout=0, compute=compute, seed=seed,
                                unique_tokens=unique_tokens, flops=flops)
    recommendation = recommend_compute_optimal(report, compute, chosen, vocab_size=vocab_size, seq_len=seq_len,
                                               unique_tokens=unique_tokens)
    if recommendation["approach"] is None:
        reasons = [w for w in recommendation["warnings"] if w.startswith(("approach1", "approach2", "approach3"))]
        raise InputError(f"{results}: no recommendation at C = {compute:.3g}: no approach could be fitted: "
                         + "; ".join(reasons))
    recommendation["config"] = None
    if config_out is not None:
        if recommendation["shape"] is None or recommendation["tokens"] is None:
            raise InputError(f"{config_out}: cannot write a run config without a recommended shape")
        train = final_run_settings(recommendation["tokens"], seq_len=seq_len, batch_size=batch_size, lr=lr)
        note = (f"Compute-optimal run for C = {compute:.3g} FLOPs from {table.source} ({recommendation['approach']}): "
                f"N = {recommendation['params']:.4g}, D = {recommendation['tokens']:.4g}, "
                f"predicted loss {recommendation['predicted_loss']}")  # fmt: skip
        write_file_atomic(config_out, run_config_toml(recommendation["shape"], train, data=data, note=note))
        recommendation["config"] = str(config_out)
        if data is None:
            recommendation["warnings"].append(f"{config_out}: 'data' is a placeholder; edit it to your token store")
    if json_output:
        print_json(recommendation)
    else:
        _print_recommendation(recommendation)


@app.command("plot")
def plot_command(
    results: Path = RESULTS_ARGUMENT,
    out: Path = typer.Option(..., "--out", help="directory for the figures (written atomically)", show_default=False),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace OUT if it holds something (never an input)"),
    compute: float | None = typer.Option(None, "--compute", help="target budget to extrapolate to, in FLOPs"),
    bootstrap: int = typer.Option(200, "--bootstrap", help="resamples for the approach-3 bands (0: none)"),
    seed: int = typer.Option(0, "--seed", help="bootstrap seed"),
    flops: str | None = FLOPS_OPTION,
    min_budget: float | None = MIN_BUDGET_OPTION,
    curves: Path | None = CURVES_OPTION,
) -> None:
    """The standard figures of the fits, as PNG and SVG, and fit.json (what `scaling fit --json` prints).

    IsoFLOP profiles; N_opt and D_opt against C with bootstrap bands; L(N, D) contours with the efficient
    frontier; loss curves; approach-3 residuals with the backtest.

    Examples:

      scaling plot runs/sweep/results.parquet --out runs/sweep/figures

      scaling plot results.csv --out figures --compute 1e20 --bootstrap 500 --overwrite
    """
    from analysis.plots import write_standard_figures
    from scaling.common.atomic import atomic_directory, refuse_existing
    from scaling.common.jsonable import dumps

    _check_non_negative("--bootstrap", bootstrap)
    _check_compute(compute)
    _check_flops(flops)
    refuse_existing(out, overwrite, inputs=[p for p in (results, curves) if p is not None])
    table = _load(results, curves, min_budget)
    report = _fit_with_progress(table, False, bootstrap=bootstrap, compute=compute, seed=seed, flops=flops)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        written = write_standard_figures(report, tmp, compute)
        (tmp / "fit.json").write_text(dumps(report.to_json(), indent=1) + "\n")
    console = stderr_console()
    for warning in report.warnings:
        console.print(f"[yellow]warning[/]: {warning}", highlight=False)
    Console().print(f"wrote {len(written)} figures and fit.json to {out}", highlight=False)



def _number(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def _print_fit_summary(report) -> None:
    console = Console()
    data = report.to_json()
    console.print(f"[bold]{data['source']}[/]: {data['n_runs']} runs, {data['n_budgets']} budgets")
    table = Table("approach", "a (N_opt ~ C^a)", "b (D_opt ~ C^b)", "details")
    for name in ("approach1", "approach2", "approach3"):
        fit = data[name]
        if fit is None:
            table.add_row(name, "-", "-", "not available (see warnings)")
            continue
        if name == "approach3":
            details = (f"E={fit['E']:.4g} A={fit['A']:.4g} B={fit['B']:.4g} alpha={fit['alpha']:.4f} "
                       f"beta={fit['beta']:.4f} converged={fit['converged']}")  # fmt: skip
        elif name == "approach2":
            details = f"{fit['n_budgets']} IsoFLOP minima"
        else:
            details = f"{fit['n_levels']} compute levels"
        table.add_row(name, _number(fit["a"]), _number(fit["b"]), details)
    console.print(table)
    dc = data.get("data_constrained")
    if dc is not None:
        console.print(
            f"data_constrained: L(N, D') with D' = U + U·R*_D·(1 - exp(-(D/U - 1)/R*_D)): E={dc['E']:.4g} "
            f"A={dc['A']:.4g} B={dc['B']:.4g} alpha={dc['alpha']:.4f} beta={dc['beta']:.4f} "
            f"R*_D={dc['R_D_star']:.4g} ({dc['n_repeated_runs']} runs repeat data, up to {dc['max_epochs']:.3g} "
            f"epochs; converged={dc['converged']})"
        )
    for name, law in data["single_variable"].items():
        if law is not None:
            formula = f"L = {law['E']:.4g} + {law['A']:.4g} x^-{law['alpha']:.4f}"
            console.print(f"{name}: {formula} ({law['n_points']} points)")
    if data["holdout"] is not None:
        h = data["holdout"]
        console.print(
            f"backtest ({h['held_out_by']}): fit on {h['fit_runs']} runs, predicted {h['held_out_runs']} held-out "
            f"runs ({h['extrapolation_factor']:.3g}x more compute) with median |error| "
            f"{100 * h['median_abs_rel_error']:.2f}%, max {100 * h['max_abs_rel_error']:.2f}%"
        )
    if data["leave_future_out"]:
        console.print(leave_future_out_table(data["leave_future_out"]))
    if data.get("optimum_by_pricing"):
        console.print(pricing_table(data["optimum_by_pricing"], report.compute))
    if data.get("hyperparameters"):
        print_hyperparameter_laws(console, data["hyperparameters"])
    if data["bootstrap"] is not None:
        ci = data["bootstrap"]["ci"]
        console.print(f"bootstrap ({data['bootstrap']['n']} resamples, 95%):")
        for key in sorted(k for k in ci if k.endswith((".a", ".b", ".alpha", ".beta", ".E", ".R_D_star"))):
            console.print(f"  {key}: [{ci[key][0]:.4g}, {ci[key][1]:.4g}]")
    for warning in data["warnings"]:
        stderr_console().print(f"[yellow]warning[/]: {warning}", highlight=False)


def print_hyperparameter_laws(console: Console, laws: dict) -> None:
    table = Table("budget", "lr_opt", "batch_opt (windows)", "loss", "runs", "from",
                  title="hyperparameter side sweep: the best learning rate and batch size per budget")
    for o in laws["optima"]:
        table.add_row(f"{o['budget']:.3g}", f"{o['lr']:.3g}", f"{o['batch_size']:.3g}", f"{o['loss']:.4f}",
                      str(o["n_runs"]), o["source"])
    console.print(table)
    intervals = laws.get("intervals") or {}

    def law_line(name: str, law: dict, key: str) -> str:
        ci = intervals.get(key)
        return (f"{name} = {law['coefficient']:.4g} C^{law['exponent']:.4f}"
                + (f" (exponent {100 * intervals['level']:g}% interval [{ci[0]:.4f}, {ci[1]:.4f}])" if ci else ""))

    console.print(law_line("lr_opt", laws["lr_law"], "lr_exponent"))
    if laws["batch_size_law"]:
        console.print(law_line("batch_opt", laws["batch_size_law"], "batch_exponent"))
    if laws["compute"] is not None:
        console.print(f"at C = {laws['compute']:.3g}: lr {laws['lr_at_compute']:.4g}"
                      + (f", batch size {laws['batch_size_at_compute']:.3g} windows"
                         if laws["batch_size_at_compute"] is not None else ""))


def pricing_table(optima: dict, compute: float) -> Table:
    table = Table("compute priced as", "N_opt", "D_opt", "D/N", "predicted loss", "FLOPs/token over 6N",
                  title=f"approach 3's optimum at C = {compute:.3g} FLOPs")
    for method, point in optima.items():
        if "error" in point:
            table.add_row(method, point["error"], "", "", "", "")
        else:
            table.add_row(method, _number(point["params"]), _number(point["tokens"]),
                          f"{point['tokens_per_param']:.1f}",
                          f"{point['predicted_loss']:.4f}", f"{point['flops_per_token_over_6n']:.3f}")
    return table


def leave_future_out_table(rows: list[dict]) -> Table:
    table = Table("predicted budget", "fitted on budgets", "runs", "extrapolation", "median |error|",
                  "max |error|", "mean error", title="leave-future-out (approach 3)")
    for row in rows:
        head = (f"{row['budget']:.3g}", ", ".join(f"{b:.3g}" for b in row["fit_budgets"]),
                f"{row['fit_runs']} -> {row['predicted_runs']}", f"{row['extrapolation_factor']:.3g}x")
        if "error" in row:
            table.add_row(*head, row["error"], "", "")
        else:
            table.add_row(*head, f"{100 * row['median_abs_rel_error']:.2f}%", f"{100 * row['max_abs_rel_error']:.2f}%",
                          f"{100 * row['mean_rel_error']:+.2f}%")
    return table


def _print_recommendation(rec: dict) -> None:
    console = Console()
    ci = rec["ci"]

    def with_ci(key: str) -> str:
        interval = ci.get(key)
        return _number(rec[key]) + ("" if interval is None else f"  [{interval[0]:.4g}, {interval[1]:.4g}]")

    console.print(f"compute {rec['compute']:.4g} FLOPs ({rec['extrapolation_factor']:.3g}x the largest run), "
                  f"{rec['approach']}:")  # fmt: skip
    for key in ("params", "tokens", "tokens_per_param", "predicted_loss"):
        console.print(f"  {key}: {with_ci(key)}")
    if rec["shape"] is not None:
        console.print("  shape: " + ", ".join(f"{k}={v}" for k, v in rec["shape"].items()))
    for name, point in rec["approaches"].items():
        if point is not None and name != rec["approach"]:
            console.print(f"  {name}: params {_number(point['params'])}, tokens {_number(point['tokens'])}")
    if rec.get("data_constrained"):
        _print_data_constrained(console, rec["data_constrained"])
    if rec.get("config"):
        console.print(f"  run config: {rec['config']}  (scaling train {rec['config']})")
    for warning in rec["warnings"]:
        stderr_console().print(f"[yellow]warning[/]: {warning}", highlight=False)


def _print_data_constrained(console, dc: dict) -> None:
    def loss(point: dict) -> str:
        interval = (point.get("ci") or {}).get("predicted_loss")
        bounds = "" if interval is None else f" [{interval[0]:.4g}, {interval[1]:.4g}]"
        return _number(point["predicted_loss"]) + bounds

    def where(point: dict) -> str:
        return (f"params {_number(point['params'])}, tokens {_number(point['tokens'])} "
                f"({point['epochs']:.3g} epochs), loss {loss(point)}")  # fmt: skip

    console.print(f"data cap: {dc['unique_tokens']:.4g} unique tokens ({dc['unique_tokens_source']}), "
                  f"R*_D = {dc['law']['R_D_star']:.4g}:")  # fmt: skip
    console.print(f"  unconstrained optimum: {where(dc['unconstrained'])}")
    console.print(f"  data-constrained optimum: {where(dc['constrained'])}")
    cost_ci = dc.get("loss_cost_ci")
    console.print(f"  loss the cap costs: {_number(dc['loss_cost'])}"
                  + ("" if cost_ci is None else f" [{cost_ci[0]:.4g}, {cost_ci[1]:.4g}]"))  # fmt: skip
    console.print(f"  with 2x compute: loss {loss(dc['double_compute'])} (-{dc['double_compute']['loss_gain']:.4g})")
    console.print(f"  with 2x unique data: loss {loss(dc['double_unique_tokens'])} "
                  f"(-{dc['double_unique_tokens']['loss_gain']:.4g}); more {dc['better'].replace('_', ' ')} helps more")


@app.command("lr-transfer")
def lr_transfer_command(
    results: list[Path] = typer.Argument(..., help="results tables of width x learning-rate sweeps (one per "
                                                   "parametrization, e.g. standard then muP)", show_default=False),
    out: Path = typer.Option(..., "--out", help="the figure (PNG)", show_default=False),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace OUT if it exists"),
    json_output: bool = JSON_OPTION,
) -> None:
    """Learning-rate transfer across width: loss against learning rate per width, one panel per table, and each
    width's best rate. Under muP the best rate should not drift as the model widens. Only the widths every
    table has are compared.

    Examples:

      scaling lr-transfer runs/lr_standard/results.parquet runs/lr_mup/results.parquet --out lr_transfer.png
    """
    import io

    from analysis.lr_transfer import lr_transfer_figure, transfer_summary
    from analysis.results_table import NotEnoughData
    from scaling.common.atomic import refuse_existing, write_file_atomic

    refuse_existing(out, overwrite, inputs=list(results))
    tables = {}
    for path in results:
        label = path.parent.name or path.stem
        tables[label] = _load(path, None).runs
    # compare like with like: the widths every table has
    common = set.intersection(*(set(runs["d_model"].dropna()) for runs in tables.values())) \
        if all("d_model" in runs.columns for runs in tables.values()) else set()
    if common:
        tables = {label: runs[runs["d_model"].isin(common)] for label, runs in tables.items()}
    try:
        summaries = {label: transfer_summary(runs) for label, runs in tables.items()}
    except NotEnoughData as e:
        raise InputError(str(e)) from None
    png = io.BytesIO()
    lr_transfer_figure(tables).savefig(png, format="png", dpi=110)
    write_file_atomic(out, png.getvalue())
    if json_output:
        print_json(summaries)
        return
    console = Console()
    for label, summary in summaries.items():
        rates = ", ".join(f"d{d}: {lr:.3g}" for d, lr in sorted(summary["best_lr"].items()))
        console.print(f"{label}: best lr {rates}; widest / narrowest {summary['drift']:.3g}", highlight=False)
    console.print(f"wrote {out}", highlight=False)
