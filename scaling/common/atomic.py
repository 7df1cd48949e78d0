"""Atomic outputs: a stage writes into a temporary sibling and renames it into place when done,
so an interrupted command never leaves a half-written directory or file behind."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scaling.common.errors import InputError
from scaling.common.jsonable import dumps


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()  # outputs get the usual modes (0777/0666 less the umask), not mkdtemp's private 0700/0600


# This machine, in temporary names: on storage that several hosts share, a process id says nothing about
# another host's processes, so only this host's abandoned siblings are removed.
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _temporary_prefix(target: Path) -> str:
    """Temporary siblings are named .NAME.PID-HOST.*.tmp, so a later run on the same host can tell an
    abandoned one (its process is gone: killed, or the machine restarted) from one still being written."""
    return f".{target.name}.{os.getpid()}-{_HOST}."


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_abandoned_siblings(target: Path) -> list[Path]:
    """Remove the temporary siblings of `target` left by interrupted processes; return what was removed."""
    removed = []
    for sibling in target.parent.glob(f".{glob_escape(target.name)}.*.tmp"):
        pid, _, host = sibling.name[len(target.name) + 2:].split(".", 1)[0].partition("-")
        if pid.isdigit() and host == _HOST and not _process_alive(int(pid)):
            shutil.rmtree(sibling, ignore_errors=True) if sibling.is_dir() else sibling.unlink(missing_ok=True)
            removed.append(sibling)
    old = target.with_name(f".{target.name}.old")
    if old.exists() and not target.exists():  # interrupted between the two renames: the old output comes back
        os.replace(old, target)
    elif old.exists():
        shutil.rmtree(old, ignore_errors=True)
    return removed


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


@contextlib.contextmanager
def atomic_directory(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `target`; on success rename it to `target`, on failure remove it.
    An existing empty directory is replaced; a non-empty one only with `overwrite`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_siblings(target)
    tmp = Path(tempfile.mkdtemp(prefix=_temporary_prefix(target), suffix=".tmp", dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~UMASK)
        yield tmp
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        if target.exists():
            if not overwrite:
                raise FileExistsError(f"{target} already exists")
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_file_atomic(path: Path, data: bytes | str) -> None:
    """Write `data` to `path` through a temporary sibling and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_siblings(path)
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    """`obj` as indented JSON (NaN and infinity as null) through a temporary sibling and a rename."""
    write_file_atomic(path, dumps(obj, indent=2) + "\n")


def refuse_existing(path: Path, overwrite: bool, inputs: tuple[Path, ...] | list[Path] = ()) -> None:
    """Check an output path before anything is written. It may never be one of the command's `inputs` nor a
    folder that holds one (`overwrite` would delete it); an existing file or non-empty folder is replaced
    only with `overwrite`."""
    path = Path(path)
    resolved = path.resolve()
    for given in inputs:
        source = Path(given).resolve()
        if source == resolved or resolved in source.parents:
            raise InputError(f"out = {path}: is the input {given} or holds it; expected an output outside the "
                             "input", field="out")
    if path.exists() and not overwrite and not (path.is_dir() and not any(path.iterdir())):
        raise InputError(f"{path}: already exists; pass overwrite to replace it", field="overwrite")
