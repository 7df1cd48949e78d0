"""`scaling demo` (`make demo`): the main job end to end on embedded defaults, reusing what is done.

    cohort (synthetic MEDS) -> token store -> IsoFLOP sweep on local Ray (DEMO_GRID: models of a 256-token
    context, reached after 3/4 of their steps at 64 tokens) -> fits, bootstrap,
    backtest, figures -> recommendation at a budget several times the sweep's largest -> the final run
    -> a ladder along the final run's shape (its model and recipe at 1/30, 1/10 and 1/3 of its steps)
    -> downstream evaluation of sweep runs (at each budget the best and the best of the next larger size;
    simulated futures against baselines and the oracle) and of the ladder's rungs, the final run's metrics
    predicted from each (two downstream laws, registered before the final run is evaluated), then the final
    run's evaluation -> finite
    data: a small cohort, a size x tokens x unique-data sweep, the optimum under a data cap and its final run
    (runs/demo/finite/) -> runs/demo/report.md (scaling.pipeline.report)

Each stage writes its own directory and is skipped when that directory is complete, so re-running
after an interruption redoes nothing that finished.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

import sweeps
from analysis.fit_report import fit_all
from analysis.plots import write_standard_figures
from analysis.results_table import load_results
from scaling.common.atomic import atomic_directory, write_file_atomic, write_json_atomic
from scaling.common.errors import InputError
from scaling.common.jsonable import jsonable
from scaling.data.tokenizer import tokenize_dataset
from scaling.evaluate.downstream import downstream_forecast, grade_downstream, target_of
from scaling.evaluate.evaluation import Evaluation, EvaluationSettings, write_evaluation
from scaling.evaluate.figures import plot_downstream_law
from scaling.evaluate.report_cache import ReportCache, fingerprint
from scaling.evaluate.tasks import load_tasks
from scaling.pipeline.final import final_run
from scaling.pipeline.ladder import default_ladder_dir, rung_name, train_ladder
from scaling.pipeline.report import demo_report, finite_section
from scaling.synth.generate import generate_cohort
from scaling.synth.replay import entropy_floor_stats
from scaling.train.run_dir import FINISHED, RunDir
from sweeps.engine import run_sweep
from sweeps.grid import load_grid

DEMO_PATIENTS = 60_000
# The sweep's grid: the quickstart's budgets and family in a 256-token context that holds every demo history
# (the quickstart's 64 tokens cut 62% of them), reached after 3/4 of each run's steps at 64 tokens.
DEMO_GRID = "quickstart_short_context.toml"
FINAL_MULTIPLE = 30.0  # the final run's budget, in multiples of the sweep's largest budget
BOOTSTRAP = 200
# Downstream evaluation: held-out patients per prediction rule, futures per patient, baseline train set.
EVAL_PATIENTS = 1_000  # 20-50 positives per binary task on the demo cohort (300 gave 12-18)
EVAL_SAMPLES = 32  # rare outcomes need many futures: at K = 8 most patients' estimates are 0
# The oracle (the generator itself) at K = 1,000: its Monte Carlo error (at most 0.5 / sqrt(1000) = 0.016 on a
# probability) is small enough for it to be the ceiling; at the model's K = 32 it fell below the baselines.
ORACLE_SAMPLES = 1000
EVAL_TRAIN_PATIENTS = 10_000
# The ladder along the final run's shape (0.47 of its compute): on the demo, laws fitted on these three rungs
# predicted all 8 true-risk AUROC pairs within 0.03, the sweep's runs 6 (docs/evaluation.md).
LADDER_FRACTIONS = (1 / 30, 1 / 10, 1 / 3)


@dataclass(frozen=True)
class LawSource:
    """The evaluated runs a downstream law is fitted on, and the files of its forecast and figure."""

    label: str  # "sweep" or "ladder": the report's name for the runs
    runs: list[Path]
    forecast: Path
    figure: Path


@dataclass(frozen=True)
class FiniteStudy:
    """The demo's finite-data section: a cohort small enough that its budget must repeat data, a sweep of
    sizes x tokens x unique data on it, and the final run at the optimum under a cap of `unique_tokens`."""

    grid: Path = Path(sweeps.__file__).parent / "grids" / "finite.toml"
    patients: int = 3_000
    compute: float = 1e12  # 2.2x the sweep's largest run; the capped optimum there repeats the cap about 13 times
    unique_tokens: float = 2e5
    bootstrap: int = 50


def run_demo(root: Path = Path("runs/demo"), patients: int = DEMO_PATIENTS, grid: Path | None = None,
             final_multiple: float = FINAL_MULTIPLE, finite: FiniteStudy = FiniteStudy(),
             ladder: tuple[float, ...] = LADDER_FRACTIONS, log=print) -> dict:
    """`ladder`: fractions of the final run's steps to train its shape at (empty: no ladder)."""
    root = Path(root)
    grid_path = Path(grid or Path(sweeps.__file__).parent / "grids" / DEMO_GRID)
    started = time.perf_counter()
    timings = {}

    def stage(name: str, done: bool, work) -> None:
        if done:
            log(f"{name}: done before, reused")
            return
        t = time.perf_counter()
        work()
        timings[name] = round(time.perf_counter() - t, 1)
        log(f"{name}: {timings[name]} s")

    cohort, tokens, sweep_dir = root / "cohort", root / "tokens", root / "sweep"
    stage("cohort", cohort.exists(), lambda: generate_cohort(cohort, patients, seed=0, log=log))
    stage("tokens", tokens.exists(), lambda: tokenize_dataset(cohort, tokens, extra_stats=entropy_floor_stats))
    stage("sweep", False, lambda: run_sweep(grid_path, sweep_dir, data=tokens))

    grid = load_grid(grid_path, tokens)
    final_compute = final_multiple * max(grid.axes.budgets)
    results = sweep_dir / "results.parquet"
    fit_path = root / "fit.json"

    report = None

    def fit_stage() -> None:
        nonlocal report
        report = fit_all(load_results(results), bootstrap=BOOTSTRAP, compute=final_compute)
        with atomic_directory(root / "figures", overwrite=True) as tmp:
            write_standard_figures(report, tmp, final_compute)
        write_json_atomic(fit_path, jsonable(report.to_json()))

    stage("fit", fit_path.exists() and (root / "figures").exists(), fit_stage)
    prediction = final_run(results, final_compute, root / "final", bootstrap=BOOTSTRAP, report=report, log=log)
    recommendation = json.loads((root / "final" / "recommendation.json").read_text())["recommendation"]
    write_json_atomic(root / "recommendation.json", recommendation)
    sources = [LawSource("sweep", downstream_runs(sweep_dir), root / "downstream_forecast.json",
                         root / "downstream_law.png")]
    if ladder:
        ladder_dir = default_ladder_dir(root / "final")
        stage("ladder", False, lambda: log_ladder(train_ladder(root / "final", sorted(ladder), ladder_dir), log))
        rungs = [ladder_dir / "runs" / rung_name(f) for f in sorted(ladder)]
        sources.append(LawSource("ladder", [r for r in rungs if RunDir(r).status == FINISHED],
                                 root / "downstream_forecast_ladder.json", root / "downstream_law_ladder.png"))
    evaluation_dir = root / "evaluation"
    # An evaluation from before the ladder is done again; its final run's metrics were already known then.
    final_scored_before = (evaluation_dir / "evaluation.json").is_file()
    stage("evaluation", evaluated_all(evaluation_dir, sources),
          lambda: evaluate_demo_runs(cohort, sources, root / "final", evaluation_dir, log,
                                     final_scored_before=final_scored_before))
    finite_dir = root / "finite"
    stage("finite cohort", (finite_dir / "cohort").exists(),
          lambda: generate_cohort(finite_dir / "cohort", finite.patients, seed=0, log=log))
    stage("finite tokens", (finite_dir / "tokens").exists(),
          lambda: tokenize_dataset(finite_dir / "cohort", finite_dir / "tokens"))
    stage("finite sweep", False, lambda: run_sweep(finite.grid, finite_dir / "sweep", data=finite_dir / "tokens"))
    finite_prediction = final_run(finite_dir / "sweep" / "results.parquet", finite.compute, finite_dir / "final",
                                  bootstrap=finite.bootstrap, log=log, unique_tokens=finite.unique_tokens)
    stats = json.loads((tokens / "stats.json").read_text())
    fit = json.loads(fit_path.read_text())
    evaluation = json.loads((evaluation_dir / "evaluation.json").read_text())
    downstream = []  # (label, graded forecast, figure file name) per law
    for source in sources:
        graded = graded_downstream(evaluation["runs"], source, root / "final", log)
        if graded is None:
            continue
        law_figure = plot_downstream_law(graded)
        if law_figure is not None:
            png = io.BytesIO()
            law_figure.savefig(png, format="png", dpi=110)
            write_file_atomic(source.figure, png.getvalue())
        downstream.append((source.label, graded, source.figure.name))
    forecast_path = root / "final" / "forecast.json"
    forecast = json.loads(forecast_path.read_text()) if forecast_path.is_file() else None
    report = demo_report(grid_path, stats, fit, recommendation, prediction, sweep_dir, root, evaluation, forecast,
                         downstream)
    report += "\n" + finite_section(finite_dir, finite_prediction)
    write_file_atomic(root / "report.md", report)
    log(f"report: {root / 'report.md'} ({time.perf_counter() - started:.0f} s)")
    return {"root": str(root), "prediction": prediction, "finite_prediction": finite_prediction, "timings": timings}


def downstream_runs(sweep_dir: Path) -> list[Path]:
    """The sweep runs whose metrics the downstream law is fitted on, smallest budget first: at each budget the
    lowest-loss finished run, then the lowest-loss run of the next larger model size when the budget has one.

    The final run is several times the sweep's optimal size, and a metric can depend on size beyond the loss:
    the second run of each budget gives the law runs nearer that size and twice the points. On the demo's
    saved evaluations, the best run alone put the two-step AUROC prediction within 0.03 on 3 of 8 (label
    AUROC) and 5 of 8 (against the true risk); with the next size up, 5 of 8 and 6 of 8 (docs/evaluation.md)."""
    results = pd.read_parquet(sweep_dir / "results.parquet")
    results = results[results["status"] == FINISHED].dropna(subset=["budget", "loss"])
    picked = []
    for _, runs in results.groupby("budget", sort=True):
        best = runs.loc[runs["loss"].idxmin()]
        larger = runs[runs["params"] > best["params"]]
        picked.append(best["run_id"])
        if len(larger):
            next_size = larger[larger["params"] == larger["params"].min()]
            picked.append(next_size.loc[next_size["loss"].idxmin(), "run_id"])
    return [sweep_dir / "runs" / run_id for run_id in picked]


def evaluated_all(out: Path, sources: list[LawSource]) -> bool:
    """Whether `out` holds an evaluation of every run the laws are fitted on (a demo from before the ladder has
    none of its rungs: the stage runs again)."""
    path = out / "evaluation.json"
    if not path.is_file():
        return False
    reports = json.loads(path.read_text())["runs"]
    return all(len(reports_of(reports, source.runs)) == len(source.runs) for source in sources)


def log_ladder(rows: list[dict], log) -> None:
    for row in rows:
        loss = "none" if row["val_loss"] is None else f"{row['val_loss']:.4f}"
        log(f"ladder rung {row['name']}: {row['steps']:,} steps, {row['status']}, val loss {loss}")


def evaluate_demo_runs(cohort: Path, sources: list[LawSource], final: Path, out: Path, log=print,
                       final_scored_before: bool = False) -> None:
    """Score the runs of every downstream law and then the final run on the shipped synthetic tasks, on the same
    patients, and write `out`. In between, each law's prediction of the final run's metrics is registered
    (marked as made after its evaluation where `final_scored_before`)."""
    settings = EvaluationSettings(patients=EVAL_PATIENTS, samples=EVAL_SAMPLES, oracle_samples=ORACLE_SAMPLES,
                                  train_patients=EVAL_TRAIN_PATIENTS, bootstrap=BOOTSTRAP)
    evaluation = Evaluation(cohort, load_tasks("synth"), settings, log=log)
    cache = ReportCache(out, fingerprint(evaluation))  # an interrupted stage resumes at the first run not scored
    reports = []
    for run in [*(run for source in sources for run in source.runs), final]:
        if run == final:
            for source in sources:
                register_downstream_forecast(reports, source, final, before_evaluation=not final_scored_before,
                                             log=log)
        report, kept = cache.report(run, evaluation.evaluate_run)
        log(f"{run}: scored before the stage was interrupted ({cache.path})" if kept
            else f"evaluated {run} ({report['simulation']['seconds']} s of simulation)")
        reports.append(report)
    write_evaluation(out, reports, overwrite=True)
    cache.clear()


def reports_of(reports: list[dict], runs: list[Path]) -> list[dict]:
    """The reports of `runs`, in the order of `reports`."""
    wanted = {Path(run).resolve() for run in runs}
    return [r for r in reports if Path(r["run"]["run_dir"]).resolve() in wanted]


def register_downstream_forecast(reports: list[dict], source: LawSource, final: Path, before_evaluation: bool,
                                 log=print) -> None:
    """Write the final run's downstream forecast from `source`'s reports once (a forecast already there is
    never rewritten), saying whether it was made before the final run was evaluated."""
    if source.forecast.is_file():
        return
    try:
        forecast = downstream_forecast(reports_of(reports, source.runs), target_of(final))
    except InputError as error:
        log(f"no downstream forecast from the {source.label}: {error}")
        return
    write_json_atomic(source.forecast, jsonable({**forecast, "registered_before_evaluation": before_evaluation}))
    log(f"downstream forecast of {final} from {len(forecast['fitted_on'])} {source.label} runs: {source.forecast}")


def graded_downstream(reports: list[dict], source: LawSource, final: Path, log=print) -> dict | None:
    """`source`'s registered downstream forecast graded against the final run's evaluation (the last report).
    An evaluation from before the forecast existed gets one now, marked as made after."""
    register_downstream_forecast(reports[:-1], source, final, before_evaluation=False, log=log)
    if not source.forecast.is_file():
        return None
    return grade_downstream(json.loads(source.forecast.read_text()), reports[-1])
