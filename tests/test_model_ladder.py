"""The shape ladder: near its target, deterministic, sensible shapes, and the config's validation."""

import math

import pytest

from models.accounting import count_params
from models.config import ModelShape
from models.ladder import ASPECT_RATIO, default_d_ff, shape_for_compute, shape_for_params
from scaling.common.errors import InputError

# Targets the ladder must meet: a tiny ladder for CPU sweeps, and the compute-optimal sizes CoMET reported.
TINY_LADDER = (1e4, 3e4, 1e5, 3e5, 1e6, 3e6)
COMET_SIZES = {"comet-62m": 62e6, "comet-119m": 119e6, "comet-1b": 1e9}


@pytest.mark.parametrize("vocab", [512, 4099])
@pytest.mark.parametrize("target", [t for t in TINY_LADDER if t >= 1e5] + list(COMET_SIZES.values()))
def test_model_ladder_hits_the_target_within_a_few_percent(target, vocab):
    if 2 * 8 * vocab > target / 2:
        pytest.skip("the embeddings of the narrowest shape are most of the target: no sensible shape is near it")
    shape = shape_for_params(target, vocab, 512)
    total = count_params(shape)["total"]
    assert abs(total / target - 1) <= 0.05, (shape, total)
    assert shape.d_ff == default_d_ff(shape.d_model)
    if target >= 1e7:  # big enough for the aspect rule to bind: d_model / n_layers within 4x of 64
        assert ASPECT_RATIO / 4 <= shape.d_model / shape.n_layers <= ASPECT_RATIO * 4
        assert shape.head_dim == 64


def test_model_ladder_tiny_end_is_embedding_dominated_but_near():
    shape = shape_for_params(1e4, 512)
    assert abs(count_params(shape)["total"] / 1e4 - 1) <= 0.05
    assert [shape_for_params(t, 512).d_model for t in TINY_LADDER] == sorted(
        shape_for_params(t, 512).d_model for t in TINY_LADDER)


@pytest.mark.parametrize("target", [1e4, 2e4, 4e4, 6e4, 1e5])
def test_model_ladder_never_picks_a_needle_for_a_tiny_target(target):
    # 4e4 with a vocabulary of 500 once gave d_model 8 with 31 layers: every nearby wide shape is >10% off
    shape = shape_for_params(target, 500, 256)
    assert shape.d_model / shape.n_layers >= 4, shape
    widest_below = max(d for d in range(8, 256, 8)
                       if count_params(ModelShape(d, 1, 4, 4, default_d_ff(d), 500, 256))["total"] <= target)
    assert shape.d_model >= widest_below  # no narrower than the widest one-layer shape that fits the target


def test_model_ladder_is_deterministic():
    shape_for_params.cache_clear()
    a = shape_for_params(119e6, 8191)
    shape_for_params.cache_clear()
    assert shape_for_params(119e6, 8191) == a


def test_model_ladder_shape_for_compute_is_6nd():
    by_tokens = shape_for_compute(6 * 3e5 * 2e7, 512, tokens=2e7)
    assert by_tokens == shape_for_params(3e5, 512)
    # N = sqrt(C / 6r): with r = 20 and C = 6 * 20 * N^2 we get N back.
    assert shape_for_compute(6 * 20 * 1e6**2, 512, tokens_per_param=20) == shape_for_params(1e6, 512)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"d_model": 65, "n_heads": 4}, "model.d_model = 65 is not divisible by model.n_heads = 4"),
        ({"n_heads": 4, "n_kv_heads": 3}, "model.n_heads = 4 is not a multiple of model.n_kv_heads = 3"),
        ({"d_model": 60, "n_heads": 4}, "odd; rotary embeddings need an even head size"),
        ({"n_layers": 0}, "model.n_layers = 0 is not a positive integer"),
        ({"vocab_size": 2.5}, "model.vocab_size = 2.5 is not a positive integer"),
    ],
)
def test_model_config_rejects_impossible_shapes_naming_the_field(fields, message):
    base = {"d_model": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4, "d_ff": 96, "vocab_size": 41,
            "max_seq_len": 16}
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ModelShape(**{**base, **fields})


def test_model_config_round_trips_through_a_dict():
    shape = ModelShape(d_model=24, n_layers=3, n_heads=3, n_kv_heads=1, d_ff=40, vocab_size=37, max_seq_len=19,
                       tied_embeddings=True)
    assert ModelShape.from_dict(shape.to_dict()) == shape
    assert math.isclose(shape.head_dim, 8)
    with pytest.raises(InputError, match="unknown key 'd_modle'"):
        ModelShape.from_dict({**shape.to_dict(), "d_modle": 3})


@pytest.mark.parametrize("target", [1.5e4, 3e4, 6e4, 1.2e5, 2.5e5, 1e6])
def test_a_family_with_min_layers_and_an_aspect_ratio_keeps_both(target):
    shape = shape_for_params(target, 523, 64, aspect_ratio=8, min_layers=2)
    assert shape.n_layers >= 2
    if target >= 3e4:  # above the embedding-dominated end: near the target, in the band around aspect 8
        assert abs(count_params(shape)["total"] / target - 1) <= 0.10
        assert 8 / 4 <= shape.d_model / shape.n_layers <= 8 * 4


def test_family_settings_are_checked():
    with pytest.raises(InputError, match="min_layers = 0"):
        shape_for_params(1e5, 512, min_layers=0)
    with pytest.raises(InputError, match="aspect_ratio = -1"):
        shape_for_params(1e5, 512, aspect_ratio=-1)
