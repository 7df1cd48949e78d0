import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

# Test helpers (meds_builders, ...) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# One compilation cache for the session (its subprocesses and Ray workers inherit it): repeated shapes compile
# once, and nothing is left in the user's ~/.cache.
os.environ.setdefault("SCALING_COMPILE_CACHE", tempfile.mkdtemp(prefix="scaling-compile-cache-"))
RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture
def run_cli(capsys):
    """Run `scaling ARGS` in-process; return (exit code, stdout, stderr)."""
    from scaling.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def loopback_cluster():
    """A two-node Ray cluster on this machine (head + one worker node, one CPU each), on 127.0.0.1,
    with token auth; torn down by killing the process groups of the two `ray start` calls and any
    process that carries this cluster's token. Yields (address, environment of a process that joins it)."""
    token = secrets.token_hex(32)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    env.pop("RAY_ADDRESS", None)
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    starts = []
    try:
        for args in (["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp_dir}"],
                     [f"--address=127.0.0.1:{port}"]):
            start = subprocess.Popen([RAY, "start", *args, *common], env=env, start_new_session=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            starts.append(start)
            output, _ = start.communicate(timeout=180)
            assert start.returncode == 0, output[-2000:]
        yield f"127.0.0.1:{port}", env
    finally:
        for start in starts:
            try:
                os.killpg(start.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        kill_processes_with_env(f"RAY_AUTH_TOKEN={token}")
        shutil.rmtree(temp_dir, ignore_errors=True)


def processes_with_env(entry: str) -> list[int]:
    """Processes (not this one) whose environment holds `entry` ("NAME=value")."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if entry.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except (OSError, PermissionError):
            continue
    return found


def kill_processes_with_env(entry: str, seconds: float = 30) -> None:
    """SIGKILL every process whose environment holds `entry`, until none is left or `seconds` pass: tears
    down a Ray cluster started with a marker in its environment, workers included."""
    deadline = time.time() + seconds
    while (left := processes_with_env(entry)) and time.time() < deadline:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
