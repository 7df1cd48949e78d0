"""The run directory: the contract between train, sweep, fit, final and evaluate, and its one owner.

    run = RunDir("runs/final")
    run.status, run.read_summary(), run.latest_metrics()
    model, config, step = run.load_model()          # the latest checkpoint's parameters in a Decoder

Layout (written by scaling.train.trainer):
    config.json       the run record: the validated config, the resolved model shape, the derived numbers
    metrics.parquet   one row per logged step (METRIC_COLUMNS), rewritten at every evaluation and checkpoint
    tensorboard/      the same rows as TensorBoard event files, written as the run goes (scaling.train.tracking)
    checkpoints/      orbax, one folder per saved step with two items: `params` and `opt_state`
    summary.json      status finished|diverged|failed, params, params_nonembed, tokens, flops, losses, shape
    traceback.txt     where a failed run failed (the Python traceback), beside the one-line message in summary.json

A model loads for inference from the `params` item alone: no optimizer is built. Checkpoints of earlier
versions hold one item (`default`, the tree {"params", "opt_state"}); they still restore, both for
inference and to resume.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from models.config import ModelShape
from scaling.common.atomic import write_file_atomic, write_json_atomic
from scaling.common.errors import InputError
from scaling.train.config import RunConfig, parse_run_config

if TYPE_CHECKING:
    import orbax.checkpoint as ocp

    from models.decoder import Decoder

# JAX, Flax and orbax are imported where checkpoints are read or written, not here: the sweep driver and
# `scaling sweep status` read run directories without them (start-up time; the driver never starts JAX).

FINISHED, DIVERGED, FAILED = "finished", "diverged", "failed"
DONE = (FINISHED, DIVERGED)  # a run that is never trained again
METRIC_COLUMNS = ["step", "tokens", "flops", "train_loss", "val_loss", "lr", "tokens_per_s", "grad_norm",
                  "param_norm"]
METRIC_DTYPES = {"step": "int64", "tokens": "int64", "flops": "float64", "train_loss": "float64",
                 "val_loss": "float64", "lr": "float64", "tokens_per_s": "float64", "grad_norm": "float64",
                 "param_norm": "float64"}
PARAMS, OPT_STATE = "params", "opt_state"  # the checkpoint's items
_LEGACY_ITEM = "default"  # the one item of an earlier version's checkpoint


class RunDir:
    """Paths and files of one run directory."""

    CONFIG, METRICS, CHECKPOINTS, SUMMARY = "config.json", "metrics.parquet", "checkpoints", "summary.json"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def checkpoints_path(self) -> Path:
        """Absolute (orbax wants it so)."""
        return (self.path / self.CHECKPOINTS).absolute()

    @property
    def summary_path(self) -> Path:
        return self.path / self.SUMMARY

    def is_run(self) -> bool:
        """Whether the directory holds a run (its config.json)."""
        return self.config_path.is_file()

    # -- config.json ---------------------------------------------------------------------------------------

    def read_record(self) -> dict:
        """config.json: {"config", "shape", "derived", "runtime"}."""
        if not self.config_path.is_file():
            raise InputError(f"{self.path}: not a run directory (no {self.CONFIG}); expected the output of "
                             "`scaling train`")
        try:
            return json.loads(self.config_path.read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"{self.config_path}: not valid JSON ({e})") from None

    def write_record(self, record: dict) -> None:
        write_json_atomic(self.config_path, record)

    def read_config(self) -> RunConfig:
        return parse_run_config(self.read_record()["config"], source=str(self.config_path))

    def read_shape(self) -> ModelShape:
        return ModelShape.from_dict(self.read_record()["shape"])

    # -- summary.json --------------------------------------------------------------------------------------

    def read_summary(self) -> dict | None:
        """summary.json, or None while there is none (or it is being replaced)."""
        try:
            return json.loads(self.summary_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    @property
    def traceback_path(self) -> Path:
        return self.path / "traceback.txt"

    def write_traceback(self, text: str) -> None:
        write_file_atomic(self.traceback_path, text)

    def write_summary(self, summary: dict) -> None:
        write_json_atomic(self.summary_path, summary)

    @property
    def status(self) -> str | None:
        """finished | diverged | failed, or None while the run has no summary."""
        summary = self.read_summary()
        return None if summary is None else summary.get("status")

    def is_done(self) -> bool:
        """Finished or diverged: a run that is not trained again."""
        return self.status in DONE

    # -- metrics.parquet -----------------------------------------------------------------------------------

    def read_metrics(self) -> pd.DataFrame | None:
        """The logged rows, or None while there are none."""
        return pd.read_parquet(self.metrics_path) if self.metrics_path.is_file() else None

    def latest_metrics(self) -> dict | None:
        """The last logged row, or None when there is none yet (or the file is being replaced)."""
        try:
            return pd.read_parquet(self.metrics_path).iloc[-1].to_dict()
        except Exception:  # not written yet, empty, or being replaced
            return None

    def write_metrics(self, rows: list[dict]) -> None:
        frame = pd.DataFrame(rows, columns=METRIC_COLUMNS).astype(METRIC_DTYPES)
        write_file_atomic(self.metrics_path, frame.to_parquet(index=False))

    # -- checkpoints/ --------------------------------------------------------------------------------------

    def remove_unstarted(self) -> None:
        """Remove the run files of a run refused before it trained (its config.json was written by the same
        call), and the directory when nothing else is left in it."""
        for path in (self.config_path, self.metrics_path, self.summary_path):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.checkpoints_path, ignore_errors=True)
        if self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

    @property
    def damaged_checkpoints_path(self) -> Path:
        return self.path / "checkpoints_damaged"

    def restore_latest(self, abstract: dict, warn=None) -> tuple[int, dict | None]:
        """(step, items) of the newest checkpoint that restores; (0, None) when there is none. A checkpoint
        that fails to restore (a crash while it was written, a damaged disk) is moved to
        checkpoints_damaged/ with a warning, so resuming starts from the one before instead of failing."""
        import orbax.checkpoint as ocp  # lazy: start-up time (see the note at the imports)

        for step in reversed(self.checkpoint_steps()):
            try:
                with ocp.CheckpointManager(self.checkpoints_path) as manager:
                    return step, restore_items(manager, step, abstract)
            except Exception as e:  # any failure to read it: orbax, tensorstore and OS errors differ
                self.damaged_checkpoints_path.mkdir(exist_ok=True)
                os.replace(self.checkpoint_path(step), self.damaged_checkpoints_path / str(step))
                if warn is not None:
                    reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
                    warn(f"warning: {self.checkpoint_path(step)} cannot be restored ({reason}); moved to "
                         f"{self.damaged_checkpoints_path.name}/, resuming from the checkpoint before it")
        return 0, None

    def checkpoint_steps(self) -> list[int]:
        if not self.checkpoints_path.is_dir():
            return []
        return sorted(int(p.name) for p in self.checkpoints_path.iterdir() if p.name.isdigit())

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoints_path / str(step)

    def checkpoint_manager(self, keep: int | None = None, asynchronous: bool = False) -> ocp.CheckpointManager:
        import orbax.checkpoint as ocp  # lazy: start-up time (see the note at the imports)

        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=asynchronous,
                                               cleanup_tmp_directories=True)
        return ocp.CheckpointManager(self.checkpoints_path, options=options)

    def branch_from(self, parent: RunDir, step: int) -> None:
        """Start this run from `parent`'s checkpoint at `step` and its metrics up to there, once: a run that has
        a checkpoint already (seeded before, or trained past the seed) is left as it is."""
        if self.checkpoint_steps():
            return
        source = parent.checkpoint_path(step)
        if not source.is_dir():
            raise RuntimeError(f"{parent.path} has no checkpoint at step {step} to branch from")
        self.path.mkdir(parents=True, exist_ok=True)
        if parent.metrics_path.is_file():
            shutil.copy2(parent.metrics_path, self.metrics_path)
        tmp = self.path / ".seed.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        self.checkpoints_path.mkdir(exist_ok=True)
        os.replace(tmp, self.checkpoint_path(step))

    def load_model(self) -> tuple[Decoder, RunConfig, int]:
        """(model with the latest checkpoint's parameters, the run config, the checkpoint's step)."""
        import jax  # lazy: start-up time (see the note at the imports)
        import orbax.checkpoint as ocp
        from flax import nnx

        from scaling.train.compile_cache import enable_compilation_cache
        from scaling.train.step import abstract_model

        # The sampler's programs depend on the shape, not on the run: the sweep's runs of one shape, a re-run
        # or a resumed evaluation read them from the shared cache instead of compiling them again.
        enable_compilation_cache()
        record = self.read_record()
        config = parse_run_config(record["config"], source=str(self.config_path))
        if not self.checkpoints_path.is_dir():
            raise InputError(f"{self.path}: no {self.CHECKPOINTS}/ directory; the run has not saved a checkpoint yet")
        graphdef, abstract_params = abstract_model(ModelShape.from_dict(record["shape"]))
        # On this process's first device: without a target sharding orbax restores the saved one, which fails
        # when the run was trained on another device count (a 2-core CPU mesh, a GPU host) than this one.
        on_one_device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract_params = jax.tree.map(
            lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=on_one_device), abstract_params)
        if not self.checkpoint_steps():
            raise InputError(f"{self.checkpoints_path}: no checkpoint; the run has not saved one yet")
        for step in reversed(self.checkpoint_steps()):
            try:
                with ocp.CheckpointManager(self.checkpoints_path) as manager:
                    params = restore_items(manager, step, {PARAMS: abstract_params})[PARAMS]
                return nnx.merge(graphdef, params), config, int(step)
            except Exception as e:  # a damaged checkpoint: the one before it serves (and says so)
                print(f"warning: {self.checkpoint_path(step)} cannot be restored "
                      f"({str(e).splitlines()[0][:200] if str(e) else type(e).__name__}); using an earlier one",
                      file=sys.stderr)
        raise InputError(f"{self.checkpoints_path}: no checkpoint can be restored (all {len(self.checkpoint_steps())} "
                         "are damaged)")


def save_args(params, opt_state) -> ocp.args.Composite:
    """What `CheckpointManager.save` writes for a step: the parameters and the optimizer state, two items."""
    import orbax.checkpoint as ocp  # lazy: start-up time (see the note at the imports)

    return ocp.args.Composite(**{PARAMS: ocp.args.StandardSave(params), OPT_STATE: ocp.args.StandardSave(opt_state)})


def restore_items(manager: ocp.CheckpointManager, step: int, abstract: dict) -> dict:
    """The items named in `abstract` (PARAMS, OPT_STATE: trees of shapes, dtypes and shardings) of the
    checkpoint at `step`; the others are not read."""
    import jax  # lazy: start-up time (see the note at the imports)
    import orbax.checkpoint as ocp

    abstract = {name: jax.tree.map(ocp.utils.to_shape_dtype_struct, tree) for name, tree in abstract.items()}
    if (Path(manager.directory) / str(step) / _LEGACY_ITEM).is_dir():
        with ocp.CheckpointManager(manager.directory) as legacy:
            restored = legacy.restore(step, args=ocp.args.PyTreeRestore(
                abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract), partial_restore=True))
        return {name: restored[name] for name in abstract}
    restored = manager.restore(step, args=ocp.args.Composite(
        **{name: ocp.args.StandardRestore(tree) for name, tree in abstract.items()}))
    return {name: restored[name] for name in abstract}


def load_trained_model(run_dir: str | Path) -> tuple[Decoder, RunConfig, int]:
    """(model with the latest checkpoint's parameters, the run config, the checkpoint's step)."""
    return RunDir(run_dir).load_model()
