"""Each run's finished report, kept beside an evaluation's output until the whole directory is written, so an
evaluation of several runs that is interrupted (a kill, a full disk, a crash in a later run) resumes at the
first run not yet scored instead of simulating every run again.

    cache = ReportCache(out, fingerprint(evaluation))
    report, kept = cache.report(run_dir, evaluation.evaluate_run)   # kept: from an interrupted evaluation
    ...; write_evaluation(out, reports); cache.clear()

The cache is OUT.partial/ (a sibling of OUT): per run, <key>.parquet (the per-prediction table) and then
<key>.json (the report), each written to a temporary name and renamed, so a report is there whole or not at
all. The key covers the settings, the data, the tasks (and the contents of their label files), the run
directory, its latest checkpoint step and the losses in its summary: a run trained further or again, a label
file rewritten in place, or any other change, is scored again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from scaling.common.atomic import write_file_atomic, write_json_atomic
from scaling.common.jsonable import dumps
from scaling.train.run_dir import RunDir


def label_digest(path: str | Path) -> str:
    """SHA-256 over a label file's bytes, or over each file of a label directory (names and bytes, in name
    order): ACES rewrites its output in place, so the path alone does not say the labels are the same."""
    path, digest = Path(path), hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def fingerprint(evaluation) -> str:
    """What every report of one evaluation (scaling.evaluate.evaluation.Evaluation) shares: its settings, data,
    tasks and the contents of their label files, as one string."""
    label_files = sorted({task.prediction.labels for task in evaluation.tasks if task.prediction.labels})
    return dumps({"settings": asdict(evaluation.settings), "data": str(evaluation.meds_dir.resolve()),
                  "tasks": [asdict(task) for task in evaluation.tasks],
                  "labels": {name: label_digest(name) for name in label_files}})


class ReportCache:
    def __init__(self, out: str | Path, shared: str):
        out = Path(out)
        self.path = out.with_name(out.name + ".partial")
        self.shared = shared

    def _key(self, run_dir: str | Path) -> str:
        run = RunDir(run_dir)
        steps, summary = run.checkpoint_steps(), run.read_summary() or {}
        material = json.dumps([self.shared, str(Path(run_dir).resolve()), steps[-1] if steps else None,
                               summary.get("val_loss"), summary.get("train_loss")])
        return hashlib.sha256(material.encode()).hexdigest()[:20]

    def load(self, run_dir: str | Path) -> dict | None:
        """The run's report from an earlier, interrupted evaluation with the same key; None when there is none."""
        key = self._key(run_dir)
        report_path = self.path / f"{key}.json"
        if not report_path.is_file():
            return None
        report = json.loads(report_path.read_text())
        table = self.path / f"{key}.parquet"
        report["predictions"] = pq.read_table(table) if table.is_file() else None
        return report

    def save(self, run_dir: str | Path, report: dict) -> dict:
        """Keep `report` (with its "predictions" table) for `run_dir`; returns it."""
        key = self._key(run_dir)
        if report.get("predictions") is not None:
            table = pa.BufferOutputStream()
            pq.write_table(report["predictions"], table)
            write_file_atomic(self.path / f"{key}.parquet", table.getvalue().to_pybytes())
        write_json_atomic(self.path / f"{key}.json", {k: v for k, v in report.items() if k != "predictions"})
        return report

    def report(self, run_dir: str | Path, score: Callable[[str | Path], dict]) -> tuple[dict, bool]:
        """(the run's report, whether it was kept from an interrupted evaluation): kept, else `score(run_dir)`,
        then kept."""
        kept = self.load(run_dir)
        return (kept, True) if kept is not None else (self.save(run_dir, score(run_dir)), False)

    def clear(self) -> None:
        """Remove the cache once the evaluation directory is written."""
        shutil.rmtree(self.path, ignore_errors=True)
