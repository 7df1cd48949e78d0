"""The run config's validation, and the learning-rate schedules against their closed forms."""

import math

import pytest

from scaling.common.errors import InputError
from scaling.train.config import load_run_config, parse_run_config
from scaling.train.step import learning_rate_schedule
from scaling.train.trainer import chunk_ends, steps_per_chunk

BASE = {"data": "/nowhere", "model": {"d_model": 64}, "train": {"steps": 100}}


def with_(section: str | None, **values) -> dict:
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}
    (raw[section] if section else raw).update(values)
    return raw


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (with_("train", lrr=3e-3), "run.toml: unknown key 'train.lrr' (did you mean 'train.lr'?)"),
        (with_(None, sed=1), "run.toml: unknown key 'sed' (did you mean 'seed'?)"),
        (with_("model", d_model=65, n_heads=4), "model.d_model = 65 is not divisible by model.n_heads = 4"),
        (with_("train", tokens=2e7), "give exactly one of train.steps or train.tokens"),
        (with_("train", batch_size=0), "train.batch_size = 0 must be positive"),
        (with_("train", lr="fast"), "train.lr = 'fast' is not a number"),
        (with_("train", steps=1.5), "train.steps = 1.5 is not an integer"),
        (with_("train", schedule="linear"), "train.schedule = 'linear' is not one of"),
        (with_("train", warmup_steps=100), "train.warmup_steps = 100 must be 0 or more and less than the 100"),
        (with_("model", params=1e6), "model.params picks the whole shape; leave out model.d_model"),
        ({"data": "/x", "train": {"steps": 3}}, "needs d_model"),
        (with_("model", max_seq_len=16), "model.max_seq_len = 16 is less than train.seq_len = 128"),
        (with_("train", unique_tokens=0), "train.unique_tokens = 0.0 must be a positive, finite number of tokens"),
        (with_("train", unique_tokens=-5e5), "train.unique_tokens = -500000.0 must be a positive, finite number"),
        (with_("train", unique_tokens=math.inf), "train.unique_tokens = inf must be a positive, finite number"),
        (with_("train", unique_tokens=math.nan), "train.unique_tokens = nan must be a positive, finite number"),
        (with_("train", unique_tokens="all"), "train.unique_tokens = 'all' is not a number"),
    ],
)
def test_train_config_rejects_bad_fields_naming_them(raw, message):
    with pytest.raises(InputError) as e:
        parse_run_config(raw, source="run.toml")
    assert message in str(e.value)
    assert str(e.value).startswith("run.toml: ")


def test_train_config_reads_toml_with_defaults_and_derived_numbers(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('data = "store"\nseed = 5\n[model]\nd_model = 48\n[train]\ntokens = 1e5\nseq_len = 32\n'
                    "batch_size = 6\n")
    (tmp_path / "store").mkdir()
    config = load_run_config(path)
    assert config.data == str((tmp_path / "store").absolute())  # beside the config file
    assert config.seed == 5 and config.train.lr == 3e-3 and config.train.schedule == "cosine"
    assert config.total_steps == math.ceil(1e5 / (6 * 32))
    assert config.warmup_steps == min(50, config.total_steps // 10)
    shape = config.shape(vocab_size=101)
    assert (shape.d_model, shape.n_layers, shape.n_heads, shape.n_kv_heads, shape.vocab_size, shape.max_seq_len) \
        == (48, 1, 4, 4, 101, 32)


def test_train_config_unique_tokens_is_optional_and_left_out_of_the_record_when_unset():
    assert "unique_tokens" not in parse_run_config(BASE).to_dict()["train"]  # config.json as before
    config = parse_run_config(with_("train", unique_tokens=7_000_000))
    assert config.train.unique_tokens == 7e6 and config.to_dict()["train"]["unique_tokens"] == 7e6
    assert parse_run_config(config.to_dict()) == config


def test_train_config_chunks_align_with_rows_evals_and_checkpoints():
    config = parse_run_config(with_("train", steps=47, steps_per_dispatch=10, log_every=5, eval_every=20,
                                    checkpoint_every=15))
    assert steps_per_chunk(config) == 5
    assert chunk_ends(config, 0) == [5, 10, 15, 20, 25, 30, 35, 40, 45, 47]
    assert chunk_ends(config, 30) == [35, 40, 45, 47]  # a resumed run continues on the same grid
    assert chunk_ends(config, 47) == []


def test_train_config_schedules_follow_their_closed_forms():
    peak, total, warmup = 2.0, 100, 10
    cosine = learning_rate_schedule("cosine", peak, total, warmup, min_lr_ratio=0.1)
    for step in (0, 5, 10, 40, 99):
        if step < warmup:
            expected = peak * step / warmup
        else:
            progress = (step - warmup) / (total - warmup)
            expected = peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        assert float(cosine(step)) == pytest.approx(expected, rel=1e-5), step
    assert float(cosine(total)) == pytest.approx(0.1 * peak, rel=1e-5)
    wsd = learning_rate_schedule("wsd", peak, total, warmup, cooldown_fraction=0.2)
    assert float(wsd(50)) == pytest.approx(peak) and float(wsd(80)) == pytest.approx(peak)
    assert float(wsd(90)) == pytest.approx(peak / 2) and float(wsd(100)) == pytest.approx(0.0, abs=1e-7)
    constant = learning_rate_schedule("constant", peak, total, 0)
    assert {float(constant(s)) for s in (0, 50, 99)} == {peak}
