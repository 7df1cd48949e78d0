"""`scaling sweep status DIR`: what a sweep directory holds, read from its files alone, so it works while
the sweep runs elsewhere (a run is `running` while a live process holds its lock)."""

from __future__ import annotations

import math
from pathlib import Path

from rich.table import Table

from scaling.common.errors import InputError
from scaling.train.run_dir import FINISHED, RunDir
from sweeps.run_store import SweepDir, read_attempts

STATES = ("finished", "running", "pending", "failed", "diverged")


def sweep_status(root: str | Path) -> dict:
    sweep = SweepDir(root)
    if not sweep.exists():
        raise InputError(f"{root}: not a sweep directory (no sweep.json); expected the --out of `scaling sweep run`")
    plan = sweep.read_plan()
    results = sweep.read_results()
    in_results = set(results["run_id"].astype(str)) if len(results) else set()
    runs, counts = [], dict.fromkeys(STATES, 0)
    for record in plan["runs"]:
        state = sweep.run_state(record["run_id"])
        counts[state.status] += 1
        run_dir = sweep.run_dir(record["run_id"])
        step, train_loss = _latest(run_dir)
        attempts = [a for a in read_attempts(run_dir) if a.get("event") == "started"]
        summary = state.summary or {}
        runs.append({
            "run_id": record["run_id"], "status": state.status, "role": record["role"],
            "budget": record["budget"], "params": record["params"], "tokens": record["tokens"],
            "unique_tokens": record.get("unique_tokens"), "epochs": record.get("epochs"),
            "steps": record["steps"], "step": step, "train_loss": train_loss,
            "val_loss": summary.get("val_loss") if state.status == FINISHED else None,
            "attempts": len(attempts), "in_results": record["run_id"] in in_results,
            "est_seconds": record.get("est_seconds"), "detail": state.detail,
            "traceback": str(RunDir(run_dir).traceback_path)
            if state.status == "failed" and RunDir(run_dir).traceback_path.is_file() else None,
        })
    remaining = sum(r["est_seconds"] or 0.0 for r in runs if r["status"] in ("pending", "running", "failed"))
    return {
        "dir": str(sweep.root), "name": plan.get("name"), "kind": plan.get("kind"), "n_runs": len(runs),
        "counts": counts, "results_rows": len(results),
        "results": str(sweep.results_path) if sweep.results_path.is_file() else None,
        "est_remaining_run_seconds": remaining, "runs": runs,
    }


def _latest(run_dir: Path) -> tuple[int | None, float | None]:
    row = RunDir(run_dir).latest_metrics()
    if row is None:  # no metrics yet (or the file is being replaced)
        return None, None
    loss = float(row["train_loss"])
    return int(row["step"]), loss if math.isfinite(loss) else None


def status_table(status: dict) -> Table:
    counts = ", ".join(f"{v} {k}" for k, v in status["counts"].items() if v)
    table = Table(title=f"{status['name']} ({status['kind']}): {status['n_runs']} runs: {counts}")
    for column in ("run id", "status", "budget", "N", "D", "step", "train loss", "val loss", "tries"):
        table.add_column(column, justify="left" if column in ("run id", "status") else "right")
    colour = {"finished": "green", "running": "cyan", "failed": "red", "diverged": "yellow", "pending": "white"}
    for r in status["runs"]:
        table.add_row(
            r["run_id"], f"[{colour[r['status']]}]{r['status']}[/]",
            "-" if r["budget"] is None else f"{r['budget']:.3g}", f"{r['params']:,}", f"{r['tokens']:,}",
            "-" if r["step"] is None else f"{r['step']:,}/{r['steps']:,}",
            "-" if r["train_loss"] is None else f"{r['train_loss']:.4f}",
            "-" if r["val_loss"] is None else f"{r['val_loss']:.4f}", str(r["attempts"]),
        )
    failed = [r for r in status["runs"] if r["status"] == "failed"]
    lines = [f"results.parquet: {status['results_rows']} rows"]
    lines += [f"failed {r['run_id']}: {(r['detail'] or '').splitlines()[0] if r['detail'] else ''}"
              + (f" (traceback: {r['traceback']})" if r["traceback"] else "") for r in failed]
    table.caption = "\n".join(lines)
    return table
