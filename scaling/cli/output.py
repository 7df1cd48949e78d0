"""Output helpers shared by commands: JSON on stdout, progress and tables on stderr."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console

from scaling.common.jsonable import dumps


def stderr_console() -> Console:
    return Console(stderr=True)


def print_json(obj: Any) -> None:
    """One JSON object on stdout and nothing else there."""
    sys.stdout.write(dumps(obj) + "\n")
    sys.stdout.flush()
