"""Ray plumbing shared by the sweep engine and the final run: joining a cluster (or starting a local one) and
the environment a training worker gets.

- `connect_ray(address)` joins the cluster at `address` (or RAY_ADDRESS) after checking that something
  listens there, else starts an embedded Ray on loopback whose workers start with the run's environment.
- `worker_env(cpus, gpus)`: thread settings a worker needs before JAX is imported there (PJRT_NPROC,
  OMP/MKL threads, single-threaded Eigen for one CPU), so two runs on one machine do not each take every
  core; CPU-only and shared-GPU settings.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from scaling.common.errors import InputError
from scaling.train.tracking import forwarded_env


def worker_env(cpus: float, gpus: float) -> dict[str, str]:
    """Environment of a training worker: its thread pools sized to the task's CPUs (PJRT_NPROC also sets how
    many CPU devices a run splits the host into: scaling.train.cpu_devices), and the trackers asked for."""
    threads = str(max(1, int(cpus)))
    env = {name: threads for name in ("PJRT_NPROC", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    flags = os.environ.get("XLA_FLAGS", "")
    if int(threads) == 1 and "xla_cpu_multi_thread_eigen" not in flags:
        flags = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
    if flags:
        env["XLA_FLAGS"] = flags
    if gpus == 0:
        env["JAX_PLATFORMS"] = "cpu"
    elif gpus < 1:  # runs share a GPU: none may take most of its memory up front
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    return {**env, **forwarded_env()}  # --track: the trackers the driver was asked for, with their settings


def runtime_env(env: dict[str, str] | None) -> dict | None:
    """A task's runtime_env carrying `env` (None: the worker's own environment)."""
    return {"env_vars": env} if env else None


def check_reachable(address: str) -> None:
    """Fail in one line where ray.init would retry an address nothing listens on for many minutes."""
    host, _, port = address.rpartition(":")
    if "://" in address or not port.isdigit():  # "auto", "ray://...": Ray's own lookup
        return
    host = host.strip("[]")  # [::1]:6379
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as e:
        raise InputError(f"address = {address}: no Ray cluster answers there ({e.strerror or e}); expected the "
                         "head node's HOST:PORT, as `ray start --head` prints it", field="address") from None


def use_token_if_available() -> None:
    """Opt in to Ray's token authentication when a token is at hand and RAY_AUTH_MODE is unset.

    Ray 2.60 clusters started by `ray start --head` use token authentication whenever ~/.ray/auth_token
    exists (any earlier local `ray.init` writes one), but a driver that joins by address turns it on only
    when told to, and then retries with an invalid token until it gives up. So the documented
    `--address HOST:PORT` works as written, the token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
    ~/.ray/auth_token) is picked up here."""
    if os.environ.get("RAY_AUTH_MODE") is not None:
        return
    if not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
            or (Path.home() / ".ray" / "auth_token").is_file()):
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    try:  # Ray caches its config at import: refresh it so this process sees token mode too
        from ray._private.authentication.authentication_token_setup import _enable_token_auth
    except ImportError:
        return
    _enable_token_auth()


def connect_ray(address: str | None, num_cpus: int | None = None, env: dict[str, str] | None = None,
                quiet: bool = False) -> bool:
    """Join the cluster at `address` (or RAY_ADDRESS), else start an embedded local Ray on loopback.

    The embedded Ray is started with `env` in its environment, so the workers it starts ahead of the
    first task already have the run's thread settings; returns whether tasks still need them as a
    runtime_env (a joined cluster's workers do not inherit this process's environment). `quiet` drops
    Ray's info lines ("Connecting to existing Ray cluster ...") from stderr."""
    import ray  # lazy: start-up time of the commands that import this module without using Ray

    level = {"logging_level": logging.WARNING} if quiet else {}
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        check_reachable(address)
        use_token_if_available()
        try:
            ray.init(address=address, log_to_driver=False, **level)
        except (ConnectionError, RuntimeError) as e:
            raise InputError(
                f"address = {address}: could not join the Ray cluster there ({str(e).splitlines()[0]}); if it "
                "uses token authentication, give this process its token: RAY_AUTH_MODE=token with RAY_AUTH_TOKEN, "
                "or the token in ~/.ray/auth_token (`ray get-auth-token` on the head node prints it)",
                field="address") from None
        return True
    saved = {name: os.environ.get(name) for name in env or {}}
    os.environ.update(env or {})
    try:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
                 **level)
    finally:  # this process keeps its own settings (it may use JAX later)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return False


def check_run_fits(cpus: float, gpus: float, nodes: list[dict], address: str | None = None) -> None:
    """Fail now, in one line, where Ray would wait forever: no live node has the CPUs and GPUs one run asks for
    (`nodes` as `ray.nodes()` gives them)."""
    alive = [n["Resources"] for n in nodes if n.get("Alive")]
    if any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in alive):
        return
    largest = max(alive, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={})
    where = f"the Ray cluster at {address}" if address else "the local Ray cluster"
    raise InputError(f"resources.cpus_per_run = {cpus:g}, resources.gpus_per_run = {gpus:g}: no node of {where} has "
                     f"that much (the largest has {largest.get('CPU', 0):g} CPUs and {largest.get('GPU', 0):g} GPUs); "
                     "every run would wait forever")
