"""Training windows: deterministic by (seed, step), one split only, patient boundaries as documented."""

import numpy as np
import pytest

from scaling.common.errors import InputError
from scaling.data.token_store import TokenStore, write_token_store
from scaling.data.vocab import Vocabulary
from scaling.train.batches import WindowSampler, evaluation_batches

N_CODES = 97


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Train tokens are 2..49 and tuning tokens 50..98, so a window shows which split it came from."""
    vocab = Vocabulary(tokens=["[PAD]", "[EOS]"] + [f"C{i}" for i in range(N_CODES)],
                       categories=["special"] * 2 + ["other"] * N_CODES,
                       kinds=["special"] * 2 + ["code"] * N_CODES, texts=[""] * 2 + ["x"] * N_CODES)
    rng = np.random.default_rng(0)
    splits = {}
    for name, (low, high), n in (("train", (2, 50), 41), ("tuning", (50, 99), 13)):
        lengths = rng.integers(3, 70, size=n)
        offsets = np.r_[0, np.cumsum(lengths)]
        tokens = rng.integers(low, high, size=offsets[-1])
        tokens[offsets[1:] - 1] = 1
        splits[name] = (tokens, offsets, np.arange(n) * 10)
    path = tmp_path_factory.mktemp("store") / "tok"
    write_token_store(path, vocab, splits, {}, {})
    return TokenStore.open(path)


@pytest.mark.parametrize("mode", ["packed", "patient"])
def test_batches_are_a_function_of_seed_and_step(store, mode):
    a = WindowSampler(store.split("train"), 5, 17, seed=3, pad_id=0, mode=mode)
    b = WindowSampler(store.split("train"), 5, 17, seed=3, pad_id=0, mode=mode)
    for step in (0, 1, 977):
        np.testing.assert_array_equal(a.batch(step)[0], b.batch(step)[0])
    assert not np.array_equal(a.batch(0)[0], a.batch(1)[0])
    assert not np.array_equal(a.batch(0)[0], WindowSampler(store.split("train"), 5, 17, 4, 0, mode).batch(0)[0])


def test_packed_windows_are_contiguous_slices_of_one_split(store):
    split = store.split("train")
    flat = np.asarray(split.tokens)
    windows, mask = WindowSampler(split, 7, 31, seed=0, pad_id=0).batch(5)
    assert windows.shape == (7, 32) and mask.shape == (7, 31) and mask.all()
    for w in windows:
        hits = [s for s in range(len(flat) - 31) if np.array_equal(flat[s:s + 32], w)]
        assert hits
    assert windows[windows != 1].max() < 50  # nothing from tuning


def test_patient_windows_never_span_two_patients(store):
    split = store.split("train")
    windows, mask = WindowSampler(split, 64, 29, seed=1, pad_id=0, mode="patient").batch(0)
    for w, m in zip(windows, mask):
        n_real = int(m.sum()) + 1
        assert (w[n_real:] == 0).all()  # padding after the patient's end
        assert (w[: n_real - 1] != 1).all()  # an [EOS] can only be the last real token
        flat = np.asarray(split.tokens)
        starts = [s for s in range(len(flat)) if np.array_equal(flat[s:s + n_real], w[:n_real])]
        assert any(np.searchsorted(split.offsets, s, "right") == np.searchsorted(split.offsets, s + n_real - 1,
                                                                                    "right") for s in starts)


@pytest.mark.parametrize("mode", ["packed", "patient"])
def test_evaluation_windows_score_each_target_at_most_once(store, mode):
    split = store.split("tuning")
    windows = list(evaluation_batches(split, 4, 11, max_tokens=10**9, pad_id=0, mode=mode))
    scored = sum(int(m.sum()) for _, m in windows)
    if mode == "packed":
        assert scored == ((split.n_tokens - 1) // 11) * 11
    else:  # every token but each patient's first is a target exactly once
        assert scored == split.n_tokens - split.n_patients


def test_window_longer_than_split_is_refused(store):
    with pytest.raises(InputError, match="fewer than one window"):
        WindowSampler(store.split("tuning"), 2, 10_000, seed=0, pad_id=0)


@pytest.mark.parametrize("mode", ["packed", "patient"])
def test_a_subset_of_patients_gives_windows_of_those_patients_only(store, mode):
    """Train patient p's tokens are made p's own (2 + p), so a window shows which patients it came from."""
    split = store.split("train")
    marked = np.asarray(split.tokens).copy()
    for p in range(split.n_patients):
        marked[split.offsets[p]:split.offsets[p + 1] - 1] = 2 + p
    marked_split = type(split)("train", marked, split.offsets, split.subject_ids)
    subset = split.nested_subset(400)
    assert 0 < len(subset) < split.n_patients
    sampler = WindowSampler(marked_split, 64, 13, seed=2, pad_id=0, mode=mode, patients=subset)
    assert sampler.n_tokens == split.lengths[subset].sum()
    allowed = set((subset + 2).tolist()) | {0, 1}
    seen = set()
    for step in range(20):
        windows, mask = sampler.batch(step)
        seen |= set(np.unique(windows).tolist())
        assert mask.shape == (64, 13)
    assert seen <= allowed and len(seen - {0, 1}) == len(subset)  # every subset patient drawn, no other
    if mode == "packed":  # slices of the subset's tokens read one patient after another
        flat = np.concatenate([marked[split.offsets[p]:split.offsets[p + 1]] for p in subset])
        for w in sampler.batch(3)[0]:
            assert any(np.array_equal(flat[s:s + 14], w) for s in range(len(flat) - 13))
    again = WindowSampler(marked_split, 64, 13, seed=2, pad_id=0, mode=mode, patients=subset.copy())
    np.testing.assert_array_equal(again.batch(7)[0], sampler.batch(7)[0])


@pytest.mark.parametrize("mode", ["packed", "patient"])
def test_every_patient_as_a_subset_draws_what_the_whole_split_draws(store, mode):
    split = store.split("train")
    whole = WindowSampler(split, 5, 17, seed=3, pad_id=0, mode=mode)
    everyone = WindowSampler(split, 5, 17, seed=3, pad_id=0, mode=mode, patients=np.arange(split.n_patients))
    for step in (0, 4):
        np.testing.assert_array_equal(whole.batch(step)[0], everyone.batch(step)[0])


def test_a_subset_shorter_than_a_window_is_refused(store):
    split = store.split("train")
    with pytest.raises(InputError, match=r"split 'train' \(its subset of 1 patients\) has \d+ tokens, fewer than"):
        WindowSampler(split, 2, 500, seed=0, pad_id=0, patients=np.array([0]))
