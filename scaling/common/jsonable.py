"""Values made ready for JSON: NaN and infinity become null (JSON has neither), NumPy scalars and arrays
become Python numbers and lists, paths become strings. The one converter every JSON writer uses."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dumps(obj: Any, indent: int | None = None) -> str:
    """JSON text of `obj` after `jsonable`; never writes NaN."""
    return json.dumps(jsonable(obj), indent=indent, allow_nan=False)
