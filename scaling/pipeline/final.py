"""`scaling final`: train the compute-optimal model a results table recommends, and compare the loss
the fit predicted with the loss the run reaches.

The final run copies the training settings of the sweep that made the table (batch size, context,
learning rate, schedule, window mode, evaluation set, and the model's parametrization), read from one of its
runs' config.json, so the prediction and the run are about the same quantity. Only the shape and the token
budget change; and with `hyperparameters` (the results table of a learning-rate x batch-size side sweep,
analysis.hyperparameter_laws) the learning rate and batch size come from the laws fitted there, evaluated at
the final budget. recommendation.json's `hyperparameters` records every training setting the run gets and
where it came from.
The run directory gets the regular trainer files plus `recommendation.json` (what the fit said),
`forecast.json` (the pre-registered forecast, analysis.forecast: the loss at the run's own N and D with its
interval and the hash of the runs it was fitted on, written before training starts and never rewritten) and
`prediction.json` (the forecast against the actual loss). Re-running resumes the run from its last checkpoint
and never refits a recommendation or a forecast it already wrote.

Where it trains: in this process on all local devices, or, given a `Cluster`, as Ray tasks on that cluster:
one task with the requested CPUs and GPUs, or one per node (a STRICT_SPREAD placement group) that join
one JAX program with `jax.distributed.initialize`. This process fits and writes recommendation.json and
prediction.json either way; the tasks only train, so the run directory must be on storage every node sees.
"""

from __future__ import annotations

import contextlib
import json
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.data_constrained import check_repeated_data
from analysis.fit_report import fit_all
from analysis.forecast import forecast_capped_run, forecast_run, grade
from analysis.hyperparameter_laws import fit_hyperparameter_laws
from analysis.loss_law import LAW_KEYS, DataConstrainedLaw, LossLaw
from analysis.recommend import final_run_settings, model_shape_for, recommend_compute_optimal
from analysis.results_table import NotEnoughData, load_results
from analysis.shape_family import family_check, swept_family
from models.accounting import count_params
from models.config import ModelShape
from scaling.common.atomic import write_json_atomic
from scaling.common.errors import InputError
from scaling.data.token_store import TokenStore, meds_dir_of_store, train_subset
from scaling.synth.generate import world_settings
from scaling.synth.replay import ReplayMismatch, patients_floor
from scaling.train.batches import patient_evaluation_windows
from scaling.train.config import TrainSection
from scaling.train.run_dir import RunDir
from sweeps.cluster import connect_ray, runtime_env, worker_env

# Train settings the final run takes from the sweep; the rest follows from the new token budget.
COPIED_TRAIN_KEYS = ("batch_size", "seq_len", "lr", "schedule", "cooldown_fraction", "min_lr_ratio", "weight_decay",
                     "beta1", "beta2", "grad_clip", "eval_tokens", "window_mode", "dtype", "steps_per_dispatch",
                     "log_every", "short_seq_len", "short_seq_fraction")


# Model settings the final run takes from the sweep: the parametrization its settings were tuned under.
COPIED_MODEL_KEYS = ("parametrization", "mup_base_d_model")


def sweep_train_settings(results: Path) -> tuple[dict, str | None, dict]:
    """The [train] table, data path and copied [model] settings of a run of the sweep that wrote `results`
    (empty if none found)."""
    runs = sorted(Path(results).parent.glob("runs/*"))
    for run in (RunDir(path) for path in runs):
        if not run.is_run():
            continue
        record = run.read_record()
        config = record.get("config", record)
        model = {k: v for k, v in config.get("model", {}).items() if k in COPIED_MODEL_KEYS and v is not None}
        if model.get("parametrization") == "standard":
            model = {}
        return ({k: v for k, v in config.get("train", {}).items() if k in COPIED_TRAIN_KEYS}, config.get("data"),
                model)
    return {}, None, {}


def recommendation_for(results: Path, compute: float, data: str | None, bootstrap: int, approach: str,
                       report=None, log=print, hyperparameters: Path | None = None,
                       unique_tokens: float | None = None,
                       min_budget: float | None = None) -> tuple[dict, dict, object]:
    """Fit the table (unless given its fit report) and return (recommendation JSON, run config dict, fit report).
    `unique_tokens`: train on a nested subset of that many train tokens, at the data-constrained optimum.
    `min_budget`: fit only the runs of budgets at least that large (analysis.results_table.from_budget)."""
    train, sweep_data, sweep_model = sweep_train_settings(results)
    data = data or sweep_data
    if data is None:
        raise InputError(f"{results}: no sweep run configs beside it to take the data path from; pass data TOK_DIR",
                         field="data")
    store = TokenStore.open(data)
    seq_len = int(train.get("seq_len", 128))
    if unique_tokens is not None:  # refused before the fit: more than the store holds, or too few for a window,
        train_subset(store, unique_tokens, seq_len + 1, field="unique_tokens")
        try:  # or a table without the runs that repeat data the data-constrained law needs
            check_repeated_data(load_results(results, min_budget=min_budget))
        except NotEnoughData as e:
            raise InputError(f"{results}: no optimum under unique_tokens = {unique_tokens:g}: the data-constrained "
                             f"law could not be fitted ({e})", field="unique_tokens") from None
    # the side sweep first: a table that cannot give laws is refused before the long fit starts
    laws = None if hyperparameters is None else hyperparameter_laws(hyperparameters, compute, bootstrap)
    if report is None:
        log(f"fitting {results} (bootstrap {bootstrap}) for the compute-optimal model at C = {compute:.3g} FLOPs")
        report = fit_all(load_results(results, min_budget=min_budget), bootstrap=bootstrap, compute=compute,
                         unique_tokens=unique_tokens)
    rec = recommend_compute_optimal(report, compute, approach, vocab_size=store.vocab.size, seq_len=seq_len,
                                    unique_tokens=unique_tokens)
    if rec.get("shape") is None or rec.get("tokens") is None:
        raise InputError(f"{results}: no recommendation at C = {compute:.3g}: {'; '.join(rec.get('warnings', []))}")
    if unique_tokens is not None:
        rec = at_data_constrained_optimum(rec, report, results, unique_tokens, store.vocab.size, seq_len)
        train["unique_tokens"] = float(unique_tokens)
    lr, batch_size = float(train.get("lr", 3e-3)), int(train.get("batch_size", 16))
    sources = {key: f"copied from the sweep ({Path(results).parent})" for key in train}
    if unique_tokens is not None:
        sources["unique_tokens"] = "the data cap (--unique-tokens)"
    if laws is not None:
        lr = laws["lr_at_compute"]
        law = laws["lr_law"]
        sources["lr"] = f"law of {hyperparameters}: {law['coefficient']:.4g} C^{law['exponent']:.4f}"
        if laws["batch_size_at_compute"] is not None:
            batch_size = max(1, round(laws["batch_size_at_compute"]))
            law = laws["batch_size_law"]
            sources["batch_size"] = (f"law of {hyperparameters}: {law['coefficient']:.4g} C^{law['exponent']:.4f}, "
                                     "rounded")
        rec["hyperparameter_laws"] = laws
    settings = final_run_settings(rec["tokens"], seq_len=seq_len, batch_size=batch_size, lr=lr)
    model = {k: rec["shape"][k] for k in ("d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff")} | sweep_model
    config = {"data": str(Path(data).absolute()), "seed": 0, "model": model, "train": {**train, **settings}}
    for key in settings:
        sources.setdefault(key, "from the recommended tokens (analysis.recommend.final_run_settings)")
    for key in sweep_model:
        sources[f"model.{key}"] = f"copied from the sweep ({Path(results).parent})"
    rec["hyperparameters"] = {key: {"value": value, "source": sources.get(key, "")}
                              for key, value in {**config["train"], **{f"model.{k}": v for k, v in sweep_model.items()}
                                                 }.items()}
    law = report.to_json().get("approach3")
    if law:
        rec["law"] = {k: law[k] for k in LAW_KEYS}
    return rec, config, report


def at_data_constrained_optimum(rec: dict, report, results: Path, unique_tokens: float, vocab_size: int,
                                seq_len: int) -> dict:
    """The recommendation moved to the optimum under the data cap (N, D, shape, predicted loss and its interval
    from the data-constrained law); the unconstrained one is kept as `unconstrained`."""
    capped = rec.get("data_constrained")
    if capped is None:
        reasons = [w for w in rec["warnings"] if w.startswith("data_constrained")]
        raise InputError(f"{results}: no optimum under unique_tokens = {unique_tokens:g}: the data-constrained law "
                         f"could not be fitted ({'; '.join(reasons) or 'no runs that repeat data'})",
                         field="unique_tokens")
    point = capped["constrained"]
    family = swept_family(report.table)
    shape = model_shape_for(point["params"], vocab_size, seq_len, family)
    _, family_warnings = family_check(family, shape)
    unconstrained = {k: rec[k] for k in ("params", "tokens", "tokens_per_param", "predicted_loss", "ci", "shape")}
    return {**rec, "params": point["params"], "tokens": point["tokens"],
            "tokens_per_param": point["tokens_per_param"], "predicted_loss": point["predicted_loss"],
            "ci": point["ci"], "shape": shape, "unique_tokens": float(unique_tokens), "epochs": point["epochs"],
            "point_from": "data_constrained", "data_constrained_law": capped["law"], "unconstrained": unconstrained,
            "warnings": rec["warnings"] + family_warnings}


def hyperparameter_laws(path: Path, compute: float, bootstrap: int) -> dict:
    """The learning-rate and batch-size laws of a side sweep's results table, evaluated at `compute`."""
    try:
        laws = fit_hyperparameter_laws(load_results(path), bootstrap=min(bootstrap, 200), compute=compute)
    except NotEnoughData as e:
        raise InputError(f"{path}: {e}", field="hyperparameters") from None
    return laws.to_json()


@dataclass(frozen=True)
class Cluster:
    """A Ray cluster to train the final run on, and what each of its `hosts` tasks takes there."""

    address: str
    hosts: int = 1
    gpus: int = 0
    cpus: int = 1


def cluster_for(address: str | None, hosts: int = 1, gpus: int | None = None,
                cpus: int | None = None) -> Cluster | None:
    """The cluster the arguments ask for, or None to train in this process."""
    for name, value, least in (("hosts", hosts, 1), ("gpus", gpus, 0), ("cpus", cpus, 1)):
        if value is not None and value < least:
            raise InputError(f"{name} = {value}: expected an integer >= {least}", field=name)
    if not address:
        for name, value, default in (("hosts", hosts, 1), ("gpus", gpus, None), ("cpus", cpus, None)):
            if value != default:
                raise InputError(f"{name} = {value} is for a run on a Ray cluster and needs address = ADDR (or "
                                 "RAY_ADDRESS); without it the final run trains in this process on all local devices",
                                 field=(name, "address"))
        return None
    return Cluster(address, hosts, gpus or 0, cpus or 1)


def final_run(results: str | Path, compute: float, out: str | Path, *, data: str | None = None, bootstrap: int = 200,
              approach: str = "approach3", report=None, log=print, progress: bool = True,
              cluster: Cluster | None = None, hyperparameters: Path | None = None,
              unique_tokens: float | None = None, min_budget: float | None = None) -> dict:
    """Train the recommendation at `compute` into `out` (here, or on `cluster`) and write prediction.json.
    `hyperparameters`: a side sweep's results table whose laws set the learning rate and batch size.
    `unique_tokens`: a data cap: the run trains at the data-constrained optimum on a nested subset of that many
    train tokens, and its forecast is the data-constrained law's. `min_budget`: the law (recommendation and
    forecast) is fitted only on the runs of budgets at least that large."""
    out = Path(out)
    with connected(cluster) if cluster else contextlib.nullcontext():
        rec, config, report = saved_recommendation(results, compute, out, data, bootstrap, approach, report, log,
                                                   hyperparameters, unique_tokens, min_budget)
        forecast = saved_forecast(results, out, config, bootstrap, report, log, min_budget)
        shape = rec["shape"]
        predicted = "none" if rec.get("predicted_loss") is None else f"{rec['predicted_loss']:.4f}"
        capped = "" if rec.get("unique_tokens") is None else (
            f" ({rec['epochs']:.3g} epochs over {rec['unique_tokens']:.3g} unique tokens)")
        log(f"final run: N = {rec['params']:.3g} (ladder shape d_model {shape['d_model']}, {shape['n_layers']} "
            f"layers), D = {rec['tokens']:.3g} tokens{capped}, predicted loss {predicted}")
        if cluster:
            summary = train_on_cluster(config, out, cluster, log)
        else:
            from scaling.train.trainer import train_run  # lazy: JAX starts here (see train_task)

            summary = train_run(config, out, progress=progress)
    prediction = prediction_record(compute, rec, summary, forecast)
    write_json_atomic(out / "prediction.json", prediction)
    return prediction


def saved_recommendation(results, compute: float, out: Path, data, bootstrap: int, approach: str, report,
                         log, hyperparameters: Path | None = None, unique_tokens: float | None = None,
                         min_budget: float | None = None) -> tuple[dict, dict, object]:
    """The recommendation and run config in out/recommendation.json, made (and written) if missing, and the fit
    report it came from (None when reused)."""
    rec_path = out / "recommendation.json"
    if rec_path.is_file():
        saved = json.loads(rec_path.read_text())
        rec, config = saved["recommendation"], saved["config"]
        if rec["compute"] != compute:
            raise InputError(f"{rec_path}: was made for C = {rec['compute']:.3g}, not {compute:.3g}; use another out",
                             field="out")
        for choice, value, unset in (("unique_tokens", unique_tokens, "no data cap"),
                                     ("min_budget", min_budget, "all budgets")):
            made, wanted = rec.get(choice), None if value is None else float(value)
            if made != wanted:
                made_text, wanted_text = (unset if v is None else f"{choice} = {v:g}" for v in (made, wanted))
                raise InputError(f"{rec_path}: was made with {made_text}, this run asks for {wanted_text}; "
                                 "use another out", field=("out", choice))
        log(f"reusing {rec_path}")
        return rec, config, report
    rec, config, report = recommendation_for(Path(results), compute, data, bootstrap, approach, report, log,
                                             hyperparameters, unique_tokens, min_budget)
    rec["min_budget"] = None if min_budget is None else float(min_budget)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(rec_path, {"results": str(results), "recommendation": rec, "config": config})
    return rec, config, report


def run_size(config: dict) -> tuple[int, float, float | None]:
    """(N, D, U) the final run will train: its shape's parameter count, its whole-step tokens, and the tokens of
    its nested train subset (None without a data cap)."""
    store = TokenStore.open(config["data"])
    train = config["train"]
    shape = ModelShape(**config["model"], vocab_size=store.vocab.size, max_seq_len=int(train["seq_len"]))
    unique = None
    if train.get("unique_tokens") is not None:
        unique = float(train_subset(store, train["unique_tokens"], int(train["seq_len"]) + 1).tokens)
    return count_params(shape)["total"], float(train["tokens"]), unique


# At most this fraction of the validation targets may lie in windows the generator cannot score for the floor
# to count as exact (their own floor is unknown: at 1% of targets, a floor 1 nat off moves E by 0.01 nats).
MAX_UNSCORED_TARGETS = 0.01


@dataclass(frozen=True)
class Floor:
    """The loss no model of a run can beat, as far as its token store knows (a synthetic cohort's)."""

    E: float
    exact: bool  # the floor of exactly what the run's val loss scores, or only a lower bound
    source: str


def irreducible_floor(config: dict) -> Floor | None:
    """The run's floor, or None when the store knows none (a real dataset).

    Exact when the run trains in patient windows that hold every tuning patient whole (seq_len + 1 at least
    the longest): the generator's -log p of the very targets its validation windows score. Otherwise the
    store's floor on the tuning split, a lower bound: packed windows cut histories short, and a model
    that sees less history than the generator cannot reach the generator's floor."""
    store = TokenStore.open(config["data"])
    tuning = (store.stats.get("entropy_floor") or {}).get("tuning") or {}
    values = [tuning[k] for k in ("nats_per_token", "nats_per_token_packed") if isinstance(tuning.get(k), float)]
    if not values:
        return None
    bound = Floor(min(values), False, "entropy floor of the token store's tuning split (a lower bound: "
                  "the run's windows do not hold whole patients)")
    train = TrainSection(**{k: v for k, v in config["train"].items() if k in TrainSection.__dataclass_fields__})
    split = store.split("tuning")
    if train.window_mode != "patient" or int(np.diff(split.offsets).max()) > train.seq_len + 1:
        return bound
    try:
        settings = world_settings(meds_dir_of_store(store))
    except InputError:  # the cohort moved since it was tokenized: no replay
        settings = None
    if settings is None:
        return bound
    starts, _ = patient_evaluation_windows(split, train.seq_len, train.eval_tokens)
    patients = np.searchsorted(split.offsets, starts, side="right") - 1  # one window per patient here
    lengths = np.diff(split.offsets)[patients]
    tokens = np.concatenate([np.asarray(split.tokens[split.offsets[p]:split.offsets[p + 1]]) for p in patients])
    try:
        floor = patients_floor(tokens, np.r_[0, np.cumsum(lengths)], store.vocab, settings)
    except ReplayMismatch:
        return bound
    if floor["unscored_target_fraction"] > MAX_UNSCORED_TARGETS:
        return bound
    unscored = (f"; {floor['unscored_patients']} windows the generator cannot score (a code rarer than the "
                f"vocabulary's threshold), {100 * floor['unscored_target_fraction']:.2f}% of the targets, left out"
                if floor["unscored_patients"] else "")
    return Floor(floor["nats_per_token"], True,
                 f"exact: the generator's -log p of the {len(patients):,} validation windows' targets{unscored}")


def saved_forecast(results, out: Path, config: dict, bootstrap: int, report, log,
                   min_budget: float | None = None) -> dict | None:
    """out/forecast.json: the forecast of the run's loss at its own N and D, made once, before training starts
    (analysis.forecast). A forecast already there is never rewritten; one made after training started says so.
    None (and no file) when approach 3 could not be fitted: the forecast is its law's."""
    path = out / "forecast.json"
    if path.is_file():
        return json.loads(path.read_text())
    started = bool(RunDir(out).checkpoint_steps()) or RunDir(out).read_summary() is not None
    params, tokens, unique = run_size(config)
    if report is None:
        log(f"fitting {results} (bootstrap {bootstrap}) for the forecast")
        report = fit_all(load_results(results, min_budget=min_budget), bootstrap=bootstrap, holdout=0,
                         unique_tokens=unique)
    if unique is not None:
        if report.data_constrained is None:
            log("no forecast: the data-constrained law could not be fitted to the table (see the warnings)")
            return None
        forecast = forecast_capped_run(report, params, tokens, unique)
    elif report.approach3 is None:
        log("no forecast: approach 3 could not be fitted to the table (see the recommendation's warnings)")
        return None
    else:
        floor = irreducible_floor(config)
        forecast = forecast_run(report, params, tokens, pinned_E=floor.E if floor else None,
                                pinned_E_source=floor.source if floor else "",
                                pinned_E_exact=bool(floor and floor.exact))
    forecast = {"results": str(results), "made_before_training": not started, **forecast}
    write_json_atomic(path, forecast)
    low, high = forecast["interval"]
    log(f"forecast ({path}): loss {forecast['predicted_loss']:.4f} [{low:.4f}, {high:.4f}] at N = {params:,}, "
        f"D = {tokens:,.0f}" + ("" if unique is None else f", U = {unique:,.0f}"))
    return forecast


def prediction_record(compute: float, rec: dict, summary: dict, forecast: dict | None = None) -> dict:
    # The ladder's shape and whole steps move N and D a little off the recommendation: the law is asked
    # again at the run's own N and D (and, under a data cap, its subset's unique tokens), which is the
    # prediction the run tests.
    actual = summary.get("val_loss")
    law = rec.get("law")
    unconstrained = float(LossLaw.from_json(law).loss(summary["params"], summary["tokens"])) if law else None
    capped_law = rec.get("data_constrained_law")
    if capped_law:
        predicted = float(DataConstrainedLaw.from_json(capped_law).loss(summary["params"], summary["tokens"],
                                                                         summary["unique_tokens"]))
    else:
        predicted = unconstrained if law else rec["predicted_loss"]

    def error(prediction):
        return None if actual is None or prediction is None else (actual - prediction) / prediction

    record = {
        "compute": compute,
        "approach": "data_constrained" if capped_law else rec["approach"],
        "predicted_loss": predicted,
        "predicted_loss_at_recommendation": rec["predicted_loss"],
        "predicted_loss_ci": (rec.get("ci") or {}).get("predicted_loss"),
        "actual_loss": actual,
        "relative_error": error(predicted),
        "params": summary.get("params"),
        "tokens": summary.get("tokens"),
        "flops": summary.get("flops"),
        "status": summary.get("status"),
    }
    if capped_law:
        record |= {"unique_tokens": summary.get("unique_tokens"), "epochs": summary.get("epochs"),
                   "unconstrained_predicted_loss": unconstrained, "unconstrained_relative_error": error(unconstrained)}
    record["forecast"] = None if forecast is None else {
        "predicted_loss": forecast["predicted_loss"], "interval": forecast["interval"],
        "made_before_training": forecast.get("made_before_training"),
        "fit_input_sha256": forecast.get("fit_input_sha256"),
        **grade(forecast, actual)}
    return record


# -- on a Ray cluster ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def connected(cluster: Cluster):
    """Joined to the cluster, checked to have the nodes the run needs, for the duration."""
    import ray  # lazy: start-up time (only a run on a cluster needs Ray)

    connect_ray(cluster.address, quiet=True)
    try:
        check_fits(cluster, ray.cluster_resources(), ray.nodes())
        yield
    finally:
        ray.shutdown()


def check_fits(cluster: Cluster, total: dict, nodes: list[dict]) -> None:
    """Fail now, in one line, where Ray would wait forever for resources the cluster does not have."""
    if cluster.gpus and not total.get("GPU"):
        raise InputError(f"gpus = {cluster.gpus}: the Ray cluster at {cluster.address} has no GPU "
                         f"({total.get('CPU', 0):g} CPUs, 0 GPUs); on a CPU cluster leave gpus out", field="gpus")
    fit = [node for node in nodes if node.get("Alive") and node["Resources"].get("GPU", 0) >= cluster.gpus
           and node["Resources"].get("CPU", 0) >= cluster.cpus]
    if len(fit) < cluster.hosts:
        raise InputError(f"hosts = {cluster.hosts} gpus = {cluster.gpus} cpus = {cluster.cpus}: the Ray cluster at "
                         f"{cluster.address} has {len(fit)} node(s) with at least {cluster.gpus} GPU(s) and "
                         f"{cluster.cpus} CPU(s); each host needs a node of its own", field=("hosts", "gpus", "cpus"))


def train_on_cluster(config: dict, out: Path, cluster: Cluster, log, written: str = "recommendation.json") -> dict:
    """Train as one Ray task per host, each on its own node; return the summary of process 0 (which wrote it).
    `written`: a file the driver wrote into `out`, which every node must see (a shared filesystem)."""
    import ray  # lazy: start-up time (only a run on a cluster needs Ray)
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    bundle = {"CPU": cluster.cpus, **({"GPU": cluster.gpus} if cluster.gpus else {})}
    group = placement_group([bundle] * cluster.hosts, strategy="STRICT_SPREAD")
    try:
        log(f"waiting for {cluster.hosts} node(s) with {bundle} on the Ray cluster at {cluster.address}")
        ray.get(group.ready())

        def on_host(i: int) -> PlacementGroupSchedulingStrategy:
            return PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i)

        coordinator = None
        if cluster.hosts > 1:
            coordinator = ray.get(ray.remote(free_address).options(num_cpus=0, scheduling_strategy=on_host(0)).remote())
        # One task per worker process: jax.distributed.initialize must come before anything else starts JAX there.
        task = ray.remote(max_calls=1)(train_task)
        refs = [task.options(num_cpus=cluster.cpus, num_gpus=cluster.gpus, max_retries=0,
                             runtime_env=runtime_env(worker_env(cluster.cpus, cluster.gpus)),
                             scheduling_strategy=on_host(i))
                .remote(config, str(out.absolute()), cluster.hosts, i, coordinator, written)
                for i in range(cluster.hosts)]
        log(f"training on {cluster.hosts} Ray task(s)" + (f", JAX coordinator {coordinator}" if coordinator else ""))
        return wait_for_tasks(refs, out, log)[0]
    finally:
        remove_placement_group(group)


def wait_for_tasks(refs: list, out: Path, log, report_every: float = 60.0) -> list:
    """The tasks' results, with the run's latest metrics row logged while they train. The first failure
    cancels the other tasks (they would wait for a dead peer) and is raised as one line."""
    import ray  # lazy: start-up time (only a run on a cluster needs Ray)

    pending = list(refs)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=report_every)
            if done:
                ray.get(done)
            elif (line := latest_metrics(out)) is not None:
                log(line)
    except Exception as e:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise one_line_error(e) from None
    return ray.get(refs)


def latest_metrics(run_dir: Path) -> str | None:
    row = RunDir(run_dir).latest_metrics()
    if row is None:  # not written yet, or being replaced
        return None
    return f"  step {int(row['step']):,}: train loss {row['train_loss']:.4f}, {row['tokens_per_s']:,.0f} tokens/s"


def one_line_error(error: Exception) -> Exception:
    """A task's InputError as itself; any other failure as one line naming the node (Ray's text has a traceback)."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, InputError):
        return InputError(str(cause), field=cause.field)
    where = f" on Ray node {error.ip}" if hasattr(error, "ip") else ""
    what = cause if cause is not None else error
    first_line = (str(what).splitlines() or [""])[0]
    return RuntimeError(f"the final run failed{where}: {type(what).__name__}: {first_line}")


# -- in the Ray worker -----------------------------------------------------------------------------------------


def free_address() -> str:
    """host:port of a free port on this node, for jax.distributed's coordinator."""
    import ray  # lazy: start-up time (only a run on a cluster needs Ray)

    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    return f"{ray.util.get_node_ip_address()}:{port}"


def train_task(config: dict, run_dir: str, hosts: int, process_id: int, coordinator: str | None,
               written: str = "recommendation.json") -> dict:
    """One host's part of the final run: join the other hosts' JAX program (if any), then train."""
    check_visible(Path(run_dir), config["data"], written)
    if hosts > 1:
        import jax  # lazy: see the import of train_run below

        jax.distributed.initialize(coordinator_address=coordinator, num_processes=hosts, process_id=process_id)
    # Lazy: a Ray worker imports this module to run this task; JAX may start only after the line above.
    from scaling.train.trainer import train_run

    return train_run(config, run_dir, progress=False)


def check_visible(run_dir: Path, data: str, written: str = "recommendation.json") -> None:
    """The driver wrote `written` into the run directory and read the token store: a node that misses either is
    not on their shared filesystem."""
    node = socket.gethostname()
    if not (run_dir / written).is_file():
        raise InputError(f"out = {run_dir}: Ray node {node} does not see the run directory (no {written} "
                         "there); it must be on a filesystem every node shares, at the same path", field="out")
    if not (Path(data) / "vocab.json").is_file():
        raise InputError(f"data = {data}: Ray node {node} does not see the token store; it must be on a filesystem "
                         "every node shares, at the same path")
