"""`scaling bench data`: tokenization (and cohort generation) throughput on this machine."""

from __future__ import annotations

import typer

from scaling.cli.app import bench_app
from scaling.cli.output import print_json, stderr_console


@bench_app.command("data")
def bench_data(
    patients: int = typer.Option(20_000, help="Patients in the generated cohort (about 1M+ events at 20,000)."),
    repeats: int = typer.Option(3, help="Tokenization runs; the best is reported."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Generate a synthetic MEDS cohort and time its generation and tokenization.

    Examples:

      scaling bench data

      scaling bench data --patients 50000 --json
    """
    from scaling.bench_data import bench_data as run

    result = run(patients=patients, repeats=repeats, log=stderr_console().print)
    if json_output:
        print_json(result)
    else:
        stderr_console().print(result)
