"""The nested subset of train patients behind train.unique_tokens, against a hand count: a fixed order of
subject ids (no seed), the shortest prefix reaching U, nested across U, and the store's errors."""

import numpy as np
import pytest

from scaling.common.errors import InputError
from scaling.data.token_store import TokenStore, nested_patient_order, train_subset, write_token_store
from scaling.data.vocab import Vocabulary

LENGTHS = [5, 30, 12, 7, 41, 3, 19, 26, 8, 15, 22, 11]  # 199 tokens in 12 patients
SUBJECTS = [104, 7, 55, 23, 990, 12, 301, 46, 8, 77, 1000, 64]


def splitmix64(x: int) -> int:
    """splitmix64's finalizer on one integer, written out in Python's big integers."""
    mask = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    vocab = Vocabulary(tokens=["[PAD]", "[EOS]", "A"], categories=["special", "special", "other"],
                       kinds=["special", "special", "code"], texts=["", "", "A"])
    offsets = np.r_[0, np.cumsum(LENGTHS)]
    tokens = np.full(offsets[-1], 2)
    tokens[offsets[1:] - 1] = 1
    splits = {"train": (tokens, offsets, np.array(SUBJECTS)), "tuning": (tokens[:40], offsets[:4], np.arange(3))}
    path = tmp_path_factory.mktemp("unique") / "tok"
    write_token_store(path, vocab, splits, {"splits": {"train": {"tokens": 199, "patients": 12}}}, {})
    return path


def hand_subset(unique: float) -> list[int]:
    """Patients by splitmix64(subject_id), taken one at a time until their tokens reach `unique`."""
    order = sorted(range(len(SUBJECTS)), key=lambda i: splitmix64(SUBJECTS[i]))
    taken, total = [], 0
    for i in order:
        if total >= unique:
            break
        taken.append(i)
        total += LENGTHS[i]
    return sorted(taken)


def test_the_store_knows_its_size(store):
    opened = TokenStore.open(store)
    assert opened.unique_train_tokens == sum(LENGTHS) == opened.stats["splits"]["train"]["tokens"]
    assert opened.unique_train_patients == len(LENGTHS)


def test_the_order_is_a_fixed_hash_of_the_subject_id():
    order = nested_patient_order(np.array(SUBJECTS))
    assert order.tolist() == sorted(range(len(SUBJECTS)), key=lambda i: splitmix64(SUBJECTS[i]))
    # A patient's place relative to another does not depend on which other patients the split holds.
    kept = [0, 3, 4, 9, 11]
    sub_order = [kept[i] for i in nested_patient_order(np.array(SUBJECTS)[kept])]
    assert sub_order == [i for i in order.tolist() if i in kept]
    assert nested_patient_order(np.array([-5, 2**62, 0])).tolist() == sorted(
        range(3), key=lambda i: splitmix64([-5, 2**62, 0][i] % 2**64))


@pytest.mark.parametrize("unique", [1, 5, 6, 30, 31, 57.5, 100, 150, 198, 199])
def test_the_subset_is_the_shortest_prefix_reaching_u(store, unique):
    split = TokenStore.open(store).split("train")
    subset = split.nested_subset(unique)
    assert subset.tolist() == hand_subset(unique)
    tokens = split.lengths[subset].sum()
    assert tokens >= unique
    # shortest: without the prefix's last patient it falls short of U
    last = [i for i in split.nested_order.tolist() if i in subset.tolist()][-1]
    assert tokens - LENGTHS[last] < unique
    # deterministic across calls and stores opened again
    assert TokenStore.open(store).split("train").nested_subset(unique).tolist() == subset.tolist()


def test_subsets_are_nested(store):
    split = TokenStore.open(store).split("train")
    previous: set[int] = set()
    for unique in range(1, 200, 7):
        subset = set(split.nested_subset(unique).tolist())
        assert previous <= subset
        previous = subset
    assert previous | set(split.nested_subset(199).tolist()) == set(range(12))


def test_train_subset_checks_the_store(store):
    opened = TokenStore.open(store)
    whole = train_subset(opened, None, 10)
    assert (whole.patients, whole.tokens, whole.n_patients) == (None, 199, 12)
    everyone = train_subset(opened, 199, 10)
    assert everyone.patients is None and everyone.tokens == 199  # every patient: the whole split, as without U
    part = train_subset(opened, 50, 10)
    assert part.patients.tolist() == hand_subset(50) and part.tokens == sum(LENGTHS[i] for i in hand_subset(50))
    with pytest.raises(InputError) as e:
        train_subset(opened, 200, 10, source="run.toml")
    assert str(e.value) == (f"run.toml: train.unique_tokens = 200 is more than the 199 tokens of the train split "
                            f"of the token store {store}")
    first = hand_subset(1)
    with pytest.raises(InputError, match=r"^g.toml: grid.unique_tokens\[2\] = 1 selects 1 train patients of "
                                         rf"{LENGTHS[first[0]]} tokens, fewer than one window of seq_len \+ 1 = 60"):
        train_subset(opened, 1, 60, field="grid.unique_tokens[2]", source="g.toml")
    for bad in (0, -3, float("inf"), float("nan")):
        with pytest.raises(InputError, match="must be a positive, finite number of tokens"):
            train_subset(opened, bad, 10)
