"""Simulated futures: decoding sampled tokens into timed events, and sampling up to a horizon."""

import numpy as np
import pytest
from eval_builders import FIRST_DISCHARGE, hand_cohort_all_train
from flax import nnx

from models.decoder import Decoder
from models.ladder import family_shape
from scaling.data.scheme import DAY, MONTH, interval_minutes
from scaling.evaluate.labels import history_prompts, prediction_times
from scaling.evaluate.simulate import (
    SimulationSettings,
    clock_minutes,
    cut_history_fraction,
    cut_prompt,
    decode_futures,
    futures_table,
    simulate_futures,
)


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    return hand_cohort_all_train(tmp_path_factory.mktemp("hand"))


def test_interval_minutes():
    assert interval_minutes("TIME//1d-3d") == 2 * DAY
    assert interval_minutes("TIME//1d-3d", middle=False) == DAY
    assert interval_minutes("TIME//6mo") == 6 * MONTH


def test_decode_futures_counts_time_at_the_middle_of_each_interval(hand):
    _, vocab = hand
    ids = [vocab.id(tok) for tok in ["TIME//1d-3d", "HOSPITAL_DISCHARGE//INPATIENT", "TIME//6mo", "TIME//6mo",
                                      "VISIT//EMERGENCY", "[EOS]", "VISIT//OUTPATIENT"]]
    tokens = np.array([ids, [vocab.id("VISIT//OUTPATIENT")] + [vocab.pad_id] * 6], np.int32)
    futures = decode_futures(tokens, vocab, vocab.pad_id)
    assert futures.n_rows == 2 and futures.owner.tolist() == [0, 0, 1]
    assert [futures.codes[c] for c in futures.code] == ["HOSPITAL_DISCHARGE//INPATIENT", "VISIT//EMERGENCY",
                                                        "VISIT//OUTPATIENT"]
    # a run of two 6-month tokens: between 12 and 18 months, 15 at the middle
    np.testing.assert_allclose(futures.minutes, [2 * DAY, 2 * DAY + 15 * MONTH, 0.0])
    table = futures_table(futures, np.array([7]), np.array([1_000_000]), samples=2)
    assert table.column_names == ["subject_id", "sample", "prediction_time", "time", "code", "numeric_value",
                                  "minutes"]
    assert table["sample"].to_pylist() == [0, 0, 1] and table["subject_id"].to_pylist() == [7, 7, 7]


def test_sampling_stops_at_the_horizon_and_returns_k_futures_per_prompt(hand):
    cohort, vocab = hand
    times = prediction_times(cohort, FIRST_DISCHARGE)
    prompts = history_prompts(cohort, times, vocab)
    model = Decoder(family_shape(16, vocab.size, 64, n_layers=1), rngs=nnx.Rngs(0))
    settings = SimulationSettings(samples=3, max_new_tokens=24, seed=1)
    horizon = 30 * DAY
    futures, tokens = simulate_futures(model, vocab, prompts, horizon, settings)
    assert tokens.shape == (3 * len(prompts), 24) and futures.n_rows == 3 * len(prompts)
    lower = clock_minutes(vocab)
    for row in tokens:
        assert lower[row].sum() < horizon  # the token that would cross the horizon is not kept


def test_long_prompts_keep_their_head_and_whole_recent_events(hand):
    _, vocab = hand
    tokens = ["GENDER//F", "AGE//50-54", "VISIT//OUTPATIENT", "MEDICATION//ATC//A10", "ATC//L3:B", "ATC//L4:A",
              "ATC//L5:02", "TIME//1d-3d", "HOSPITAL_DISCHARGE//INPATIENT"]
    prompt = np.array([vocab.id(t) for t in tokens])
    assert cut_prompt(prompt, 9, vocab) is prompt
    cut = [vocab.tokens[i] for i in cut_prompt(prompt, 5, vocab)]
    # the last 3 tokens would start inside the medication's code: the tail starts at the next event
    assert cut == ["GENDER//F", "AGE//50-54", "TIME//1d-3d", "HOSPITAL_DISCHARGE//INPATIENT"]


def test_futures_longer_than_the_context_are_sampled_in_rounds_that_fit_it(hand, monkeypatch):
    import scaling.evaluate.simulate as simulate

    cohort, vocab = hand
    prompts = history_prompts(cohort, prediction_times(cohort, FIRST_DISCHARGE), vocab)
    context = 32
    model = Decoder(family_shape(16, vocab.size, context, n_layers=1), rngs=nnx.Rngs(0))
    calls = []

    def spy(model, batch, key, sampling, **kwargs):
        # fillers (all padding) only widen the call; their output is dropped
        calls.append((max(len(p) for p in batch if (p != vocab.pad_id).any()), sampling.max_new_tokens))
        return real(model, batch, key, sampling, **kwargs)

    real = simulate.generate
    monkeypatch.setattr(simulate, "generate", spy)
    # no stop token and no horizon: every future uses the whole budget, 5 contexts long
    settings = SimulationSettings(samples=2, max_new_tokens=5 * context, seed=3)
    monkeypatch.setattr(simulate, "stop_token_ids", lambda vocab: ())
    _, tokens = simulate_futures(model, vocab, prompts, np.inf, settings)
    assert len(calls) == 5 * context // (context // 4)  # rounds of a quarter context each
    for width, new in calls:
        assert width + new <= context
    assert tokens.shape == (2 * len(prompts), 5 * context)


def test_a_future_that_fits_the_context_is_sampled_in_one_round(hand, monkeypatch):
    import scaling.evaluate.simulate as simulate

    cohort, vocab = hand
    prompts = history_prompts(cohort, prediction_times(cohort, FIRST_DISCHARGE), vocab)
    model = Decoder(family_shape(16, vocab.size, 64, n_layers=1), rngs=nnx.Rngs(0))
    budgets = []
    real = simulate.generate

    def spy(model, batch, key, sampling, **kwargs):
        budgets.append(sampling.max_new_tokens)
        return real(model, batch, key, sampling, **kwargs)

    monkeypatch.setattr(simulate, "generate", spy)
    budget = 64 - max(len(p) for p in prompts)  # the longest prompt and the budget fill the context exactly
    simulate_futures(model, vocab, prompts, np.inf, SimulationSettings(samples=2, max_new_tokens=budget))
    assert set(budgets) == {budget}


def test_prompt_cutting_takes_ids_past_the_vocabulary_as_unknown(hand):
    _, vocab = hand
    tokens = ["GENDER//F", "AGE//50-54", "VISIT//OUTPATIENT", "TIME//1d-3d", "HOSPITAL_DISCHARGE//INPATIENT"]
    prompt = np.array([vocab.id(t) for t in tokens] + [vocab.size + 3, vocab.id("VISIT//OUTPATIENT")])
    cut = cut_prompt(prompt, 4, vocab)  # a model with more output ids than the store's vocabulary sampled one
    assert cut.tolist() == [vocab.id("GENDER//F"), vocab.id("AGE//50-54"), vocab.size + 3,
                            vocab.id("VISIT//OUTPATIENT")]


def test_cut_history_fraction_counts_prompts_longer_than_a_rounds_prompt():
    """Context 64 and a budget of 256: rounds of 16 tokens, so a round shows at most 48 prompt tokens; when
    the longest prompt and the budget fit, nothing is cut."""
    prompts = [np.zeros(n, np.int32) for n in (10, 48, 49, 100)]
    assert cut_history_fraction(64, prompts, 256) == 0.5  # 49 and 100 of the four
    assert cut_history_fraction(64, prompts[:2], 10) == 0.0  # 48 + 10 <= 64: one round, whole prompts
