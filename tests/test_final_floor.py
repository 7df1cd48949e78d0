"""The floor a final run's forecast pins: exact for whole-patient windows of a synthetic cohort (the
generator's -log p of the validation windows' targets), a lower bound otherwise, none for real data."""

import json

import numpy as np
import pytest

from scaling.data.token_store import TokenStore
from scaling.data.tokenizer import TokenizerSettings, tokenize_dataset
from scaling.pipeline.final import irreducible_floor
from scaling.synth.generate import generate_cohort, world_settings
from scaling.synth.replay import entropy_floor_stats, patients_floor


@pytest.fixture(scope="module")
def short_timelines(tmp_path_factory):
    root = tmp_path_factory.mktemp("floor")
    generate_cohort(root / "meds", 400, seed=4, max_tokens=64)  # every tuning patient scorable
    tokenize_dataset(root / "meds", root / "tokens", TokenizerSettings(min_count=1), extra_stats=entropy_floor_stats)
    return root / "tokens"


def test_whole_patient_windows_over_every_tuning_patient_give_the_stores_exact_floor(short_timelines):
    """Validation windows that cover every tuning patient score what stats.json's floor scores: every
    token but each patient's first."""
    tuning = json.loads((short_timelines / "stats.json").read_text())["entropy_floor"]["tuning"]
    assert tuning["patients_scored"] == tuning["patients"]
    floor = irreducible_floor({"data": str(short_timelines),
                               "train": {"seq_len": 64, "window_mode": "patient", "eval_tokens": 10**9}})
    assert floor.exact
    assert floor.E == pytest.approx(tuning["nats_per_token"], abs=1e-6)


def test_a_subset_of_validation_windows_has_its_own_exact_floor(short_timelines):
    """With fewer validation windows the floor is that of those patients, which differs from the split's."""
    whole = irreducible_floor({"data": str(short_timelines),
                               "train": {"seq_len": 64, "window_mode": "patient", "eval_tokens": 10**9}})
    some = irreducible_floor({"data": str(short_timelines),
                              "train": {"seq_len": 64, "window_mode": "patient", "eval_tokens": 64 * 7}})
    assert some.exact and "7 validation windows" in some.source
    assert some.E != pytest.approx(whole.E, abs=1e-9)


@pytest.mark.parametrize("train", [{"seq_len": 64, "window_mode": "packed"},
                                   {"seq_len": 16, "window_mode": "patient"}])
def test_windows_that_cut_histories_get_the_lower_bound(short_timelines, train):
    tuning = json.loads((short_timelines / "stats.json").read_text())["entropy_floor"]["tuning"]
    floor = irreducible_floor({"data": str(short_timelines), "train": train})
    assert not floor.exact and "lower bound" in floor.source
    assert floor.E == min(tuning["nats_per_token"], tuning["nats_per_token_packed"])


def test_a_store_without_a_floor_has_none(short_timelines, tmp_path):
    import shutil
    copy = tmp_path / "tokens"
    shutil.copytree(short_timelines, copy)
    stats = json.loads((copy / "stats.json").read_text())
    stats.pop("entropy_floor")
    (copy / "stats.json").write_text(json.dumps(stats))
    assert irreducible_floor({"data": str(copy), "train": {"seq_len": 64, "window_mode": "patient"}}) is None
    assert np.isfinite(irreducible_floor({"data": str(short_timelines), "train": {"seq_len": 64}}).E)


@pytest.fixture(scope="module")
def one_unscorable(tmp_path_factory):
    """A cohort whose tuning split holds a patient the generator cannot score (a code too rare for train)."""
    root = tmp_path_factory.mktemp("unscorable")
    generate_cohort(root / "meds", 400, seed=0, max_tokens=64)
    tokenize_dataset(root / "meds", root / "tokens", TokenizerSettings(min_count=1), extra_stats=entropy_floor_stats)
    return root / "tokens"


def test_unscorable_patients_are_left_out_and_counted(one_unscorable):
    store = TokenStore.open(one_unscorable)
    tuning = store.stats["entropy_floor"]["tuning"]
    assert tuning["patients"] - tuning["patients_scored"] == 1
    split = store.split("tuning")
    settings = world_settings(one_unscorable.parent / "meds")
    floor = patients_floor(np.asarray(split.tokens), split.offsets, store.vocab, settings)
    assert floor["unscored_patients"] == 1
    assert floor["nats_per_token"] == pytest.approx(tuning["nats_per_token"], abs=1e-6)
    assert 0 < floor["unscored_target_fraction"] < 0.2


def test_windows_too_many_of_whose_targets_cannot_be_scored_get_the_lower_bound(one_unscorable):
    """One unscorable patient of about 35 holds more than 1% of the targets: the floor is not exact."""
    floor = irreducible_floor({"data": str(one_unscorable),
                               "train": {"seq_len": 64, "window_mode": "patient", "eval_tokens": 10**9}})
    assert not floor.exact
