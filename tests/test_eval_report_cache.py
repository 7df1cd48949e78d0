"""The kept-report cache's key: the same evaluation gives the same key; a label file rewritten in place (same
path, new contents) gives another, so its reports are scored again."""

from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq

from scaling.evaluate.evaluation import EvaluationSettings
from scaling.evaluate.report_cache import fingerprint, label_digest
from scaling.evaluate.tasks import PredictionRule, Task


def write_labels(path, labels):
    pq.write_table(pa.table({"subject_id": [1, 2, 3], "boolean_value": labels}), path)


def evaluation_with_labels(tmp_path, labels_path):
    rule = PredictionRule("icu", "labels", labels=str(labels_path))
    task = Task("death", "binary", rule, codes=(), horizon_days=0.0)
    return SimpleNamespace(settings=EvaluationSettings(), meds_dir=tmp_path, tasks=[task])


def test_rewritten_label_file_changes_the_key(tmp_path):
    labels = tmp_path / "labels.parquet"
    write_labels(labels, [True, False, False])
    before = fingerprint(evaluation_with_labels(tmp_path, labels))
    assert fingerprint(evaluation_with_labels(tmp_path, labels)) == before
    write_labels(labels, [False, False, True])
    assert fingerprint(evaluation_with_labels(tmp_path, labels)) != before


def test_label_directory_digest_covers_each_file(tmp_path):
    folder = tmp_path / "labels"
    (folder / "held_out").mkdir(parents=True)
    write_labels(folder / "held_out" / "0.parquet", [True, False, False])
    write_labels(folder / "train.parquet", [True, True, False])
    before = label_digest(folder)
    write_labels(folder / "held_out" / "0.parquet", [True, False, True])
    assert label_digest(folder) != before
