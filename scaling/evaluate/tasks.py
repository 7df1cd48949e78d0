"""Clinical prediction tasks (`TASKS.toml`): when to predict, and what outcome to predict.

A tasks file names prediction-time rules and tasks that use them, in the spirit of the MEDS
ecosystem's ACES configs but simpler:

    [prediction.yearly]                 # a named rule: at most one prediction time per patient
    rule = "random"                     # random: a random event time of the timeline
    min_history_days = 365              # ... at least this long after the first event
    probability = 0.25                  # each candidate time, in time order, is taken with this
                                        # probability; the first taken is the prediction time

    [prediction.discharge]
    rule = "at_code"                    # at_code: the time of an event whose code starts with a prefix
    codes = ["HOSPITAL_DISCHARGE//"]

    [prediction.icu_mortality]
    rule = "labels"                     # labels: the prediction times of a label file (ACES output, the
    labels = "aces/icu_mortality"       # MEDS label schema; relative to this file); its tasks take their
                                        # labels from the file, not from the data

    [[task]]
    name = "incident_t2d_1y"
    kind = "binary"                     # binary | count | duration
    prediction = "yearly"
    codes = ["DIAGNOSIS//ICD//10//E11"] # outcome codes, as prefixes of MEDS codes
    horizon_days = 365
    exclude_prevalent = true            # drop patients whose history already has an outcome code

- binary: any outcome event in (t, t + horizon];
- count: the number of outcome events in (t, t + horizon];
- duration: days from t to the first outcome event after t (e.g. length of stay from an admission to
  its discharge); horizon_days is how far futures are simulated, and a simulated future that does not
  reach the event counts as horizon_days.

The history is every event at or before the prediction time t (all events at time t included); the
outcome only looks after t. Every key is checked: an unknown key, a wrong type or an unknown rule is
an InputError naming the file and the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from scaling.common.errors import InputError
from scaling.common.toml_config import read_toml, refuse_unknown, typed
from scaling.data.scheme import DAY

TASK_KINDS = ("binary", "count", "duration")
RULES = ("random", "at_code", "labels")
SHIPPED_TASKS = {"synth": "tasks_synth.toml"}


@dataclass(frozen=True)
class PredictionRule:
    name: str
    rule: str  # random | at_code | labels
    codes: tuple[str, ...] = ()  # at_code: prefixes of the codes whose times are prediction times
    min_history_days: float = 0.0  # prediction times at least this long after the first timed event
    probability: float = 0.25  # each candidate time, in time order, is taken with this probability
    seed: int = 0  # seed of those draws
    labels: str = ""  # labels: the label file (or directory) whose rows are the prediction times and labels


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # binary | count | duration
    prediction: PredictionRule
    codes: tuple[str, ...]  # outcome codes, as prefixes
    horizon_days: float
    exclude_prevalent: bool = False  # binary and count: drop patients whose history has an outcome code
    description: str = ""

    @property
    def horizon_minutes(self) -> float:
        return float(self.horizon_days * DAY)


def shipped_tasks_path(name: str = "synth") -> Path:
    """The path of a tasks file shipped with the toolkit (scaling/evaluate)."""
    return Path(str(resources.files("scaling.evaluate") / SHIPPED_TASKS[name]))


def load_tasks(path: str | Path) -> list[Task]:
    """Read and validate a tasks TOML file; `synth` names the shipped synthetic-cohort tasks."""
    path = shipped_tasks_path(str(path)) if str(path) in SHIPPED_TASKS else Path(path)
    raw = read_toml(path, "tasks file; expected a TASKS.toml (see docs/evaluation.md)")
    return parse_tasks(raw, source=str(path), base=path.parent)


def parse_tasks(raw: dict[str, Any], source: str = "tasks", base: Path = Path(".")) -> list[Task]:
    _check_keys(source, "", raw, {"prediction", "task"})
    rules_raw = raw.get("prediction", {})
    if not isinstance(rules_raw, dict):
        raise InputError(f"{source}: 'prediction' must be a table of named rules ([prediction.NAME])")
    rules = {name: _parse_rule(source, name, table, base) for name, table in rules_raw.items()}
    tasks_raw = raw.get("task", [])
    if not isinstance(tasks_raw, list) or not tasks_raw:
        raise InputError(f"{source}: no [[task]] tables; expected at least one task")
    tasks, names = [], set()
    for i, table in enumerate(tasks_raw):
        task = _parse_task(source, i, table, rules)
        if task.name in names:
            raise InputError(f"{source}: task name '{task.name}' appears twice; expected unique names")
        names.add(task.name)
        tasks.append(task)
    return tasks


def _parse_rule(source: str, name: str, table: Any, base: Path = Path(".")) -> PredictionRule:
    where = f"prediction.{name}"
    if not isinstance(table, dict):
        raise InputError(f"{source}: '{where}' must be a table")
    _check_keys(source, where, table, {"rule", "codes", "min_history_days", "probability", "seed", "labels"})
    rule = _get(source, where, table, "rule", str, required=True)
    if rule not in RULES:
        raise InputError(f"{source}: {where}.rule = {rule!r}; expected one of {list(RULES)}")
    if rule == "labels":
        extra = sorted(set(table) - {"rule", "labels"})
        if extra:
            raise InputError(f"{source}: {where}.{extra[0]} does not apply to rule = \"labels\" (the label file "
                             "gives the prediction times)")
        labels = _get(source, where, table, "labels", str, required=True)
        return PredictionRule(name, rule, labels=str(base / labels))
    if "labels" in table:
        raise InputError(f"{source}: {where}.labels is only for rule = \"labels\"")
    codes = _codes(source, where, table, required=rule == "at_code")
    if rule == "random" and codes:
        raise InputError(f"{source}: {where}.codes is only for rule = \"at_code\"")
    min_history = _get(source, where, table, "min_history_days", float, default=0.0)
    if not (math.isfinite(min_history) and min_history >= 0):
        raise InputError(f"{source}: {where}.min_history_days = {min_history}; expected 0 or more")
    probability = _get(source, where, table, "probability", float, default=0.25)
    if not 0 < probability <= 1:
        raise InputError(f"{source}: {where}.probability = {probability}; expected a number in (0, 1]")
    seed = _get(source, where, table, "seed", int, default=0)
    return PredictionRule(name, rule, codes, min_history, probability, seed)


def _parse_task(source: str, i: int, table: Any, rules: dict[str, PredictionRule]) -> Task:
    where = f"task[{i}]"
    if not isinstance(table, dict):
        raise InputError(f"{source}: {where} must be a table ([[task]])")
    _check_keys(source, where, table, {"name", "kind", "prediction", "codes", "horizon_days", "exclude_prevalent",
                                       "description"})
    name = _get(source, where, table, "name", str, required=True)
    where = f"task '{name}'"
    kind = _get(source, where, table, "kind", str, required=True)
    if kind not in TASK_KINDS:
        raise InputError(f"{source}: {where}: kind = {kind!r}; expected one of {list(TASK_KINDS)}")
    rule_name = _get(source, where, table, "prediction", str, required=True)
    if rule_name not in rules:
        raise InputError(f"{source}: {where}: prediction = {rule_name!r}; expected one of the rules "
                         f"{sorted(rules)} ([prediction.NAME])")
    codes = _codes(source, where, table, required=True)
    horizon = _get(source, where, table, "horizon_days", float, required=True)
    if not (math.isfinite(horizon) and horizon > 0):
        raise InputError(f"{source}: {where}: horizon_days = {horizon}; expected a positive number of days")
    exclude = _get(source, where, table, "exclude_prevalent", bool, default=False)
    if exclude and kind == "duration":
        raise InputError(f"{source}: {where}: exclude_prevalent is for binary and count tasks")
    description = _get(source, where, table, "description", str, default="")
    return Task(name, kind, rules[rule_name], codes, horizon, exclude, description)


def _check_keys(source: str, where: str, table: dict, known: set[str]) -> None:
    refuse_unknown(source, table, known, prefix=f"{where}." if where else "")


def _get(source: str, where: str, table: dict, key: str, kind: type, required: bool = False, default=None):
    if key not in table:
        if required:
            raise InputError(f"{source}: {where}: missing key '{key}'")
        return default
    return typed(source, f"{where}: {key}", table[key], kind)


def _codes(source: str, where: str, table: dict, required: bool) -> tuple[str, ...]:
    codes = table.get("codes", [])
    if not isinstance(codes, list) or not all(isinstance(c, str) and c for c in codes):
        raise InputError(f"{source}: {where}: codes = {codes!r}; expected a list of code prefixes (strings)")
    if required and not codes:
        raise InputError(f"{source}: {where}: missing key 'codes' (a list of code prefixes)")
    return tuple(codes)
