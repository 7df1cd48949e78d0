"""What a grid costs: every run's N, D, C, unique tokens and epochs, steps and estimated wall time, and the totals.

Time of one run on a hardware profile (one device or one CPU worker):

    seconds = run_overhead_s + steps * step_overhead_s + (C_detailed + C_eval) / (peak_flops_per_s * utilization)

C_detailed is the Chinchilla appendix F count (models.accounting, attention over the full window
included), C_eval the forward passes of the periodic validation. The `cpu` profile is fitted to runs of
the tiny ladder on this 2-core machine (one XLA thread per run): the fixed cost of a run (import, model
init, compilation, checkpoints) dominates tiny models. GPU profiles are peak dense bf16 FLOP/s times a
typical model-FLOPs utilization; `--flops-per-s` replaces peak x utilization with a measured figure
(`flops_per_s_detailed` of `scaling bench train --json`). Device-hours count gpus_per_run devices for each run.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

from scaling.common.errors import InputError
from scaling.common.hardware import PEAK_FLOPS_PER_S
from sweeps.expand import Expansion, PlannedRun


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    peak_flops_per_s: float  # per device (a CPU worker counts as one device)
    utilization: float  # fraction of peak a training run reaches (MFU)
    step_overhead_s: float  # per optimizer step: dispatch and host work not hidden by compute
    run_overhead_s: float  # per run: start-up, compilation, evaluation set-up, checkpoints
    description: str

    @property
    def flops_per_s(self) -> float:
        return self.peak_flops_per_s * self.utilization


_BF16_PEAK = {kind: peaks["bfloat16"] for kind, peaks in PEAK_FLOPS_PER_S.items()}
PROFILES = {
    # Least squares on 24 runs of d_model 8-96 (batch 16 x 64 tokens) on the 2-core development machine,
    # shared with other jobs at the time: errors of +-30% per run are usual.
    "cpu": HardwareProfile("cpu", 3.3e10, 1.0, 0.014, 17.0, "one single-threaded worker per CPU core"),
    "h100": HardwareProfile("h100", _BF16_PEAK["H100"], 0.40, 0.0, 300.0, "NVIDIA H100 SXM, bf16 dense peak, 40% MFU"),
    # Measured: the trainer's step at 87M parameters, 2,048-token context, batch 32, bf16, cuDNN attention reached
    # 46% of peak on this count (C_detailed; docs/training.md, "On a GPU").
    "h200": HardwareProfile("h200", _BF16_PEAK["H200"], 0.46, 0.0, 300.0,
                            "NVIDIA H200, bf16 dense peak, 46% MFU (measured at 87M, 2,048 context)"),
    "a100": HardwareProfile("a100", _BF16_PEAK["A100"], 0.45, 0.0, 300.0, "NVIDIA A100, bf16 dense peak, 45% MFU"),
}


def hardware_profile(name: str, flops_per_s: float | None = None) -> HardwareProfile:
    if name not in PROFILES:
        raise InputError(f"hardware = {name!r} is not one of {sorted(PROFILES)}", field="hardware")
    profile = PROFILES[name]
    if flops_per_s is not None:
        if not flops_per_s > 0:
            raise InputError(f"flops_per_s = {flops_per_s:g} must be positive", field="flops_per_s")
        profile = HardwareProfile(profile.name, flops_per_s, 1.0, profile.step_overhead_s, profile.run_overhead_s,
                                  f"{profile.description}; measured {flops_per_s:.3g} FLOP/s")
    return profile


def estimate_seconds(run: PlannedRun, profile: HardwareProfile, devices: float = 1.0) -> float:
    """Wall seconds of one run (see the module docstring); a branch pays only for its own steps."""
    train = run.config["train"]
    steps = run.steps - (run.parent_step or 0)
    share = steps / run.steps
    eval_every = train.get("eval_every", 100)
    eval_tokens = train.get("eval_tokens", 65_536)
    evals = math.ceil(steps / eval_every) + 1
    eval_flops = evals * eval_tokens * run.flops_detailed / run.tokens / 3.0  # forward only: 1/3 of training
    compute = run.flops_detailed * share + eval_flops
    return (profile.run_overhead_s + steps * profile.step_overhead_s
            + compute / (profile.flops_per_s * max(devices, 1.0)))


def default_parallelism(expansion: Expansion, profile: HardwareProfile) -> int:
    """Runs at once: local cores / cpus_per_run on the cpu profile, else 1 (one device)."""
    if profile.name == "cpu":
        return max(1, int((os.cpu_count() or 1) // expansion.grid.resources.cpus_per_run))
    return 1


def make_plan(expansion: Expansion, profile: HardwareProfile, parallel: int | None = None) -> dict:
    """The plan as a dict: `runs` (one record each) and the totals; `--json` prints it."""
    grid = expansion.grid
    gpus = grid.resources.gpus_per_run
    devices = gpus if gpus >= 1 else 1.0
    parallel = parallel or default_parallelism(expansion, profile)
    if parallel < 1:
        raise InputError(f"parallel = {parallel} must be at least 1", field="parallel")
    runs = []
    for run in expansion.runs:
        seconds = estimate_seconds(run, profile, devices)
        runs.append({
            "run_id": run.run_id, "role": run.role, "seed": run.config["seed"], "budget": run.budget, "size": run.size,
            **{k: getattr(run.shape, k) for k in ("d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff",
                                                   "vocab_size")},
            "params": run.params, "params_nonembed": run.params_nonembed, "tokens": run.tokens,
            "flops": run.flops, "flops_6n": run.flops_6n, "flops_detailed": run.flops_detailed,
            "tokens_per_param": run.tokens_per_param, "unique_tokens": run.unique_tokens, "epochs": run.epochs,
            "steps": run.steps, "est_seconds": seconds,
            "parent": run.parent, "parent_step": run.parent_step, "config": run.config,
        })
    run_seconds = sum(r["est_seconds"] for r in runs)
    # Trained FLOPs: a branch shares its stable prefix with its parent segment.
    trained = sum(r.flops * (r.steps - (r.parent_step or 0)) / r.steps for r in expansion.runs)
    device_hours = run_seconds * (gpus if gpus > 0 else 1.0) / 3600.0
    return {
        "name": grid.name, "kind": grid.axes.kind, "grid": grid.source, "data": grid.data,
        "vocab_size": expansion.vocab_size, "flops_method": grid.axes.flops,
        "tokens_per_step": grid.tokens_per_step, "seq_len": grid.seq_len, "batch_size": grid.batch_size,
        "resources": asdict(grid.resources), "train_tokens_available": expansion.train_tokens,
        "hardware": {**asdict(profile), "flops_per_s": profile.flops_per_s},
        "n_runs": len(runs), "n_results": sum(1 for r in expansion.runs if r.is_result),
        "budgets": sorted({r.budget for r in expansion.runs if r.budget is not None}),
        "total_flops": sum(r.flops for r in expansion.runs if r.is_result),
        "trained_flops": trained,
        "total_tokens": sum(r.tokens for r in expansion.runs if r.is_result),
        "est_run_seconds": run_seconds, "parallel": parallel,
        "est_wall_seconds": run_seconds / parallel,
        "device_hours": device_hours, "gpu_hours": device_hours if gpus > 0 else None,
        "warnings": list(expansion.warnings),
        "runs": runs,
    }


def format_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def plan_table(plan: dict):
    """A rich table of the runs, and the totals as its caption."""
    from rich.table import Table

    table = Table(title=f"{plan['name']}: {plan['kind']} grid, {plan['n_runs']} runs "
                        f"(vocab {plan['vocab_size']:,}, {plan['tokens_per_step']:,} tokens/step)")
    for column in ("run id", "role", "seed", "budget C", "d_model", "layers", "N", "N non-emb", "D", "C",
                   "D/N", "unique U", "epochs", "steps", "est. time"):
        table.add_column(column, justify="left" if column in ("run id", "role") else "right")
    for r in plan["runs"]:
        table.add_row(
            r["run_id"], r["role"], str(r["seed"]), "-" if r["budget"] is None else f"{r['budget']:.3g}",
            str(r["d_model"]),
            str(r["n_layers"]), f"{r['params']:,}", f"{r['params_nonembed']:,}", f"{r['tokens']:,}",
            f"{r['flops']:.3g}", f"{r['tokens_per_param']:.1f}",
            "-" if r["unique_tokens"] is None else f"{r['unique_tokens']:,}",
            "-" if r["epochs"] is None else f"{r['epochs']:.2f}", f"{r['steps']:,}",
            format_seconds(r["est_seconds"]),
        )
    hw = plan["hardware"]
    caption = (f"total C {plan['total_flops']:.3g} FLOPs ({plan['flops_method']}), D {plan['total_tokens']:,} "
               f"tokens | {hw['name']} at {hw['flops_per_s']:.3g} FLOP/s: {format_seconds(plan['est_run_seconds'])} "
               f"of runs, about {format_seconds(plan['est_wall_seconds'])} wall at {plan['parallel']} in parallel")
    if plan["gpu_hours"] is not None:
        caption += f", {plan['gpu_hours']:,.1f} GPU-hours"
    table.caption = caption
    return table
