"""`scaling data ...`: synthetic cohorts and tokenization of MEDS datasets."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from scaling.cli.app import data_app
from scaling.cli.output import print_json, stage_status, stderr_console
from scaling.common.errors import InputError


@data_app.command("tokenize")
def tokenize(
    meds_dir: Path = typer.Argument(..., help="A MEDS dataset directory (data/, metadata/)."),
    out: Path = typer.Option(..., "--out", help="The token store directory to write."),
    min_count: int = typer.Option(5, help="Sub-tokens seen fewer times in train become UNK//<category>."),
    value_bins: int = typer.Option(10, help="Quantile bins per numeric code when metadata gives no edges."),
    split_alias: list[str] = typer.Option(None, "--split-alias", help="NAME=SPLIT: read the dataset's split NAME "
                                          "as train, tuning or held_out (e.g. validation=tuning); repeatable."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists (never the input)."),
    json_output: bool = typer.Option(False, "--json", help="Print stats.json on stdout."),
) -> None:
    """Build the vocabulary on the train split and write the token store of every split.

    Examples:

      scaling data tokenize runs/cohort --out runs/tokens

      scaling data tokenize /data/mimic_iv_meds --out runs/mimic_tokens --min-count 10 --json

      scaling data tokenize /data/my_meds --out runs/tokens --split-alias validation=tuning
    """
    # Imported here, not at the top, to keep `scaling --help` and the other commands quick to start.
    from scaling.data.tokenizer import TokenizerSettings, tokenize_dataset
    from scaling.synth.generate import world_settings
    from scaling.synth.replay import entropy_floor_stats

    aliases = {}
    for item in split_alias or []:
        name, _, split = item.partition("=")
        if not name or not split:
            raise InputError(f"--split-alias {item!r}; expected NAME=SPLIT, e.g. validation=tuning")
        aliases[name] = split
    settings = TokenizerSettings(min_count=min_count, n_value_bins=value_bins, split_aliases=aliases)
    # A synthetic cohort's token store also gets the generator's exact entropy floor.
    floor = entropy_floor_stats if world_settings(meds_dir) is not None else None
    with stage_status(stderr_console(), "tokenize", quiet=json_output) as stage:
        stats = tokenize_dataset(meds_dir, out, settings, overwrite=overwrite, extra_stats=floor, stage=stage)
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


@data_app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="The MEDS dataset directory to write."),
    patients: int = typer.Option(None, help="Number of patients (or use --preset)."),
    preset: str = typer.Option(None, help="test (600 patients), bench (20,000) or demo (60,000)."),
    seed: int = typer.Option(0, help="Seed of the cohort: the same seed gives byte-identical files."),
    world_seed: int = typer.Option(0, help="Seed of the world (codes, rates, links); cohorts of one world share it."),
    max_tokens: int = typer.Option(256, help="Longest timeline in tokens; windows of this length hold any patient."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists."),
    json_output: bool = typer.Option(False, "--json", help="Print a summary as JSON on stdout."),
) -> None:
    """Sample a synthetic cohort from the toolkit's medical world and write it as a MEDS dataset.

    The world has a few hundred ICD-10-like conditions (a head of chronic diseases with progression
    links, a Zipf tail of rare ones), LOINC-like labs with value bins, ATC-like medications, CPT-like
    procedures, four encounter types and death. Its tokens carry an exact entropy floor, which
    `scaling data tokenize` writes to stats.json.

    Examples:

      scaling data synth --patients 20000 --seed 0 --out runs/cohort

      scaling data synth --preset test --out /tmp/cohort --json
    """
    # Imported here, not at the top, to keep `scaling --help` and the other commands quick to start.
    from scaling.synth.generate import PRESETS, generate_cohort

    if preset is not None:
        if preset not in PRESETS:
            raise InputError(f"--preset {preset}; expected one of {sorted(PRESETS)}")
        patients = patients or PRESETS[preset]
    if patients is None:
        raise InputError("give --patients N or --preset NAME")
    console = stderr_console()
    summary = generate_cohort(out, patients, seed, world_seed, max_tokens, overwrite=overwrite,
                              log=lambda m: console.print(m, highlight=False))
    if json_output:
        print_json(summary)
    else:
        console.print(f"[bold]{out}[/]: {summary['patients']:,} patients, {summary['events']:,} events in "
                      f"{summary['seconds']} s ({summary['events_per_s']:,} events/s)")
