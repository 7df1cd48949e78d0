"""The KV-cache sampler: same tokens as recomputing the prefix, padding-exact, stops where it should."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models.config import ModelShape
from models.decoder import Decoder
from models.sampling import (
    SamplingSettings,
    filter_logits,
    generate,
    generate_without_cache,
    left_pad,
    sample_categorical,
)

SHAPE = ModelShape(d_model=24, n_layers=2, n_heads=3, n_kv_heads=1, d_ff=40, vocab_size=31, max_seq_len=64)


@pytest.fixture(scope="module")
def model():
    return Decoder(SHAPE, rngs=nnx.Rngs(7))


def test_cached_sampling_equals_recomputing_the_prefix(model):
    rng = np.random.default_rng(0)
    prompts = [rng.integers(2, 31, 11) for _ in range(3)]
    settings = SamplingSettings(max_new_tokens=13, temperature=0.9)
    cached = generate(model, prompts, jax.random.key(5), settings, pad_id=0)
    uncached = generate_without_cache(model, prompts, jax.random.key(5), settings, pad_id=0)
    np.testing.assert_array_equal(cached, uncached)


def test_left_padding_does_not_change_the_next_token_distribution(model):
    short, long = np.array([3, 9, 4]), np.arange(2, 19) % 31
    tokens, positions = left_pad([short, long], pad_id=0)
    cache = model.init_cache(2, tokens.shape[1])
    logits, _ = model.forward_with_cache(jnp.asarray(tokens), jnp.asarray(positions), cache)
    alone = model(jnp.asarray(short)[None])
    np.testing.assert_allclose(logits[0, -1], alone[0, -1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits[1, -1], model(jnp.asarray(long)[None])[0, -1], rtol=1e-5, atol=1e-5)


def test_rows_stop_at_stop_tokens_and_horizon(model):
    prompts = [np.array([2, 3, 4])] * 4
    settings = SamplingSettings(max_new_tokens=40)
    out = generate(model, prompts, jax.random.key(1), settings, pad_id=0, stop_ids=(5, 6, 7, 8, 9))
    for row in out:
        stops = np.flatnonzero(np.isin(row, [5, 6, 7, 8, 9]))
        if len(stops):
            assert (row[stops[0] + 1:] == 0).all()
    minutes = np.zeros(31)
    minutes[10:20] = 100.0  # tokens 10..19 advance the clock by 100 minutes
    out = generate(model, prompts, jax.random.key(2), settings, pad_id=0, minutes_per_token=minutes,
                   horizon_minutes=250.0)
    for row in out:
        kept = row[row != 0]
        assert (np.isin(kept, np.arange(10, 20))).sum() <= 2  # a third would cross 250 minutes
        first_pad = np.flatnonzero(row == 0)
        if len(first_pad):
            assert (row[first_pad[0]:] == 0).all()


def test_top_k_and_top_p_keep_the_most_likely_tokens():
    logits = jnp.log(jnp.array([[0.5, 0.25, 0.15, 0.1]]))
    kept_k = np.isfinite(np.asarray(filter_logits(logits, 1.0, 2, 1.0)))[0]
    assert kept_k.tolist() == [True, True, False, False]
    kept_p = np.isfinite(np.asarray(filter_logits(logits, 1.0, 0, 0.7)))[0]
    assert kept_p.tolist() == [True, True, False, False]  # 0.5 + 0.25 >= 0.7
    kept_p = np.isfinite(np.asarray(filter_logits(logits, 1.0, 0, 0.9)))[0]
    assert kept_p.tolist() == [True, True, True, False]


def test_inverse_cdf_draws_follow_the_softmax_and_never_a_masked_token():
    logits = jnp.array([[-jnp.inf, 0.0, 1.0, -jnp.inf, 2.0, -1.0]] * 200_000)  # (rows, 6)
    draws = np.asarray(sample_categorical(jax.random.key(0), logits))
    p = np.asarray(jax.nn.softmax(logits[0]))
    counts = np.bincount(draws, minlength=6)
    assert counts[0] == 0 and counts[3] == 0
    # each frequency within 4 binomial standard errors of its probability
    se = np.sqrt(p * (1 - p) / len(draws))
    np.testing.assert_array_less(np.abs(counts / len(draws) - p), 4 * se + 1e-12)


def test_outcome_probabilities_are_the_sampling_distributions_mass_on_each_mask(model):
    """Each step's reported mass equals softmax(filtered logits) of the prefix, computed without the cache,
    summed over the mask's tokens; rows that stopped report 0; the tokens are those sampled without masks."""
    rng = np.random.default_rng(1)
    prompts = [rng.integers(2, 31, n) for n in (5, 9)]
    settings = SamplingSettings(max_new_tokens=12, temperature=0.8, top_k=20)
    masks = np.zeros((2, 31), bool)
    masks[0, [5, 6]] = True
    masks[1, 20:31] = True
    out, probs = generate(model, prompts, jax.random.key(3), settings, pad_id=0, stop_ids=(5, 6),
                          outcome_masks=masks)
    np.testing.assert_array_equal(out, generate(model, prompts, jax.random.key(3), settings, pad_id=0,
                                                stop_ids=(5, 6)))
    assert probs.shape == (2, 12, 2)
    for row, prompt in enumerate(prompts):
        # one causal pass over prompt + sampled tokens: position len(prompt) - 1 + t predicts token t
        logits = model(jnp.asarray(np.concatenate([prompt, out[row]]))[None])[0]
        stopped = False
        for t in range(12):
            if stopped:
                assert (probs[row, t] == 0).all()
                continue
            step_logits = logits[len(prompt) - 1 + t].at[0].set(-jnp.inf)
            p = np.asarray(jax.nn.softmax(filter_logits(step_logits, 0.8, 20, 1.0)))
            np.testing.assert_allclose(probs[row, t], [p[masks[0]].sum(), p[masks[1]].sum()], atol=2e-5)
            stopped = out[row, t] in (5, 6)
