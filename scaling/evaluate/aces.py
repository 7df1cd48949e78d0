"""An ACES task config (YAML) as a binary task of this toolkit, for the part ACES and simulation share: the
outcome predicate and the window after the prediction time in which it counts.

    task = load_aces_task("configs/death_1y.yaml", labels="aces_output/death_1y.parquet")

ACES extracts the cohort (the trigger, the windows' `has` criteria) and writes it as a label file; this
module reads which codes make the label and how far after the prediction time they count, so that the
model's simulated futures can be scored against ACES's labels. What it can express:

- predicates: `code: CODE`, `code: {regex: "^PREFIX.*"}` (a prefix), `code: {any: [CODE, ...]}`, and
  `expr: or(a, b, ...)` of those; a code is matched as a prefix, as the toolkit's task codes are;
- the label window must start at the prediction time (the start or end of the one window with
  `index_timestamp`) and end a fixed time later (`start + 365 days`, `trigger + 24h`, ...): that length is the horizon.

Anything else (a window that ends at an event, `start -> discharge`; a label window that starts after a
gap; `and(...)`; value or other-column predicates) is refused with one line naming the key: simulation
could count it only by guessing.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import yaml

from scaling.common.errors import InputError
from scaling.data.scheme import DAY
from scaling.evaluate.tasks import PredictionRule, Task, load_tasks

UNIT_MINUTES = {"s": 1 / 60, "sec": 1 / 60, "secs": 1 / 60, "second": 1 / 60, "seconds": 1 / 60,
                "m": 1.0, "min": 1.0, "mins": 1.0, "minute": 1.0, "minutes": 1.0,
                "h": 60.0, "hr": 60.0, "hrs": 60.0, "hour": 60.0, "hours": 60.0,
                "d": DAY, "day": DAY, "days": DAY, "w": 7 * DAY, "week": 7 * DAY, "weeks": 7 * DAY,
                "y": 365.25 * DAY, "year": 365.25 * DAY, "years": 365.25 * DAY}
DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*")
TIME_EXPRESSION = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(?:([+-])\s*(.+?))?\s*$")


def parse_duration(text: str, where: str) -> float:
    """'365 days', '24h', '1 day 12 hours' -> minutes."""
    total, position = 0.0, 0
    for match in DURATION.finditer(text):
        if match.start() != position or match.group(2).lower() not in UNIT_MINUTES:
            break
        total += float(match.group(1)) * UNIT_MINUTES[match.group(2).lower()]
        position = match.end()
    if position != len(text) or position == 0:
        raise InputError(f"{where} = {text!r}; expected a duration such as '365 days' or '24h'")
    return total


class _Config:
    def __init__(self, raw: dict, source: str):
        self.raw, self.source = raw, source
        self.windows = raw.get("windows") or {}
        if not isinstance(self.windows, dict) or not self.windows:
            raise InputError(f"{source}: no 'windows'; expected an ACES task config")
        self._resolving: set[str] = set()

    def refuse(self, where: str, value, why: str) -> None:
        raise InputError(f"{self.source}: {where} = {value!r}: {why}; this toolkit scores simulated futures only "
                         "for a label window that starts at the prediction time and lasts a fixed time")

    def bound(self, window: str, side: str) -> float:
        """Minutes of a window's start or end after the trigger (-inf for an open start)."""
        key = f"windows.{window}.{side}"
        if window not in self.windows:
            raise InputError(f"{self.source}: {key}: no window '{window}'")
        if key in self._resolving:
            raise InputError(f"{self.source}: {key} refers to itself")
        self._resolving.add(key)
        try:
            return self._time(self.windows[window].get(side), window, key)
        finally:
            self._resolving.discard(key)

    def _time(self, expression, window: str, where: str) -> float:
        if expression is None:
            return -math.inf
        text = str(expression)
        if "->" in text or "<-" in text:
            self.refuse(where, text, "a window bounded by an event")
        match = TIME_EXPRESSION.match(text)
        if not match:
            self.refuse(where, text, "not a time expression")
        anchor, sign, offset = match.groups()
        if anchor == "trigger":
            base = 0.0
        elif anchor in ("start", "end"):
            if where.endswith(f".{anchor}"):
                self.refuse(where, text, "a bound defined by itself")
            base = self.bound(window, anchor)
        elif "." in anchor:
            other_window, side = anchor.rsplit(".", 1)
            if side not in ("start", "end"):
                self.refuse(where, text, "expected WINDOW.start or WINDOW.end")
            base = self.bound(other_window, side)
        else:
            self.refuse(where, text, "expected trigger, start, end or WINDOW.start|end")
        if sign is None:
            return base
        minutes = parse_duration(offset, f"{self.source}: {where}")
        return base + (minutes if sign == "+" else -minutes)


def _predicate_codes(predicates: dict, name: str, source: str, seen: tuple[str, ...] = ()) -> tuple[str, ...]:
    where = f"{source}: predicates.{name}"
    if name not in predicates:
        raise InputError(f"{where}: no such predicate (the label names it)")
    if name in seen:
        raise InputError(f"{where}: refers to itself")
    spec = predicates[name]
    if not isinstance(spec, dict):
        raise InputError(f"{where} = {spec!r}: expected a table with 'code' or 'expr'")
    extra = sorted(set(spec) - {"code", "expr"})
    if extra:
        raise InputError(f"{where}.{extra[0]}: value and column criteria cannot be scored on simulated futures; "
                         "expected 'code' or 'expr' only")
    if "expr" in spec:
        match = re.fullmatch(r"\s*or\((.*)\)\s*", str(spec["expr"]))
        if not match:
            raise InputError(f"{where}.expr = {spec['expr']!r}: expected or(a, b, ...) of code predicates")
        return tuple(code for part in match.group(1).split(",")
                     for code in _predicate_codes(predicates, part.strip(), source, (*seen, name)))
    code = spec.get("code")
    if isinstance(code, str) and code:
        return (code,)
    if isinstance(code, dict) and set(code) == {"regex"}:
        prefix = re.fullmatch(r"\^?([^.*+?()\[\]{}|\\$]+)\.\*", str(code["regex"]))
        if prefix:
            return (prefix.group(1),)
        raise InputError(f"{where}.code.regex = {code['regex']!r}: expected a prefix pattern such as '^PREFIX.*'")
    if isinstance(code, dict) and set(code) == {"any"} and isinstance(code["any"], list) and code["any"]:
        return tuple(str(c) for c in code["any"])
    raise InputError(f"{where}.code = {code!r}: expected a code, {{regex: '^PREFIX.*'}} or {{any: [...]}}")


def load_aces_task(path: str | Path, labels: str | Path | None, name: str | None = None) -> Task:
    """The binary task of an ACES config; its prediction times and labels are those of `labels` (the label
    file ACES wrote for this config)."""
    path = Path(path)
    source = str(path)
    if labels is None:
        raise InputError(f"{source}: an ACES config needs its label file; pass labels (the parquet ACES wrote)",
                         field="labels")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{source}: no such file; expected an ACES task config (YAML)") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise InputError(f"{source}: not YAML ({str(error).splitlines()[0]}); expected an ACES task config") \
            from None
    if not isinstance(raw, dict) or not isinstance(raw.get("predicates"), dict):
        raise InputError(f"{source}: no 'predicates' table; expected an ACES task config")
    config = _Config(raw, source)
    labelled = [w for w, spec in config.windows.items() if isinstance(spec, dict) and spec.get("label")]
    if len(labelled) != 1:
        raise InputError(f"{source}: {len(labelled)} windows have a 'label'; expected exactly one")
    window = labelled[0]
    spec = config.windows[window]
    indexed = [w for w, s in config.windows.items() if isinstance(s, dict) and s.get("index_timestamp")]
    if len(indexed) != 1:
        raise InputError(f"{source}: {len(indexed)} windows have an 'index_timestamp'; expected exactly one (it "
                         "marks the prediction time)")
    index_window = indexed[0]
    index_side = config.windows[index_window]["index_timestamp"]
    if index_side not in ("start", "end"):
        raise InputError(f"{source}: windows.{index_window}.index_timestamp = {index_side!r}; expected start or end")
    prediction = config.bound(index_window, index_side)
    start, end = config.bound(window, "start"), config.bound(window, "end")
    if not math.isfinite(prediction) or abs(start - prediction) > 1e-9:
        config.refuse(f"windows.{window}.start", spec.get("start"),
                      f"the label window starts {(start - prediction) / 60:+g} hours from the prediction time")
    if not end > start:
        config.refuse(f"windows.{window}.end", spec.get("end"), "the label window must end after it starts")
    codes = _predicate_codes(raw["predicates"], str(spec["label"]), source)
    rule = PredictionRule(name or path.stem, "labels", labels=str(labels))
    return Task(name or path.stem, "binary", rule, codes, (end - start) / DAY,
                description=f"ACES config {path.name}: {spec['label']} within {(end - start) / DAY:g} days")


def load_task_file(path: str, labels: str | Path | None = None) -> list[Task]:
    """The tasks of a TASKS.toml (or 'synth'), or the one task of an ACES config (.yaml/.yml) with its label
    file `labels`."""
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        return [load_aces_task(path, labels)]
    if labels is not None:
        raise InputError(f"labels = {labels}: only for an ACES config (.yaml); a TASKS.toml names its label file "
                         "in a rule (rule = \"labels\", labels = ...)", field="labels")
    return load_tasks(path)
