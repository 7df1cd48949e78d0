"""`scaling simulate` and `scaling evaluate`: simulation-based inference and downstream evaluation."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from scaling.cli.app import app
from scaling.cli.output import print_json, stderr_console


@app.command("simulate")
def simulate(
    run_dir: Path = typer.Argument(..., help="A run directory (config.json, checkpoints/)."),
    out: Path = typer.Option(..., "--out", help="The directory to write the futures to."),
    patients: int = typer.Option(100, help="Patients of the split to simulate (one prediction time each)."),
    samples: int = typer.Option(8, help="Futures per patient (K)."),
    horizon_days: float = typer.Option(365.0, help="Simulate this many days after the prediction time."),
    tasks: str = typer.Option(None, help="A tasks file (or 'synth') whose prediction rule to use."),
    prediction: str = typer.Option(None, help="The rule of --tasks to use (default: a random time after "
                                   "365 days of history)."),
    split: str = typer.Option("held_out", help="The split whose patients are simulated."),
    max_new_tokens: int = typer.Option(256, help="Token budget of one future."),
    temperature: float = typer.Option(1.0, help="Sampling temperature."),
    top_k: int = typer.Option(0, help="Keep the k most likely tokens (0: all)."),
    top_p: float = typer.Option(1.0, help="Keep the smallest set of tokens with this probability (1: all)."),
    seed: int = typer.Option(0, help="Seed of the sampler."),
    meds: Path = typer.Option(None, help="The MEDS dataset (default: the run's token store's source)."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists."),
    json_output: bool = typer.Option(False, "--json", help="Print a summary as JSON on stdout."),
) -> None:
    """Prompt a trained model with each patient's history and write K simulated futures as events.

    OUT/data/futures.parquet has one row per simulated event: subject_id, sample, prediction_time,
    time, code, numeric_value, minutes. OUT/metadata/ holds the prompts and simulation.json.

    Examples:

      scaling simulate runs/final --patients 100 --samples 8 --horizon-days 365 --out runs/futures

      scaling simulate runs/final --tasks synth --prediction discharge --horizon-days 30 --out runs/discharge
    """
    # Lazy: start-up time (JAX and the evaluation stack load only for the command that runs).
    from scaling.common.errors import InputError
    from scaling.evaluate.simulate import SimulationSettings, simulate_run
    from scaling.evaluate.tasks import PredictionRule, load_tasks

    if samples < 1 or patients < 1 or max_new_tokens < 1:
        raise InputError("--samples, --patients and --max-new-tokens must be 1 or more")
    if prediction is not None and tasks is None:
        raise InputError("--prediction names a rule of --tasks; give --tasks too")
    rule = PredictionRule("simulate", "random", min_history_days=365.0)
    if tasks is not None:
        rules = {t.prediction.name: t.prediction for t in load_tasks(tasks)}
        name = prediction or next(iter(rules))
        if name not in rules:
            raise InputError(f"--prediction {name}; the rules of {tasks} are {sorted(rules)}")
        rule = rules[name]
    console = stderr_console()
    settings = SimulationSettings(samples, max_new_tokens, temperature, top_k, top_p, seed)
    summary = simulate_run(run_dir, out, rule, patients, horizon_days, settings, split, meds, overwrite,
                           log=lambda m: console.print(m, highlight=False))
    if json_output:
        print_json(summary)
    else:
        console.print(f"[bold]{out}[/]: {summary['futures']:,} futures of {summary['patients']:,} patients, "
                      f"{summary['events']:,} events, {summary['generated_tokens']:,} tokens in "
                      f"{summary['seconds']} s ({summary['tokens_per_s']:,.0f} tokens/s); "
                      f"{summary['truncated_fraction']:.1%} hit the token budget")


@app.command("evaluate")
def evaluate(
    run_dirs: list[Path] = typer.Argument(..., help="Run directories, or sweep directories (their finished runs)."),
    tasks: str = typer.Option("synth", help="A tasks TOML file ('synth': the synthetic cohort's shipped tasks), or "
                              "an ACES task config (.yaml) with --labels."),
    labels: Path = typer.Option(None, help="The label file (or directory) ACES wrote for the --tasks config: its "
                                "prediction times and labels (the train split's rows train the baselines)."),
    patients: int = typer.Option(200, help="Held-out patients per prediction rule."),
    samples: int = typer.Option(8, help="Simulated futures per patient (K)."),
    train_patients: int = typer.Option(20_000, help="Train-split patients per rule for the baselines."),
    baselines: bool = typer.Option(True, help="Train the logistic and LightGBM baselines."),
    oracle: bool = typer.Option(None, help="Score the generator itself (default: when the data is synthetic)."),
    oracle_samples: int = typer.Option(16, help="Futures per patient the oracle simulates."),
    bootstrap: int = typer.Option(200, help="Bootstrap resamples for the 95% intervals (0: none)."),
    min_positives: int = typer.Option(10, help="Fewer positives or negatives than this: no AUROC or AUPRC."),
    max_new_tokens: int = typer.Option(256, help="Token budget of one simulated future."),
    temperature: float = typer.Option(1.0, help="Sampling temperature."),
    seed: int = typer.Option(0, help="Seed of the sampler, the bootstrap and the baselines."),
    meds: Path = typer.Option(None, help="The MEDS dataset (default: the first run's token store's source)."),
    out: Path = typer.Option(None, help="Write evaluation.json, predictions.parquet and figures here."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists."),
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """Evaluate trained runs on clinical prediction tasks by simulating K futures per patient, against
    logistic regression and LightGBM trained on the train split and, on a synthetic cohort, the oracle.

    With several runs (or a sweep directory) every run is scored on the same patients, and --out gets
    the metric-vs-compute and metric-vs-validation-loss figures. See docs/evaluation.md.

    Examples:

      scaling evaluate runs/final --tasks synth --patients 500 --samples 16 --out runs/final-eval

      scaling evaluate runs/final --tasks my_tasks.toml --no-oracle --json

      scaling evaluate runs/sweeps/quickstart --samples 8 --out runs/sweep-eval

      scaling evaluate runs/final --tasks aces/death_1y.yaml --labels aces_output/death_1y.parquet
    """
    # Lazy: start-up time (JAX and the evaluation stack load only for the command that runs).
    from scaling.common.atomic import refuse_existing
    from scaling.data.token_store import TokenStore, meds_dir_of_store
    from scaling.evaluate.aces import load_task_file
    from scaling.evaluate.evaluation import (
        Evaluation,
        EvaluationSettings,
        expand_run_dirs,
        json_report,
        write_evaluation,
    )
    from scaling.evaluate.report_cache import ReportCache, fingerprint
    from scaling.train.run_dir import RunDir

    console = stderr_console()
    log = lambda m: console.print(m, highlight=False)  # noqa: E731
    task_list = load_task_file(tasks, labels)
    runs = expand_run_dirs(run_dirs)
    if out is not None:
        refuse_existing(out, overwrite)
    store = TokenStore.open(RunDir(runs[0]).read_config().data)
    if meds is None:
        meds = meds_dir_of_store(store)
    settings = EvaluationSettings(patients=patients, samples=samples, train_patients=train_patients,
                                  baselines=baselines, oracle=oracle, oracle_samples=oracle_samples,
                                  bootstrap=bootstrap, min_positives=min_positives, seed=seed,
                                  max_new_tokens=max_new_tokens, temperature=temperature)
    log(f"tasks: {', '.join(t.name for t in task_list)} | data: {meds} | {len(runs)} run(s), K = {samples}")
    evaluation = Evaluation(meds, task_list, settings, log=log, split_aliases=store.settings.get("split_aliases"))
    cache = ReportCache(out, fingerprint(evaluation)) if out is not None and len(runs) > 1 else None
    reports = []
    for run in runs:
        log(f"[bold]{run}[/]")
        report, kept = cache.report(run, evaluation.evaluate_run) if cache else (evaluation.evaluate_run(run), False)
        if kept:
            log(f"  scored by an earlier, interrupted evaluation with these settings: {cache.path}")
        reports.append(report)
        if not json_output:
            print_report(reports[-1], console)
    if out is not None:
        written = write_evaluation(out, reports, overwrite=overwrite)
        if cache is not None:
            cache.clear()
        log(f"wrote {len(written)} files to {out}")
    if json_output:
        print_json(json_report(reports[0]) if len(reports) == 1
                   else {"samples": samples, "runs": [json_report(r) for r in reports]})


def print_report(report: dict, console) -> None:
    """One table per task: model, baselines and oracle side by side, with 95% intervals."""
    run = report["run"]
    console.print(f"run {run['run_dir']} (step {run['checkpoint_step']}, N={run['params']}, C={run['flops']}, "
                  f"val loss {run['val_loss']}) | K = {report['samples']} futures per patient | simulation "
                  f"{report['simulation']['seconds']} s, {report['simulation']['truncated_fraction']:.1%} of futures "
                  f"hit the token budget, {report['simulation'].get('prompts_cut_fraction', 0):.1%} of histories "
                  "were cut to the context", highlight=False)
    for task in report["tasks"]:
        metrics = ["auroc", "auprc", "brier", "calibration_error"] if task["kind"] == "binary" else ["mae", "bias"]
        if "auroc_true_risk" in (task.get("model") or {}):
            metrics.append("auroc_true_risk")
        prevalence = "" if task["prevalence"] is None else f", prevalence {task['prevalence']:.3f}"
        table = Table(title=f"{task['name']} ({task['kind']}, n={task['n']}{prevalence}, "
                            f"mean label {_number(task['mean_label'])})", title_justify="left")
        table.add_column("estimator")
        for metric in metrics:
            table.add_column(metric, justify="right")
        rows = [("model", task.get("model")), ("model_probability", task.get("model_probability")),
                *(task.get("baselines") or {}).items()]
        rows.append(("oracle", task.get("oracle")))
        for name, block in rows:
            if block is None:
                continue
            if "error" in block:
                table.add_row(name, f"[dim]{block['error']}[/]", *[""] * (len(metrics) - 1))
                continue
            table.add_row(name, *[_with_interval(block, metric) for metric in metrics])
        console.print(table)
        for warning in task["warnings"]:
            console.print(f"  [yellow]{warning}[/]")


def _number(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _with_interval(block: dict, metric: str) -> str:
    value, ci = block.get(metric), (block.get("ci") or {}).get(metric)
    if value is None:
        return "-"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


@app.command("downstream")
def downstream(
    sweep_evaluations: list[Path] = typer.Argument(..., help="The --out directories (or their evaluation.json) "
                                                   "of `scaling evaluate` over a sweep's runs: one, or several "
                                                   "made with the same settings."),
    run: Path = typer.Option(..., "--run", help="The run to predict: a `scaling final` run directory (its "
                             "forecast.json holds the loss forecast registered before it trained)."),
    actual: Path = typer.Option(None, help="The target's own evaluation (`scaling evaluate RUN --out`), to grade "
                                "the forecast; also found in SWEEP_EVALUATION when the run was evaluated there."),
    out: Path = typer.Option(None, help="Write the forecast (graded, when the target was evaluated) as JSON here."),
    bootstrap: int = typer.Option(500, help="Refits for the intervals (each run's metric redrawn from its "
                                  "evaluation's interval)."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists (a registered forecast is kept "
                                   "otherwise)."),
    json_output: bool = typer.Option(False, "--json", help="Print the forecast as JSON on stdout."),
) -> None:
    """Predict a larger run's downstream metrics from the evaluations of a sweep's runs, in two steps: its loss
    from compute (the forecast `scaling final` registered), then each task's metric from that loss (a law
    fitted across the sweep's runs). With the run's evaluation at hand, grade the prediction.

    Evaluate the sweep and the run with the same --patients, --samples and --seed. See docs/evaluation.md.

    Examples:

      scaling evaluate runs/sweeps/quickstart --samples 32 --out runs/sweep-eval

      scaling downstream runs/sweep-eval --run runs/final --out runs/final-downstream.json

      scaling evaluate runs/final --samples 32 --out runs/final-eval

      scaling downstream runs/sweep-eval --run runs/final --actual runs/final-eval

      scaling downstream runs/demo/evaluation runs/more-sweep-runs --run runs/demo/final
    """
    from scaling.common.atomic import refuse_existing, write_json_atomic
    from scaling.common.errors import InputError
    from scaling.common.jsonable import jsonable
    from scaling.evaluate.downstream import downstream_forecast, grade_downstream, read_evaluations, target_of

    if bootstrap < 10:
        raise InputError(f"--bootstrap {bootstrap}; expected 10 or more")
    if out is not None:
        refuse_existing(out, overwrite, inputs=[*sweep_evaluations, run, *([actual] if actual else [])])
    reports = [report for path in sweep_evaluations for report in read_evaluations(path)]
    target = target_of(run)
    forecast = downstream_forecast(reports, target, bootstrap)
    same = [r for r in (read_evaluations(actual) if actual else reports)
            if Path(r["run"]["run_dir"]).resolve() == run.resolve()]
    if actual is not None and not same:
        raise InputError(f"{actual}: holds no evaluation of {run}; expected `scaling evaluate {run} --out ...`")
    result = grade_downstream(forecast, same[0]) if same else forecast
    if out is not None:
        write_json_atomic(out, jsonable(result))
    if json_output:
        print_json(result)
    else:
        print_downstream(result, stderr_console())


def print_downstream(result: dict, console) -> None:
    """One row per task and estimator: the two-step prediction, from compute, and the actual metric."""
    target = result["target"]
    console.print(f"{target['run_dir']}: forecast loss {target['forecast_loss']:.4f}, C = {target['flops']:.3g}; "
                  f"laws fitted on {len(result['fitted_on'])} evaluated runs", highlight=False)
    table = Table(title_justify="left")
    for column in ("task", "estimator", "metric", "from forecast loss [95%]", "from compute", "actual", "error"):
        table.add_column(column, justify="left" if column in ("task", "estimator", "metric") else "right")
    for task in result["tasks"]:
        for estimator, block in task["estimators"].items():
            if "reason" in block:
                table.add_row(task["name"], estimator, task["metric"], f"[dim]{block['reason']}[/]", "", "", "")
                continue
            two_step, direct = block["from_forecast_loss"], block.get("from_compute")
            interval = two_step["interval"]
            table.add_row(task["name"], estimator, task["metric"],
                          f"{two_step['value']:.3f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval
                                                         else "")
                          + (" (extrapolated)" if two_step["extrapolated"] else ""),
                          "-" if direct is None else f"{direct['value']:.3f}", _number(block.get("actual")),
                          "-" if two_step.get("error") is None else f"{two_step['error']:+.3f}")
    console.print(table)
