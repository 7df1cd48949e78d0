"""Reading the toolkit's TOML files (run configs, sweep grids, tasks) with errors that name the file."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from scaling.errors import InputError


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The parsed file; an InputError when it is missing or not valid TOML. `what` names the kind of file."""
    if not path.is_file():
        raise InputError(f"{path}: no such {what}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: not valid TOML: {e}") from None


def resolve_data_path(raw: dict[str, Any], path: Path) -> None:
    """Make a relative `data` path absolute: relative to the current directory, else to the file's directory."""
    if isinstance(raw.get("data"), str) and not Path(raw["data"]).is_absolute():
        here, beside = Path(raw["data"]).absolute(), (path.parent / raw["data"]).absolute()
        raw["data"] = str(beside if not here.exists() and beside.exists() else here)
