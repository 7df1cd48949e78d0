"""Accelerator peaks: dense FLOP/s per device from the vendors' data sheets (bfloat16, float32).

Used both to price a sweep (`sweeps.plan`'s hardware profiles) and to report a benchmark's MFU."""

from __future__ import annotations

PEAK_FLOPS_PER_S = {
    "H200": {"bfloat16": 989e12, "float32": 67e12},
    "H100": {"bfloat16": 989e12, "float32": 67e12},
    "A100": {"bfloat16": 312e12, "float32": 19.5e12},
    "L4": {"bfloat16": 121e12, "float32": 30e12},
}


def peak_flops_per_s(device_kind: str, dtype: str = "bfloat16") -> float | None:
    """The peak of one device whose kind (as JAX names it, e.g. "NVIDIA H100 80GB HBM3") contains a known name."""
    for kind, peaks in PEAK_FLOPS_PER_S.items():
        if kind.lower() in device_kind.lower():
            return peaks[dtype]
    return None
