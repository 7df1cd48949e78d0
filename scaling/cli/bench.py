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
    from scaling.bench_sample import bench_sample as run

    result = run(d_model, n_layers, vocab, context, new_tokens, batch, log=stderr_console().print)
    if json_output:
        print_json(result)
    else:
        stderr_console().print(result)
