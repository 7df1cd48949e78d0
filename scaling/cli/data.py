"""`scaling data ...`: synthetic cohorts and tokenization of MEDS datasets."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from scaling.cli.app import data_app
from scaling.cli.output import print_json, stderr_console


@data_app.command("tokenize")
def tokenize(
    meds_dir: Path = typer.Argument(..., help="A MEDS dataset directory (data/, metadata/)."),
    out: Path = typer.Option(..., "--out", help="The token store directory to write."),
    min_count: int = typer.Option(5, help="Sub-tokens seen fewer times in train become UNK//<category>."),
    value_bins: int = typer.Option(10, help="Quantile bins per numeric code when metadata gives no edges."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists."),
    json_output: bool = typer.Option(False, "--json", help="Print stats.json on stdout."),
) -> None:
    """Build the vocabulary on the train split and write the token store of every split.

    Examples:

      scaling data tokenize runs/cohort --out runs/tokens

      scaling data tokenize /data/mimic_iv_meds --out runs/mimic_tokens --min-count 10 --json
    """
    from scaling.tokenizer import TokenizerSettings, tokenize_dataset

    settings = TokenizerSettings(min_count=min_count, n_value_bins=value_bins)
    stats = tokenize_dataset(meds_dir, out, settings, overwrite=overwrite)
    if json_output:
        print_json(stats)
        return
    console = stderr_console()
    events = sum(s["events"] for s in stats["splits"].values())
    console.print(f"[bold]{out}[/]: {stats['vocab_size']} tokens in the vocabulary, {events:,} events "
                  f"in {stats['seconds']} s")
    for name, s in stats["splits"].items():
        console.print(f"  {name:9s} {s['patients']:>9,} patients {s['events']:>12,} events "
                      f"{s['tokens']:>12,} tokens ({s['tokens_per_event']} per event)")
    console.print(f"  by category: {json.dumps(stats['vocab_by_category'])}")
