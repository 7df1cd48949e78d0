"""A trained model out of a run directory: the latest checkpoint's parameters in a Decoder.

    model, config, step = load_trained_model("runs/final")

The checkpoint holds {"params", "opt_state"} (scaling.trainer); the abstract tree to restore it into is
rebuilt from config.json with the trainer's own functions, then only the parameters are kept.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from flax import nnx

from models.config import ModelShape
from models.decoder import Decoder
from scaling.errors import InputError
from scaling.run_config import RunConfig, parse_run_config
from scaling.train_step import init_model, learning_rate_schedule, make_optimizer


def read_run_record(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise InputError(f"{run_dir}: not a run directory (no config.json); expected the output of `scaling train`")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None


def load_trained_model(run_dir: str | Path) -> tuple[Decoder, RunConfig, int]:
    """(model with the latest checkpoint's parameters, the run config, the checkpoint's step)."""
    run_dir = Path(run_dir)
    record = read_run_record(run_dir)
    config = parse_run_config(record["config"], source=str(run_dir / "config.json"))
    shape = ModelShape.from_dict(record["shape"])
    checkpoints = (run_dir / "checkpoints").absolute()
    if not checkpoints.is_dir():
        raise InputError(f"{run_dir}: no checkpoints/ directory; the run has not saved a checkpoint yet")
    graphdef, params = init_model(shape, config.seed)
    t = config.train
    schedule = learning_rate_schedule(t.schedule, t.lr, config.total_steps, config.warmup_steps, t.min_lr_ratio,
                                      t.cooldown_fraction)
    tx = make_optimizer(schedule, weight_decay=t.weight_decay, beta1=t.beta1, beta2=t.beta2, grad_clip=t.grad_clip)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"params": params, "opt_state": tx.init(params)})
    with ocp.CheckpointManager(checkpoints) as manager:
        step = manager.latest_step()
        if step is None:
            raise InputError(f"{checkpoints}: no checkpoint; the run has not saved one yet")
        state = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    model = nnx.merge(graphdef, state["params"])
    return model, config, int(step)
