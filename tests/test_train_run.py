"""`train_run` end to end on a small random token store: the run directory's files, the summary against
the accounting, determinism, skip-if-done, divergence, and the CLI."""

import json

import numpy as np
import pandas as pd
import pytest
from train_builders import random_token_store, tiny_run_config, write_toml

from models.accounting import count_params, flops_per_token
from models.config import ModelShape
from scaling.common.errors import InputError
from scaling.train.config import parse_run_config
from scaling.train.run_dir import METRIC_COLUMNS, RunDir, restore_items
from scaling.train.trainer import train_run


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return random_token_store(tmp_path_factory.mktemp("train") / "store")


@pytest.fixture(scope="module")
def finished(store, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("train") / "run"
    return run_dir, train_run(tiny_run_config(store), run_dir, progress=False)


def test_train_run_writes_the_run_directory_contract(finished):
    run_dir, summary = finished
    assert {p.name for p in run_dir.iterdir()} >= {"config.json", "metrics.parquet", "checkpoints", "summary.json"}
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    metrics = pd.read_parquet(run_dir / "metrics.parquet")
    assert list(metrics.columns) == METRIC_COLUMNS
    assert metrics["step"].tolist() == [3, 6, 9, 12]  # log_every = 3
    assert metrics["val_loss"].notna().tolist() == [False, True, False, True]  # eval_every = 6
    assert sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()) == [6, 12]
    record = json.loads((run_dir / "config.json").read_text())
    assert parse_run_config(record["config"]) == parse_run_config(tiny_run_config(record["config"]["data"]))


def test_train_run_summary_uses_the_accounting(finished):
    run_dir, summary = finished
    config = parse_run_config(tiny_run_config("/x"))
    shape = config.shape(vocab_size=99)  # [PAD], [EOS] and 97 codes
    assert summary["status"] == "finished"
    assert summary["shape"] == shape.to_dict()
    assert summary["params"] == count_params(shape)["total"]
    assert summary["params_nonembed"] == count_params(shape)["non_embedding"]
    assert summary["tokens"] == 12 * 4 * 24
    assert summary["flops"] == pytest.approx(6 * summary["params"] * summary["tokens"])
    assert summary["flops_detailed"] == pytest.approx(flops_per_token(shape, 24, "detailed") * summary["tokens"])
    metrics = pd.read_parquet(run_dir / "metrics.parquet")
    assert summary["val_loss"] == metrics["val_loss"].iloc[-1]
    assert summary["train_loss"] == metrics["train_loss"].iloc[-1]
    assert metrics["tokens"].tolist() == [s * 96 for s in metrics["step"]]
    # Learning is happening: below the uniform-guess loss ln(99) and falling.
    assert metrics["train_loss"].iloc[-1] < metrics["train_loss"].iloc[0] < np.log(99) + 0.05


def test_train_run_checkpoint_holds_the_model_that_scored_the_val_loss(finished, store):
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from scaling.data.token_store import TokenStore
    from scaling.train.batches import evaluation_batches
    from scaling.train.run_dir import load_trained_model

    run_dir, summary = finished
    model, _, step = load_trained_model(run_dir)
    assert step == 12
    graphdef, params = nnx.split(model)
    forward = jax.jit(lambda p, w: nnx.merge(graphdef, p)(w))
    # The val loss again, from the restored model and the tuning split directly.
    tokens = TokenStore.open(store)
    total, count = 0.0, 0.0
    for windows, mask in evaluation_batches(tokens.split("tuning"), 4, 24, 500, tokens.vocab.pad_id):
        logits = forward(params, jnp.asarray(windows[:, :-1]))
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(windows[:, 1:]))
        total, count = total + float((losses * mask).sum()), count + float(mask.sum())
    assert total / count == pytest.approx(summary["val_loss"], rel=1e-5)


def test_train_run_is_deterministic_and_the_cli_matches(finished, store, tmp_path, run_cli):
    run_dir, summary = finished
    config = tmp_path / "run.toml"
    write_toml(config, tiny_run_config(store))
    code, out, err = run_cli("train", config, "--out", tmp_path / "again", "--quiet", "--json")
    assert code == 0, err
    again = json.loads(out)
    ignore = ("tokens_per_s", "startup_s", "compile")  # timings, and what the compilation cache already held
    assert {k: v for k, v in again.items() if k not in ignore} == {k: v for k, v in summary.items() if k not in ignore}
    a = pd.read_parquet(run_dir / "metrics.parquet").drop(columns="tokens_per_s")
    b = pd.read_parquet(tmp_path / "again" / "metrics.parquet").drop(columns="tokens_per_s")
    pd.testing.assert_frame_equal(a, b)


def test_train_run_skips_a_finished_run_and_refuses_another_config(finished):
    run_dir, summary = finished
    config = tiny_run_config(parse_run_config(json.loads((run_dir / "config.json").read_text())["config"]).data)
    assert train_run(config, run_dir, progress=False) == summary
    with pytest.raises(InputError, match="holds a run of a different config"):
        train_run({**config, "seed": 4}, run_dir, progress=False)


def test_train_run_stops_on_a_non_finite_loss_keeping_the_checkpoint_before(store, tmp_path, monkeypatch):
    import scaling.train.trainer

    class PoisonedSampler(scaling.train.trainer.WindowSampler):
        """From step 7 on (the 8th step), token ids past the vocabulary: embeddings of NaN."""

        def batch(self, step):
            windows, mask = super().batch(step)
            return (windows + 1000 if step >= 7 else windows), mask

    monkeypatch.setattr(scaling.train.trainer, "WindowSampler", PoisonedSampler)
    summary = train_run(tiny_run_config(store), tmp_path / "run", progress=False)
    assert summary["status"] == "diverged"
    assert summary["diverged_at_step"] == 8
    assert "at step 8" in summary["message"] and "step 6" in summary["message"]
    assert summary["steps"] == 7 and summary["val_loss"] is None
    checkpoints = sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit())
    assert checkpoints == [6]
    metrics = pd.read_parquet(tmp_path / "run" / "metrics.parquet")
    assert metrics["step"].tolist() == [3, 6] and np.isfinite(metrics["train_loss"]).all()


def test_run_dir_reads_what_the_trainer_wrote(finished):
    run_dir, summary = finished
    run = RunDir(run_dir)
    assert run.is_run() and run.status == "finished" and run.is_done() and run.read_summary() == summary
    assert run.latest_metrics()["step"] == 12 and run.latest_metrics()["val_loss"] == summary["val_loss"]
    assert run.checkpoint_steps() == [6, 12]
    assert run.read_config() == parse_run_config(tiny_run_config(run.read_config().data))
    assert RunDir(run_dir / "nowhere").status is None and RunDir(run_dir / "nowhere").latest_metrics() is None


def test_a_model_loads_from_its_parameters_alone(finished, monkeypatch):
    """The checkpoint holds the parameters and the optimizer state as separate items; loading for inference
    reads the parameters only and builds no optimizer."""
    import scaling.train.step

    run_dir, _ = finished
    run = RunDir(run_dir)
    assert {"params", "opt_state"} <= {p.name for p in run.checkpoint_path(12).iterdir()}

    def no_optimizer(*args, **kwargs):
        raise AssertionError("an optimizer was built to load a model")

    monkeypatch.setattr(scaling.train.step, "make_optimizer", no_optimizer)
    monkeypatch.setattr(scaling.train.step, "learning_rate_schedule", no_optimizer)
    model, config, step = run.load_model()
    assert step == 12 and model.shape == run.read_shape()


def _train_state(record: dict):
    """A fresh {params, opt_state} of a run record's config, as the trainer builds it."""
    from scaling.train.step import init_model, learning_rate_schedule, make_optimizer

    config = parse_run_config(record["config"])
    shape = ModelShape.from_dict(record["shape"])
    _, params = init_model(shape, config.seed)
    t = config.train
    schedule = learning_rate_schedule(t.schedule, t.lr, config.total_steps, config.warmup_steps, t.min_lr_ratio,
                                      t.cooldown_fraction)
    tx = make_optimizer(schedule, weight_decay=t.weight_decay, beta1=t.beta1, beta2=t.beta2, grad_clip=t.grad_clip)
    return {"params": params, "opt_state": tx.init(params)}


def test_a_checkpoint_of_the_earlier_one_item_layout_loads_and_resumes(finished, tmp_path):
    """Run directories written before parameters and optimizer state became separate items still load, and
    resume to the same end."""
    import shutil

    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    run_dir, summary = finished
    run, old = RunDir(run_dir), RunDir(tmp_path / "old")
    old.path.mkdir()
    shutil.copy(run.config_path, old.config_path)
    abstract = _train_state(run.read_record())
    with run.checkpoint_manager() as manager:
        state = restore_items(manager, 6, abstract)
    with ocp.CheckpointManager(old.checkpoints_path) as manager:
        manager.save(6, args=ocp.args.StandardSave(state))
        manager.wait_until_finished()
    assert (old.checkpoint_path(6) / "default").is_dir()
    metrics = run.read_metrics()
    old.write_metrics(metrics[metrics["step"] <= 6].to_dict("records"))

    model, _, step = old.load_model()
    assert step == 6
    for a, b in zip(jax.tree.leaves(nnx_params(model)), jax.tree.leaves(state["params"]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    config = tiny_run_config(run.read_config().data)
    resumed = train_run(config, old.path, progress=False)
    timings = {"tokens_per_s": None, "startup_s": None, "compile": None}
    assert {**resumed, **timings} == {**summary, **timings}


def nnx_params(model):
    from flax import nnx

    return nnx.split(model, nnx.Param)[1]


def test_summary_and_record_say_how_much_data_the_run_repeats(finished, store):
    from scaling.data.token_store import TokenStore

    run_dir, summary = finished
    unique = TokenStore.open(store).unique_train_tokens
    assert summary["unique_tokens"] == unique and summary["epochs"] == pytest.approx(summary["tokens"] / unique)
    record = json.loads((run_dir / "config.json").read_text())
    assert "unique_tokens" not in record["config"]["train"]  # the record earlier versions wrote (resume)
    assert record["derived"]["unique_tokens"] == unique


def test_a_run_on_a_nested_subset_draws_from_it_and_says_it_repeats(store, tmp_path, capsys):
    from scaling.data.token_store import TokenStore

    split = TokenStore.open(store).split("train")
    subset = split.nested_subset(500)
    tokens = int(split.lengths[subset].sum())
    summary = train_run(tiny_run_config(store, unique_tokens=500), tmp_path / "run", progress=True)
    assert summary["status"] == "finished" and summary["unique_tokens"] == tokens
    assert summary["epochs"] == pytest.approx(12 * 96 / tokens) and summary["epochs"] > 1
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert f"train.unique_tokens = 500: {len(subset)} of {split.n_patients} train patients, {tokens:,} tokens" in err
    assert f"repeats its data: {12 * 96 / tokens:.1f} epochs over {tokens} unique tokens" in err
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["config"]["train"]["unique_tokens"] == 500 and record["derived"]["unique_patients"] == len(subset)


@pytest.mark.parametrize(("unique", "seq_len", "message"), [
    ("1e9", 24, "run.toml: train.unique_tokens = 1e+09 is more than the {n:,} tokens of the train split of the "
                "token store {store}"),
    ("1", 200, "run.toml: train.unique_tokens = 1 selects 1 train patients of {first} tokens, fewer than one window "
               "of seq_len + 1 = 201 tokens"),
    ("-inf", 24, "run.toml: train.unique_tokens = -inf must be a positive, finite number of tokens"),
])
def test_bad_unique_tokens_is_one_line_naming_the_file_and_field(store, tmp_path, run_cli, unique, seq_len, message):
    from scaling.data.token_store import TokenStore

    split = TokenStore.open(store).split("train")
    first = int(split.lengths[split.nested_subset(1)].sum())
    c = tiny_run_config(store, seq_len=seq_len)
    config = tmp_path / "run.toml"
    config.write_text(f'data = "{c["data"]}"\n[model]\nd_model = 40\n[train]\nsteps = 12\nseq_len = {seq_len}\n'
                      f"unique_tokens = {unique}\n")
    code, out, err = run_cli("train", config, "--out", tmp_path / "run", "--quiet")
    expected = message.format(n=split.n_tokens, store=store, first=first).replace("run.toml", str(config))
    assert code == 2 and expected in " ".join(err.split()) and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("change", "message"), [
    ({"seq_len": 100_000}, "fewer than one"),
    ({"attention": "cudnn"}, "needs an NVIDIA GPU"),
])
def test_a_config_refused_by_the_store_or_the_machine_leaves_nothing_behind(store, tmp_path, change, message):
    """Settings that only the token store or the machine can refuse are refused before the run directory
    holds anything, so the corrected config then runs in the same directory."""
    run = tmp_path / "run"
    bad = tiny_run_config(store, steps=6, **change)
    with pytest.raises(InputError, match=message):
        train_run(bad, run, progress=False)
    assert not run.exists()
    assert train_run(tiny_run_config(store, steps=6), run, progress=False)["status"] == "finished"


@pytest.mark.parametrize(("key", "value"), [("lr", float("inf")), ("weight_decay", float("nan")),
                                            ("grad_clip", float("nan")), ("tokens", float("inf"))])
def test_non_finite_settings_are_refused(store, key, value):
    config = tiny_run_config(store, steps=6)
    train = {k: v for k, v in config["train"].items() if not (key == "tokens" and k == "steps")}
    with pytest.raises(InputError, match=f"train.{key} = {value!r} is not a finite number"):
        parse_run_config({**config, "train": {**train, key: value}}, source="run.toml")
    with pytest.raises(InputError, match="seed = -1 is negative"):
        parse_run_config({**config, "seed": -1}, source="run.toml")


def test_a_failed_run_keeps_its_traceback(store, tmp_path, monkeypatch):
    import scaling.train.trainer as trainer

    def broken(*args, **kwargs):
        raise RuntimeError("the step could not be built")

    monkeypatch.setattr(trainer, "make_train_chunk", broken)
    with pytest.raises(RuntimeError):
        train_run(tiny_run_config(store), tmp_path / "run", progress=False)
    run = RunDir(tmp_path / "run")
    assert run.read_summary()["status"] == "failed"
    assert run.read_summary()["message"] == "RuntimeError: the step could not be built"
    text = run.traceback_path.read_text()
    assert text.startswith("Traceback") and "in broken" in text and "RuntimeError: the step could not be built" in text
