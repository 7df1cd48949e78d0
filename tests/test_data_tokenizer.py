"""The tokenizer: sequences counted by hand, vocabulary from train only, value bins, round trips."""

import numpy as np
import pyarrow as pa
from meds_builders import t, write_dataset

from scaling.data.codes import code_category, code_pieces
from scaling.data.decoding import detokenize
from scaling.data.meds_io import read_meds
from scaling.data.token_store import TokenStore
from scaling.data.tokenizer import TokenizerSettings, tokenize_events

PATIENT_1 = [
    (1, None, "GENDER//F", None),
    (1, t(1980, 1, 1), "MEDS_BIRTH", None),
    (1, t(2020, 1, 1, 8), "HOSPITAL_ADMISSION//EW EMER.//EMERGENCY ROOM", None),
    (1, t(2020, 1, 1, 8), "LAB//50912//mg/dL", 1.2),
    (1, t(2020, 1, 1, 8, 3), "LAB//50912//mg/dL", 0.7),  # 3 minutes later: no time token
    (1, t(2020, 1, 1, 9, 30), "DIAGNOSIS//ICD//10//E119", None),
    (1, t(2021, 6, 1), "MEDICATION//ATC//A10BA02", None, "metformin"),  # 517 days: two 6-month tokens
    (1, t(2021, 6, 1), "MEDS_DEATH", None),
]


def tokens_of(vocab, ids):
    return [vocab.tokens[i] for i in ids]


def tokenize(tmp_path, shards, splits, min_count=1, codes=None):
    root = write_dataset(tmp_path / "meds", shards, splits, codes=codes)
    return tokenize_events(read_meds(root), TokenizerSettings(min_count=min_count))


def test_sequence_matches_hand_written_tokens(tmp_path):
    stats, vocab, splits = tokenize(tmp_path, {"a.parquet": PATIENT_1}, {1: "train"})
    tokens, offsets, subjects = splits["train"]
    # train values of LAB//50912: [1.2, 0.7] -> deciles 0.75 ... 1.15 -> 0.7 in Q1, 1.2 in Q10
    assert tokens_of(vocab, tokens) == [
        "GENDER//F", "AGE//40-44",
        "HOSPITAL_ADMISSION//EW EMER.//EMERGENCY ROOM",
        "LAB//50912//mg/dL", "VALUE//Q10",
        "LAB//50912//mg/dL", "VALUE//Q1",
        "TIME//1h-2h", "DIAGNOSIS//ICD//10//E11", "ICD10//4:9",
        "TIME//6mo", "TIME//6mo", "MEDICATION//ATC//A10", "ATC//L3:B", "ATC//L4:A", "ATC//L5:02",
        "MEDS_DEATH", "[EOS]",
    ]
    assert offsets.tolist() == [0, 18] and subjects.tolist() == [1]
    assert stats["splits"]["train"] == {"patients": 1, "events": 8, "tokens": 18, "tokens_per_event": 2.25,
                                        "tokens_per_patient": 18.0}


def test_time_interval_boundaries(tmp_path):
    """A gap exactly at a class's lower bound falls in that class; below 5 minutes there is none."""
    base = t(2020, 1, 1)
    gaps_minutes = [4.99, 5, 14.99, 15, 60, 1440, 3 * 1440, 7 * 1440, 14 * 1440, 31 * 1440, 92 * 1440]
    rows, now = [(1, base, "LAB//A", None)], base.timestamp()
    from datetime import datetime
    for g in gaps_minutes:
        now += g * 60
        rows.append((1, datetime.fromtimestamp(now), "LAB//A", None))
    _, vocab, splits = tokenize(tmp_path, {"a.parquet": rows}, {1: "train"})
    times = [x for x in tokens_of(vocab, splits["train"][0]) if x.startswith("TIME//")]
    assert times == ["TIME//5m-15m", "TIME//5m-15m", "TIME//15m-1h", "TIME//1h-2h", "TIME//1d-3d",
                     "TIME//3d-1w", "TIME//1w-2w", "TIME//2w-1mo", "TIME//1mo-3mo", "TIME//3mo-6mo"]


def test_vocabulary_comes_from_train_only(tmp_path):
    train = [(1, t(2020, 1, 1), "LAB//A", 1.0), (1, t(2020, 1, 2), "LAB//A", 2.0)]
    tuning = [(2, t(2020, 1, 1), "LAB//A", 100.0), (2, t(2020, 1, 1), "DIAGNOSIS//ICD//10//Z999", None),
              (2, t(2020, 1, 1), "DIAGNOSIS//ICD//10//Z99", None)]
    stats, vocab, splits = tokenize(tmp_path, {"a.parquet": train + tuning}, {1: "train", 2: "tuning"})
    assert "DIAGNOSIS//ICD//10//Z99" not in vocab.index
    assert vocab.value_bin_edges["LAB//A"] == list(np.quantile([1.0, 2.0], np.arange(1, 10) / 10))
    assert tokens_of(vocab, splits["tuning"][0]) == ["LAB//A", "VALUE//Q10", "UNK//diagnosis", "UNK//diagnosis",
                                                     "[EOS]"]
    assert stats["unknown_token_rate"]["tuning"] == 0.4


def test_rare_suffix_cuts_code_at_its_parent(tmp_path):
    rows = [(i, t(2020, 1, 1), "DIAGNOSIS//ICD//10//E119", None) for i in range(3)]
    rows += [(3, t(2020, 1, 1), "DIAGNOSIS//ICD//10//E118", None)]
    _, vocab, splits = tokenize(tmp_path, {"a.parquet": rows}, {i: "train" for i in range(4)}, min_count=2)
    tokens, offsets, _ = splits["train"]
    last = tokens_of(vocab, tokens[offsets[3]:offsets[4]])
    assert last == ["DIAGNOSIS//ICD//10//E11", "[EOS]"]  # the head E11 was seen 4 times, '4:8' once
    assert detokenize(tokens[offsets[3]:offsets[4]], vocab)[0][0].code == "DIAGNOSIS//ICD//10//E11"


def test_metadata_bin_edges_are_honoured(tmp_path):
    codes = pa.table({"code": ["LAB//A"], "description": ["a lab"],
                      "parent_codes": pa.array([None], pa.list_(pa.string())),
                      "value_bin_edges": pa.array([[0.0, 10.0, 20.0]], pa.list_(pa.float64()))})
    rows = [(1, t(2020, 1, d), "LAB//A", v) for d, v in zip(range(1, 6), [-1.0, 0.0, 9.9, 10.0, 25.0])]
    _, vocab, splits = tokenize(tmp_path, {"a.parquet": rows}, {1: "train"}, codes=codes)
    values = [x for x in tokens_of(vocab, splits["train"][0]) if x.startswith("VALUE//")]
    assert values == ["VALUE//Q1", "VALUE//Q2", "VALUE//Q2", "VALUE//Q3", "VALUE//Q4"]


def test_shards_and_subject_order_do_not_matter(tmp_path):
    """Subjects come out sorted by id with each timeline in time order, however shards are laid out."""
    a = [(5, t(2020, 1, 2), "LAB//B", None), (5, t(2020, 1, 1), "LAB//A", None)]
    b = [(2, t(2021, 1, 1), "LAB//C", None)]
    _, vocab, splits = tokenize(tmp_path, {"z.parquet": a, "a/b.parquet": b}, {5: "train", 2: "train"})
    tokens, offsets, subjects = splits["train"]
    assert subjects.tolist() == [2, 5]
    assert tokens_of(vocab, tokens) == ["LAB//C", "[EOS]", "LAB//A", "TIME//1d-3d", "LAB//B", "[EOS]"]


def test_detokenize_round_trips_codes_bins_and_gaps(tmp_path):
    _, vocab, splits = tokenize(tmp_path, {"a.parquet": PATIENT_1}, {1: "train"})
    (events,) = detokenize(splits["train"][0], vocab)
    expected = [(r[2], r[1] is None) for r in PATIENT_1 if r[2] != "MEDS_BIRTH"]
    assert [(e.code, e.static) for e in events] == expected
    assert [e.value_bin for e in events if e.value_bin is not None] == [9, 0]
    assert [e.numeric_value for e in events if e.value_bin is not None] == [np.float32(1.2), np.float32(0.7)]
    assert events[-2].time_tokens == ("TIME//6mo", "TIME//6mo")


def test_code_pieces_concatenate_to_the_code():
    for code, n in [("DIAGNOSIS//ICD//10//E119", 2), ("ICD10CM//E11.65", 3), ("MEDICATION//ATC//A10BA02", 4),
                    ("MEDICATION//ATC//N02", 1), ("LAB//50912//mg/dL", 1), ("E119", 1),
                    ("HOSPITAL_ADMISSION//EW EMER.//EMERGENCY ROOM", 1)]:
        pieces = code_pieces(code)
        assert "".join(p.text for p in pieces) == code and len(pieces) == n
    assert code_category("HOSPITAL_DISCHARGE//HOME") == "encounter"
    assert code_category("MEDICATION//START//12345") == "medication"
    assert code_category("LAB//50912//mg/dL") == "lab"
    assert code_category("MEDS_DEATH") == "death"


def test_token_store_on_disk_matches_and_is_memory_mapped(tmp_path, run_cli):
    root = write_dataset(tmp_path / "meds", {"a.parquet": PATIENT_1 + [(2, t(2020, 1, 1), "LAB//A", None)]},
                         {1: "train", 2: "tuning"})
    code, _, _ = run_cli("data", "tokenize", root, "--out", tmp_path / "tok", "--min-count", "1")
    assert code == 0
    store = TokenStore.open(tmp_path / "tok")
    train = store.split("train")
    assert isinstance(train.tokens, np.memmap) and train.tokens.dtype == np.uint16
    assert train.n_tokens == 18 and store.split("tuning").n_patients == 1
    assert store.stats["vocab_size"] == store.vocab.size
    cats = store.vocab.size_by_category()
    assert cats["time"] == 13 and cats["age"] == 21 and cats["value"] == 10


def test_every_category_has_an_unknown_token(tmp_path):
    """A death in a held-out history is a token even when no train patient died."""
    rows = [(1, t(2020, 1, 1), "LAB//A", None), (2, t(2020, 1, 1), "LAB//A", None),
            (2, t(2020, 2, 1), "MEDS_DEATH", None)]
    _, vocab, splits = tokenize(tmp_path, {"a.parquet": rows}, {1: "train", 2: "held_out"})
    assert tokens_of(vocab, splits["held_out"][0]) == ["LAB//A", "TIME//1mo-3mo", "UNK//death", "[EOS]"]
