"""`scaling sweep plan|run|status`: grids of runs on Ray (sweeps/)."""

from __future__ import annotations

from pathlib import Path

import typer

from scaling.cli.app import app, track_option
from scaling.cli.output import print_json, stderr_console

# Each command imports its stage inside the function, so `scaling --help` starts without JAX or Ray.

sweep_app = typer.Typer(help="Sweep grids: plan, run on Ray, and follow a scaling study.", no_args_is_help=True)
app.add_typer(sweep_app, name="sweep")


@sweep_app.command("plan")
def plan(
    grid: Path = typer.Argument(..., help="A grid file (sweeps/grids/*.toml)."),
    data: Path = typer.Option(None, help="Token store to use instead of the grid's `data`."),
    hardware: str = typer.Option("cpu", help="Hardware profile for the time estimate: cpu, h100, h200, a100."),
    flops_per_s: float = typer.Option(None, "--flops-per-s", help="Measured FLOP/s per device, detailed count "
                                      "(replaces the profile's peak x utilization): `flops_per_s_detailed` of "
                                      "`scaling bench train --json`."),
    parallel: int = typer.Option(None, help="Runs at once for the wall-time estimate (default: CPU cores / "
                                 "cpus_per_run on cpu, else 1)."),
    flops: str = typer.Option(None, "--flops", help="Price each budget as 6N or detailed (attention included): "
                              "D = C / that count [default: the grid's grid.flops]."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """The runs a grid expands to: shapes, N (total and non-embedding), D, C, tokens per parameter, steps,
    estimated time, and the totals. With --flops detailed every budget buys fewer tokens (C = detailed
    FLOPs per token x D).

    Examples:

      scaling sweep plan sweeps/grids/quickstart.toml

      scaling sweep plan sweeps/grids/comet.toml --hardware h100 --parallel 64 --json
    """
    import dataclasses

    from models.accounting import check_flop_method
    from sweeps.expand import expand_grid
    from sweeps.grid import load_grid
    from sweeps.plan import hardware_profile, make_plan, plan_table

    if flops is not None:
        check_flop_method(flops)
    profile = hardware_profile(hardware, flops_per_s)
    loaded = load_grid(grid, data)
    if flops is not None:
        loaded = dataclasses.replace(loaded, axes=dataclasses.replace(loaded.axes, flops=flops))
    result = make_plan(expand_grid(loaded), profile, parallel)
    if json_output:
        print_json(result)
        return
    wide_console().print(plan_table(result))
    for warning in result["warnings"]:
        stderr_console().print(f"[yellow]warning[/]: {warning}")


@sweep_app.command("run")
def run(
    grid: Path = typer.Argument(..., help="A grid file (sweeps/grids/*.toml)."),
    out: Path = typer.Option(None, "--out", help="Sweep directory (default runs/sweeps/<grid name>)."),
    data: Path = typer.Option(None, help="Token store to use instead of the grid's `data`."),
    address: str = typer.Option(None, help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)."),
    max_parallel: int = typer.Option(None, "--max-parallel", help="At most this many runs at once."),
    num_cpus: int = typer.Option(None, "--num-cpus", help="CPUs of the embedded local Ray (default: all)."),
    json_output: bool = typer.Option(False, "--json", help="Print the final status as JSON on stdout."),
    track: str = track_option(),
) -> None:
    """Run a grid on Ray, one task per run. Re-running skips finished runs and resumes the others.

    Examples:

      scaling sweep run sweeps/grids/smoke.toml --data runs/tokens --out runs/sweeps/smoke

      scaling sweep run sweeps/grids/quickstart.toml --address 10.0.0.1:6379 --max-parallel 16

      WANDB_PROJECT=ehr-scaling scaling sweep run sweeps/grids/quickstart.toml --track wandb
    """
    from scaling.train.tracking import track as track_runs
    from sweeps.engine import run_sweep

    track_runs(track)

    if max_parallel is not None and max_parallel < 1:
        from scaling.common.errors import InputError

        raise InputError(f"--max-parallel {max_parallel} must be at least 1")
    status = run_sweep(grid, out, data=data, address=address, max_parallel=max_parallel, num_cpus=num_cpus,
                       progress=True)
    if json_output:
        print_json(status)
    failed = status["counts"]["failed"] + status["counts"]["pending"]
    if failed:
        stderr_console().print(f"[red]{failed} runs did not finish[/]; run the same command again to retry them")
        raise typer.Exit(1)


@sweep_app.command("status")
def status(
    sweep_dir: Path = typer.Argument(..., help="A sweep directory (the --out of `scaling sweep run`)."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """What a sweep directory holds: runs finished, running, pending, failed, diverged; latest losses.
    Works while the sweep runs elsewhere.

    Examples:

      scaling sweep status runs/sweeps/quickstart

      scaling sweep status runs/sweeps/quickstart --json
    """
    from sweeps.status import status_table, sweep_status

    result = sweep_status(sweep_dir)
    if json_output:
        print_json(result)
        return
    wide_console().print(status_table(result))


def wide_console():
    """Tables on stdout, not cut to 80 columns when stdout is a file or a pipe."""
    import sys

    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200)
