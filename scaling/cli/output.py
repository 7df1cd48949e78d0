"""Output helpers shared by commands: JSON on stdout, progress and tables on stderr."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

from rich.console import Console

from scaling.common.jsonable import dumps


def stderr_console() -> Console:
    return Console(stderr=True)


def print_json(obj: Any) -> None:
    """One JSON object on stdout and nothing else there."""
    sys.stdout.write(dumps(obj) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def stage_status(console, what: str, quiet: bool = False):
    """A spinner on stderr naming the stage running and the time since `what` started; yields the callable a
    library function calls with each stage's name. Each finished stage leaves one line with its time."""
    if quiet:
        yield lambda name: None
        return
    current = {"name": None, "since": time.perf_counter()}

    def finish() -> None:
        if current["name"] is not None:
            console.print(f"  {what}: {current['name']} ({time.perf_counter() - current['since']:.1f} s)",
                          highlight=False)

    with console.status(f"{what}: starting") as status:

        def stage(name: str) -> None:
            finish()
            current.update(name=name, since=time.perf_counter())
            status.update(f"{what}: {name}")

        yield stage
        finish()
