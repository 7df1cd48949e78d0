"""The token vocabulary: token strings, ids, categories and kinds, saved as `vocab.json`.

Ids are assigned deterministically: special tokens first ([PAD] = 0, [EOS] = 1), then one unknown
token per category, the time-interval, age and value-bin tokens, then code tokens sorted by
category and string. Each token has a `kind` that tells the detokenizer what to do with it:
`special`, `unknown`, `time`, `age`, `value`, `code` (a whole code or the head of a hierarchical
code) or `code_suffix` (one more character of the code before it). For `code` and `code_suffix`
tokens, `text` is the part of the original code string the token stands for. The time-interval and
age tokens, and every table derived from them, are in scaling.data.scheme.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from scaling.common.errors import InputError

PAD = "[PAD]"
EOS = "[EOS]"

CATEGORIES = (
    "special",
    "demographic",
    "age",
    "time",
    "encounter",
    "diagnosis",
    "lab",
    "medication",
    "procedure",
    "value",
    "death",
    "other",
)

MAX_VALUE_BINS = 20  # at most this many bins per code (deciles by default: 10)


def value_token(bin_index: int) -> str:
    """Value-bin tokens are shared by all codes: Q1 is the lowest bin of whichever code precedes it."""
    return f"VALUE//Q{bin_index + 1}"


def value_bin_of(token: str) -> int:
    """The bin index of a value-bin token (`value_token`'s inverse)."""
    return int(token.rsplit("Q", 1)[1]) - 1


def unknown_token(category: str) -> str:
    return f"UNK//{category}"


@dataclass
class Vocabulary:
    tokens: list[str]
    categories: list[str]
    kinds: list[str]
    texts: list[str]
    # Per numeric code: the bin edges its values were cut with (len = number of bins - 1).
    value_bin_edges: dict[str, list[float]] = field(default_factory=dict)
    # Per numeric code: a representative value for each bin (the median of its train values).
    value_bin_centers: dict[str, list[float]] = field(default_factory=dict)
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @property
    def size(self) -> int:
        return len(self.tokens)

    @property
    def pad_id(self) -> int:
        return self.index[PAD]

    @property
    def eos_id(self) -> int:
        return self.index[EOS]

    def id(self, token: str) -> int:
        return self.index[token]

    def size_by_category(self) -> dict[str, int]:
        counts = {c: 0 for c in CATEGORIES}
        for c in self.categories:
            counts[c] += 1
        return {c: n for c, n in counts.items() if n}

    def to_json(self) -> dict:
        return {
            "size": self.size,
            "tokens": [
                {"id": i, "token": t, "category": c, "kind": k, "text": x}
                for i, (t, c, k, x) in enumerate(zip(self.tokens, self.categories, self.kinds, self.texts))
            ],
            "value_bin_edges": self.value_bin_edges,
            "value_bin_centers": self.value_bin_centers,
        }

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        try:
            obj = json.loads(Path(path).read_text())
            rows = obj["tokens"]
            return cls(
                tokens=[r["token"] for r in rows],
                categories=[r["category"] for r in rows],
                kinds=[r["kind"] for r in rows],
                texts=[r["text"] for r in rows],
                value_bin_edges=obj.get("value_bin_edges", {}),
                value_bin_centers=obj.get("value_bin_centers", {}),
            )
        except FileNotFoundError:
            raise InputError(f"{path}: no such file; expected a token store's vocab.json") from None
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise InputError(f"{path}: not a valid vocab.json ({e})") from None
