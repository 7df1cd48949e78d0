"""Live tracking: every metrics row of a run also goes to TensorBoard event files in <run_dir>/tensorboard,
written as the run trains, so `tensorboard --logdir RUN_DIR` (or a whole sweep directory, one curve per run)
shows the run while it trains; and, when asked, to Weights & Biases and MLflow.

tensorboardX writes the files: a small, pure-Python writer of TensorBoard's event format with no TensorFlow
(clu's metric writers write through tf.summary). Scalars: loss/train, loss/val (at evaluations), lr,
grad_norm (the mean over the row's steps, before clipping), param_norm, throughput/tokens_per_s, and
throughput/mfu where the device's peak is known. A resumed run passes `purge_step`, so TensorBoard drops the
first attempt's points past the checkpoint it resumed from.

W&B and MLflow are optional extras (`pip install 'medscaling[wandb]'`, `'medscaling[mlflow]'`) behind one
flag: `--track wandb,mlflow` on `scaling train`, `sweep run`, `final` and `demo` (it sets $SCALING_TRACK,
which sweep workers inherit with the trackers' own WANDB_* / MLFLOW_* settings). Both get the same scalars
and the run's config. Each run directory is one tracked run, found again on resume: W&B by an id derived
from the directory's path (resume="allow"; W&B ignores steps it already has), MLflow by the tag
scaling.run_dir (its metrics from the resumed step on are appended; MLflow cannot drop the first
attempt's points past the checkpoint, so those steps may appear twice). A sweep's runs share a W&B group and an
MLflow tag scaling.group (their parent directory). Where they log is theirs to say: WANDB_PROJECT (default
"medscaling"), WANDB_MODE (offline writes <run_dir>/wandb), MLFLOW_TRACKING_URI (MLflow's default: ./mlflow.db),
MLFLOW_EXPERIMENT_NAME (default "medscaling").
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import time
from pathlib import Path

from tensorboardX import SummaryWriter

from scaling.common.errors import InputError

TENSORBOARD_DIR = "tensorboard"
SCALARS = {"train_loss": "loss/train", "val_loss": "loss/val", "lr": "lr", "grad_norm": "grad_norm",
           "param_norm": "param_norm", "tokens_per_s": "throughput/tokens_per_s", "mfu": "throughput/mfu"}
TRACK_ENV = "SCALING_TRACK"
PROJECT = "medscaling"
# tracker -> the module it needs
EXTERNAL_TRACKERS = {"wandb": "wandb", "mlflow": "mlflow"}


def parse_trackers(value: str | None, field: str = "--track") -> tuple[str, ...]:
    """'wandb,mlflow' -> ("wandb", "mlflow"); an unknown name or a tracker whose package is missing is an
    input error (exit 2) before anything trains."""
    names = tuple(dict.fromkeys(n.strip().lower() for n in (value or "").split(",") if n.strip()))
    for name in names:
        if name not in EXTERNAL_TRACKERS:
            raise InputError(f"{field} {value}: unknown tracker {name!r}; expected a comma-separated list of "
                             f"{', '.join(EXTERNAL_TRACKERS)} (TensorBoard files are always written)", field=field)
        if importlib.util.find_spec(EXTERNAL_TRACKERS[name]) is None:
            raise InputError(f"{field} {value}: the {name} package is not installed; install the extra with "
                             f"pip install 'medscaling[{name}]'", field=field)
    return names


def track(value: str | None) -> None:
    """The CLI's --track: check it and pass it on to this process's runs and the sweep's workers."""
    names = parse_trackers(value)
    if names:
        os.environ[TRACK_ENV] = ",".join(names)


def requested_trackers() -> tuple[str, ...]:
    return parse_trackers(os.environ.get(TRACK_ENV), field=TRACK_ENV)


def forwarded_env() -> dict[str, str]:
    """What a sweep worker needs to track as the driver asked: $SCALING_TRACK and the trackers' settings."""
    if not os.environ.get(TRACK_ENV):
        return {}
    return {k: v for k, v in os.environ.items() if k == TRACK_ENV or k.startswith(("WANDB_", "MLFLOW_"))}


def tracked_run_id(run_dir: Path) -> str:
    """A stable id for the run directory (W&B ids: lowercase letters and digits)."""
    return hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:20]


def flat_config(record: dict) -> dict:
    """{"train.lr": 0.003, "model.d_model": 64, ...} from the run record's config (MLflow params are flat)."""
    out = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = value

    walk("", record.get("config", {}))
    return out


def finite_scalars(row: dict) -> dict[str, float]:
    return {tag: float(row[key]) for key, tag in SCALARS.items()
            if row.get(key) is not None and math.isfinite(row[key])}


class TensorBoardLog:
    def __init__(self, run_dir: Path, start_step: int = 0):
        self.writer = SummaryWriter(logdir=str(Path(run_dir) / TENSORBOARD_DIR),
                                    purge_step=start_step if start_step > 0 else None, flush_secs=10)

    def write(self, row: dict) -> None:
        """One metrics row (scaling.train.run_dir.METRIC_COLUMNS, plus mfu when known): its finite values."""
        step = int(row["step"])
        for tag, value in finite_scalars(row).items():
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbLog:
    def __init__(self, run_dir: Path, record: dict):
        import wandb

        run_dir = Path(run_dir)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", PROJECT), id=tracked_run_id(run_dir),
                              name=run_dir.name, group=str(run_dir.resolve().parent), dir=str(run_dir),
                              config=record.get("config", {}), resume="allow")

    def write(self, row: dict) -> None:
        self.run.log(finite_scalars(row), step=int(row["step"]))

    def close(self) -> None:
        self.run.finish()


class MlflowLog:
    def __init__(self, run_dir: Path, record: dict):
        from mlflow import MlflowClient

        run_dir = Path(run_dir).resolve()
        self.client = MlflowClient()
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", PROJECT)
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        earlier = self.client.search_runs([experiment_id], f"tags.`scaling.run_dir` = '{run_dir}'", max_results=1)
        if earlier:
            self.run_id = earlier[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            run = self.client.create_run(experiment_id, run_name=run_dir.name,
                                         tags={"scaling.run_dir": str(run_dir), "scaling.group": str(run_dir.parent)})
            self.run_id = run.info.run_id
            from mlflow.entities import Param

            params = [Param(k, str(v)) for k, v in flat_config(record).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(self.run_id, params=params[i:i + 100])

    def write(self, row: dict) -> None:
        from mlflow.entities import Metric

        stamp, step = int(time.time() * 1000), int(row["step"])
        self.client.log_batch(self.run_id, metrics=[Metric(tag, value, stamp, step)
                                                    for tag, value in finite_scalars(row).items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class RunTrackers:
    """TensorBoard always, plus the trackers $SCALING_TRACK names; each metrics row goes to all of them."""

    def __init__(self, run_dir: Path, record: dict, start_step: int = 0):
        self.trackers = [TensorBoardLog(run_dir, start_step)]
        for name in requested_trackers():
            self.trackers.append(WandbLog(run_dir, record) if name == "wandb"
                                 else MlflowLog(run_dir, record))

    def write(self, row: dict) -> None:
        for tracker in self.trackers:
            tracker.write(row)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
