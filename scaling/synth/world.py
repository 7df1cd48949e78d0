"""The synthetic medical world: its codes and the parameters of its clinical process.

Everything here is a deterministic function of `world_seed`. The process itself (who gets which
condition when, which labs, medications and encounters follow) is in scaling.synth.process.

- Conditions: a head of 20 common chronic diseases with real ICD-10 codes and progression links
  (obesity -> type 2 diabetes -> chronic kidney disease -> dialysis; hypertension -> heart failure;
  smoking -> COPD, ...), and a long tail of rare ones with Zipf-like base rates, grouped under shared
  ICD-10-like categories. Each rare condition has its own signature (a medication, a procedure, a lab
  it shifts) and a partner condition it makes much likelier, so a model gains from capacity.
- Labs (LOINC-like) with 10 value bins each, fixed edges written to the code metadata; conditions and
  the lab's previous value shift the bin distribution (long-range structure).
- Medications (ATC-like, 4 tokens each) and procedures (CPT-like) follow conditions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ENCOUNTER_CODES = ("VISIT//OUTPATIENT", "VISIT//TELEHEALTH", "VISIT//EMERGENCY", "HOSPITAL_ADMISSION//INPATIENT")
DISCHARGE_CODE = "HOSPITAL_DISCHARGE//INPATIENT"
DEATH_CODE = "MEDS_DEATH"
SEX_CODES = ("GENDER//F", "GENDER//M")

# (ICD-10 code without dot, description, base rate, age slope per decade, female multiplier)
COMMON_CONDITIONS = (
    ("E669", "obesity", 0.030, 0.05, 1.1),
    ("I10", "essential hypertension", 0.030, 0.45, 0.9),
    ("E119", "type 2 diabetes", 0.012, 0.35, 0.9),
    ("E785", "hyperlipidemia", 0.025, 0.35, 0.9),
    ("N183", "chronic kidney disease stage 3", 0.002, 0.45, 1.0),
    ("Z992", "dependence on renal dialysis", 0.0, 0.10, 1.0),
    ("I509", "heart failure", 0.001, 0.55, 0.9),
    ("J449", "COPD", 0.002, 0.40, 0.9),
    ("I4891", "atrial fibrillation", 0.002, 0.60, 0.8),
    ("F329", "depression", 0.015, -0.05, 1.7),
    ("J45909", "asthma", 0.010, -0.20, 1.3),
    ("M1711", "osteoarthritis of the knee", 0.008, 0.50, 1.3),
    ("K219", "GERD", 0.015, 0.15, 1.1),
    ("E039", "hypothyroidism", 0.006, 0.30, 3.0),
    ("G4733", "obstructive sleep apnea", 0.004, 0.20, 0.6),
    ("I2510", "coronary artery disease", 0.003, 0.55, 0.6),
    ("I639", "ischemic stroke", 0.0005, 0.60, 0.9),
    ("C509", "breast cancer", 0.0008, 0.30, 40.0),
    ("F17210", "nicotine dependence", 0.010, -0.10, 0.8),
    ("N390", "urinary tract infection", 0.010, 0.20, 3.0),
)
# (from, to, hazard multiplier)
PROGRESSION_LINKS = (
    ("E669", "E119", 4.0), ("E669", "I10", 2.5), ("E669", "G4733", 6.0), ("E669", "M1711", 2.0),
    ("E119", "N183", 8.0), ("I10", "N183", 3.0), ("N183", "Z992", 1.0), ("I10", "I509", 4.0),
    ("I2510", "I509", 5.0), ("I4891", "I639", 6.0), ("F17210", "J449", 10.0), ("F17210", "I2510", 3.0),
    ("E785", "I2510", 3.0), ("E119", "I2510", 2.0), ("I10", "I4891", 2.0), ("J449", "I509", 2.0),
)
# Dialysis only ever follows CKD: its base rate is zero and this is its rate once CKD is present.
DIALYSIS_RATE_GIVEN_CKD = 0.02

# (LOINC-like code, description, bin edges (9 -> 10 bins), lowest and highest value)
LABS = (
    ("LAB//LOINC//4548-4", "HbA1c %", (4.8, 5.1, 5.4, 5.7, 6.1, 6.6, 7.3, 8.2, 9.5), (3.5, 15.0)),
    ("LAB//LOINC//2160-0", "creatinine mg/dL", (0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.5, 2.0, 3.0), (0.3, 9.0)),
    ("LAB//LOINC//2093-3", "cholesterol mg/dL", (140, 160, 175, 190, 205, 220, 240, 260, 290), (90, 400)),
    ("LAB//LOINC//8480-6", "systolic BP mmHg", (105, 112, 118, 124, 130, 136, 144, 154, 168), (80, 230)),
    ("LAB//LOINC//39156-5", "BMI kg/m2", (20, 22, 24, 26, 28, 30, 33, 36, 40), (15, 60)),
    ("LAB//LOINC//30934-4", "BNP pg/mL", (20, 40, 70, 100, 150, 250, 400, 700, 1200), (5, 5000)),
    ("LAB//LOINC//718-7", "hemoglobin g/dL", (10, 11, 11.8, 12.5, 13.1, 13.7, 14.3, 15, 16), (6, 20)),
    ("LAB//LOINC//3016-3", "TSH mIU/L", (0.6, 0.9, 1.2, 1.5, 1.9, 2.4, 3.0, 4.0, 6.0), (0.05, 30)),
)
# (condition, lab, shift of the bin distribution's centre, in bins)
LAB_EFFECTS = (
    ("E119", "LAB//LOINC//4548-4", 3.5), ("N183", "LAB//LOINC//2160-0", 3.0), ("Z992", "LAB//LOINC//2160-0", 2.5),
    ("E785", "LAB//LOINC//2093-3", 3.0), ("I10", "LAB//LOINC//8480-6", 3.0), ("E669", "LAB//LOINC//39156-5", 4.0),
    ("I509", "LAB//LOINC//30934-4", 4.0), ("N183", "LAB//LOINC//718-7", -2.0), ("E039", "LAB//LOINC//3016-3", 3.5),
    ("C509", "LAB//LOINC//718-7", -1.5), ("E669", "LAB//LOINC//4548-4", 1.0),
)
# (condition, ATC code) for the common conditions
COMMON_MEDICATIONS = (
    ("E119", "A10BA02"), ("E119", "A10BJ06"), ("I10", "C09AA05"), ("I10", "C08CA01"), ("E785", "C10AA05"),
    ("N183", "B03XA01"), ("I509", "C03CA01"), ("I509", "C07AB07"), ("J449", "R03BB04"), ("I4891", "B01AF01"),
    ("F329", "N06AB06"), ("J45909", "R03AC02"), ("M1711", "M01AE01"), ("K219", "A02BC01"), ("E039", "H03AA01"),
    ("I2510", "B01AC06"), ("I639", "B01AC04"), ("C509", "L02BA01"), ("F17210", "N07BA01"), ("N390", "J01XE01"),
)
COMMON_PROCEDURES = (
    ("Z992", "90935"), ("I2510", "93458"), ("I509", "93306"), ("C509", "77067"), ("M1711", "27447"),
    ("G4733", "95810"), ("I4891", "93000"), ("J449", "94010"),
)
ROUTINE_PROCEDURES = ("99213", "99214", "36415", "99395")


@dataclass(frozen=True)
class World:
    codes: tuple[str, ...]  # every event code; index = code id
    descriptions: tuple[str, ...]
    kind: np.ndarray  # (C,) int: KIND_* below
    condition_code: np.ndarray  # (K,) code id of each condition's diagnosis
    base_rate: np.ndarray  # (K,) onset weight per encounter item
    age_slope: np.ndarray  # (K,) log-rate change per decade from age 50
    female_multiplier: np.ndarray  # (K,)
    links: np.ndarray  # (K, K) log hazard multiplier of condition j (column) given condition i (row)
    lab_code: np.ndarray  # (L,) code ids
    lab_edges: tuple[tuple[float, ...], ...]
    lab_limits: tuple[tuple[float, float], ...]
    lab_shift: np.ndarray  # (K, L) shift of the bin centre
    lab_weight: np.ndarray  # (K, L) extra weight of ordering the lab given the condition
    medication_weight: np.ndarray  # (K, C) weight of each medication code given the condition
    procedure_weight: np.ndarray  # (K, C) weight of each procedure code given the condition
    routine_procedure: np.ndarray  # (C,) weight of routine procedures
    dialysis: int  # condition index of dialysis dependence
    ckd: int  # condition index of CKD

    @property
    def n_conditions(self) -> int:
        return len(self.condition_code)


KIND_ENCOUNTER, KIND_DISCHARGE, KIND_DEATH, KIND_DIAGNOSIS, KIND_LAB, KIND_MEDICATION, KIND_PROCEDURE = range(7)


def make_world(world_seed: int = 0, n_rare: int = 180) -> World:
    rng = np.random.default_rng([world_seed, 2025])
    codes: list[str] = []
    descriptions: list[str] = []
    kinds: list[int] = []

    def add(code: str, description: str, kind: int) -> int:
        codes.append(code)
        descriptions.append(description)
        kinds.append(kind)
        return len(codes) - 1

    for code in ENCOUNTER_CODES:
        add(code, code.split("//")[-1].lower() + " encounter", KIND_ENCOUNTER)
    add(DISCHARGE_CODE, "inpatient discharge", KIND_DISCHARGE)
    add(DEATH_CODE, "death", KIND_DEATH)

    # Rare conditions: ICD-10-like categories from letters not used by the head, 2-5 subtypes each.
    rare_codes, used = [], {c[:3] for c, *_ in COMMON_CONDITIONS}
    while len(rare_codes) < n_rare:
        head = f"{'ABDGHLMOQRST'[rng.integers(12)]}{rng.integers(10, 99)}"
        if head in used:
            continue
        used.add(head)
        for sub in rng.choice(10, size=min(rng.integers(2, 6), n_rare - len(rare_codes)), replace=False):
            rare_codes.append(f"{head}{sub}")
    conditions = [(c, d, r, s, f) for c, d, r, s, f in COMMON_CONDITIONS]
    zipf = 0.004 * (np.arange(1, n_rare + 1) ** -1.1)
    for i, code in enumerate(rare_codes):
        conditions.append((code, f"rare condition {i}", float(zipf[i]), float(rng.normal(0.2, 0.3)),
                           float(np.exp(rng.normal(0, 0.4)))))
    index = {c[0]: k for k, c in enumerate(conditions)}
    condition_code = np.array([add(f"DIAGNOSIS//ICD//10//{c}", d, KIND_DIAGNOSIS) for c, d, *_ in conditions])
    k_total = len(conditions)

    lab_code = np.array([add(code, desc, KIND_LAB) for code, desc, _, _ in LABS])
    lab_index = {code: j for j, (code, *_) in enumerate(LABS)}

    links = np.zeros((k_total, k_total))
    for a, b, m in PROGRESSION_LINKS:
        links[index[a], index[b]] = np.log(m)
    lab_shift = np.zeros((k_total, len(LABS)))
    lab_weight = np.zeros((k_total, len(LABS)))
    for cond, lab, shift in LAB_EFFECTS:
        lab_shift[index[cond], lab_index[lab]] = shift
        lab_weight[index[cond], lab_index[lab]] = 0.4

    medication_codes: dict[str, int] = {}
    procedure_codes: dict[str, int] = {}

    def medication(atc: str) -> int:
        if atc not in medication_codes:
            medication_codes[atc] = add(f"MEDICATION//ATC//{atc}", f"ATC {atc}", KIND_MEDICATION)
        return medication_codes[atc]

    def procedure(cpt: str) -> int:
        if cpt not in procedure_codes:
            procedure_codes[cpt] = add(f"PROCEDURE//CPT//{cpt}", f"CPT {cpt}", KIND_PROCEDURE)
        return procedure_codes[cpt]

    for _, atc in COMMON_MEDICATIONS:
        medication(atc)
    for cpt in [c for _, c in COMMON_PROCEDURES] + list(ROUTINE_PROCEDURES):
        procedure(cpt)

    # Rare-condition signatures: a medication of their own (sharing ATC groups), a procedure, a lab
    # shift, a partner condition, and a common condition that makes them likelier.
    rare_meds, rare_procs = [], []
    for _ in range(n_rare):
        atc = f"{'ABCDGHJLMNPRS'[rng.integers(13)]}{rng.integers(1, 20):02d}{'ABCDEX'[rng.integers(6)]}" \
              f"{'ABCDEX'[rng.integers(6)]}{rng.integers(1, 30):02d}"
        rare_meds.append(medication(atc))
        rare_procs.append(procedure(f"{rng.integers(10000, 99999)}"))
    n_codes = len(codes)
    medication_weight = np.zeros((k_total, n_codes))
    procedure_weight = np.zeros((k_total, n_codes))
    for cond, atc in COMMON_MEDICATIONS:
        medication_weight[index[cond], medication_codes[atc]] = 0.5
    for cond, cpt in COMMON_PROCEDURES:
        procedure_weight[index[cond], procedure_codes[cpt]] = 0.15
    n_common = len(COMMON_CONDITIONS)
    for i in range(n_rare):
        k = n_common + i
        medication_weight[k, rare_meds[i]] = 0.6
        procedure_weight[k, rare_procs[i]] = 0.2
        lab_shift[k, rng.integers(len(LABS))] = rng.choice([-3.0, 3.0])
        partner = n_common + (i + 1 + rng.integers(n_rare - 1)) % n_rare
        links[k, partner] = np.log(40.0)
        links[rng.integers(n_common), k] = np.log(3.0)
    routine = np.zeros(n_codes)
    for cpt in ROUTINE_PROCEDURES:
        routine[procedure_codes[cpt]] = 0.1

    return World(
        codes=tuple(codes), descriptions=tuple(descriptions), kind=np.array(kinds),
        condition_code=condition_code,
        base_rate=np.array([c[2] for c in conditions]), age_slope=np.array([c[3] for c in conditions]),
        female_multiplier=np.array([c[4] for c in conditions]), links=links,
        lab_code=lab_code, lab_edges=tuple(tuple(float(e) for e in lab[2]) for lab in LABS),
        lab_limits=tuple(tuple(float(v) for v in lab[3]) for lab in LABS),
        lab_shift=lab_shift, lab_weight=lab_weight, medication_weight=medication_weight,
        procedure_weight=procedure_weight, routine_procedure=routine,
        dialysis=index["Z992"], ckd=index["N183"],
    )
