"""Live tracking: every metrics row of a run also goes to TensorBoard event files in <run_dir>/tensorboard,
written as the run trains, so `tensorboard --logdir RUN_DIR` (or a whole sweep directory, one curve per run)
shows the run while it trains.

tensorboardX writes the files: a small, pure-Python writer of TensorBoard's event format with no TensorFlow
(clu's metric writers write through tf.summary). Scalars: loss/train, loss/val (at evaluations), lr,
grad_norm (the mean over the row's steps, before clipping), param_norm, throughput/tokens_per_s, and
throughput/mfu where the device's peak is known. A resumed run passes `purge_step`, so TensorBoard drops the
first attempt's points past the checkpoint it resumed from.
"""

from __future__ import annotations

import math
from pathlib import Path

from tensorboardX import SummaryWriter

TENSORBOARD_DIR = "tensorboard"
SCALARS = {"train_loss": "loss/train", "val_loss": "loss/val", "lr": "lr", "grad_norm": "grad_norm",
           "param_norm": "param_norm", "tokens_per_s": "throughput/tokens_per_s", "mfu": "throughput/mfu"}


class TensorBoardLog:
    def __init__(self, run_dir: Path, start_step: int = 0):
        self.writer = SummaryWriter(logdir=str(Path(run_dir) / TENSORBOARD_DIR),
                                    purge_step=start_step if start_step > 0 else None, flush_secs=10)

    def write(self, row: dict) -> None:
        """One metrics row (scaling.train.run_dir.METRIC_COLUMNS, plus mfu when known): its finite values."""
        step = int(row["step"])
        for key, tag in SCALARS.items():
            value = row.get(key)
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        self.writer.close()
