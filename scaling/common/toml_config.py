"""Reading the toolkit's TOML files (run configs, sweep grids, tasks): one parser's helpers, one error style.

Every message starts with the file and names the field as written in it: "run.toml: unknown key
'train.lrr' (did you mean 'train.lr'?)", "grid.toml: train.lr = 'fast' is not a number". A small shared
parser rather than pydantic: the files are a few flat tables, the messages are part of the command line's
contract (tests and users read them), and pydantic's would need rewriting into this style anyway.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any

from scaling.common.errors import InputError

KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The parsed file; an InputError when it is missing or not valid TOML. `what` names the kind of file."""
    if not path.is_file():
        raise InputError(f"{path}: no such {what}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start}); expected a TOML file") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: not valid TOML: {e}") from None


def resolve_data_path(raw: dict[str, Any], path: Path, key: str = "data") -> None:
    """Make a relative path under `key` absolute: relative to the current directory, else to the file's
    directory."""
    if isinstance(raw.get(key), str) and not Path(raw[key]).is_absolute():
        here, beside = Path(raw[key]).absolute(), (path.parent / raw[key]).absolute()
        raw[key] = str(beside if not here.exists() and beside.exists() else here)


def refuse_unknown(source: str, table: dict, known: set[str] | tuple[str, ...], prefix: str = "") -> None:
    """An InputError for the first key of `table` not in `known`, with the closest known key if one is close."""
    for key in table:
        if key not in known:
            raise InputError(f"{source}: unknown key '{prefix}{key}'{_suggestion(key, set(known), prefix)}")


def _suggestion(key: str, known: set[str], prefix: str) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    if close:
        return f" (did you mean '{prefix}{close[0]}'?)"
    return f"; expected one of {sorted(known)}"


def typed(source: str, name: str, value: Any, kind: type, whole_floats: bool = False) -> Any:
    """`value` checked to be of `kind` (an int is taken for a float; with `whole_floats`, a whole float for
    an int, e.g. tokens = 2e7). None passes through (an unset optional field)."""
    if value is None:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and whole_floats and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise InputError(f"{source}: {name} = {value!r} is not {KIND_NAMES[kind]}")
    return value


def table_of(source: str, name: str, value: Any) -> dict:
    """`value` checked to be a TOML table."""
    if not isinstance(value, dict):
        raise InputError(f"{source}: '{name}' must be a table ([{name}])")
    return value


def require(source: str, table: dict, key: str, prefix: str = "", what: str = "") -> Any:
    """table[key], or an InputError naming the missing key (and what it is, when `what` is given)."""
    if key not in table:
        raise InputError(f"{source}: missing key '{prefix}{key}'" + (f" ({what})" if what else ""))
    return table[key]
