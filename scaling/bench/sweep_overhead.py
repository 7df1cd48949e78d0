"""Sweep overhead: the wall time of a sweep against the runs' own times divided by the parallelism.

    .venv/bin/python -m scaling.bench.sweep_overhead [--runs 8] [--steps 1500] [--out runs/bench/sweep_overhead]

Makes a small token store (random Markov patients), a params_x_tokens grid of `--runs` tiny runs, and
runs it with the engine on an embedded local Ray of `--cpus` CPUs (one per run). A run's own time is
the time its task spends in `scaling.train.trainer.train_run` (compilation included; process start and
imports not). Prints one JSON object:

    ratio_end_to_end   wall of `run_sweep` (Ray start-up included) / (sum of run times / parallelism)
    ratio_scheduling   the same from the first run's start to the last run's end (Ray start-up excluded)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

GRID = """
name = "overhead"
data = "{data}"
[grid]
kind = "params_x_tokens"
widths = {widths}
tokens = {tokens}
min_steps = 4
[train]
batch_size = 8
seq_len = 32
lr = 3e-3
warmup_steps = 5
log_every = 20
eval_every = 200
checkpoint_every = 200
steps_per_dispatch = 20
eval_tokens = 2048
[resources]
cpus_per_run = 1
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1500, help="optimizer steps of the shortest run")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "sweep_overhead")
    args = parser.parse_args()

    from sweep_builders import tiny_store

    from sweeps.engine import run_sweep
    from sweeps.run_store import SweepDir, read_attempts

    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    store = tiny_store(args.out / "tokens")
    widths = [16, 24, 32, 40][: max(1, args.runs // 2)]
    per_width = -(-args.runs // len(widths))
    tokens = [args.steps * 256 * (1 + i / 2) for i in range(per_width)]
    grid = args.out / "grid.toml"
    grid.write_text(GRID.format(data=store, widths=widths, tokens=tokens))

    start = time.perf_counter()
    status = run_sweep(grid, args.out / "sweep", num_cpus=args.cpus, progress=False)
    wall = time.perf_counter() - start
    sweep = SweepDir(args.out / "sweep")
    attempts = [a for r in status["runs"] for a in read_attempts(sweep.run_dir(r["run_id"]))]
    run_seconds = [a["wall_s"] for a in attempts if a.get("event") == "finished"]
    first = min(a["time"] for a in attempts if a.get("event") == "started")
    last = max(a["time"] for a in attempts if a.get("event") == "finished")
    parallel = min(args.cpus, len(run_seconds))
    ideal = sum(run_seconds) / parallel
    print(json.dumps({
        "runs": len(run_seconds), "parallel": parallel, "sum_run_seconds": round(sum(run_seconds), 2),
        "longest_run_seconds": round(max(run_seconds), 2), "ideal_wall_seconds": round(ideal, 2),
        "wall_seconds": round(wall, 2), "scheduling_seconds": round(last - first, 2),
        "ratio_end_to_end": round(wall / ideal, 3), "ratio_scheduling": round((last - first) / ideal, 3),
    }))


if __name__ == "__main__":
    main()
