"""The token vocabulary: token strings, ids, categories and kinds, saved as `vocab.json`.

Ids are assigned deterministically: special tokens first ([PAD] = 0, [EOS] = 1), then one unknown
token per category, the time-interval, age and value-bin tokens, then code tokens sorted by
category and string. Each token has a `kind` that tells the detokenizer what to do with it:
`special`, `unknown`, `time`, `age`, `value`, `code` (a whole code or the head of a hierarchical
code) or `code_suffix` (one more character of the code before it). For `code` and `code_suffix`
tokens, `text` is the part of the original code string the token stands for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from scaling.errors import InputError

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

# (token string, lower bound in minutes). Gaps below the first bound get no token; the last class
# (>= 6 months) repeats once per full 6 months, as in ETHOS.
MINUTE, HOUR, DAY = 1, 60, 1440
MONTH = 30.4375 * DAY
TIME_INTERVALS: tuple[tuple[str, float], ...] = (
    ("TIME//5m-15m", 5 * MINUTE),
    ("TIME//15m-1h", 15 * MINUTE),
    ("TIME//1h-2h", HOUR),
    ("TIME//2h-6h", 2 * HOUR),
    ("TIME//6h-12h", 6 * HOUR),
    ("TIME//12h-1d", 12 * HOUR),
    ("TIME//1d-3d", DAY),
    ("TIME//3d-1w", 3 * DAY),
    ("TIME//1w-2w", 7 * DAY),
    ("TIME//2w-1mo", 14 * DAY),
    ("TIME//1mo-3mo", MONTH),
    ("TIME//3mo-6mo", 3 * MONTH),
    ("TIME//6mo", 6 * MONTH),
)
AGE_BUCKET_YEARS = 5
MAX_AGE_BUCKET = 100  # the last bucket is "100+"
MAX_VALUE_BINS = 20  # at most this many bins per code (deciles by default: 10)


def age_token(bucket_start: int) -> str:
    if bucket_start >= MAX_AGE_BUCKET:
        return f"AGE//{MAX_AGE_BUCKET}+"
    return f"AGE//{bucket_start}-{bucket_start + AGE_BUCKET_YEARS - 1}"


def value_token(bin_index: int) -> str:
    """Value-bin tokens are shared by all codes: Q1 is the lowest bin of whichever code precedes it."""
    return f"VALUE//Q{bin_index + 1}"


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
