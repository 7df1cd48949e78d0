"""Tasks, prediction times and labels: hand-built timelines with known answers, and no leakage."""

import re
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from eval_builders import (
    AFTER_A_YEAR,
    FIRST_ADMISSION,
    FIRST_DISCHARGE,
    hand_cohort,
    synth_cohort_and_store,
    task,
)
from meds_builders import t

from scaling.common.errors import InputError
from scaling.data.meds_io import MedsDataset, read_meds
from scaling.data.token_store import TokenStore
from scaling.evaluate.labels import (
    Cohort,
    age_years,
    history_events,
    history_prompts,
    prediction_times,
    real_futures,
    task_labels,
)
from scaling.evaluate.tasks import load_tasks, parse_tasks


def us(*args) -> int:
    """Microseconds since the epoch of a naive datetime, as MEDS stores it."""
    return (t(*args) - t(1970, 1, 1)) // timedelta(microseconds=1)


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    return Cohort.from_dataset(read_meds(hand_cohort(tmp_path_factory.mktemp("hand"))))


def labels_by_subject(cohort, the_task, split="held_out"):
    times = prediction_times(cohort, the_task.prediction, split)
    keep, labels = task_labels(cohort, the_task, times)
    subjects = cohort.subject_ids[times.subject]
    return {int(s): float(y) for s, y, k in zip(subjects, labels, keep) if k}, times


def test_prediction_times_follow_the_rule(hand):
    times = prediction_times(hand, FIRST_DISCHARGE, "held_out")
    got = dict(zip(hand.subject_ids[times.subject].tolist(), times.time_us.tolist()))
    assert got == {1: us(2011, 3, 5), 2: us(2012, 5, 8), 4: us(2012, 1, 1)}  # 3 and 5 never discharged
    # a random time after a year of history, before death: patient 5 dies first; 6 is in train
    times = prediction_times(hand, AFTER_A_YEAR, "held_out")
    got = dict(zip(hand.subject_ids[times.subject].tolist(), times.time_us.tolist()))
    assert got == {1: us(2011, 3, 1), 2: us(2012, 5, 1), 3: us(2012, 1, 1)}
    assert prediction_times(hand, AFTER_A_YEAR, "train").subject.tolist() == [5]  # index of subject 6


def test_binary_labels_count_events_in_the_horizon_only(hand):
    readmission = task("readmission", "binary", FIRST_DISCHARGE, ("HOSPITAL_ADMISSION//INPATIENT",), 30)
    labels, _ = labels_by_subject(hand, readmission)
    # 1: readmitted after 15 days; 2: never; 4: exactly 30 days later (inclusive)
    assert labels == {1: 1.0, 2: 0.0, 4: 1.0}
    shorter = task("readmission", "binary", FIRST_DISCHARGE, ("HOSPITAL_ADMISSION//INPATIENT",), 29.9)
    assert labels_by_subject(hand, shorter)[0] == {1: 1.0, 2: 0.0, 4: 0.0}
    death_1y = task("death", "binary", FIRST_DISCHARGE, ("MEDS_DEATH",), 365)
    death_2y = task("death", "binary", FIRST_DISCHARGE, ("MEDS_DEATH",), 730)
    assert labels_by_subject(hand, death_1y)[0] == {1: 0.0, 2: 0.0, 4: 0.0}
    assert labels_by_subject(hand, death_2y)[0] == {1: 1.0, 2: 0.0, 4: 0.0}


def test_incident_outcomes_exclude_prevalent_patients(hand):
    incident = task("t2d", "binary", FIRST_DISCHARGE, ("DIAGNOSIS//ICD//10//E11",), 365, exclude_prevalent=True)
    assert labels_by_subject(hand, incident)[0] == {1: 1.0, 4: 0.0}  # 2 has had E119 since 2010
    anyone = task("t2d", "binary", FIRST_DISCHARGE, ("DIAGNOSIS//ICD//10//E11",), 365)
    assert labels_by_subject(hand, anyone)[0] == {1: 1.0, 2: 0.0, 4: 0.0}


def test_counts_and_durations(hand):
    ed = task("ed", "count", FIRST_DISCHARGE, ("VISIT//EMERGENCY",), 365)
    assert labels_by_subject(hand, ed)[0] == {1: 2.0, 2: 0.0, 4: 0.0}
    stay = task("los", "duration", FIRST_ADMISSION, ("HOSPITAL_DISCHARGE//INPATIENT", "MEDS_DEATH"), 30)
    assert labels_by_subject(hand, stay)[0] == {1: 4.0, 2: 7.0, 4: 31.0}
    # an outcome event at the prediction time is history: the discharge of patient 4's first stay
    # (2012-01-01) comes with a medication at the same time, which is not a future event
    med = task("med", "count", FIRST_DISCHARGE, ("MEDICATION//",), 365)
    assert labels_by_subject(hand, med)[0] == {1: 0.0, 2: 0.0, 4: 0.0}


def test_history_holds_everything_up_to_the_prediction_time_and_nothing_after(hand):
    times = prediction_times(hand, FIRST_DISCHARGE, "held_out")
    history = history_events(hand, times)
    p4 = int(np.flatnonzero(hand.subject_ids[times.subject] == 4)[0])
    rows = history.subject == p4
    codes = [history.codes[c] for c in history.code_index[rows]]
    assert codes == ["GENDER//M", "MEDS_BIRTH", "HOSPITAL_ADMISSION//INPATIENT", "HOSPITAL_DISCHARGE//INPATIENT",
                     "MEDICATION//ATC//A10BA02"]
    assert np.all(history.time_us[~history.static] <= times.time_us[history.subject[~history.static]])
    futures = real_futures(hand, times)
    assert np.all(futures.minutes > 0)
    np.testing.assert_allclose(age_years(hand, times)[p4], 57.0, atol=0.01)


def test_tasks_file_is_validated(tmp_path):
    tasks = load_tasks("synth")
    assert {t.kind for t in tasks} == {"binary", "count", "duration"} and len(tasks) >= 5
    rule = {"rule": "random"}
    good = {"name": "x", "kind": "binary", "prediction": "r", "codes": ["A"], "horizon_days": 30}
    assert parse_tasks({"prediction": {"r": rule}, "task": [good]})[0].horizon_minutes == 30 * 1440
    bad = [
        ({"prediction": {"r": rule}, "task": [{**good, "kind": "binery"}]}, "kind = 'binery'"),
        ({"prediction": {"r": rule}, "task": [{**good, "horizon": 3}]}, "unknown key 'task[0].horizon'"),
        ({"prediction": {"r": rule}, "task": [{**good, "prediction": "s"}]}, "prediction = 's'"),
        ({"prediction": {"r": {"rule": "at_code"}}, "task": [good]}, "missing key 'codes'"),
        ({"prediction": {"r": {**rule, "probability": 0}}, "task": [good]}, "probability = 0.0"),
        ({"prediction": {"r": rule}, "task": [good, good]}, "appears twice"),
        ({"prediction": {"r": rule}, "task": [{**good, "horizon_days": "1y"}]}, "horizon_days = '1y'"),
    ]
    for raw, message in bad:
        with pytest.raises(InputError, match=re.escape(message)):
            parse_tasks(raw, source="t.toml")
    with pytest.raises(InputError, match="no such tasks file"):
        load_tasks(tmp_path / "missing.toml")


# ----------------------------------------------------------------------------------------------------
# On the synthetic cohort


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    meds, tokens = synth_cohort_and_store(tmp_path_factory.mktemp("synth"))
    dataset = read_meds(meds)
    return dataset, Cohort.from_dataset(dataset), TokenStore.open(tokens)


def test_prompts_are_prefixes_of_the_token_store(synth):
    dataset, cohort, store = synth
    for rule in {the_task.prediction for the_task in load_tasks("synth")}:
        times = prediction_times(cohort, rule, "held_out")
        assert len(times) > 10
        prompts = history_prompts(cohort, times, store.vocab)
        split = store.split("held_out")
        index = {s: i for i, s in enumerate(split.subject_ids.tolist())}
        for i, prompt in enumerate(prompts):
            whole = split.patient(index[int(cohort.subject_ids[times.subject[i]])])
            assert len(prompt) < len(whole)
            np.testing.assert_array_equal(whole[: len(prompt)], prompt)


def test_no_leakage_deleting_the_future_changes_nothing(synth):
    """Cut every patient's record right after its prediction time: the prediction times, histories,
    prompts and baseline features stay the same (nothing after t is read)."""
    from scaling.evaluate.baselines import FeatureSpace

    dataset, cohort, store = synth
    for the_task in load_tasks("synth"):
        times = prediction_times(cohort, the_task.prediction)
        cut_at = dict(zip(cohort.subject_ids[times.subject].tolist(), times.time_us.tolist()))
        events = dataset.events
        limit = pa.array([cut_at.get(s, 0) for s in events["subject_id"].to_pylist()], pa.int64()).cast(
            pa.timestamp("us"))
        kept = pc.or_kleene(pc.is_null(events["time"]), pc.less_equal(events["time"], limit))
        kept = pc.and_(kept, pc.is_in(events["subject_id"], pa.array(list(cut_at), pa.int64())))
        cut = Cohort.from_dataset(MedsDataset(dataset.root, events.filter(kept), dataset.subject_splits))
        cut_times = prediction_times(cut, the_task.prediction)
        np.testing.assert_array_equal(cut.subject_ids[cut_times.subject], cohort.subject_ids[times.subject])
        np.testing.assert_array_equal(cut_times.time_us, times.time_us)
        assert len(real_futures(cut, cut_times).owner) == 0
        for a, b in zip(history_prompts(cohort, times, store.vocab), history_prompts(cut, cut_times, store.vocab)):
            np.testing.assert_array_equal(a, b)
        space = FeatureSpace.fit(cohort, times, min_code_count=1)
        space_cut = FeatureSpace(np.array([cut.events.codes.index(c) for c in space.names[:-1]]), space.names)
        full, truncated = space.transform(cohort, times), space_cut.transform(cut, cut_times)
        np.testing.assert_allclose(full.toarray(), truncated.toarray())
