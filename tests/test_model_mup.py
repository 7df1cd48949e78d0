"""muP (models.parametrization): the decoder against the NumPy reference with muP's attention scale and
logit multiplier worked out by hand, the same model as standard at the base width, init and learning-rate
multipliers by width, and the coordinate check (update sizes flat across widths under muP, growing under
standard)."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx
from test_model_decoder import forward, numpy_forward, random_model

from models.config import ModelShape
from models.decoder import Decoder
from models.parametrization import learning_rate_multipliers
from scaling.bench.coordinate_check import coordinate_check, growth
from scaling.common.errors import InputError

# d_model 32 with 4 heads (head size 8); the base width 16 has the family's 4 heads of size 4
MUP = ModelShape(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=40, vocab_size=37, max_seq_len=13,
                 parametrization="mup", mup_base_d_model=16)


def test_mup_decoder_matches_numpy_with_its_scale_and_multiplier_by_hand():
    model = random_model(MUP)
    tokens = np.random.default_rng(0).integers(0, MUP.vocab_size, (2, 9))
    # attention: sqrt(base head size 4) / head size 8 = 0.25; logits: base / width = 16 / 32 = 0.5
    expected = numpy_forward(model, tokens, attention_scale=0.25, logit_multiplier=0.5)
    np.testing.assert_allclose(forward(model, tokens), expected, rtol=2e-4, atol=2e-4)


def test_at_the_base_width_mup_is_the_standard_model():
    standard = dataclasses.replace(MUP, parametrization="standard", mup_base_d_model=None)
    base = dataclasses.replace(MUP, mup_base_d_model=32)
    a, b = Decoder(standard, rngs=nnx.Rngs(3)), Decoder(base, rngs=nnx.Rngs(3))
    for x, y in zip(jax.tree.leaves(nnx.state(a, nnx.Param)), jax.tree.leaves(nnx.state(b, nnx.Param)), strict=True):
        np.testing.assert_array_equal(x, y)
    tokens = np.random.default_rng(1).integers(0, MUP.vocab_size, (2, 9))
    np.testing.assert_allclose(forward(a, tokens), forward(b, tokens), rtol=1e-6, atol=1e-6)
    multipliers = learning_rate_multipliers(base, nnx.state(b, nnx.Param))
    assert set(jax.tree.leaves(multipliers)) == {1.0}


def test_hidden_matrices_init_and_learning_rates_scale_with_width():
    wide = dataclasses.replace(MUP, d_model=128, d_ff=160)  # m = 128 / 16 = 8
    model = Decoder(wide, rngs=nnx.Rngs(0))
    std = float(np.std(np.asarray(model.blocks[0].attn.qkv[...])))
    assert std == pytest.approx(0.02 / np.sqrt(8), rel=0.05)
    assert float(np.std(np.asarray(model.embed[...]))) == pytest.approx(0.02, rel=0.05)  # embeddings: as standard
    params = nnx.state(model, nnx.Param)
    multipliers = nnx.to_pure_dict(learning_rate_multipliers(wide, params))
    assert multipliers["blocks"][1]["mlp"]["down"] == multipliers["blocks"][0]["attn"]["qkv"] == 1 / 8
    assert multipliers["embed"] == multipliers["head"] == multipliers["final_norm"]["scale"] == 1.0


@pytest.mark.parametrize("change, message", [
    ({"parametrization": "umup"}, "model.parametrization = 'umup': expected standard or mup"),
    ({"mup_base_d_model": None}, "muP needs the base width"),
    ({"mup_base_d_model": 4}, "muP needs the base width"),
    ({"tied_embeddings": True}, "muP needs a separate output layer"),
    ({"parametrization": "standard"}, "model.mup_base_d_model = 16 is for parametrization = \"mup\" only"),
])
def test_mup_settings_are_checked(change, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        dataclasses.replace(MUP, **change)


def test_coordinate_check_updates_are_flat_under_mup_and_grow_under_standard():
    widths = (32, 64, 128)
    standard = coordinate_check(widths, "standard", steps=4)
    mup = coordinate_check(widths, "mup", base_d_model=32, steps=4)
    # the narrowest width is the base: both parametrizations train the same model there
    assert mup["widths"][32]["logits"] == pytest.approx(standard["widths"][32]["logits"], rel=1e-5)
    assert growth(standard, "hidden") > 4 and growth(standard, "logits") > 2
    assert 0.5 < growth(mup, "hidden") < 2 and 0.4 < growth(mup, "logits") < 2


def test_a_mup_run_trains_records_its_parametrization_and_loads_as_trained(tmp_path):
    from train_builders import random_token_store, tiny_run_config

    from scaling.train.run_dir import RunDir
    from scaling.train.trainer import train_run

    config = tiny_run_config(random_token_store(tmp_path / "store"))
    config["model"] |= {"parametrization": "mup", "mup_base_d_model": 8}
    summary = train_run(config, tmp_path / "run", progress=False)
    assert summary["status"] == "finished"
    assert summary["shape"]["parametrization"] == "mup" and summary["shape"]["mup_base_d_model"] == 8
    model, loaded_config, _ = RunDir(tmp_path / "run").load_model()
    assert model.shape.parametrization == "mup" and model.output_multiplier == 8 / model.shape.d_model
    assert loaded_config.model.parametrization == "mup"
