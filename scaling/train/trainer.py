"""One training run: run config + token store -> run directory (its layout: scaling.train.run_dir).

    summary = train_run(load_run_config("run.toml"), "runs/run")

The run directory gets config.json, metrics.parquet (a row every log_every steps), checkpoints/ (params and
optimizer state at checkpoint steps, the last few kept) and summary.json.

Re-running on the same directory resumes from the latest checkpoint and ends exactly where an
uninterrupted run ends: batches are a pure function of (seed, step) and the chunks of steps compiled
together are the same (chunk boundaries depend on the config alone). A finished or diverged run is
returned as it is.
"""

from __future__ import annotations

import math
import queue
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from models.accounting import count_params, flops_per_token
from models.config import ModelShape
from models.parametrization import learning_rate_multipliers
from scaling.common.errors import InputError
from scaling.common.hardware import peak_flops_per_s
from scaling.data.token_store import TokenStore, train_subset
from scaling.train.batches import ShortThenLongSampler, WindowSampler, evaluation_batches
from scaling.train.compile_cache import CompileLog, enable_compilation_cache
from scaling.train.config import RunConfig, load_run_config, parse_run_config
from scaling.train.cpu_devices import split_cpu_into_devices, training_devices
from scaling.train.run_dir import DIVERGED, DONE, FAILED, FINISHED, OPT_STATE, PARAMS, RunDir, save_args
from scaling.train.step import (
    batch_sharding,
    data_mesh,
    init_model,
    learning_rate_schedule,
    make_eval,
    make_optimizer,
    make_train_chunk,
    replicated,
)
from scaling.train.tracking import RunTrackers, requested_trackers


@dataclass(frozen=True)
class RunPlan:
    """The derived quantities of a run, computed in one place and printed at start-up."""

    shape: ModelShape
    total_steps: int
    warmup_steps: int
    tokens_per_step: int
    params: int
    params_nonembed: int
    flops_per_token: float  # 6N
    flops_per_token_detailed: float  # Chinchilla appendix F
    n_devices: int
    dtype: str
    attention_impl: str | None
    unique_tokens: int = 0  # train tokens the windows are drawn from (the subset's, with train.unique_tokens)
    unique_patients: int = 0
    train_patients: np.ndarray | None = field(default=None, compare=False, repr=False)  # None: every patient

    @property
    def tokens(self) -> int:
        return self.total_steps * self.tokens_per_step

    @property
    def epochs(self) -> float:
        """Passes over the unique tokens the run trains (tokens / unique_tokens)."""
        return self.tokens / self.unique_tokens if self.unique_tokens else math.nan

    def to_dict(self) -> dict:
        return {
            "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
            "tokens_per_step": self.tokens_per_step, "tokens": self.tokens, "params": self.params,
            "params_nonembed": self.params_nonembed, "flops_per_token": self.flops_per_token,
            "flops_per_token_detailed": self.flops_per_token_detailed,
            "flops": self.flops_per_token * self.tokens,
            "flops_detailed": self.flops_per_token_detailed * self.tokens,
            "unique_tokens": self.unique_tokens, "unique_patients": self.unique_patients, "epochs": self.epochs,
        }


def as_run_config(config: RunConfig | Mapping | str | Path) -> RunConfig:
    if isinstance(config, RunConfig):
        return config
    if isinstance(config, Mapping):
        return parse_run_config(dict(config))
    return load_run_config(config)


def plan_run(config: RunConfig, store: TokenStore, source: str | None = None) -> RunPlan:
    shape = config.shape(store.vocab.size)
    if shape.vocab_size < store.vocab.size:
        raise InputError(f"model.vocab_size = {shape.vocab_size} is smaller than the token store's vocabulary "
                         f"({store.vocab.size} tokens in {store.path})")
    n_devices = len(training_devices(config.train.batch_size))
    if config.train.batch_size % n_devices:
        raise InputError(f"train.batch_size = {config.train.batch_size} is not divisible by the "
                         f"{n_devices} devices the batch is split over")
    subset = train_subset(store, config.train.unique_tokens, config.train.seq_len + 1, source=source)
    counts = count_params(shape)
    dtype = config.train.dtype
    impl = attention_implementation(config.train.attention, dtype,
                                    f"{source + ': ' if source else ''}train.attention = ")
    if store.split("tuning").n_tokens < config.train.seq_len + 1:
        raise InputError(f"{source + ': ' if source else ''}train.seq_len = {config.train.seq_len}: the tuning "
                         f"split of {store.path} has {store.split('tuning').n_tokens} tokens, fewer than one "
                         "validation window of seq_len + 1")
    return RunPlan(
        shape=shape, total_steps=config.total_steps, warmup_steps=config.warmup_steps,
        tokens_per_step=config.tokens_per_step, params=counts["total"], params_nonembed=counts["non_embedding"],
        flops_per_token=flops_per_token(shape, config.train.seq_len, "6N"),
        flops_per_token_detailed=flops_per_token(shape, config.train.seq_len, "detailed"),
        n_devices=n_devices, dtype=dtype, attention_impl=impl, unique_tokens=subset.tokens,
        unique_patients=subset.n_patients, train_patients=subset.patients,
    )


def steps_per_chunk(config: RunConfig) -> int:
    """K, the optimizer steps compiled into one call: the largest divisor of steps_per_dispatch that also
    divides log_every, eval_every and checkpoint_every, so that every row, evaluation and checkpoint
    falls on a chunk boundary and one compiled program serves the whole run (plus a shorter last chunk
    when K does not divide the total)."""
    t = config.train
    return math.gcd(t.steps_per_dispatch, t.log_every, t.eval_every, t.checkpoint_every)


def chunk_ends(config: RunConfig, start: int) -> list[int]:
    """The steps at which chunks end after `start`: multiples of K, the last step of a short context
    (train.short_seq_len: a chunk's windows have one shape) and the last step. A function of the config
    alone, so a resumed run compiles and runs the same chunks as an uninterrupted one."""
    k, total = steps_per_chunk(config), config.total_steps
    ends = {*range((start // k + 1) * k, total, k), total} if start < total else set()
    if start < config.short_steps < total:
        ends.add(config.short_steps)
    return sorted(ends)


def window_sampler(config: RunConfig, split, pad_id: int, patients=None) -> WindowSampler | ShortThenLongSampler:
    """The run's training batches: windows of seq_len, after the short context's steps where it has them."""
    t = config.train
    long = WindowSampler(split, t.batch_size, t.seq_len, config.seed, pad_id, t.window_mode, patients=patients)
    if not config.short_steps:
        return long
    windows, length = config.windows_at(0)
    short = WindowSampler(split, windows, length, config.seed, pad_id, t.window_mode, patients=patients)
    return ShortThenLongSampler(short, long, config.short_steps)


class ChunkFeeder:
    """Builds the (K, B, T+1) windows and (K, B, T) masks of each chunk in a background thread and puts
    them on the devices, so the host work overlaps the previous chunk's compute."""

    _END = object()

    def __init__(self, sampler: WindowSampler | ShortThenLongSampler, chunks: Iterable[tuple[int, int]], sharding,
                 depth: int = 2):
        self.sampler, self.chunks, self.sharding = sampler, chunks, sharding
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for start, end in self.chunks:
                batches = [self.sampler.batch(step) for step in range(start, end)]
                windows = np.stack([w for w, _ in batches])
                masks = np.stack([m for _, m in batches])
                if not self._put((put_batch(windows, self.sharding), put_batch(masks, self.sharding))):
                    return
            self._put(self._END)
        except BaseException as e:  # handed to the training thread
            self._put(e)

    def __iter__(self) -> Iterator:
        while True:
            item = self.queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        """Stop the builder thread and wait for it: a daemon thread still inside a device transfer when the
        interpreter exits aborted the process on a GPU ("terminate called ... exception not rethrown")."""
        self.stop.set()
        self.thread.join(timeout=30)


def put_batch(array: np.ndarray, sharding) -> jax.Array:
    """A global batch array (K, B, ...) placed on the mesh: each process supplies its rows of B."""
    per_process = array.shape[1] // jax.process_count()
    lo = jax.process_index() * per_process
    return jax.make_array_from_process_local_data(sharding, array[:, lo : lo + per_process], array.shape)


def evaluation_arrays(config: RunConfig, store: TokenStore, sharding) -> tuple[jax.Array, jax.Array]:
    """The fixed validation windows, stacked to (N, B, T+1) with the last batch padded (mask 0)."""
    t = config.train
    split = store.split("tuning")
    if split.n_tokens < t.seq_len + 1:
        raise InputError(f"{store.path}: the tuning split has {split.n_tokens} tokens, fewer than one window "
                         f"of train.seq_len + 1 = {t.seq_len + 1}")
    windows, masks = [], []
    for w, m in evaluation_batches(split, t.batch_size, t.seq_len, t.eval_tokens, store.vocab.pad_id,
                                   mode=t.window_mode):
        pad = t.batch_size - len(w)
        windows.append(np.pad(w, ((0, pad), (0, 0)), constant_values=store.vocab.pad_id))
        masks.append(np.pad(m, ((0, pad), (0, 0))))
    return put_batch(np.stack(windows), sharding), put_batch(np.stack(masks), sharding)


def metrics_up_to(run: RunDir, step: int) -> list[dict]:
    """The logged rows up to `step` (a resumed run drops those past its checkpoint)."""
    frame = run.read_metrics()
    return [] if frame is None else frame[frame["step"] <= step].to_dict("records")


def config_record(config: RunConfig, plan: RunPlan) -> dict:
    return {
        "config": config.to_dict(),
        "shape": plan.shape.to_dict(),
        "derived": plan.to_dict(),
        "runtime": {"devices": plan.n_devices, "backend": jax.default_backend(), "jax": jax.__version__},
    }


def check_same_run(run: RunDir, record: dict) -> None:
    if not run.is_run():
        return
    old = run.read_record()
    if old.get("config") != record["config"] or old.get("shape") != record["shape"]:
        raise InputError(f"{run.path} holds a run of a different config; choose another out or remove it",
                         field="out")


def train_run(config: RunConfig | Mapping | str | Path, run_dir: str | Path, *, progress: bool = True,
              source: str | None = None) -> dict:
    """Train one run into `run_dir` (resuming from its latest checkpoint) and return its summary. `source`
    (the config file, when the caller read one) starts the messages of settings the token store refuses."""
    config = as_run_config(config)
    run = RunDir(run_dir)
    console = Console(stderr=True, quiet=not progress)
    split_cpu_into_devices()  # before anything starts JAX's backends
    requested_trackers()  # a bad $SCALING_TRACK is refused before the run directory is touched
    enable_compilation_cache()
    store = TokenStore.open(config.data)
    plan = plan_run(config, store, source)
    record = config_record(config, plan)
    check_same_run(run, record)
    done = run.read_summary()
    if done and done.get("status") in DONE:
        console.print(f"{run.path}: already {done['status']}; nothing to do")
        return done
    fresh = not run.is_run()
    run.path.mkdir(parents=True, exist_ok=True)
    if writes_run_files():
        run.write_record(record)
    try:
        with CompileLog() as compiles:
            return _train(config, plan, store, run, console, progress, compiles)
    except InputError:
        if fresh:  # refused before it trained: leave nothing that would block the corrected config
            run.remove_unstarted()
        raise
    except KeyboardInterrupt:
        raise
    except Exception as e:
        summary = _summary(plan, FAILED, step=None, train_loss=None, val_loss=None,
                           message=f"{type(e).__name__}: {e}")
        if writes_run_files():
            run.write_traceback(traceback.format_exc())
            run.write_summary(summary)
        raise


def writes_run_files() -> bool:
    """Whether this process writes config.json, metrics.parquet and summary.json: in a multi-host run
    (jax.distributed) every process trains and saves checkpoints with orbax, but only process 0 writes these."""
    return jax.process_index() == 0


def _summary(plan: RunPlan, status: str, step, train_loss, val_loss, message=None, **extra) -> dict:
    tokens = (step or 0) * plan.tokens_per_step
    summary = {
        "status": status,
        "params": plan.params,
        "params_nonembed": plan.params_nonembed,
        "tokens": tokens,
        "flops": plan.flops_per_token * tokens,
        "flops_detailed": plan.flops_per_token_detailed * tokens,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "steps": step,
        "shape": plan.shape.to_dict(),
        "unique_tokens": plan.unique_tokens,
        "epochs": tokens / plan.unique_tokens if plan.unique_tokens else None,
        **extra,
    }
    if message:
        summary["message"] = message
    return summary


def _train(config: RunConfig, plan: RunPlan, store: TokenStore, run: RunDir, console: Console,
           progress: bool, compiles: CompileLog) -> dict:
    t = config.train
    started = time.perf_counter()
    mesh = data_mesh(training_devices(t.batch_size))
    rep, chunk_sharding = replicated(mesh), batch_sharding(mesh, leading=1)
    dtype = jnp.bfloat16 if plan.dtype == "bfloat16" else jnp.float32
    graphdef, params = init_model(plan.shape, config.seed, dtype, plan.attention_impl)
    schedule = learning_rate_schedule(t.schedule, t.lr, plan.total_steps, plan.warmup_steps, t.min_lr_ratio,
                                      t.cooldown_fraction)
    multipliers = None if plan.shape.parametrization == "standard" else learning_rate_multipliers(plan.shape, params)
    tx = make_optimizer(schedule, weight_decay=t.weight_decay, beta1=t.beta1, beta2=t.beta2,
                        grad_clip=t.grad_clip, lr_multipliers=multipliers)
    state = jax.device_put({PARAMS: params, OPT_STATE: tx.init(params)}, rep)

    start, restored = run.restore_latest(state, warn=lambda message: print(message, file=sys.stderr))
    if restored is not None:
        state = restored
    manager = run.checkpoint_manager(keep=t.keep_checkpoints, asynchronous=True)
    params, opt_state = state[PARAMS], state[OPT_STATE]
    rows = metrics_up_to(run, start)

    console.print(
        f"[bold]train[/] {run.path}: d_model={plan.shape.d_model} n_layers={plan.shape.n_layers} "
        f"n_heads={plan.shape.n_heads}/{plan.shape.n_kv_heads} d_ff={plan.shape.d_ff} "
        f"vocab={plan.shape.vocab_size} | N={plan.params:,} (non-embedding {plan.params_nonembed:,}) | "
        f"{plan.total_steps:,} steps x {plan.tokens_per_step:,} tokens = D={plan.tokens:,} | "
        f"C=6ND={plan.flops_per_token * plan.tokens:.3g} | {plan.n_devices} {jax.default_backend()} device(s), "
        f"{plan.dtype}" + (f" | resuming at step {start}" if start else "")
    )
    if data_line := data_use_line(config, plan, store):
        console.print(data_line)
    if config.short_steps:
        windows, length = config.windows_at(0)
        console.print(f"short context: steps 1-{config.short_steps:,} on {windows} windows of {length} tokens, "
                      f"then {t.batch_size} of {t.seq_len}")

    train_chunk = make_train_chunk(graphdef, tx, mesh)
    evaluate = make_eval(graphdef, mesh)
    eval_windows, eval_masks = evaluation_arrays(config, store, chunk_sharding)
    sampler = window_sampler(config, store.split("train"), store.vocab.pad_id, plan.train_patients)
    ends = chunk_ends(config, start)
    chunks = list(zip([start, *ends[:-1]], ends, strict=True))
    tracker = RunTrackers(run.path, run.read_record(), start) if writes_run_files() else None
    feeder = ChunkFeeder(sampler, chunks, chunk_sharding)  # starts its thread: the try below closes it
    log = RunLog(config, plan, schedule, rows, start, console if progress else None, tracker)
    diverged_at = None
    startup_s = None  # building the model and compiling the train step (the first dispatch returns once compiled)
    try:
        for (chunk_start, chunk_end), (windows, masks) in zip(chunks, feeder, strict=True):
            params, opt_state, losses, norms = train_chunk(params, opt_state, windows, masks)
            if startup_s is None:
                startup_s = round(time.perf_counter() - started, 2)
            last = chunk_end == plan.total_steps
            eval_out = evaluate(params, eval_windows, eval_masks) if chunk_end % t.eval_every == 0 or last else None
            log.add(chunk_start, chunk_end, losses, norms, eval_out)
            checkpoint = chunk_end % t.checkpoint_every == 0 or last
            # At an evaluation or a checkpoint every row is fetched and metrics.parquet written; otherwise losses
            # are fetched one chunk late, so the host never waits for the chunk it just dispatched.
            settle = checkpoint or eval_out is not None
            diverged_at = log.drain(keep=0 if settle else 1)
            if diverged_at:
                break
            # Rows first: a resumed run drops rows past its checkpoint, but cannot recreate missing ones.
            if settle and writes_run_files():
                run.write_metrics(rows)
            if checkpoint:
                # Save a copy: the live buffers are donated to the next chunk while the save runs.
                snapshot = _copy_tree({PARAMS: params, OPT_STATE: opt_state})
                manager.save(chunk_end, args=save_args(snapshot[PARAMS], snapshot[OPT_STATE]))
    finally:
        feeder.close()
        log.close()
        if tracker is not None:
            tracker.close()
        manager.wait_until_finished()
        checkpoint_step = manager.latest_step()
        manager.close()

    val_loss = log.val_loss
    if not diverged_at and val_loss is None:  # resumed from the final checkpoint
        total, count = (float(x) for x in evaluate(params, eval_windows, eval_masks))
        val_loss = total / max(count, 1.0)
    if writes_run_files():
        run.write_metrics(rows)
    final_train = rows[-1]["train_loss"] if rows else None
    if diverged_at:
        message = (f"loss is {log.bad_loss} at step {diverged_at}; stopped. The last checkpoint "
                   f"(step {checkpoint_step}) is kept")
        summary = _summary(plan, DIVERGED, diverged_at - 1, final_train, None, message=message,
                           diverged_at_step=diverged_at, tokens_per_s=_mean_speed(rows, start),
                           devices=plan.n_devices, startup_s=startup_s, compile=compiles.summary())
        console.print(f"[red]diverged[/]: {message}")
    else:
        summary = _summary(plan, FINISHED, plan.total_steps, final_train, val_loss, diverged_at_step=None,
                           tokens_per_s=_mean_speed(rows, start), devices=plan.n_devices, startup_s=startup_s,
                           compile=compiles.summary())
        c = summary["compile"]
        console.print(f"finished: val loss {val_loss:.4f} after {plan.total_steps:,} steps -> {run.path} | "
                      f"{c['compiled']} programs compiled, {c['from_cache']} read from the compile cache "
                      f"({c['compile_s']:.1f} s)")
    if writes_run_files():
        run.write_summary(summary)
    return summary


def data_use_line(config: RunConfig, plan: RunPlan, store: TokenStore) -> str | None:
    """The start-up line on the data a run draws from: its subset (train.unique_tokens) and, when it passes
    over its data more than once, how often ("repeats its data: 2.8 epochs over 7.07M unique tokens")."""
    parts = []
    if config.train.unique_tokens is not None:
        parts.append(f"train.unique_tokens = {config.train.unique_tokens:g}: {plan.unique_patients:,} of "
                     f"{store.unique_train_patients:,} train patients, {plan.unique_tokens:,} tokens")
    if plan.epochs > 1:
        parts.append(f"repeats its data: {plan.epochs:.1f} epochs over {short_count(plan.unique_tokens)} unique tokens")
    return " | ".join(parts) or None


def short_count(x: float) -> str:
    """7070000 -> '7.07M'."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:g}"


class RunLog:
    """The metrics rows and the progress bar. Chunks' losses arrive as device arrays and are fetched
    (`drain`) when the caller chooses; a row is written at each row step with the mean loss since the
    previous row."""

    def __init__(self, config: RunConfig, plan: RunPlan, schedule, rows: list[dict], start: int,
                 console: Console | None, tracker: RunTrackers | None = None):
        self.config, self.plan, self.schedule, self.rows, self.tracker = config, plan, schedule, rows, tracker
        self.pending: list[tuple[int, int, jax.Array, tuple, tuple | None]] = []
        self.recent_losses: list[float] = []
        self.recent_grad_norms: list[float] = []
        self.param_norm = math.nan
        self.peak_flops = device_peak_flops(plan.dtype)
        self.last_step, self.last_time = start, time.perf_counter()
        self.val_loss: float | None = None
        self.bad_loss: float | None = None
        self.bar = None
        if console is not None:
            self.bar = Progress(
                TextColumn("step {task.completed:,.0f}/{task.total:,.0f}"), BarColumn(),
                TextColumn("tokens {task.fields[tokens]}"), TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[speed]} tok/s"), TextColumn("ETA"), TimeRemainingColumn(),
                console=console,
            )
            self.bar.start()
            self.task = self.bar.add_task("train", total=plan.total_steps, completed=start, loss="-", speed="-",
                                          tokens=f"{start * plan.tokens_per_step:,}")

    def add(self, chunk_start: int, chunk_end: int, losses: jax.Array, norms: tuple, eval_out) -> None:
        self.pending.append((chunk_start, chunk_end, losses, norms, eval_out))

    def drain(self, keep: int) -> int | None:
        """Fetch all pending chunks but the last `keep`; return the first step with a non-finite loss."""
        while len(self.pending) > keep:
            chunk_start, chunk_end, losses, (grad_norms, param_norm), eval_out = self.pending.pop(0)
            losses = np.asarray(losses)
            bad = np.flatnonzero(~np.isfinite(losses))
            if bad.size:
                self.bad_loss = float(losses[bad[0]])
                self.pending.clear()
                return chunk_start + int(bad[0]) + 1
            self.recent_losses.extend(losses.tolist())
            self.recent_grad_norms.extend(np.asarray(grad_norms).tolist())
            self.param_norm = float(param_norm)
            if is_row_step(self.config, chunk_end):
                self._row(chunk_end, eval_out)
        return None

    def _row(self, step: int, eval_out) -> None:
        if eval_out is not None:
            total, count = (float(x) for x in eval_out)
            self.val_loss = total / max(count, 1.0)
        now = time.perf_counter()
        tokens = step * self.plan.tokens_per_step
        row = {
            "step": step, "tokens": tokens, "flops": self.plan.flops_per_token * tokens,
            "train_loss": float(np.mean(self.recent_losses)),
            "val_loss": self.val_loss if eval_out is not None else math.nan,
            "lr": float(self.schedule(step - 1)),  # the rate of this row's last update
            "tokens_per_s": (step - self.last_step) * self.plan.tokens_per_step / (now - self.last_time),
            "grad_norm": float(np.mean(self.recent_grad_norms)),
            "param_norm": self.param_norm,
        }
        self.rows.append(row)
        if self.tracker is not None:
            self.tracker.write({**row, "mfu": self._mfu(row["tokens_per_s"])})
        self.recent_losses.clear()
        self.recent_grad_norms.clear()
        self.last_step, self.last_time = step, now
        if self.bar is not None:
            self.bar.update(self.task, completed=step, tokens=f"{tokens:,}", loss=f"{row['train_loss']:.4f}",
                            speed=f"{row['tokens_per_s']:,.0f}")

    def _mfu(self, tokens_per_s: float) -> float:
        """Model FLOPs utilization (detailed count) against the devices' peak; NaN where the peak is unknown."""
        peak = self.peak_flops
        return math.nan if peak is None else self.plan.flops_per_token_detailed * tokens_per_s / peak

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


_copy_tree = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))


def attention_implementation(choice: str, dtype: str, named: str = "attention ") -> str | None:
    """`jax.nn.dot_product_attention`'s implementation for an attention choice (auto | xla | cudnn): auto is
    cuDNN's flash attention on a GPU in bfloat16, else XLA's (None). `named` prefixes the error."""
    if choice == "auto":
        return "cudnn" if jax.default_backend() == "gpu" and dtype == "bfloat16" else None
    if choice == "xla":
        return None
    if jax.default_backend() != "gpu":
        raise InputError(f"{named}'cudnn' needs an NVIDIA GPU; this process runs JAX on {jax.default_backend()} "
                         "(use 'auto' or 'xla')")
    return "cudnn"


def device_peak_flops(dtype: str) -> float | None:
    """The peak FLOP/s of all devices at `dtype` (None on CPU or an unknown accelerator)."""
    device = jax.devices()[0]
    if device.platform != "gpu":
        return None
    peak = peak_flops_per_s(device.device_kind, dtype)
    return None if peak is None else peak * jax.device_count()


def is_row_step(config: RunConfig, step: int) -> bool:
    t = config.train
    return (step % t.log_every == 0 or step % t.eval_every == 0 or step % t.checkpoint_every == 0
            or step == config.total_steps)


def _mean_speed(rows: list[dict], start: int) -> float | None:
    speeds = [r["tokens_per_s"] for r in rows if r["step"] > start]
    return float(np.median(speeds)) if speeds else None
