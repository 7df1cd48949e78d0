"""The sweep directory: where every run of a sweep lives and the results table the fits read.

    OUT/sweep.json        the grid, where it came from, and every planned run (id, role, budget, N, D, C)
    OUT/runs/<run_id>/    one run directory each (scaling.train.trainer), plus attempts.jsonl (who ran it, when)
    OUT/results.parquet   one row per finished run (docs/contracts.md, "Results table"), rewritten atomically
    OUT/curves.parquet    run_id, step, tokens, loss (train loss per logged step), val_loss: approach 1

Run ids are a function of the run config (the token store by its content, not its path), so the same
run has the same directory whoever launches it, and a re-launched sweep finds what is already done.
Only the sweep driver writes results.parquet and curves.parquet; both are rebuilt from the run
directories whenever they miss a finished run, so a driver killed at any point loses nothing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from scaling.common.atomic import write_file_atomic, write_json_atomic
from scaling.train.config import parse_run_config
from scaling.train.run_dir import DONE, FAILED, RunDir

RESULT_COLUMNS = [
    "run_id", "status", "params", "params_nonembed", "tokens", "loss", "flops", "flops_6n", "flops_detailed",
    "budget", "train_loss", "val_loss", "tokens_per_param", "size", "role", "d_model", "n_layers", "n_heads",
    "n_kv_heads", "d_ff", "vocab_size", "seq_len", "batch_size", "steps", "lr", "seed", "tokens_per_s",
    "wall_s", "unique_tokens", "epochs",
]
CURVE_COLUMNS = ["run_id", "step", "tokens", "loss", "val_loss"]


def data_identity(data: str | Path) -> str:
    """The token store by content, not path, so a moved or re-made store keeps its run ids: its vocabulary,
    and per split the sizes and the first and last MiB of its token and offset arrays (cheap at any size;
    stats.json is left out, it records the time tokenization took)."""
    path = Path(data)
    if not (path / "vocab.json").is_file():
        return f"path:{path}"
    digest = hashlib.sha256((path / "vocab.json").read_bytes())
    for split in sorted(p for p in path.iterdir() if p.is_dir()):
        for name in ("tokens.npy", "offsets.npy"):
            if (split / name).is_file():
                digest.update(f"{split.name}/{name}:{(split / name).stat().st_size}".encode())
                digest.update(_ends(split / name))
    return f"store:{digest.hexdigest()[:16]}"


def _ends(path: Path, size: int = 1 << 20) -> bytes:
    with open(path, "rb") as f:
        head = f.read(size)
        f.seek(max(0, path.stat().st_size - size))
        return head + f.read(size)


def make_run_id(config: dict, identity: str, params: int, tokens: int, parent: str | None,
                parent_step: int | None) -> str:
    """`n<N>-d<D>-<hash>`: readable size and tokens, and a hash of everything that makes the run; a run on a
    subset of the train data (train.unique_tokens = U) reads `n<N>-d<D>-u<U>-<hash>`."""
    keyed = {**_typed_as_given(config), "data": identity, "parent": parent, "parent_step": parent_step}
    digest = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:10]
    unique = (config.get("train") or {}).get("unique_tokens")
    return f"n{_short(params)}-d{_short(tokens)}-" + (f"u{_short(unique)}-" if unique is not None else "") + digest


def _typed_as_given(config: dict) -> dict:
    """The config's own keys with the run config's types (lr = 1 and lr = 1.0 are one run); defaults are left
    out, so a field added to the run config later does not change existing run ids."""
    full = parse_run_config(config).to_dict()
    return {key: ({k: full[key][k] for k in value} if isinstance(value, dict) else full[key])
            for key, value in config.items()}


def _short(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


@dataclass(frozen=True)
class RunState:
    run_id: str
    status: str  # pending | running | finished | diverged | failed
    summary: dict | None
    detail: str = ""


class SweepDir:
    """Paths and files of one sweep directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root).absolute()

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def results_path(self) -> Path:
        return self.root / "results.parquet"

    @property
    def curves_path(self) -> Path:
        return self.root / "curves.parquet"

    @property
    def sweep_json(self) -> Path:
        return self.root / "sweep.json"

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def exists(self) -> bool:
        return self.sweep_json.is_file()

    # -- the plan -----------------------------------------------------------------------------------------

    def write_plan(self, plan: dict) -> None:
        """sweep.json: the grid and its runs. Runs planned by an earlier, different grid are kept listed."""
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        if self.sweep_json.is_file():
            old = json.loads(self.sweep_json.read_text())
            ids = {r["run_id"] for r in plan["runs"]}
            plan = {**plan, "earlier_runs": [r for r in old.get("runs", []) + old.get("earlier_runs", [])
                                             if r["run_id"] not in ids]}
        write_json_atomic(self.sweep_json, plan)

    def read_plan(self) -> dict:
        return json.loads(self.sweep_json.read_text())

    # -- run states ---------------------------------------------------------------------------------------

    def run_state(self, run_id: str) -> RunState:
        run_dir = self.run_dir(run_id)
        summary = RunDir(run_dir).read_summary()
        if summary is not None and summary.get("status") in DONE:
            return RunState(run_id, summary["status"], summary, summary.get("message", ""))
        if _lock_held(run_dir / ".lock"):
            return RunState(run_id, "running", summary)
        if summary is not None and summary.get("status") == FAILED:
            return RunState(run_id, FAILED, summary, summary.get("message", ""))
        attempts = read_attempts(run_dir)
        if attempts and attempts[-1].get("event") == FAILED:
            return RunState(run_id, FAILED, summary, attempts[-1].get("message", ""))
        return RunState(run_id, "pending", summary)

    # -- results ------------------------------------------------------------------------------------------

    def read_results(self) -> pd.DataFrame:
        if self.results_path.is_file():
            return pd.read_parquet(self.results_path)
        return pd.DataFrame(columns=RESULT_COLUMNS)

    def add_results(self, rows: list[dict], curves: list[pd.DataFrame]) -> int:
        """Append finished runs to results.parquet and curves.parquet (each rewritten atomically, curves
        first, so a results row never lacks its curve); a run already in the table is not added again.
        Returns the number of rows added."""
        results = self.read_results()
        have = set(results["run_id"].astype(str)) if len(results) else set()
        new_rows = [r for r in rows if r["run_id"] not in have]
        if not new_rows:
            return 0
        new_ids = {r["run_id"] for r in new_rows}
        new_curves = [c for c in curves if len(c) and c["run_id"].iloc[0] in new_ids]
        if new_curves:
            old = pd.read_parquet(self.curves_path) if self.curves_path.is_file() else None
            frames = ([old[~old["run_id"].isin(new_ids)]] if old is not None else []) + new_curves
            write_file_atomic(self.curves_path, pd.concat(frames, ignore_index=True).to_parquet(index=False))
        frame = pd.DataFrame(new_rows)
        frame = pd.concat([results, frame], ignore_index=True) if len(results) else frame
        frame = frame.drop_duplicates("run_id", keep="first")
        if frame["budget"].isna().all():
            frame = frame.drop(columns=["budget"])  # no IsoFLOP budgets: the fitter groups runs itself
        write_file_atomic(self.results_path, frame.to_parquet(index=False))
        return len(new_rows)


def result_row(run: dict, summary: dict, run_dir: Path) -> dict:
    """The results-table row of a finished run: `run` is a planned run's record in sweep.json."""
    shape = summary.get("shape") or run.get("shape") or {}
    config = run.get("config", {})
    train = config.get("train", {})
    attempts = read_attempts(run_dir)
    wall = sum(a.get("wall_s", 0.0) for a in attempts if a.get("event") in (*DONE, FAILED))
    # Unique train tokens the run drew from: its summary (runs trained before it was recorded: the plan's).
    unique = _float(summary.get("unique_tokens", run.get("unique_tokens")))
    return {
        "run_id": run["run_id"], "status": summary["status"], "params": int(summary["params"]),
        "params_nonembed": int(summary["params_nonembed"]), "tokens": int(summary["tokens"]),
        "loss": _float(summary.get("val_loss")), "flops": float(run.get("flops", summary["flops"])),
        "flops_6n": float(summary["flops"]), "flops_detailed": _float(summary.get("flops_detailed")),
        "budget": _float(run.get("budget")), "train_loss": _float(summary.get("train_loss")),
        "val_loss": _float(summary.get("val_loss")),
        "tokens_per_param": summary["tokens"] / summary["params"], "size": _float(run.get("size")),
        "role": run.get("role", "run"), **{k: shape.get(k) for k in ("d_model", "n_layers", "n_heads",
                                                                       "n_kv_heads", "d_ff", "vocab_size")},
        "seq_len": train.get("seq_len"), "batch_size": train.get("batch_size"), "steps": summary.get("steps"),
        "lr": train.get("lr"), "seed": config.get("seed"), "tokens_per_s": _float(summary.get("tokens_per_s")),
        "wall_s": wall or math.nan,
        "unique_tokens": unique, "epochs": summary["tokens"] / unique if unique > 0 else math.nan,
    }


def run_curve(run_id: str, run_dir: Path) -> pd.DataFrame:
    """The run's logged training curve: train loss at every logged step (val_loss where evaluated)."""
    metrics = RunDir(run_dir).read_metrics()
    if metrics is None:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    metrics = metrics[metrics["train_loss"].notna() & (metrics["tokens"] > 0)]
    return pd.DataFrame({
        "run_id": run_id, "step": metrics["step"].astype("int64"), "tokens": metrics["tokens"].astype("int64"),
        "loss": metrics["train_loss"].astype(float), "val_loss": metrics["val_loss"].astype(float),
    })[CURVE_COLUMNS]


def read_attempts(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "attempts.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a killed writer
            continue
    return out


def append_attempt(run_dir: Path, record: dict) -> None:
    """One line per event of a run's attempts (started, finished, diverged, failed), appended."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "attempts.jsonl", "a") as f:
        f.write(json.dumps(record, default=str) + "\n")


def _lock_held(path: Path) -> bool:
    """True when a live process holds the run's lock (a running training task)."""
    if not path.is_file():
        return False
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def _float(x) -> float:
    return math.nan if x is None else float(x)
