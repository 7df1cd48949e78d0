"""Training on CPU cores as data-parallel devices.

On a CPU, XLA runs a small model's ops mostly one at a time: at 1M parameters (d_model 128, 4 layers, seq 256,
batch 16) each of two cores was busy about half the time of a training step (jax.profiler trace: 5.3 s and 4.6 s
of 9.8 s). Splitting the host into one JAX device per core and the batch over them (the trainer's
data-parallel mesh) keeps every core busy: 13.1-14.3K -> 15.6-16.6K tokens/s at that shape, 76-81K -> 91K at
0.16M, level at 23M where the matrices are large enough for XLA's own threading (docs/training.md, "Speed").

`split_cpu_into_devices()` must run before JAX starts its backends (it is a no-op afterwards: a process that
already used JAX keeps its devices). The count is $SCALING_CPU_DEVICES, else the worker's thread budget
($PJRT_NPROC, which a sweep sets to the run's cpus_per_run), else the cores this process may run on; an XLA
flag that already forces a count wins, and processes of a multi-host run (jax.distributed) are left alone.
`training_devices(batch_size)` is the mesh the trainer uses: on one CPU process, the most devices that divide
the batch; otherwise every device (the batch must divide by them).
"""

from __future__ import annotations

import os

import jax

ENV = "SCALING_CPU_DEVICES"
FORCE_FLAG = "xla_force_host_platform_device_count"


def wanted_cpu_devices() -> int:
    for name in (ENV, "PJRT_NPROC"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return len(os.sched_getaffinity(0))


def split_cpu_into_devices() -> int | None:
    """Give JAX one CPU device per core before its backends start; returns the count set, else None."""
    from jax._src import xla_bridge  # backends_are_initialized: no public equivalent in the pinned JAX

    if xla_bridge.backends_are_initialized() or jax.distributed.is_initialized():
        return None
    if FORCE_FLAG in os.environ.get("XLA_FLAGS", "") or jax.config.jax_num_cpu_devices > 0:
        return None
    count = wanted_cpu_devices()
    if count <= 1:
        return None
    jax.config.update("jax_num_cpu_devices", count)
    return count


def training_devices(batch_size: int) -> list:
    """The devices a run's batch is split over (see the module docstring)."""
    devices = jax.devices()
    if jax.process_count() > 1 or jax.default_backend() != "cpu":
        return devices
    count = max(k for k in range(1, len(devices) + 1) if batch_size % k == 0)
    return devices[:count]
