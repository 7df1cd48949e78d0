"""Output helpers shared by commands: JSON on stdout, progress and tables on stderr."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from rich.console import Console


def stderr_console() -> Console:
    return Console(stderr=True)


def _finite(obj: Any) -> Any:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def print_json(obj: Any) -> None:
    """One JSON object on stdout and nothing else there."""
    sys.stdout.write(json.dumps(_finite(obj), default=float) + "\n")
    sys.stdout.flush()
