"""Tasks from the MEDS-DEV ecosystem: label files in the MEDS label schema (what ACES writes) as prediction
times and labels, and ACES task configs (YAML) read for their outcome predicate and label window; what
they cannot express is refused in one line."""

import re
from datetime import timedelta

import meds
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from eval_builders import hand_cohort
from meds_builders import t

from scaling.common.errors import InputError
from scaling.data.meds_io import read_meds
from scaling.evaluate.aces import load_aces_task, load_task_file, parse_duration
from scaling.evaluate.labels import Cohort, history_events, prediction_gap_minutes, prediction_times, task_labels
from scaling.evaluate.tasks import parse_tasks

DAY_MINUTES = 24 * 60

DEATH_1Y = """
predicates:
  death:
    code: MEDS_DEATH
  discharge:
    code: {regex: "^HOSPITAL_DISCHARGE//.*"}
  ed:
    code: {any: ["VISIT//EMERGENCY", "VISIT//URGENT"]}
  bad_outcome:
    expr: or(death, ed)
trigger: discharge
windows:
  input:
    start: NULL
    end: trigger
    start_inclusive: True
    end_inclusive: True
    index_timestamp: end
  target:
    start: input.end
    end: start + 365 days
    start_inclusive: False
    end_inclusive: True
    label: bad_outcome
"""


def write_labels(path, rows, value="boolean_value"):
    """A label file in the MEDS label schema: rows of (subject_id, prediction_time, label)."""
    table = pa.table({"subject_id": pa.array([r[0] for r in rows], pa.int64()),
                      "prediction_time": pa.array([r[1] for r in rows], pa.timestamp("us")),
                      value: pa.array([r[2] for r in rows], meds.LabelSchema.schema().field(value).type)})
    pq.write_table(table, path)
    return path


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return Cohort.from_dataset(read_meds(hand_cohort(tmp_path_factory.mktemp("aces"))))


def us(*args) -> int:
    return (t(*args) - t(1970, 1, 1)) // timedelta(microseconds=1)


def test_durations_read_as_aces_writes_them():
    assert parse_duration("365 days", "x") == 365 * DAY_MINUTES
    assert parse_duration("24h", "x") == 24 * 60
    assert parse_duration("1 day 12 hours", "x") == 1.5 * DAY_MINUTES
    with pytest.raises(InputError, match="expected a duration"):
        parse_duration("soon", "windows.target.end")


def test_aces_config_gives_the_outcome_codes_and_the_window(tmp_path):
    (tmp_path / "death_1y.yaml").write_text(DEATH_1Y)
    task = load_aces_task(tmp_path / "death_1y.yaml", labels=tmp_path / "labels.parquet")
    assert task.name == "death_1y" and task.kind == "binary"
    assert task.codes == ("MEDS_DEATH", "VISIT//EMERGENCY", "VISIT//URGENT")
    assert task.horizon_days == 365
    assert task.prediction.rule == "labels" and task.prediction.labels == str(tmp_path / "labels.parquet")
    # the same window written from the trigger, with the prediction 24 h after it
    shifted = DEATH_1Y.replace("end: trigger\n", "end: trigger + 24h\n").replace(
        "end: start + 365 days", "end: trigger + 24h + 30d")
    (tmp_path / "shifted.yaml").write_text(shifted.replace("end: trigger + 24h + 30d", "end: start + 30d"))
    assert load_aces_task(tmp_path / "shifted.yaml", labels="x").horizon_days == 30


@pytest.mark.parametrize(("edit", "message"), [
    (("end: start + 365 days", "end: start -> discharge"), "a window bounded by an event"),
    (("start: input.end", "start: input.end + 48h"), "starts +48 hours from the prediction time"),
    (("expr: or(death, ed)", "expr: and(death, ed)"), "expected or(a, b, ...)"),
    (("code: MEDS_DEATH", "code: MEDS_DEATH\n    value_min: 3"), "value and column criteria"),
    (("    index_timestamp: end\n", ""), "0 windows have an 'index_timestamp'"),
    (("label: bad_outcome", "label: sepsis"), "predicates.sepsis: no such predicate"),
    (("end: start + 365 days", "end: start + soon"), "windows.target.end = 'soon'; expected a duration"),
])
def test_aces_config_refuses_what_simulation_cannot_score(tmp_path, edit, message):
    path = tmp_path / "task.yaml"
    path.write_text(DEATH_1Y.replace(*edit))
    with pytest.raises(InputError, match=re.escape(message)) as error:
        load_aces_task(path, labels="labels.parquet")
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_label_file_gives_prediction_times_histories_and_labels(cohort, tmp_path):
    # patient 1 twice (at the first discharge, and a time between events), patient 2 once, patient 6 (train)
    rows = [(1, t(2011, 3, 5), True), (1, t(2011, 4, 1), False), (2, t(2012, 5, 8), True), (6, t(2011, 3, 5), False)]
    path = write_labels(tmp_path / "labels.parquet", rows)
    rule = parse_tasks({"prediction": {"aces": {"rule": "labels", "labels": "labels.parquet"}},
                        "task": [{"name": "x", "kind": "binary", "prediction": "aces", "codes": ["MEDS_DEATH"],
                                  "horizon_days": 365}]}, base=tmp_path)[0]
    assert rule.prediction.labels == str(path)
    held_out = prediction_times(cohort, rule.prediction, "held_out")
    assert held_out.time_us.tolist() == [us(2011, 3, 5), us(2011, 4, 1), us(2012, 5, 8)]
    history = history_events(cohort, held_out)
    last = [history.time_us[history.subject == i].max() for i in range(3)]
    # the history ends with the last event at or before the prediction time
    assert last == [us(2011, 3, 5), us(2011, 3, 22), us(2012, 5, 8)]
    keep, labels = task_labels(cohort, rule, held_out)
    # the file's labels, not the data's: patient 2 does not die, the file says 1
    assert keep.all() and labels.tolist() == [1.0, 0.0, 1.0]
    assert len(prediction_times(cohort, rule.prediction, "train")) == 1
    assert len(prediction_times(cohort, rule.prediction, "held_out", limit=2)) == 2


def test_label_file_refuses_unknown_subjects_and_missing_labels(cohort, tmp_path):
    (tmp_path / "task.yaml").write_text(DEATH_1Y)
    path = write_labels(tmp_path / "labels.parquet", [(1, t(2011, 3, 5), True), (99, t(2011, 3, 5), False)])
    task = load_task_file(str(tmp_path / "task.yaml"), path)[0]
    with pytest.raises(InputError, match="subject_id 99"):
        prediction_times(cohort, task.prediction, "held_out")
    counts = write_labels(tmp_path / "counts.parquet", [(1, t(2011, 3, 5), 2)], value="integer_value")
    task = load_task_file(str(tmp_path / "task.yaml"), counts)[0]
    times = prediction_times(cohort, task.prediction, "held_out")
    with pytest.raises(InputError, match="no boolean_value"):
        task_labels(cohort, task, times)
    pq.write_table(pa.table({"subject_id": [1], "time": pa.array([t(2011, 3, 5)], pa.timestamp("us"))}),
                   tmp_path / "wrong.parquet")
    task = load_task_file(str(tmp_path / "task.yaml"), tmp_path / "wrong.parquet")[0]
    with pytest.raises(InputError, match="no column 'prediction_time'"):
        prediction_times(cohort, task.prediction, "held_out")
    with pytest.raises(InputError, match="only for an ACES config"):
        load_task_file("synth", path)


def test_cli_refuses_an_aces_config_without_labels(tmp_path, run_cli):
    (tmp_path / "task.yaml").write_text(DEATH_1Y)
    (tmp_path / "run").mkdir()
    code, _, err = run_cli("evaluate", tmp_path / "run", "--tasks", tmp_path / "task.yaml")
    assert code == 2 and "--labels" in err and len(err.strip().splitlines()) == 1


def test_prediction_gap_is_the_time_since_the_last_event(cohort, tmp_path):
    rows = [(1, t(2011, 3, 5), True), (1, t(2011, 4, 1), False), (3, t(2009, 1, 1), False)]
    task = load_task_file(str(_config(tmp_path)), write_labels(tmp_path / "labels.parquet", rows))[0]
    times = prediction_times(cohort, task.prediction, "held_out")
    # an event time: 0; 10 days after the last event (the readmission's discharge, 2011-03-22); before any
    # visit, the birth (1970-01-01) is the last event
    birth_to_2009 = (us(2009, 1, 1) - us(1970, 1, 1)) / 60e6
    assert prediction_gap_minutes(cohort, times).tolist() == [0.0, 10 * DAY_MINUTES, birth_to_2009]


def _config(tmp_path):
    (tmp_path / "task.yaml").write_text(DEATH_1Y)
    return tmp_path / "task.yaml"


def test_aces_itself_agrees_with_how_its_config_is_read(tmp_path):
    """ACES (the real package) extracts the config's labels from a synthetic MEDS cohort; its output, written
    in the MEDS label schema, is read back row for row with its labels, and the outcome codes and window
    `load_aces_task` reads from the same config give ACES's label for every row when applied to the data."""
    aces_config = pytest.importorskip("aces.config")
    aces_predicates = pytest.importorskip("aces.predicates")
    aces_query = pytest.importorskip("aces.query")
    import numpy as np
    import polars as pl
    from omegaconf import DictConfig

    from scaling.synth.generate import generate_cohort

    meds_dir = tmp_path / "meds"
    generate_cohort(meds_dir, patients=300, seed=3)
    (tmp_path / "task.yaml").write_text(DEATH_1Y)
    cfg = aces_config.TaskExtractorConfig.load(config_path=tmp_path / "task.yaml")
    found = pl.concat([aces_query.query(cfg, aces_predicates.get_predicates_df(cfg, DictConfig(
        {"path": str(shard), "standard": "meds"}))) for shard in sorted(meds_dir.glob("data/*.parquet"))])
    assert found.height > 100 and 0 < (found["label"] > 0).sum() < found.height  # both labels occur
    rows = list(zip(found["subject_id"], found["index_timestamp"], (found["label"] > 0), strict=True))
    task = load_task_file(str(tmp_path / "task.yaml"), write_labels(tmp_path / "labels.parquet", rows))[0]

    cohort = Cohort.from_dataset(read_meds(meds_dir))
    times = prediction_times(cohort, task.prediction)
    expected = found.sort(["subject_id", "index_timestamp"])
    assert cohort.subject_ids[times.subject].tolist() == expected["subject_id"].to_list()
    assert times.time_us.tolist() == expected["index_timestamp"].dt.epoch("us").to_list()
    keep, labels = task_labels(cohort, task, times)
    assert keep.all() and labels.tolist() == (expected["label"] > 0).cast(float).to_list()

    # the config as read (outcome code prefixes, a horizon of 365 days after the prediction time), applied to
    # the events by hand: the same label as ACES on every row
    ev, outcome = cohort.events, cohort.code_rows(task.codes)
    horizon_us = task.horizon_days * 24 * 3600 * 10**6
    by_hand = [bool(np.any(outcome[s:e] & (ev.time_us[s:e] > t) & (ev.time_us[s:e] <= t + horizon_us)))
               for s, e, t in zip(cohort.starts[times.subject], cohort.ends[times.subject], times.time_us,
                                  strict=True)]
    assert by_hand == (expected["label"] > 0).to_list()
