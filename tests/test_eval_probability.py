"""The estimator that uses the model's probabilities: which tokens are an outcome, the minutes of each step,
the sums by hand, and agreement in expectation with the 0/1 outcome of the same futures."""

import numpy as np
import pytest
from eval_builders import FIRST_DISCHARGE, hand_cohort_all_train, task
from flax import nnx

from models.decoder import Decoder
from models.ladder import family_shape
from scaling.data.scheme import DAY, MONTH
from scaling.evaluate.labels import history_prompts, prediction_times
from scaling.evaluate.outcomes import (
    estimate_from_probabilities,
    event_minutes,
    outcome_token_mask,
    outcome_values,
    probability_values,
    shift_futures,
)
from scaling.evaluate.simulate import SimulationSettings, decode_futures, simulate_futures


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    return hand_cohort_all_train(tmp_path_factory.mktemp("hand"))


def ids(vocab, names):
    return [vocab.pad_id if n == "PAD" else vocab.id(n) for n in names]


def test_event_minutes_are_those_decoding_gives_each_event(hand):
    _, vocab = hand
    row = ids(vocab, ["TIME//1d-3d", "HOSPITAL_DISCHARGE//INPATIENT", "TIME//6mo", "TIME//6mo", "VISIT//EMERGENCY",
                      "TIME//6mo", "VISIT//OUTPATIENT", "PAD"])
    tokens = np.array([row], np.int32)
    minutes = event_minutes(tokens, vocab)[0]
    decoded = decode_futures(tokens, vocab, vocab.pad_id).minutes
    # the events sit at steps 1, 4 and 6; a run of 6-month tokens ends half a token after its last one's start:
    # two of them stand for 15 months, one for 9
    np.testing.assert_allclose(minutes[[1, 4, 6]], decoded)
    np.testing.assert_allclose(minutes[[1, 4, 6]], [2 * DAY, 2 * DAY + 15 * MONTH, 2 * DAY + 24 * MONTH])
    assert minutes[0] == 0.0


def test_outcome_tokens_are_the_code_heads_a_prefix_decides(hand):
    _, vocab = hand
    discharge = outcome_token_mask(task("d", "binary", FIRST_DISCHARGE, ("HOSPITAL_DISCHARGE//",), 30), vocab)
    assert [vocab.tokens[i] for i in np.flatnonzero(discharge)] == ["HOSPITAL_DISCHARGE//INPATIENT"]
    longer_than_a_head = task("m", "binary", FIRST_DISCHARGE, ("MEDICATION//ATC//A10BA",), 30)
    assert outcome_token_mask(longer_than_a_head, vocab) is None  # A10 is one token; A10BA is decided later
    assert outcome_token_mask(task("los", "duration", FIRST_DISCHARGE, ("HOSPITAL_DISCHARGE//",), 30), vocab) is None
    assert len(outcome_token_mask(task("d", "count", FIRST_DISCHARGE, ("VISIT//",), 30), vocab, 100)) == 100


def test_probability_sums_by_hand(hand):
    """Steps in (0, horizon]; a binary outcome sums up to and including its first occurrence, a count all."""
    _, vocab = hand
    row = ids(vocab, ["TIME//1d-3d", "HOSPITAL_DISCHARGE//INPATIENT", "TIME//1d-3d", "VISIT//EMERGENCY",
                      "TIME//1d-3d", "VISIT//EMERGENCY", "PAD"])
    tokens = np.array([row, row], np.int32)
    probs = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.0]] * 2)
    year, three_days = 365, 3
    emergency = ("VISIT//EMERGENCY",)
    assert probability_values(task("b", "binary", FIRST_DISCHARGE, emergency, year), tokens, probs,
                              vocab) == pytest.approx([0.9, 0.9])
    assert probability_values(task("c", "count", FIRST_DISCHARGE, emergency, year), tokens, probs,
                              vocab) == pytest.approx([2.0, 2.0])
    # within 3 days only steps 1 and 2 (2 days) count, and the emergency at 4 days is past the horizon
    assert probability_values(task("b", "binary", FIRST_DISCHARGE, emergency, three_days), tokens, probs,
                              vocab) == pytest.approx([0.5, 0.5])
    binary = task("b", "binary", FIRST_DISCHARGE, emergency, year)
    assert estimate_from_probabilities(binary, np.array([[0.9, 1.6]])).tolist() == [1.0]


def test_probability_estimate_agrees_with_the_drawn_outcome_and_varies_less(hand):
    """Over many futures of one model, the mean of each future's probability sum and the fraction of futures
    with the outcome estimate the same probability (within 4 standard errors), the former with less spread."""
    cohort, vocab = hand
    prompts = history_prompts(cohort, prediction_times(cohort, FIRST_DISCHARGE), vocab)[:2]
    model = Decoder(family_shape(16, vocab.size, 64, n_layers=1), rngs=nnx.Rngs(4))
    outcome = task("e", "binary", FIRST_DISCHARGE, ("VISIT//",), 3650)
    mask = outcome_token_mask(outcome, vocab, model.shape.vocab_size)
    K = 600
    futures, tokens, probs = simulate_futures(model, vocab, prompts, np.inf,
                                              SimulationSettings(samples=K, max_new_tokens=12, seed=5),
                                              outcome_masks=mask[None])
    drawn = outcome_values(outcome, futures).reshape(len(prompts), K)
    summed = probability_values(outcome, tokens, probs[:, :, 0], vocab).reshape(len(prompts), K)
    for d, p in zip(drawn, summed):
        assert 0.05 < d.mean() < 0.95  # the test has power: the outcome is neither rare nor certain
        assert abs(d.mean() - p.mean()) < 4 * d.std() / np.sqrt(K)
        assert p.std() < d.std()


def test_a_gap_before_the_prediction_time_moves_the_window(hand):
    """A prediction 2 days after the last event (a label file's time): steps in those 2 days do not count,
    and the window runs to the horizon counted from the prediction time."""
    _, vocab = hand
    row = ids(vocab, ["TIME//1d-3d", "VISIT//EMERGENCY", "TIME//1d-3d", "VISIT//EMERGENCY", "PAD"])
    tokens = np.array([row], np.int32)
    probs = np.array([[0.1, 0.2, 0.3, 0.4, 0.0]])
    emergency = task("b", "count", FIRST_DISCHARGE, ("VISIT//EMERGENCY",), 3)
    # without a gap: steps 1 and 2 (at 2 days) count and step 3 (4 days) is past 3 days
    assert probability_values(emergency, tokens, probs, vocab) == pytest.approx([0.5])
    # 2 days of gap: steps 1 and 2 are at 0 days from the prediction time (not after it), step 3 at 2 days
    assert probability_values(emergency, tokens, probs, vocab, np.array([2 * DAY])) == pytest.approx([0.4])
    futures = shift_futures(decode_futures(tokens, vocab, vocab.pad_id), np.array([2 * DAY]), samples=1)
    assert outcome_values(emergency, futures).tolist() == [1.0]


def test_simulated_futures_run_past_their_gap(hand):
    """With a gap, each row's clock starts that far behind: its future reaches the horizon counted from the
    prediction time (here a horizon of 0 still samples the gap's worth of time), and its events are timed
    from the prediction time."""
    cohort, vocab = hand
    prompts = history_prompts(cohort, prediction_times(cohort, FIRST_DISCHARGE), vocab)[:1]
    model = Decoder(family_shape(16, vocab.size, 64, n_layers=1), rngs=nnx.Rngs(4))
    settings = SimulationSettings(samples=8, max_new_tokens=12, seed=5)
    _, stopped = simulate_futures(model, vocab, prompts, 0.0, settings)
    futures, ran = simulate_futures(model, vocab, prompts, 0.0, settings, gap_minutes=np.array([3650 * DAY]))
    assert (stopped == vocab.pad_id).all()  # horizon 0: nothing to sample
    assert (ran != vocab.pad_id).sum() > 0
    # the futures come back timed from the prediction time: the decoded tokens' minutes less the gap
    np.testing.assert_allclose(futures.minutes, decode_futures(ran, vocab, vocab.pad_id).minutes - 3650 * DAY)
