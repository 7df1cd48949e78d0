"""The README's cluster recipe as written: `ray start --head` on a machine that has a Ray token in
~/.ray/auth_token (any earlier local `ray.init` writes one) runs with token authentication, and
`scaling sweep run --address HOST:PORT` joins it with no RAY_AUTH_* variable set."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile

import pytest
from conftest import RAY, free_port, kill_processes_with_env
from sweep_builders import tiny_store, write_grid

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture
def token_cluster(tmp_path):
    """A one-node cluster started as a user would, with HOME holding a Ray token; killed afterwards."""
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    mark = secrets.token_hex(8)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), SCALING_TEST_CLUSTER=mark)
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="ra", dir="/tmp")
    start = subprocess.run([RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                            "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}"],
                           env=env, capture_output=True, text=True, timeout=180, start_new_session=True)
    try:
        assert start.returncode == 0, start.stdout[-2000:] + start.stderr[-2000:]
        assert "Token authentication is enabled" in start.stdout + start.stderr  # the situation of the report
        yield f"127.0.0.1:{port}", env
    finally:
        kill_processes_with_env(f"SCALING_TEST_CLUSTER={mark}")
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_sweep_joins_a_token_cluster_by_address_as_the_readme_says(tmp_path, token_cluster):
    address, env = token_cluster
    store = tiny_store(tmp_path / "tok")
    grid = write_grid(tmp_path / "g.toml", store, budgets=(2e8,), widths=(16,))
    result = subprocess.run([sys.executable, "-m", "scaling", "sweep", "run", str(grid), "--out",
                             str(tmp_path / "sweep"), "--address", address, "--json"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["counts"]["finished"] == 1


def test_a_cluster_that_refuses_the_driver_is_one_line_naming_the_fix(tmp_path, token_cluster):
    address, env = token_cluster
    store = tiny_store(tmp_path / "tok")
    grid = write_grid(tmp_path / "g.toml", store, budgets=(2e8,), widths=(16,))
    wrong = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}  # another cluster's token
    result = subprocess.run([sys.executable, "-m", "scaling", "sweep", "run", str(grid), "--out",
                             str(tmp_path / "sweep"), "--address", address],
                            env=wrong, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: --address {address}: could not join the Ray cluster") and "RAY_AUTH_TOKEN" in last
    assert "Traceback" not in result.stderr
