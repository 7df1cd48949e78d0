"""`scaling train` (one training run) and `scaling bench train` (training throughput)."""

from __future__ import annotations

from pathlib import Path

import typer

from scaling.cli.app import app, bench_app, track_option
from scaling.cli.output import print_json, stderr_console


@app.command("train")
def train(
    config: Path = typer.Argument(..., help="The run config TOML (see docs/training.md)."),
    out: Path = typer.Option(None, "--out", help="The run directory (default: runs/<config name>)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress on stderr."),
    json_output: bool = typer.Option(False, "--json", help="Print summary.json on stdout."),
    track: str = track_option(),
) -> int:
    """Train one model on a token store; resume if the run directory has a checkpoint.

    Writes config.json, metrics.parquet, checkpoints/ and summary.json into the run directory; summary.json
    has unique_tokens (the train tokens drawn from; train.unique_tokens picks a nested subset) and epochs.
    Exit 0 when the run finished, 1 when it diverged (NaN/inf loss) or failed, 2 on a bad config.

    Examples:

      scaling train runs/tiny.toml --out runs/tiny

      scaling train runs/tiny.toml --out runs/tiny    # again: resumes, or reports the finished run

      scaling train runs/tiny.toml --out runs/tiny --track wandb,mlflow

      XLA_FLAGS=--xla_force_host_platform_device_count=4 scaling train run.toml --json
    """
    # Lazy: start-up time (JAX loads only for the command that runs).
    from scaling.train.config import load_run_config
    from scaling.train.run_dir import FINISHED
    from scaling.train.tracking import track as track_runs
    from scaling.train.trainer import train_run

    track_runs(track)
    run_config = load_run_config(config)
    summary = train_run(run_config, out or Path("runs") / config.stem, progress=not quiet, source=str(config))
    if json_output:
        print_json(summary)
    return 0 if summary["status"] == FINISHED else 1


@bench_app.command("train")
def bench_train(
    d_model: int = typer.Option(64, "--d-model", help="Width of the model."),
    n_layers: int = typer.Option(2, "--n-layers", help="Transformer blocks."),
    n_heads: int = typer.Option(None, "--n-heads", help="Query heads (default: the family rule)."),
    n_kv_heads: int = typer.Option(None, "--n-kv-heads", help="Key/value heads (default: the family rule)."),
    vocab: int = typer.Option(512, "--vocab", help="Vocabulary size."),
    seq_len: int = typer.Option(128, "--seq-len", help="Tokens per window."),
    batch: int = typer.Option(16, "--batch", help="Windows per step (over all devices)."),
    dtype: str = typer.Option("float32", "--dtype", help="Compute dtype: float32 or bfloat16."),
    steps_per_dispatch: int = typer.Option(10, "--steps-per-dispatch", help="Optimizer steps per call."),
    seconds: float = typer.Option(10.0, "--seconds", help="How long to time after compiling."),
    attention: str = typer.Option("auto", "--attention",
                                  help="auto (cuDNN flash attention on a GPU in bfloat16, else XLA), xla or cudnn."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Time the project's training step (the trainer's own hot loop) on random tokens.

    Prints params, tokens_per_s and flops_per_s (6N-counted, N = all parameters), and MFU when the
    accelerator's peak FLOP/s is known.

    Examples:

      scaling bench train --json

      scaling bench train --d-model 128 --n-layers 4 --seq-len 256 --json

      scaling bench train --d-model 768 --n-layers 12 --vocab 8192 --seq-len 1024 --batch 32 --dtype bfloat16
    """
    # Lazy: start-up time (JAX loads only for the command that runs).
    from models.ladder import family_shape
    from scaling.bench.train import bench_train as run
    from scaling.common.errors import InputError
    from scaling.train.config import ATTENTION_IMPLS

    if dtype not in ("float32", "bfloat16"):
        raise InputError(f"--dtype {dtype}; expected float32 or bfloat16")
    if attention not in ATTENTION_IMPLS:
        raise InputError(f"--attention {attention}; expected one of {', '.join(ATTENTION_IMPLS)}")
    for name, value in (("--batch", batch), ("--seq-len", seq_len), ("--steps-per-dispatch", steps_per_dispatch)):
        if value < 1:
            raise InputError(f"{name} {value}; expected a positive integer")
    shape = family_shape(d_model, vocab, seq_len, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads)
    console = stderr_console()
    result = run(shape, batch, seq_len, dtype, steps_per_dispatch, seconds, log=console.print, attention=attention)
    if json_output:
        print_json(result)
    else:
        line = (f"{result['params']:,} params: {result['tokens_per_s']:,.0f} tokens/s, "
                f"{result['flops_per_s'] / 1e9:,.1f} GFLOP/s (6N)")
        if "mfu" in result:
            line += f", MFU {100 * result['mfu']:.1f}%"
        console.print(line)
