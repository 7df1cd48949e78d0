"""Downstream evaluation of trained runs: simulated futures vs supervised baselines vs the oracle.

    evaluation = Evaluation(meds_dir, load_tasks("synth"), EvaluationSettings(samples=8))
    report = evaluation.evaluate_run("runs/final")      # the JSON `scaling evaluate --json` prints

What does not depend on the run is computed once, in `Evaluation(...)`: for each prediction rule the
held-out prediction times (at most `patients`), for each task its labels, the baselines trained on
the train split, and on a synthetic cohort the oracle's estimates. `evaluate_run` then prompts the
run's model with every history, samples K futures per prompt (once per rule, up to the longest horizon
of its tasks), turns them into estimates and scores everything with the same bootstrap resamples.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from scaling.common.atomic import atomic_directory, refuse_existing
from scaling.common.errors import InputError
from scaling.common.jsonable import dumps
from scaling.data.meds_io import read_meds
from scaling.data.token_store import TokenStore
from scaling.evaluate.baselines import BASELINES, FeatureSpace, fit_predict
from scaling.evaluate.figures import plot_metric_vs_runs, plot_metric_vs_samples, write_figures
from scaling.evaluate.labels import Cohort, PredictionTimes, prediction_gap_minutes, prediction_times, task_labels
from scaling.evaluate.meds_predictions import meds_predictions
from scaling.evaluate.metrics import bootstrap_indices, can_rank, paired_difference, point_metrics, task_metrics
from scaling.evaluate.oracle import Oracle, world_settings
from scaling.evaluate.outcomes import (
    estimate_from_probabilities,
    estimate_from_samples,
    outcome_token_mask,
    outcome_values,
    probability_values,
)
from scaling.evaluate.simulate import SimulationSettings, cut_history_fraction, history_prompts, simulate_futures
from scaling.evaluate.tasks import PredictionRule, Task
from scaling.train.run_dir import FINISHED, RunDir

ORACLE_FUTURES_AT_ONCE = 100_000


@dataclass(frozen=True)
class EvaluationSettings:
    patients: int = 200  # held-out patients per prediction rule (each gets one prediction time)
    samples: int = 8  # K: simulated futures per patient
    train_patients: int = 20_000  # train-split patients per rule for the baselines
    baselines: bool = True
    oracle: bool | None = None  # None: when the dataset is a synthetic cohort
    oracle_samples: int = 16  # futures per patient from the generator itself
    bootstrap: int = 200  # resamples for the intervals
    min_positives: int = 10  # fewer positives (or negatives): no AUROC or AUPRC
    seed: int = 0
    max_new_tokens: int = 256  # token budget of one simulated future
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        for name in ("patients", "samples", "train_patients", "oracle_samples", "max_new_tokens", "min_positives"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} = {getattr(self, name)}; expected 1 or more", field=name)
        if self.bootstrap < 0:
            raise InputError(f"bootstrap = {self.bootstrap}; expected 0 or more", field="bootstrap")
        self.simulation()  # the sampling settings are checked there

    def simulation(self) -> SimulationSettings:
        return SimulationSettings(self.samples, self.max_new_tokens, self.temperature, self.top_k, self.top_p,
                                  self.seed)


@dataclass
class TaskSet:
    """One task on its rule's held-out predictions: everything that does not depend on the run."""

    task: Task
    rows: np.ndarray  # the rule's predictions this task scores (prevalent cases and censored durations out)
    labels: np.ndarray  # (len(rows),)
    baselines: dict[str, np.ndarray | str] = field(default_factory=dict)  # predictions, or why there are none
    oracle: np.ndarray | None = None  # (len(rows),) NaN where the generator could not replay the history
    resamples: np.ndarray | None = None  # (bootstrap, len(rows)) shared by every estimator


@dataclass
class RuleGroup:
    rule: PredictionRule
    times: PredictionTimes
    horizon_minutes: float
    tasks: list[TaskSet]


class Evaluation:
    def __init__(self, meds_dir: str | Path, tasks: list[Task], settings: EvaluationSettings = EvaluationSettings(),
                 log=None, split_aliases: dict[str, str] | None = None):
        self.settings, self.log = settings, log or (lambda message: None)
        self.meds_dir, self.tasks = Path(meds_dir), list(tasks)
        dataset = read_meds(meds_dir, split_aliases)  # the aliases the token store was made with
        self.cohort = Cohort.from_dataset(dataset)
        use_oracle = settings.oracle if settings.oracle is not None else world_settings(meds_dir) is not None
        self.oracle = Oracle(dataset, self.cohort) if use_oracle else None
        self.groups: list[RuleGroup] = []
        for rule in dict.fromkeys(t.prediction for t in tasks):
            rule_tasks = [t for t in tasks if t.prediction == rule]
            times = prediction_times(self.cohort, rule, "held_out", settings.patients)
            horizon = max(t.horizon_minutes for t in rule_tasks)
            group = RuleGroup(rule, times, horizon, [])
            for task in rule_tasks:
                keep, labels = task_labels(self.cohort, task, times)
                rows = np.flatnonzero(keep)
                group.tasks.append(TaskSet(task, rows, labels[rows],
                                           resamples=bootstrap_indices(len(rows), settings.bootstrap, settings.seed)))
            self.log(f"rule '{rule.name}': {len(times)} held-out predictions, tasks "
                     + ", ".join(f"{ts.task.name} (n={len(ts.rows)})" for ts in group.tasks))
            if settings.baselines:
                self._fit_baselines(group)
            if self.oracle is not None:
                self._oracle_estimates(group)
            self.groups.append(group)

    def _fit_baselines(self, group: RuleGroup) -> None:
        started = time.perf_counter()
        train = prediction_times(self.cohort, group.rule, "train", self.settings.train_patients)
        features = FeatureSpace.fit(self.cohort, train)
        x_train, x_test = features.transform(self.cohort, train), features.transform(self.cohort, group.times)
        for ts in group.tasks:
            if not len(ts.rows):
                continue
            keep, y = task_labels(self.cohort, ts.task, train)
            for name in BASELINES:
                predictions, reason = fit_predict(name, ts.task, x_train[keep], y[keep], x_test[ts.rows],
                                                  self.settings.seed)
                ts.baselines[name] = predictions if predictions is not None else reason
        self.log(f"  baselines on {len(train)} train predictions, {len(features.names)} features "
                 f"({time.perf_counter() - started:.1f} s)")

    def _oracle_estimates(self, group: RuleGroup) -> None:
        started = time.perf_counter()
        K = self.settings.oracle_samples
        estimates = [np.full(len(group.times), np.nan) for _ in group.tasks]
        # the generator's state is several KB per future (1,000 x 1,000 futures in one piece peaked at 17 GB):
        # K futures of at most ORACLE_FUTURES_AT_ONCE / K histories at a time keep memory bounded
        per_chunk = max(1, ORACLE_FUTURES_AT_ONCE // K)
        for first in range(0, len(group.times), per_chunk):
            chunk = np.arange(first, min(first + per_chunk, len(group.times)))
            futures, ok = self.oracle.futures(group.times.take(chunk), K, group.horizon_minutes,
                                              [self.settings.seed, first])
            for ts, estimate in zip(group.tasks, estimates):
                values = outcome_values(ts.task, futures).reshape(len(chunk), K)
                estimate[chunk] = np.where(ok, estimate_from_samples(ts.task, values), np.nan)
        for ts, estimate in zip(group.tasks, estimates):
            ts.oracle = estimate[ts.rows]
        self.log(f"  oracle: {K} futures per patient ({time.perf_counter() - started:.1f} s)")

    # ------------------------------------------------------------------------------------------------

    def evaluate_run(self, run_dir: str | Path) -> dict:
        """The report of one run (see docs/evaluation.md), with per-prediction estimates under
        "predictions" (a pyarrow table; the JSON output leaves it out)."""
        run_dir = Path(run_dir)
        model, config, step = RunDir(run_dir).load_model()
        store = TokenStore.open(config.data)
        s = self.settings
        K = s.samples
        report_tasks, tables = [], []
        simulation = {"futures": 0, "truncated": 0, "generated_tokens": 0, "seconds": 0.0, "prompts": 0,
                      "prompts_cut": 0}
        for group in self.groups:
            masks = {ts.task.name: outcome_token_mask(ts.task, store.vocab, model.shape.vocab_size)
                     for ts in group.tasks}
            masks = {name: mask for name, mask in masks.items() if mask is not None}
            values_by_task = {ts.task.name: np.zeros((0, K)) for ts in group.tasks}
            probability_by_task = {name: np.zeros((0, K)) for name in masks}
            if len(group.times):
                started = time.perf_counter()
                prompts = history_prompts(self.cohort, group.times, store.vocab)
                simulation["prompts"] += len(prompts)
                simulation["prompts_cut"] += round(len(prompts) * cut_history_fraction(
                    model.shape.max_seq_len, prompts, s.max_new_tokens))
                gaps = prediction_gap_minutes(self.cohort, group.times)  # 0 unless a label file's times
                futures, tokens, probs = simulate_futures(
                    model, store.vocab, prompts, group.horizon_minutes, s.simulation(), log=self.log,
                    outcome_masks=np.array(list(masks.values())).reshape(len(masks), model.shape.vocab_size),
                    gap_minutes=gaps)
                simulation["seconds"] += time.perf_counter() - started
                simulation["futures"] += len(tokens)
                simulation["truncated"] += int((tokens[:, -1] != store.vocab.pad_id).sum())
                simulation["generated_tokens"] += int((tokens != store.vocab.pad_id).sum())
                values_by_task = {ts.task.name: outcome_values(ts.task, futures).reshape(len(group.times), K)
                                  for ts in group.tasks}
                tasks = {ts.task.name: ts.task for ts in group.tasks}
                probability_by_task = {
                    name: probability_values(tasks[name], tokens, probs[:, :, m], store.vocab,
                                             np.repeat(gaps, K)).reshape(-1, K)
                    for m, name in enumerate(masks)}
            for ts in group.tasks:
                values = values_by_task[ts.task.name][ts.rows]
                probability = probability_by_task.get(ts.task.name)
                probability = None if probability is None else probability[ts.rows]
                report_tasks.append(self._task_report(ts, values, probability))
                tables.append(self._prediction_table(
                    ts, group, estimate_from_samples(ts.task, values),
                    None if probability is None else estimate_from_probabilities(ts.task, probability)))
        simulation["truncated_fraction"] = simulation["truncated"] / max(simulation["futures"], 1)
        simulation["prompts_cut_fraction"] = simulation["prompts_cut"] / max(simulation["prompts"], 1)
        simulation["tokens_per_s"] = round(simulation["generated_tokens"] / max(simulation["seconds"], 1e-9), 1)
        simulation["seconds"] = round(simulation["seconds"], 2)
        return {
            "samples": K,
            "run": run_info(run_dir, step),
            "data": str(self.meds_dir),
            "settings": asdict(s),
            "simulation": simulation,
            "tasks": report_tasks,
            "predictions": pa.concat_tables(tables) if tables else None,
        }

    def _task_report(self, ts: TaskSet, values: np.ndarray, probability: np.ndarray | None = None) -> dict:
        """The task's metrics; `values` (n, K) the outcome each future drew, `probability` (n, K) each future's
        probability estimate (outcomes.probability_values), when the task has one."""
        task, y, s = ts.task, ts.labels, self.settings
        n = len(y)
        report: dict = {"name": task.name, "kind": task.kind, "description": task.description,
                        "prediction": task.prediction.name, "horizon_days": task.horizon_days, "n": n,
                        "prevalence": float((y > 0).mean()) if n and task.kind != "duration" else None,
                        "mean_label": float(y.mean()) if n else None, "warnings": []}
        if task.kind == "binary":
            report["positives"] = int(y.sum())
            if not can_rank(task.kind, y, s.min_positives):
                report["warnings"].append(f"too few positives or negatives ({int(y.sum())} positives of {n}); "
                                          f"AUROC and AUPRC need at least {s.min_positives} of each")
        if n < 2:
            report["warnings"].append(f"{n} predictions; nothing to score")
            report.update(model=None, model_probability=None, baselines={name: None for name in BASELINES},
                          oracle=None, versus_baselines={}, by_samples=[])
            return report

        # a binary task's true risk, where the oracle gives it: every estimator is also scored against it
        risk = ts.oracle if task.kind == "binary" and ts.oracle is not None else None

        def score(estimate: np.ndarray) -> dict:
            return task_metrics(task.kind, y, estimate, ts.resamples, s.min_positives, risk)

        model = estimate_from_samples(task, values)
        model_probability = estimate_from_probabilities(task, probability) if probability is not None else None
        report["model"] = score(model)
        report["model_probability"] = score(model_probability) if model_probability is not None else None
        report["baselines"] = {}
        for name in BASELINES:
            predictions = ts.baselines.get(name)
            if predictions is None:
                report["baselines"][name] = None
            elif isinstance(predictions, str):
                report["baselines"][name] = {"error": predictions}
            else:
                report["baselines"][name] = score(predictions)
        report["oracle"] = self._oracle_report(ts) if ts.oracle is not None else None
        estimators = {"model": model, "model_probability": model_probability, "oracle": ts.oracle}
        report["versus_baselines"] = self._versus_baselines(ts, estimators)
        if risk is not None:
            report["versus_baselines_true_risk"] = self._versus_baselines(ts, estimators, risk)
        ranking = can_rank(task.kind, y, s.min_positives)
        report["by_samples"] = [
            {"samples": k, **point_metrics(task.kind, y, estimate_from_samples(task, values[:, :k]), ranking, risk),
             **({"probability": point_metrics(task.kind, y, estimate_from_probabilities(task, probability[:, :k]),
                                              ranking, risk)}
                if probability is not None else {})}
            for k in samples_ladder(values.shape[1])
        ]
        return report

    def _versus_baselines(self, ts: TaskSet, estimators: dict[str, np.ndarray | None],
                          true_risk: np.ndarray | None = None) -> dict:
        """{estimator: {baseline: paired difference}} on the primary metric (metrics.paired_difference), or with
        `true_risk` on auroc_true_risk. The oracle is compared on the histories the generator replayed, with
        resamples of those rows."""
        s = self.settings
        out = {}
        for name, estimate in estimators.items():
            if estimate is None:
                continue
            rows, resamples = np.arange(len(ts.labels)), ts.resamples
            if np.isnan(estimate).any():
                rows = np.flatnonzero(~np.isnan(estimate))
                resamples = bootstrap_indices(len(rows), s.bootstrap, s.seed)
            risk = None if true_risk is None else true_risk[rows]
            out[name] = {
                baseline: paired_difference(ts.task.kind, ts.labels[rows], estimate[rows], predictions[rows],
                                            resamples, s.min_positives, risk)
                for baseline, predictions in ts.baselines.items()
                if predictions is not None and not isinstance(predictions, str)}
        return out

    def _oracle_report(self, ts: TaskSet) -> dict:
        """The oracle's metrics; for a binary task its auroc_true_risk (the true risk ranking itself) is the
        highest any estimate can reach on these patients."""
        risk = ts.oracle if ts.task.kind == "binary" else None
        replayed = np.flatnonzero(~np.isnan(ts.oracle))
        if len(replayed) == len(ts.oracle):
            return {**task_metrics(ts.task.kind, ts.labels, ts.oracle, ts.resamples, self.settings.min_positives,
                                   risk),
                    "samples": self.settings.oracle_samples}
        y = ts.labels[replayed]
        resamples = bootstrap_indices(len(replayed), self.settings.bootstrap, self.settings.seed)
        out = task_metrics(ts.task.kind, y, ts.oracle[replayed], resamples, self.settings.min_positives,
                           None if risk is None else risk[replayed])
        return {**out, "samples": self.settings.oracle_samples, "n": len(replayed),
                "note": f"the generator replayed {len(replayed)} of {len(ts.oracle)} histories"}

    def _prediction_table(self, ts: TaskSet, group: RuleGroup, model_estimate: np.ndarray,
                          probability_estimate: np.ndarray | None = None) -> pa.Table:
        times = group.times.take(ts.rows)
        columns = {
            "task": pa.array([ts.task.name] * len(ts.rows), pa.string()),
            "subject_id": pa.array(self.cohort.subject_ids[times.subject], pa.int64()),
            "prediction_time": pa.array(times.time_us, pa.int64()).cast(pa.timestamp("us")),
            "label": pa.array(ts.labels, pa.float64()),
            "model": pa.array(model_estimate, pa.float64()),
            "model_probability": pa.array(probability_estimate if probability_estimate is not None
                                          else np.full(len(ts.rows), np.nan), pa.float64()),
        }
        for name in BASELINES:
            predictions = ts.baselines.get(name)
            usable = predictions is not None and not isinstance(predictions, str)
            columns[name] = pa.array(predictions if usable else np.full(len(ts.rows), np.nan), pa.float64())
        oracle = ts.oracle if ts.oracle is not None else np.full(len(ts.rows), np.nan)
        columns["oracle"] = pa.array(oracle, pa.float64())
        return pa.table(columns)


def samples_ladder(k: int) -> list[int]:
    """1, 2, 4, ... up to k, and k itself: the Ks the metric-vs-K figure shows."""
    ladder = [2**i for i in range(k.bit_length()) if 2**i <= k]
    return ladder if ladder[-1] == k else [*ladder, k]


def run_info(run_dir: Path, step: int) -> dict:
    """What the scaling figures need of a run: its size, tokens, compute and losses (its summary)."""
    run = RunDir(run_dir)
    summary = run.read_summary() or {}
    record = run.read_record()
    return {"run_dir": str(run_dir), "checkpoint_step": step, "status": summary.get("status"),
            "params": summary.get("params"), "params_nonembed": summary.get("params_nonembed"),
            "tokens": summary.get("tokens"), "flops": summary.get("flops"), "val_loss": summary.get("val_loss"),
            "shape": record.get("shape")}


def expand_run_dirs(paths: list[Path]) -> list[Path]:
    """Run directories, with a sweep directory (runs/<id>/) standing for its finished runs."""
    out = []
    for path in paths:
        if RunDir(path).is_run():
            out.append(path)
        elif (path / "runs").is_dir():
            finished = [d for d in sorted((path / "runs").iterdir()) if RunDir(d).status == FINISHED]
            if not finished:
                raise InputError(f"{path}: a sweep directory with no finished run")
            out.extend(finished)
        else:
            raise InputError(f"{path}: not a run directory (no {RunDir.CONFIG}) nor a sweep directory (no runs/)")
    return out


def json_report(report: dict) -> dict:
    """The report without its predictions table (what `--json` prints and evaluation.json holds)."""
    return {k: v for k, v in report.items() if k != "predictions"}


def write_evaluation(out: Path, reports: list[dict], overwrite: bool = False) -> list[Path]:
    """Write an evaluation directory atomically: evaluation.json, predictions.parquet,
    meds_predictions/<task>/<estimator>.parquet (binary tasks, in meds-evaluation's schema) and figures for
    one run; for several, one subdirectory per run plus the metric-vs-compute and metric-vs-loss figures."""
    out = Path(out)
    refuse_existing(out, overwrite)
    written = []
    with atomic_directory(out, overwrite=overwrite) as tmp:
        names = run_folder_names(reports)
        for name, report in zip(names, reports):
            folder = tmp if len(reports) == 1 else tmp / "runs" / name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "evaluation.json").write_text(dumps(json_report(report), indent=1) + "\n")
            if report.get("predictions") is not None:
                pq.write_table(report["predictions"], folder / "predictions.parquet")
                binary = [t["name"] for t in report["tasks"] if t["kind"] == "binary"]
                for (task, estimator), table in meds_predictions(report["predictions"], binary).items():
                    (folder / "meds_predictions" / task).mkdir(parents=True, exist_ok=True)
                    pq.write_table(table, folder / "meds_predictions" / task / f"{estimator}.parquet")
            write_figures({"metric_vs_samples": plot_metric_vs_samples(report)}, folder)
        if len(reports) > 1:
            summary = {"samples": reports[0]["samples"], "runs": [json_report(r) for r in reports]}
            (tmp / "evaluation.json").write_text(dumps(summary, indent=1) + "\n")
            write_figures({"metric_vs_compute": plot_metric_vs_runs(reports, "flops"),
                           "metric_vs_loss": plot_metric_vs_runs(reports, "val_loss")}, tmp)
        written = sorted(p.relative_to(tmp) for p in tmp.rglob("*") if p.is_file())
    return [out / p for p in written]


def run_folder_names(reports: list[dict]) -> list[str]:
    """The folder of each run under an evaluation's runs/: the run directory's name, made unique."""
    names = []
    for report in reports:
        name = Path(report["run"]["run_dir"]).name or "run"
        names.append(name if name not in names else f"{name}-{len(names)}")
    return names
