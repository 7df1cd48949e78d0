"""A ladder along one run's shape: the same model and training recipe at fractions of its tokens.

A downstream metric can rise with training length faster than a law in loss across a sweep's sizes carries
(on the demo, death's AUROC: 0.9 per nat across the sweep's runs, about 3 per nat along the final shape's
training; docs/evaluation.md, "A ladder along the target's shape"). Runs of the target's own shape at C/30,
C/10 and C/3, evaluated like the sweep's runs, give `scaling downstream` a law along that shape.

`train_ladder(run, fractions, out)` trains into `out/runs/<name>/` (a sweep directory, so `scaling evaluate
out` takes every finished rung) one run per fraction, in order, each resuming or skipping as `scaling train`
does; only `train.tokens` (and `train.steps`) differ from the run's own config. Each rung's `ladder.json`
says which run and fraction it repeats. With a `cluster` each rung trains there as `scaling final --address`
trains (one Ray task per host), in this process otherwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

from scaling.common.atomic import write_json_atomic
from scaling.common.errors import InputError
from scaling.train.config import RunConfig, parse_run_config
from scaling.train.run_dir import RunDir

LADDER_RECORD = "ladder.json"  # in each rung: the run it repeats, its fraction and steps


def parse_fractions(text: str) -> list[float]:
    """'1/30,1/10,1/3' or '0.1,0.3' -> sorted fractions, each strictly between 0 and 1."""
    values = []
    for part in text.split(","):
        try:
            value = float(Fraction(part.strip()))
        except (ValueError, ZeroDivisionError):
            raise InputError(f"--fractions {text}: {part.strip()!r} is not a number or a ratio such as 1/10") from None
        if not 0 < value < 1:
            raise InputError(f"--fractions {text}: {part.strip()} is not strictly between 0 and 1")
        values.append(value)
    if len(set(values)) != len(values):
        raise InputError(f"--fractions {text}: a fraction is given twice")
    names = [rung_name(v) for v in values]
    if len(set(names)) != len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise InputError(f"--fractions {text}: two fractions share the rung name {twice} (3 significant digits); "
                         "expected fractions that differ there")
    return sorted(values)


def rung_name(fraction: float) -> str:
    return f"frac{fraction:.3g}"


def ladder_configs(config: RunConfig, fractions: Sequence[float], source: str) -> list[tuple[str, RunConfig]]:
    """(name, config) per fraction: the run's config with tokens = fraction x the run's tokens (whole steps)."""
    rungs = []
    for fraction in fractions:
        steps = max(1, round(fraction * config.total_steps))
        train = replace(config.train, steps=None, tokens=float(steps * config.tokens_per_step))
        # Through the parser again, so a recipe this short refuses what a config file would (warmup >= steps).
        raw = replace(config, train=train).to_dict()
        rung = parse_run_config(raw, source=f"{source} at fraction {fraction:.3g} ({steps} steps)")
        rungs.append((rung_name(fraction), rung))
    return rungs


def default_ladder_dir(run: Path) -> Path:
    return run.parent / f"{run.name}-ladder"


def train_ladder(run: Path, fractions: Sequence[float], out: Path, *, progress: bool = True, cluster=None,
                 log=print) -> list[dict]:
    """Train the ladder of `run` (a run directory: its config.json) into `out`, here or on `cluster` (a
    scaling.pipeline.final.Cluster); return one row per rung: name, fraction, steps, tokens, status, val_loss."""
    from scaling.pipeline.final import connected, train_on_cluster  # lazy: the fit stack, Ray
    from scaling.train.trainer import train_run  # lazy: JAX loads only when something trains

    run_dir = RunDir(run)
    if not run_dir.is_run():
        raise InputError(f"{run}: not a run directory (no {RunDir.CONFIG})")
    config = run_dir.read_config()
    rungs = ladder_configs(config, fractions, str(run_dir.config_path))
    rows = []
    with connected(cluster) if cluster else contextlib.nullcontext():
        for (name, rung), fraction in zip(rungs, fractions, strict=True):
            rung_dir = out / "runs" / name
            record = rung_dir / LADDER_RECORD
            if not record.is_file():
                rung_dir.mkdir(parents=True, exist_ok=True)
                write_json_atomic(record, {"run": str(Path(run).absolute()), "fraction": fraction,
                                           "steps": rung.total_steps})
            if cluster:
                summary = train_on_cluster(rung.to_dict(), rung_dir, cluster, log, written=LADDER_RECORD)
            else:
                summary = train_run(rung, rung_dir, progress=progress)
            rows.append({"name": name, "fraction": fraction, "steps": rung.total_steps,
                         "tokens": rung.total_steps * rung.tokens_per_step, "status": summary.get("status"),
                         "val_loss": summary.get("val_loss")})
    return rows
