"""The synthetic world: valid MEDS, deterministic, clinically structured, with an exact entropy floor."""

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from meds import DataSchema

from scaling.data.meds_io import read_meds, write_meds
from scaling.data.tokenizer import TokenizerSettings, tokenize_dataset, tokenize_events
from scaling.synth.generate import code_metadata, generate_cohort, timelines_to_events
from scaling.synth.process import ClinicalProcess
from scaling.synth.replay import entropy_floor_stats, score_token_split
from scaling.synth.world import make_world


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "cohort"
    generate_cohort(root, 1500, seed=3)
    return root


def _digest(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tmp_path):
    generate_cohort(tmp_path / "a", 300, seed=11)
    generate_cohort(tmp_path / "b", 300, seed=11)
    generate_cohort(tmp_path / "c", 300, seed=12)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_cohort_is_valid_meds_with_three_splits(cohort):
    for shard in (cohort / "data").glob("*.parquet"):
        DataSchema.validate(pq.read_table(shard))
    dataset = read_meds(cohort)
    splits = dict(zip(*np.unique(dataset.subject_splits["split"].to_numpy(zero_copy_only=False),
                                 return_counts=True)))
    assert set(splits) == {"train", "tuning", "held_out"} and splits["train"] > 5 * splits["tuning"]
    codes = set(dataset.events["code"].to_pylist())
    assert {"MEDS_BIRTH", "GENDER//F", "GENDER//M", "VISIT//OUTPATIENT", "HOSPITAL_ADMISSION//INPATIENT",
            "HOSPITAL_DISCHARGE//INPATIENT", "MEDS_DEATH"} <= codes
    assert codes <= set(pq.read_table(cohort / "metadata" / "codes.parquet")["code"].to_pylist())


def _patients_with(events, prefix):
    return set(pc.filter(events["subject_id"], pc.starts_with(events["code"], prefix)).to_pylist())


def test_progression_and_labs_follow_conditions(cohort):
    events = read_meds(cohort).events
    everyone = set(events["subject_id"].to_pylist())
    diabetes = _patients_with(events, "DIAGNOSIS//ICD//10//E119")
    ckd = _patients_with(events, "DIAGNOSIS//ICD//10//N183")
    dialysis = _patients_with(events, "DIAGNOSIS//ICD//10//Z992")
    assert dialysis <= ckd  # dialysis only ever follows kidney disease
    risk_with = len(ckd & diabetes) / len(diabetes)
    risk_without = len(ckd - diabetes) / len(everyone - diabetes)
    assert risk_with > 2 * risk_without
    hba1c = events.filter(pc.equal(events["code"], "LAB//LOINC//4548-4"))
    is_diabetic = pc.is_in(hba1c["subject_id"], pa.array(sorted(diabetes), pa.int64()))
    assert (pc.mean(hba1c.filter(is_diabetic)["numeric_value"]).as_py()
            > pc.mean(hba1c.filter(pc.invert(is_diabetic))["numeric_value"]).as_py() + 1.0)


def test_condition_prevalence_has_a_head_and_a_long_tail(cohort):
    events = read_meds(cohort).events
    diagnoses = events.filter(pc.starts_with(events["code"], "DIAGNOSIS//"))
    counts = np.sort(pc.value_counts(diagnoses["code"]).field("counts").to_numpy())[::-1]
    assert counts[0] > 50 * np.median(counts)  # a head of common diseases
    assert len(counts) > 100 and (counts <= 3).sum() > 10  # and a long tail of rare ones


def test_token_store_floor_equals_generator_log_probability(tmp_path):
    """Every token's -log p recorded while sampling equals the generator's score of the tokenized
    MEDS files: the stream the model sees is exactly the generator's."""
    world = make_world(0)
    process = ClinicalProcess(world, max_tokens=192)
    rng = np.random.default_rng(5)
    timelines = process.run(400, rng)
    events = timelines_to_events(timelines, world, np.arange(1, 401), rng)
    splits = pa.table({"subject_id": pa.array(np.arange(1, 401), pa.int64()), "split": ["train"] * 400})
    write_meds(tmp_path / "m", events, splits, code_metadata(world), {})
    _, vocab, token_splits = tokenize_events(read_meds(tmp_path / "m"), TokenizerSettings(min_count=1))
    tokens, offsets, subjects = token_splits["train"]
    np.testing.assert_array_equal(np.diff(offsets), timelines.n_tokens[subjects - 1])
    scored = score_token_split(tokens, offsets, vocab, {"world_seed": 0, "max_tokens": 192})
    assert scored["patients_scored"] == 400
    sampled = np.nansum(timelines.token_nll, axis=1)[subjects - 1]
    np.testing.assert_allclose(scored["per_patient_nll"], sampled, rtol=1e-9)


def test_floor_in_stats_agrees_with_fresh_patients(cohort, tmp_path):
    stats = tokenize_dataset(cohort, tmp_path / "tok", TokenizerSettings(min_count=1), extra_stats=entropy_floor_stats)
    floor = stats["entropy_floor"]["train"]
    assert floor["patients_scored"] == floor["patients"]
    process = ClinicalProcess(make_world(0), 256)
    fresh = process.run(3000, np.random.default_rng(99))
    nll = fresh.token_nll[:, 1:]
    estimate = np.nanmean(nll)
    per_patient = np.nansum(nll, 1) / (fresh.n_tokens - 1)
    noise = 3 * per_patient.std() / np.sqrt(len(per_patient))
    assert abs(estimate - floor["nats_per_token"]) < noise + 0.01
    assert 0.5 < floor["nats_per_token"] < 4.0
