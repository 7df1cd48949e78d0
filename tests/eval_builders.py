"""Cohorts and tasks for the evaluation tests: hand-built MEDS timelines with known labels, and the
synthetic test cohort (600 patients) with its token store."""

from __future__ import annotations

from pathlib import Path

from meds_builders import t, write_dataset

from scaling.evaluate.tasks import PredictionRule, Task

# Patient 1: a stay (admission 2011-03-01, discharge 03-05), a readmission 15 days later, two ED visits
# and a type 2 diabetes diagnosis within the year after the discharge, death 667 days after it.
# Patient 2: diabetes already in 2010 (prevalent), one stay, no readmission.
# Patient 3: outpatient visits only (no stay).
# Patient 4: a readmission exactly 30 days after the discharge (the horizon is inclusive), and an item
# recorded at the discharge time (history, not future).
# Patient 5: dies half a year after the first visit (no time with a year of history before death).
# Patient 6: train split, like patient 1.
HAND_ROWS = [
    (1, None, "GENDER//F", None),
    (1, t(1960, 1, 1), "MEDS_BIRTH", None),
    (1, t(2010, 1, 1), "VISIT//OUTPATIENT", None),
    (1, t(2010, 1, 1), "DIAGNOSIS//ICD//10//I10", None),
    (1, t(2011, 3, 1), "HOSPITAL_ADMISSION//INPATIENT", None),
    (1, t(2011, 3, 1), "LAB//LOINC//4548-4", 6.5),
    (1, t(2011, 3, 5), "HOSPITAL_DISCHARGE//INPATIENT", None),
    (1, t(2011, 3, 20), "HOSPITAL_ADMISSION//INPATIENT", None),
    (1, t(2011, 3, 22), "HOSPITAL_DISCHARGE//INPATIENT", None),
    (1, t(2011, 6, 1), "VISIT//EMERGENCY", None),
    (1, t(2011, 9, 1), "VISIT//EMERGENCY", None),
    (1, t(2011, 9, 1), "DIAGNOSIS//ICD//10//E119", None),
    (1, t(2013, 1, 1), "MEDS_DEATH", None),
    (2, None, "GENDER//M", None),
    (2, t(1950, 6, 1), "MEDS_BIRTH", None),
    (2, t(2010, 2, 1), "VISIT//OUTPATIENT", None),
    (2, t(2010, 2, 1), "DIAGNOSIS//ICD//10//E119", None),
    (2, t(2012, 5, 1), "HOSPITAL_ADMISSION//INPATIENT", None),
    (2, t(2012, 5, 8), "HOSPITAL_DISCHARGE//INPATIENT", None),
    (2, t(2012, 9, 1), "VISIT//OUTPATIENT", None),
    (3, None, "GENDER//F", None),
    (3, t(1970, 1, 1), "MEDS_BIRTH", None),
    (3, t(2010, 1, 1), "VISIT//OUTPATIENT", None),
    (3, t(2012, 1, 1), "VISIT//OUTPATIENT", None),
    (4, None, "GENDER//M", None),
    (4, t(1955, 1, 1), "MEDS_BIRTH", None),
    (4, t(2011, 12, 1), "HOSPITAL_ADMISSION//INPATIENT", None),
    (4, t(2012, 1, 1), "HOSPITAL_DISCHARGE//INPATIENT", None),
    (4, t(2012, 1, 1), "MEDICATION//ATC//A10BA02", None),
    (4, t(2012, 1, 31), "HOSPITAL_ADMISSION//INPATIENT", None),
    (4, t(2012, 2, 2), "HOSPITAL_DISCHARGE//INPATIENT", None),
    (5, None, "GENDER//M", None),
    (5, t(1930, 1, 1), "MEDS_BIRTH", None),
    (5, t(2010, 1, 1), "VISIT//OUTPATIENT", None),
    (5, t(2010, 6, 1), "MEDS_DEATH", None),
    (6, None, "GENDER//F", None),
    (6, t(1960, 1, 1), "MEDS_BIRTH", None),
    (6, t(2010, 1, 1), "VISIT//OUTPATIENT", None),
    (6, t(2011, 3, 1), "HOSPITAL_ADMISSION//INPATIENT", None),
    (6, t(2011, 3, 5), "HOSPITAL_DISCHARGE//INPATIENT", None),
]
HAND_SPLITS = {1: "held_out", 2: "held_out", 3: "held_out", 4: "held_out", 5: "held_out", 6: "train"}

FIRST_DISCHARGE = PredictionRule("discharge", "at_code", ("HOSPITAL_DISCHARGE//",), probability=1.0)
FIRST_ADMISSION = PredictionRule("admission", "at_code", ("HOSPITAL_ADMISSION//INPATIENT",), probability=1.0)
AFTER_A_YEAR = PredictionRule("yearly", "random", min_history_days=365, probability=1.0)


def hand_cohort_all_train(root: Path):
    """The hand cohort with every patient in train (so the vocabulary holds every code): (Cohort, Vocabulary)."""
    from scaling.data.meds_io import read_meds
    from scaling.data.token_store import TokenStore
    from scaling.data.tokenizer import TokenizerSettings, tokenize_dataset
    from scaling.evaluate.labels import Cohort

    meds = write_dataset(root / "meds", {"data.parquet": HAND_ROWS}, {s: "train" for s in range(1, 7)})
    tokenize_dataset(meds, root / "tokens", TokenizerSettings(min_count=1))
    return Cohort.from_dataset(read_meds(meds)), TokenStore.open(root / "tokens").vocab


def hand_cohort(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "hand_meds", {"data.parquet": HAND_ROWS}, HAND_SPLITS)


def task(name: str, kind: str, rule: PredictionRule, codes: tuple[str, ...], horizon_days: float,
         exclude_prevalent: bool = False) -> Task:
    return Task(name, kind, rule, codes, horizon_days, exclude_prevalent)


def synth_cohort_and_store(root: Path, patients: int = 600) -> tuple[Path, Path]:
    """The synthetic test cohort and its token store (min count 1): about 8 s on one core."""
    from scaling.data.tokenizer import TokenizerSettings, tokenize_dataset
    from scaling.synth.generate import generate_cohort
    from scaling.synth.replay import entropy_floor_stats

    meds, tokens = root / "cohort", root / "tokens"
    generate_cohort(meds, patients, seed=0)
    tokenize_dataset(meds, tokens, TokenizerSettings(min_count=1), extra_stats=entropy_floor_stats)
    return meds, tokens
