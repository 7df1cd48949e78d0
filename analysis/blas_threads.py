"""Fits here are many tiny linear-algebra calls. A multi-threaded BLAS gains nothing on them and, on a
machine whose cores are busy, its spinning threads made approach 3 10-20x slower (measured: 20 s vs 1 s).
Every entry point of `analysis` that loops over small solves runs inside `single_threaded_blas()`."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from threadpoolctl import threadpool_limits

_state = threading.local()


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Limit BLAS to one thread; re-entrant, and nested uses cost nothing (a limit costs about 2 ms)."""
    if getattr(_state, "active", False):
        yield
        return
    _state.active = True
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        _state.active = False
