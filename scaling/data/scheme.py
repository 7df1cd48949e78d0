"""The token scheme's facts about time and age, in one place: time units, interval classes, age buckets.

MEDS times are microseconds; the scheme counts gaps in minutes. A gap of 5 minutes or more between
timed events gets one interval token of 13 classes (`TIME_INTERVALS`, by lower bound), the last of
which (`TIME//6mo`, class `LONG_INTERVAL`) repeats once per full 6 months. The age at a patient's first
timed event is one token of a 5-year bucket (`AGE//40-44`), the last bucket open (`AGE//100+`).
Everything derived from these tables (bounds, middles, the bucket of a token) is derived here.
"""

from __future__ import annotations

import numpy as np

# Time units. Minutes are the scheme's unit; microseconds are MEDS's.
MINUTE, HOUR, DAY = 1, 60, 1440  # in minutes
MONTH = 30.4375 * DAY  # a twelfth of a year
YEAR = 365.25 * DAY
SECONDS_PER_MINUTE = 60
US_PER_SECOND = 1_000_000
US_PER_MINUTE = SECONDS_PER_MINUTE * US_PER_SECOND
US_PER_DAY = DAY * US_PER_MINUTE
US_PER_YEAR = YEAR * US_PER_MINUTE

# (token string, lower bound in minutes). Gaps below the first bound get no token; the last class
# (>= 6 months) repeats once per full 6 months, as in ETHOS.
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
INTERVAL_TOKENS = tuple(name for name, _ in TIME_INTERVALS)
LONG_INTERVAL = len(TIME_INTERVALS) - 1  # the class of TIME//6mo, one token per full 6 months
SIX_MONTHS = TIME_INTERVALS[LONG_INTERVAL][1]  # minutes
INTERVAL_LOWER = np.array([lower for _, lower in TIME_INTERVALS])  # (13,) minutes
# (14,) class k spans [INTERVAL_EDGES[k], INTERVAL_EDGES[k + 1]); one 6-month token spans the last pair.
INTERVAL_EDGES = np.r_[INTERVAL_LOWER, 2 * SIX_MONTHS]
# (13,) the middle of each class, the best guess of a gap; a 6-month token counts 6 months (a run of
# them ends half a token later: `interval_minutes`).
INTERVAL_MIDDLE = np.r_[(INTERVAL_EDGES[:-2] + INTERVAL_EDGES[1:-1]) / 2, SIX_MONTHS]

AGE_BUCKET_YEARS = 5
MAX_AGE_BUCKET = 100  # the last bucket is "100+"
N_AGE_BUCKETS = MAX_AGE_BUCKET // AGE_BUCKET_YEARS + 1


def age_token(bucket_start: int) -> str:
    """The age token of the bucket that starts at `bucket_start` years."""
    if bucket_start >= MAX_AGE_BUCKET:
        return f"AGE//{MAX_AGE_BUCKET}+"
    return f"AGE//{bucket_start}-{bucket_start + AGE_BUCKET_YEARS - 1}"


AGE_TOKENS = tuple(age_token(k * AGE_BUCKET_YEARS) for k in range(N_AGE_BUCKETS))  # bucket index -> token


def age_bucket(years: np.ndarray) -> np.ndarray:
    """The bucket index (0 .. N_AGE_BUCKETS - 1, float) of ages in years."""
    return np.clip(np.floor(years / AGE_BUCKET_YEARS), 0, MAX_AGE_BUCKET // AGE_BUCKET_YEARS)


def interval_class(gap_minutes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class (-1: no token), number of tokens) of gaps in minutes."""
    interval = np.searchsorted(INTERVAL_LOWER, gap_minutes, side="right") - 1
    repeats = np.where(interval == LONG_INTERVAL, np.floor(gap_minutes / SIX_MONTHS), 1)
    return interval, repeats


def interval_minutes(token: str, middle: bool = True) -> float:
    """Minutes an interval token stands for: the middle of its class (the lower bound when
    middle=False); a `TIME//6mo` token is 6 months, and a run of them ends half a class later."""
    k = INTERVAL_TOKENS.index(token)
    return float(INTERVAL_MIDDLE[k] if middle else INTERVAL_LOWER[k])


def elapsed_minutes(interval: np.ndarray, repeats: np.ndarray, middle: bool) -> np.ndarray:
    """Minutes events' interval tokens stand for (0 for an event without one), from their class (-1: none)
    and number of tokens: class middles (a run of 6-month tokens ends half a token after its last
    token's start), or lower bounds (middle=False: the least the gap can be)."""
    interval = np.asarray(interval, np.int64)
    k = np.maximum(interval, 0)
    if middle:
        minutes = np.where(interval == LONG_INTERVAL, (repeats + 0.5) * SIX_MONTHS, INTERVAL_MIDDLE[k])
    else:
        minutes = np.where(interval == LONG_INTERVAL, repeats * SIX_MONTHS, INTERVAL_LOWER[k])
    return np.where(interval >= 0, minutes, 0.0)
