"""A persistent JAX compilation cache shared by every run on this machine: a program compiled once (by any
seed of a shape, another sweep, the final run, a resumed run) is read back instead of compiled again.

Where: $SCALING_COMPILE_CACHE, else $XDG_CACHE_HOME/medscaling/jax (~/.cache/medscaling/jax); the value
"off" turns it off. JAX keys each entry by the program, the backend, the compile options and its own
version, so one directory serves every shape, dtype and jax install. Measured here on a 4-layer d_model 32
train step: first call 7.7-9.2 s without an entry, 2.4 s with one; building the parameters 8-10 s -> 3.6 s.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

OFF = "off"


def cache_dir() -> Path | None:
    """The cache directory this process uses, or None when turned off."""
    value = os.environ.get("SCALING_COMPILE_CACHE")
    if value is not None:
        return None if value.strip().lower() == OFF or not value.strip() else Path(value).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "medscaling" / "jax"


def enable_compilation_cache() -> str | None:
    """Point JAX at the cache (every compiled program is kept, however fast it compiled); returns the
    directory, or None when turned off or not writable."""
    path = cache_dir()
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home: compile as before
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return str(path)
