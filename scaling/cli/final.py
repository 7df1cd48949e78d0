"""`scaling final`: the compute-optimal run at a budget, trained and checked against its prediction."""

from __future__ import annotations

from pathlib import Path

import typer

from scaling.cli.app import app, track_option
from scaling.cli.fit import check_unique_tokens
from scaling.cli.output import print_json, stderr_console


@app.command("final")
def final(
    results: Path = typer.Argument(..., help="A sweep's results.parquet (or a CSV with params, tokens, loss)."),
    compute: float = typer.Option(..., help="The compute budget in FLOPs (C = 6 N D)."),
    out: Path = typer.Option(None, help="The final run's directory (default: beside RESULTS, final-<C>)."),
    data: str = typer.Option(None, help="Token store to train on (default: the sweep's)."),
    bootstrap: int = typer.Option(200, help="Bootstrap resamples for the predicted loss's interval."),
    approach: str = typer.Option("approach3", help="approach1 | approach2 | approach3."),
    address: str = typer.Option(None, envvar="RAY_ADDRESS",
                                help="Ray cluster to train on, as Ray task(s) (default: in this process)."),
    hosts: int = typer.Option(1, help="With --address: nodes to train on together (jax.distributed), one task each."),
    gpus: int = typer.Option(None, help="With --address: GPUs per host (default 0; 1 or 8 on a GPU cluster)."),
    cpus: int = typer.Option(None, help="With --address: CPUs per host, also its XLA thread pool (default 1)."),
    hyperparameters: Path = typer.Option(
        None, "--hyperparameters",
        help="A learning-rate x batch-size side sweep's results: its laws set the lr and batch size at C."),
    unique_tokens: float = typer.Option(
        None, "--unique-tokens",
        help="A data cap: train the data-constrained optimum on a nested subset of this many train tokens."),
    min_budget: float = typer.Option(
        None, "--min-budget",
        help="Fit the law only on the runs of IsoFLOP budgets at least this many FLOPs [default: all]."),
    json_output: bool = typer.Option(False, "--json", help="Print prediction.json on stdout."),
    track: str = track_option(),
) -> None:
    """Train the model `scaling recommend` picks at budget C and compare predicted with actual loss.

    Training settings come from the sweep that made RESULTS (the lr and batch size from the laws of a side sweep
    with --hyperparameters); re-running resumes the run.

    With --unique-tokens U the run trains at the optimum of the data-constrained law under that cap, repeating
    a nested subset of about U train tokens, and its forecast is that law's (approach 3's fresh-data forecast
    beside it).

    Without --address it trains in this process on all local devices.

    With --address (or RAY_ADDRESS) it trains as a Ray task on that cluster, one per node with --hosts.

    The run directory and token store must then be on a filesystem every node sees at the same path.

    Examples:

      scaling final runs/sweeps/quickstart/results.parquet --compute 4e12

      scaling final results.csv --compute 1e18 --data runs/tokens --out runs/final --json

      scaling final runs/demo/sweep/results.parquet --compute 9e12 --hyperparameters runs/hp/results.parquet

      scaling final runs/finite/sweep/results.parquet --compute 3e12 --unique-tokens 2e5

      scaling final runs/sweep/results.parquet --compute 3e13 --min-budget 1e11

      scaling final /shared/sweep/results.parquet --compute 1e19 --address HEAD:6379 --gpus 8 --cpus 32

      scaling final /shared/sweep/results.parquet --compute 1e20 --address HEAD:6379 --hosts 4 --gpus 8 --cpus 32
    """
    from scaling.pipeline.final import cluster_for, final_run  # lazy: start-up time (the fit and training stack)
    from scaling.train.tracking import track as track_runs

    track_runs(track)
    cluster = cluster_for(address, hosts, gpus, cpus)
    out = out or Path(results).parent / f"final-{compute:.3g}"
    console = stderr_console()
    check_unique_tokens(unique_tokens)
    prediction = final_run(results, compute, out, data=data, bootstrap=bootstrap, approach=approach,
                           log=lambda m: console.print(m, highlight=False), cluster=cluster,
                           hyperparameters=hyperparameters, unique_tokens=unique_tokens, min_budget=min_budget)
    if json_output:
        print_json(prediction)
    else:
        # the forecast registered before training when there is one, else the law's prediction at (N, D)
        graded = prediction.get("forecast") or prediction
        predicted, actual, error = (graded.get(k) for k in ("predicted_loss", "actual_loss", "relative_error"))
        console.print(("predicted none" if predicted is None else f"predicted {predicted:.4f}")
                      + ("" if actual is None else f", actual {actual:.4f}")
                      + ("" if error is None else f" ({100 * error:+.1f}%)") + f" -> {out}")


@app.command("ladder")
def ladder(
    run: Path = typer.Argument(..., help="A run directory (its config.json): the shape and recipe to repeat."),
    fractions: str = typer.Option("1/30,1/10,1/3", help="Fractions of the run's training steps, comma-separated."),
    out: Path = typer.Option(None, help="Where the rungs go, as OUT/runs/<name> (default: beside RUN, RUN-ladder)."),
    address: str = typer.Option(None, envvar="RAY_ADDRESS",
                                help="Ray cluster to train each rung on, as `scaling final` does (default: here)."),
    hosts: int = typer.Option(1, help="With --address: nodes to train each rung on together, one task each."),
    gpus: int = typer.Option(None, help="With --address: GPUs per host (default 0)."),
    cpus: int = typer.Option(None, help="With --address: CPUs per host, also its XLA thread pool (default 1)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON row per rung on stdout."),
) -> None:
    """Train RUN's model with RUN's recipe at fractions of its training: a ladder along one shape.

    Each rung differs from RUN only in its tokens (fraction x RUN's steps). OUT is a sweep directory:
    `scaling evaluate OUT` scores every finished rung, and `scaling downstream` on that evaluation predicts
    RUN's metrics from laws along its own shape, which carry a metric that rises with training length
    (docs/evaluation.md, "A ladder along the target's shape"). Re-running resumes or skips each rung.

    With --address (or RAY_ADDRESS) each rung trains on that Ray cluster as `scaling final --address` does; RUN,
    OUT and the token store must then be on a filesystem every node sees at the same path.

    Examples:

      scaling ladder runs/demo/final

      scaling ladder runs/final --fractions 0.1,0.3 --out runs/final-ladder

      scaling evaluate runs/demo/final-ladder --samples 32 --patients 1000 --out runs/ladder-eval

      scaling ladder /shared/final --address HEAD:6379 --gpus 8 --cpus 32
    """
    from scaling.pipeline.final import cluster_for  # lazy: the training stack
    from scaling.pipeline.ladder import default_ladder_dir, parse_fractions, train_ladder

    console = stderr_console()
    cluster = cluster_for(address, hosts, gpus, cpus)
    values = parse_fractions(fractions)
    out = out or default_ladder_dir(run)
    rows = train_ladder(run, values, out, progress=not quiet, cluster=cluster,
                        log=lambda m: console.print(m, highlight=False))
    if json_output:
        print_json(rows)
    for row in rows:
        loss = "none" if row["val_loss"] is None else f"{row['val_loss']:.4f}"
        console.print(f"{row['name']}: {row['steps']:,} steps, {row['tokens']:,.0f} tokens, {row['status']}, "
                      f"val loss {loss}", highlight=False)
    console.print(f"ladder of {run} ({sum(values):.2f} x its compute) -> {out}", highlight=False)


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="The demo's directory."),
    patients: int = typer.Option(None, help="Cohort size (default: the demo preset)."),
    grid: Path = typer.Option(None, help="The IsoFLOP grid to sweep (default: "
                                         "sweeps/grids/quickstart_short_context.toml; sweeps/grids/quickstart.toml: "
                                         "the 64-token demo)."),
    ladder: bool = typer.Option(True, "--ladder/--no-ladder",
                                help="Train the final run's shape at 1/30, 1/10 and 1/3 of its steps and fit a "
                                     "second downstream law on them (about half the final run's compute and "
                                     "three more evaluations)."),
    track: str = track_option(),
) -> None:
    """The main job end to end: cohort, tokens, IsoFLOP sweep on local Ray, fits, recommendation, final
    run, its ladder, downstream evaluation, report (runs/demo/report.md). Re-running reuses everything
    finished.

    Examples:

      scaling demo

      scaling demo --out /tmp/demo --patients 5000
    """
    from scaling.pipeline.demo import DEMO_PATIENTS, LADDER_FRACTIONS, run_demo  # lazy: start-up time
    from scaling.train.tracking import track as track_runs

    track_runs(track)

    console = stderr_console()
    run_demo(out, patients or DEMO_PATIENTS, grid=grid, ladder=LADDER_FRACTIONS if ladder else (),
             log=lambda m: console.print(m, highlight=False))
