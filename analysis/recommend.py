"""The compute-optimal model at a budget C: N and D from the chosen approach (approach 3 by default; the
others side by side), tokens per parameter, the loss approach 3 predicts there, bootstrap intervals, the
concrete shape from the model ladder, and a run config the trainer accepts (the final run). Where the
unique train tokens U are known (an argument, else the table's largest `unique_tokens`) and the
data-constrained law was fitted, also the optimum under that data cap (`data_constrained`).

`recommend_compute_optimal(report, C)` returns the JSON of `scaling recommend --json`
(docs/contracts.md, "JSON contracts").
"""

from __future__ import annotations

import math

from analysis.data_constrained import WARN_EPOCHS, cap_analysis
from analysis.fit_report import APPROACHES, FitReport
from analysis.shape_family import ASPECT_SLACK, family_check, swept_family
from models.ladder import shape_for_params
from scaling.common.errors import InputError
from scaling.common.jsonable import jsonable

DEFAULT_VOCAB_SIZE = 512
DEFAULT_SEQ_LEN = 512
DEFAULT_BATCH_SIZE = 16
DEFAULT_LR = 3e-3
DATA_PLACEHOLDER = "EDIT-ME/path/to/token_store"


def approach_point(report: FitReport, approach: str, compute: float) -> dict | None:
    """N, D, D/N and predicted loss at `compute` from one approach (None if it did not run)."""
    fit = report.fit(approach)
    if fit is None:
        return None
    if approach == "approach3" and report.pricing is not None:
        params, tokens = report.pricing.optimum(fit.law, compute)
    else:
        params, tokens = float(fit.optimal_params(compute)), float(fit.optimal_tokens(compute))
    point = {"params": params, "tokens": tokens, "tokens_per_param": tokens / params, "predicted_loss": None}
    if report.approach3 is not None:
        point["predicted_loss"] = float(report.approach3.predict(params, tokens))
    elif report.single_variable.get("loss_vs_compute") is not None:
        point["predicted_loss"] = float(report.single_variable["loss_vs_compute"](compute))
    return point


def model_shape_for(params: float, vocab_size: int, max_seq_len: int, family: dict | None = None) -> dict:
    """The ladder's shape for a target parameter count, in the swept family when it is known."""
    settings = {} if family is None else {"aspect_ratio": family["aspect_ratio"], "min_layers": family["min_layers"],
                                          "aspect_band": ASPECT_SLACK}
    return shape_for_params(params, vocab_size=vocab_size, max_seq_len=max_seq_len, **settings).to_dict()


def recommend_compute_optimal(
    report: FitReport,
    compute: float,
    approach: str = "approach3",
    vocab_size: int | None = None,
    seq_len: int = DEFAULT_SEQ_LEN,
    unique_tokens: float | None = None,
) -> dict:
    """The recommendation at `compute` FLOPs; falls back to the next available approach with a warning.
    `unique_tokens`: the data cap U [default: the one the report's bootstrap used, else the table's largest
    `unique_tokens`]."""
    if unique_tokens is not None and not (math.isfinite(unique_tokens) and unique_tokens > 0):
        raise InputError(f"unique_tokens = {unique_tokens} is not a positive number of tokens",
                         field="unique_tokens")  # fmt: skip
    warnings: list[str] = []
    chosen = approach
    if report.fit(approach) is None:
        available = [name for name in reversed(APPROACHES) if report.fit(name) is not None]
        if not available:
            warnings.append("recommend: no approach could be fitted to this table")
            chosen = None
        else:
            chosen = available[0]
            warnings.append(f"recommend: {approach} is unavailable; using {chosen}")
    side_by_side = {name: approach_point(report, name, compute) for name in APPROACHES}
    point = side_by_side.get(chosen) or {}
    largest_budget = float(report.table.runs["flops"].max())
    vocab = vocab_size or report.table.vocab_size or DEFAULT_VOCAB_SIZE
    shape = None
    family = swept_family(report.table)
    if point:
        shape = model_shape_for(point["params"], vocab, seq_len, family)
    family_fit, family_warnings = family_check(family, shape)
    warnings += family_warnings
    ci = {"params": None, "tokens": None, "tokens_per_param": None, "predicted_loss": None}
    if report.bootstrap is not None and chosen is not None:
        for key, sample in (("params", "optimal_params"), ("tokens", "optimal_tokens"),
                            ("tokens_per_param", "tokens_per_param"), ("predicted_loss", "predicted_loss")):
            interval = report.bootstrap.interval(f"{chosen}.{sample}")
            ci[key] = None if interval is None else list(interval)  # fmt: skip
    if compute > 1000 * largest_budget:
        warnings.append(
            f"recommend: {compute:.3g} FLOPs is {compute / largest_budget:.0f}x the largest run; "
            "check the backtest before trusting this extrapolation"
        )
    capped = data_constrained_recommendation(report, compute, unique_tokens, point, warnings)
    return jsonable(
        {
            "compute": compute,
            "params": point.get("params"),
            "tokens": point.get("tokens"),
            "tokens_per_param": point.get("tokens_per_param"),
            "predicted_loss": point.get("predicted_loss"),
            "ci": ci,
            "shape": shape,
            "family": family_fit,
            "compute_pricing": None if report.pricing is None else report.pricing.to_json(),
            "approach": chosen,
            "approaches": side_by_side,
            "vocab_size": vocab,
            "extrapolation_factor": compute / largest_budget,
            "bootstrap": None if report.bootstrap is None else report.bootstrap.n,
            "data_constrained": capped,
            "warnings": report.warnings + warnings,
        }
    )


def data_constrained_recommendation(
    report: FitReport, compute: float, unique_tokens: float | None, point: dict, warnings: list[str]
) -> dict | None:
    """The optimum under a cap of U unique tokens from the data-constrained law, with bootstrap intervals
    (when the bootstrap ran at the same U): `unconstrained` (the same law with fresh data), `constrained`,
    `loss_cost` (constrained minus unconstrained loss), `double_compute` and `double_unique_tokens` (the
    constrained optimum with 2C, or with 2U) and which of the two buys more. None when U is unknown or
    the law could not be fitted; appends its warnings."""
    table_cap = report.table.unique_tokens
    if unique_tokens is None:
        unique_tokens = report.unique_tokens if report.unique_tokens is not None else table_cap
    source = "results table (largest unique_tokens)" if unique_tokens == table_cap else "given"
    if unique_tokens is None:
        return None
    if point.get("tokens") is not None and point["tokens"] > unique_tokens * (1 + 1e-9):
        warnings.append(
            f"recommend: {point['tokens']:.3g} tokens are {point['tokens'] / unique_tokens:.3g} epochs over "
            f"{unique_tokens:.3g} unique tokens, but this law assumes every token is new; see data_constrained"
        )
    fit = report.data_constrained
    if fit is None:
        warnings.append(
            f"recommend: no data-constrained optimum at {unique_tokens:.3g} unique tokens: its law could not be "
            "fitted (see the data_constrained warning)"
        )
        return None
    k = fit.flops_per_param_token
    cap = cap_analysis(fit.law, compute, unique_tokens, k, fit.last_helpful_epochs)
    bootstrap = report.bootstrap
    same_cap = bootstrap is not None and report.unique_tokens == unique_tokens

    def interval(name: str) -> list[float] | None:
        found = bootstrap.interval(f"data_constrained.{name}") if same_cap else None
        return None if found is None else list(found)

    cap["constrained"]["ci"] = {key: interval(f"constrained.{key}") for key in
                                ("params", "tokens", "tokens_per_param", "epochs", "predicted_loss")}  # fmt: skip
    cap["unconstrained"]["ci"] = {"predicted_loss": interval("unconstrained.predicted_loss")}
    cap["loss_cost_ci"] = interval("loss_cost")
    cap["double_compute"]["ci"] = {"predicted_loss": interval("double_compute.predicted_loss")}
    cap["double_unique_tokens"]["ci"] = {"predicted_loss": interval("double_unique_tokens.predicted_loss")}
    epochs = cap["constrained"]["epochs"]
    if cap["constrained"]["limited_by_epochs"]:
        warnings.append(
            f"recommend: the data-constrained optimum is held at {epochs:.3g} epochs, the most that still helped "
            f"in the sweep before more made a run worse; the law alone would repeat the data more"
        )
    if epochs > WARN_EPOCHS:
        warnings.append(
            f"recommend: the data-constrained optimum trains {epochs:.3g} epochs over {unique_tokens:.3g} unique "
            f"tokens (more than {WARN_EPOCHS:g}): repeats are worth less than fresh data there, and the "
            f"prediction leans on R*_D = {fit.R_D_star:.3g}; more unique data is worth considering"
        )
    return {"unique_tokens": unique_tokens, "unique_tokens_source": source, "law": fit.law.to_json(), **cap,
            "overfit_run_ids": list(fit.overfit_run_ids),
            "last_helpful_epochs": fit.last_helpful_epochs if math.isfinite(fit.last_helpful_epochs) else None}


def final_run_settings(
    tokens: float, seq_len: int = DEFAULT_SEQ_LEN, batch_size: int = DEFAULT_BATCH_SIZE, lr: float = DEFAULT_LR
) -> dict:
    """The [train] table of the final run: steps follow from the tokens; warm-up is 2% of the steps
    (10 to 1,000), about 100 evaluations and 10 checkpoints over the run."""
    steps = max(1, math.ceil(tokens / (batch_size * seq_len)))
    eval_every = max(10, steps // 100)
    return {
        "tokens": float(steps * batch_size * seq_len),  # whole steps
        "batch_size": batch_size,
        "seq_len": seq_len,
        "lr": lr,
        "schedule": "cosine",
        "warmup_steps": min(1000, max(10, round(0.02 * steps)), steps - 1),
        "eval_every": eval_every,
        "checkpoint_every": max(eval_every, (steps // 10) // eval_every * eval_every),
    }


def run_config_toml(shape: dict, train: dict, data: str | None = None, seed: int = 0, note: str = "") -> str:
    """A run config for `scaling train` (the final run)."""

    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float):
            return repr(v)  # exact, and always valid TOML (1e+16, 0.003, 20480000.0)
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    model_keys = ("d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "vocab_size", "max_seq_len")
    lines = [f"# {line}" for line in note.splitlines()]
    if data is None:
        lines.append("# EDIT the data path below: a token store made by `scaling data tokenize MEDS_DIR --out DIR`")
    lines += [f"data = {value(data or DATA_PLACEHOLDER)}", f"seed = {seed}", "", "[model]"]
    lines += [f"{key} = {value(shape[key])}" for key in model_keys if key in shape]
    if "tied_embeddings" in shape:
        lines.append(f"tied_embeddings = {value(shape['tied_embeddings'])}")
    lines += ["", "[train]"] + [f"{key} = {value(v)}" for key, v in train.items()]
    return "\n".join(lines) + "\n"
