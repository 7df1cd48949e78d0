"""`scaling final`: train the compute-optimal model a results table recommends, and compare the loss
the fit predicted with the loss the run reaches.

The final run copies the training settings of the sweep that made the table (batch size, context,
learning rate, schedule, window mode, evaluation set), read from one of its runs' config.json, so the
prediction and the run are about the same quantity. Only the shape and the token budget change.
The run directory gets the regular trainer files plus `recommendation.json` (what the fit said) and
`prediction.json` (predicted loss with its interval, actual loss, relative error). Re-running resumes
the run from its last checkpoint and never refits a recommendation it already wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

from scaling.atomic import write_json_atomic
from scaling.errors import InputError

# Train settings the final run takes from the sweep; the rest follows from the new token budget.
COPIED_TRAIN_KEYS = ("batch_size", "seq_len", "lr", "schedule", "cooldown_fraction", "min_lr_ratio", "weight_decay",
                     "beta1", "beta2", "grad_clip", "eval_tokens", "window_mode", "dtype", "steps_per_dispatch",
                     "log_every")


def sweep_train_settings(results: Path) -> tuple[dict, str | None]:
    """The [train] table and data path of a run of the sweep that wrote `results` (empty if none found)."""
    for config_path in sorted((Path(results).parent / "runs").glob("*/config.json")):
        record = json.loads(config_path.read_text())
        config = record.get("config", record)
        return {k: v for k, v in config.get("train", {}).items() if k in COPIED_TRAIN_KEYS}, config.get("data")
    return {}, None


def recommendation_for(results: Path, compute: float, data: str | None, bootstrap: int, approach: str,
                       report=None, log=print) -> tuple[dict, dict]:
    """Fit the table (unless given its fit report) and return (recommendation JSON, run config dict)."""
    from analysis.fit_report import fit_all
    from analysis.recommend import final_run_settings, recommend_compute_optimal
    from analysis.results_table import load_results
    from scaling.token_store import TokenStore

    train, sweep_data = sweep_train_settings(results)
    data = data or sweep_data
    if data is None:
        raise InputError(f"{results}: no sweep run configs beside it to take the data path from; pass --data TOK_DIR")
    store = TokenStore.open(data)
    seq_len = int(train.get("seq_len", 128))
    if report is None:
        log(f"fitting {results} (bootstrap {bootstrap}) for the compute-optimal model at C = {compute:.3g} FLOPs")
        report = fit_all(load_results(results), bootstrap=bootstrap, compute=compute)
    rec = recommend_compute_optimal(report, compute, approach, vocab_size=store.vocab.size, seq_len=seq_len)
    if rec.get("shape") is None or rec.get("tokens") is None:
        raise InputError(f"{results}: no recommendation at C = {compute:.3g}: {'; '.join(rec.get('warnings', []))}")
    settings = final_run_settings(rec["tokens"], seq_len=seq_len, batch_size=int(train.get("batch_size", 16)),
                                  lr=float(train.get("lr", 3e-3)))
    model = {k: rec["shape"][k] for k in ("d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff")}
    config = {"data": str(data), "seed": 0, "model": model, "train": {**train, **settings}}
    law = report.to_json().get("approach3")
    if law:
        rec["law"] = {k: law[k] for k in ("E", "A", "B", "alpha", "beta")}
    return rec, config


def law_loss(law: dict, params: float, tokens: float) -> float:
    """L(N, D) = E + A / N^alpha + B / D^beta."""
    return law["E"] + law["A"] / params ** law["alpha"] + law["B"] / tokens ** law["beta"]


def final_run(results: str | Path, compute: float, out: str | Path, *, data: str | None = None, bootstrap: int = 200,
              approach: str = "approach3", report=None, log=print, progress: bool = True) -> dict:
    from scaling.trainer import train_run

    out = Path(out)
    rec_path = out / "recommendation.json"
    if rec_path.is_file():
        saved = json.loads(rec_path.read_text())
        rec, config = saved["recommendation"], saved["config"]
        if rec["compute"] != compute:
            raise InputError(f"{rec_path}: was made for C = {rec['compute']:.3g}, not {compute:.3g}; use another --out")
        log(f"reusing {rec_path}")
    else:
        rec, config = recommendation_for(Path(results), compute, data, bootstrap, approach, report, log)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(rec_path, {"results": str(results), "recommendation": rec, "config": config})
    shape = rec["shape"]
    log(f"final run: N = {rec['params']:.3g} (ladder shape d_model {shape['d_model']}, {shape['n_layers']} layers), "
        f"D = {rec['tokens']:.3g} tokens, predicted loss {rec['predicted_loss']:.4f}")
    summary = train_run(config, out, progress=progress)
    # The ladder's shape and whole steps move N and D a little off the recommendation: the law is asked
    # again at the run's own N and D, which is the prediction the run tests.
    actual = summary.get("val_loss")
    law = rec.get("law")
    predicted = law_loss(law, summary["params"], summary["tokens"]) if law else rec["predicted_loss"]
    prediction = {
        "compute": compute,
        "approach": rec["approach"],
        "predicted_loss": predicted,
        "predicted_loss_at_recommendation": rec["predicted_loss"],
        "predicted_loss_ci": rec["ci"].get("predicted_loss"),
        "actual_loss": actual,
        "relative_error": None if actual is None else (actual - predicted) / predicted,
        "params": summary.get("params"),
        "tokens": summary.get("tokens"),
        "flops": summary.get("flops"),
        "status": summary.get("status"),
    }
    write_json_atomic(out / "prediction.json", prediction)
    return prediction
