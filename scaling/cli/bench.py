"""`scaling bench data|sample|fit`: throughput figures on this machine.

`scaling bench train` sits with `scaling train` (scaling/cli/train.py)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from scaling.cli.app import bench_app
from scaling.cli.output import print_json, stderr_console
from scaling.common.errors import InputError

# Each command imports its stage inside the function, so `scaling --help` starts without JAX or Ray.


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
    from scaling.bench.data import bench_data as run

    result = run(patients=patients, repeats=repeats, log=stderr_console().print)
    if json_output:
        print_json(result)
    else:
        stderr_console().print(result)


@bench_app.command("sample")
def bench_sample(
    d_model: int = typer.Option(64, help="Model width."),
    n_layers: int = typer.Option(2, help="Layers."),
    vocab: int = typer.Option(512, help="Vocabulary size."),
    context: int = typer.Option(512, help="Prompt length in tokens."),
    new_tokens: int = typer.Option(64, help="Tokens generated per sequence."),
    batch: int = typer.Option(8, help="Sequences sampled at once."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Generated tokens per second with the KV cache and without it (prefix recomputed every step).

    Examples:

      scaling bench sample --json

      scaling bench sample --d-model 128 --n-layers 4 --context 1024
    """
    from scaling.bench.sample import bench_sample as run

    result = run(d_model, n_layers, vocab, context, new_tokens, batch, log=stderr_console().print)
    if json_output:
        print_json(result)
    else:
        stderr_console().print(result)


@bench_app.command("fit")
def bench_fit_command(
    naive_starts: int = typer.Option(8, "--naive-starts", help="grid points the naive reference is timed on"),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="resamples in the timed bootstrap"),
    data: Path | None = typer.Option(None, "--data", help="Epoch's Chinchilla CSV "
                                      "(chinchilla_epoch_svg_extracted.csv) [default: drawn from Epoch's law]"),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Time approach 3 (full initialisation grid) and a bootstrap against a naive SciPy reference.

    The reference runs numeric-gradient L-BFGS-B per starting point, timed on a subset of the grid and scaled.

    Examples:

      scaling bench fit

      scaling bench fit --naive-starts 20 --bootstrap 1000 --json

      scaling bench fit --data ../shared/data/chinchilla_epoch_svg_extracted.csv
    """
    from scaling.bench.fit import bench_fit

    if naive_starts < 1 or bootstrap < 1:
        raise InputError("--naive-starts and --bootstrap: expected positive integers")
    console = stderr_console()
    result = bench_fit(data=data, naive_starts=naive_starts, bootstrap=bootstrap, log=console.print)
    if json_output:
        print_json(result)
    else:
        Console().print(result)
