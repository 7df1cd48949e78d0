"""Tokenizing a dataset a part at a time: the store equals the one made in one piece, whatever the
shards' layout; the split writer's subject order; the entropy floor scored in batches."""

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from meds_builders import t, write_dataset

import scaling.data.tokenizer as tokenizer
from scaling.common.errors import InputError
from scaling.data.meds_io import _shard_groups, open_meds_shards, read_meds, write_meds
from scaling.data.token_store import SPLITS, SplitWriter, TokenStore
from scaling.data.tokenizer import TokenizerSettings, tokenize_dataset, tokenize_events
from scaling.synth.generate import code_metadata, timelines_to_events
from scaling.synth.process import ClinicalProcess
from scaling.synth.replay import entropy_floor
from scaling.synth.world import make_world


def patient(subject, year, labs):
    rows = [(subject, None, "GENDER//F" if subject % 2 else "GENDER//M", None),
            (subject, t(1950 + subject, 1, 1), "MEDS_BIRTH", None)]
    for k, value in enumerate(labs):
        rows.append((subject, t(year, 1 + k, 1), f"LAB//{subject % 3}//mg/dL", value))
    rows.append((subject, t(year, 12, 1), "DIAGNOSIS//ICD//10//E119", None))
    return rows


def test_shards_sharing_subjects_are_read_as_one_group():
    subjects = [np.array([1, 2]), np.array([3]), np.array([2, 4]), np.array([5]), np.array([4, 6])]
    assert _shard_groups(subjects) == [[0, 2, 4], [1], [3]]


def test_streamed_store_equals_the_store_made_in_one_piece(tmp_path, monkeypatch):
    """Shards out of subject order, one shard unsorted, one subject split across two shards, and batches
    of 3 rows: the store written a part at a time holds exactly what tokenizing all events at once gives."""
    p = {s: patient(s, 2000 + s, [0.5 * s + k for k in range(s % 4)]) for s in range(1, 13)}
    shards = {
        "b.parquet": p[7] + p[8] + p[9],
        "a.parquet": p[1] + p[2] + p[3][:3],                      # subject 3 continues in c.parquet
        "c.parquet": p[3][3:] + p[5] + p[4],                      # not sorted by subject_id
        "d/e.parquet": p[10] + p[11] + p[12] + p[6],
    }
    splits = {s: ("train" if s <= 8 else "tuning" if s <= 10 else "held_out") for s in p}
    root = write_dataset(tmp_path / "meds", shards, splits)
    settings = TokenizerSettings(min_count=1, n_value_bins=4)
    stats, vocab, whole = tokenize_events(read_meds(root), settings)

    shards_view = open_meds_shards(root)
    assert [[shards_view.files[i].name for i in g] for g in shards_view.groups] == [
        ["a.parquet", "c.parquet"], ["b.parquet"], ["e.parquet"]]
    original = tokenizer.open_meds_shards
    monkeypatch.setattr(tokenizer, "open_meds_shards",
                        lambda *a, **k: dataclasses.replace(original(*a, **k), batch_rows=3))
    streamed_stats = tokenize_dataset(root, tmp_path / "store", settings)
    store = TokenStore.open(tmp_path / "store")
    assert store.vocab.tokens == vocab.tokens
    for name in SPLITS:
        tokens, offsets, subject_ids = whole[name]
        split = store.split(name)
        np.testing.assert_array_equal(split.subject_ids, subject_ids)
        np.testing.assert_array_equal(split.offsets, offsets)
        np.testing.assert_array_equal(np.asarray(split.tokens), tokens)
    assert store.split("train").subject_ids.tolist() == list(range(1, 9))  # subject_id order, as one piece
    for key in ("splits", "unknown_token_rate", "vocab_by_category", "vocab_size"):
        assert streamed_stats[key] == stats[key]
    assert json.loads((tmp_path / "store" / "stats.json").read_text())["splits"] == stats["splits"]
    assert not list((tmp_path / "store").rglob("*.raw"))


def test_split_writer_puts_patients_in_subject_order(tmp_path):
    """Parts arriving out of subject order are written in subject_id order, each patient's tokens whole,
    also when the copy goes a few tokens at a time."""
    writer = SplitWriter(tmp_path / "train", np.dtype(np.uint16), chunk_tokens=3)
    writer.add(np.array([50, 51, 1, 60, 1]), np.array([0, 3, 5]), np.array([5, 6]))  # patients 5, 6
    writer.add(np.array([10, 1, 20, 21, 22, 1]), np.array([0, 2, 6]), np.array([1, 2]))  # patients 1, 2
    writer.add(np.zeros(0), np.array([0]), np.zeros(0))  # a part with no patient of this split
    writer.close()
    folder = tmp_path / "train"
    assert np.load(folder / "tokens.npy").tolist() == [10, 1, 20, 21, 22, 1, 50, 51, 1, 60, 1]
    assert np.load(folder / "tokens.npy").dtype == np.uint16
    assert np.load(folder / "offsets.npy").tolist() == [0, 2, 6, 9, 11]
    assert np.load(folder / "subject_ids.npy").tolist() == [1, 2, 5, 6]


def test_split_writer_with_no_patients_writes_empty_arrays(tmp_path):
    writer = SplitWriter(tmp_path / "held_out", np.dtype(np.uint16))
    writer.close()
    assert np.load(tmp_path / "held_out" / "tokens.npy").shape == (0,)
    assert np.load(tmp_path / "held_out" / "offsets.npy").tolist() == [0]


def test_bad_shard_met_while_streaming_is_one_input_error(tmp_path):
    """A shard whose code column is not a string is refused naming the shard, as read_meds refuses it."""
    root = write_dataset(tmp_path / "meds", {"0.parquet": patient(1, 2001, [1.0])}, {1: "train"})
    pq.write_table(pa.table({"subject_id": pa.array([1], pa.int64()), "time": pa.array([None], pa.timestamp("us")),
                             "code": pa.array([[1]], pa.list_(pa.int64()))}), root / "data" / "1.parquet")
    with pytest.raises(InputError, match=r"1\.parquet"):
        tokenize_dataset(root, tmp_path / "store", TokenizerSettings(min_count=1))
    assert not (tmp_path / "store").exists()


def test_entropy_floor_in_batches_equals_the_generator_log_probability(tmp_path):
    """The floor scored 37 patients at a time equals the -log p the generator recorded while sampling,
    averaged over every token but each patient's first."""
    world = make_world(0)
    process = ClinicalProcess(world, max_tokens=192)
    rng = np.random.default_rng(3)
    timelines = process.run(150, rng)
    events = timelines_to_events(timelines, world, np.arange(1, 151), rng)
    splits = pa.table({"subject_id": pa.array(np.arange(1, 151), pa.int64()), "split": ["train"] * 150})
    write_meds(tmp_path / "m", events, splits, code_metadata(world), {})
    tokenize_dataset(tmp_path / "m", tmp_path / "store", TokenizerSettings(min_count=1))
    floor = entropy_floor({"world_seed": 0, "max_tokens": 192}, TokenStore.open(tmp_path / "store"),
                          batch_patients=37)
    nll = timelines.token_nll
    expected = (np.nansum(nll) - nll[:, 0].sum()) / (timelines.n_tokens.sum() - 150)
    assert floor["train"]["patients_scored"] == 150
    assert floor["train"]["nats_per_token"] == pytest.approx(expected, abs=1e-6)
