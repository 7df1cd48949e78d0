"""Medical codes -> token pieces: the category of a code and its hierarchical sub-tokens.

A MEDS code is an arbitrary string such as `LAB//50912//mg/dL`, `DIAGNOSIS//ICD//10//E119` or
`HOSPITAL_ADMISSION//EW EMER.//EMERGENCY ROOM`. Its category comes from the first `//` segment
(keywords below). When the code system is recognised from the prefix, the last segment is split
into sub-tokens as CoMET and ETHOS do, so that a rare code shares the tokens of its parents:

- ICD-10 (`...ICD//10//E119`, `ICD10CM//E11.9`): the head token is the prefix plus the 3-character
  category (`DIAGNOSIS//ICD//10//E11`, with the dot when one follows), then one token per following
  character and position (`ICD10//4:9`).
- ATC (`...ATC//A10BA02`): the head is the prefix plus levels 1-2 (`A10`), then one token per
  further level (`ATC//L3:B`, `ATC//L4:A`, `ATC//L5:02`).

Concatenating the `text` of a code's pieces gives the code string back exactly.
"""

from __future__ import annotations

import re
from typing import NamedTuple

BIRTH_CODE = "MEDS_BIRTH"
DEATH_CODE = "MEDS_DEATH"

# Checked in order against the code's first `//` segment (upper-cased); first match wins.
CATEGORY_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("demographic", ("GENDER", "SEX", "RACE", "ETHNICITY", "MARITAL", "LANGUAGE", "INSURANCE")),
    ("encounter", ("ADMISSION", "DISCHARGE", "ENCOUNTER", "VISIT", "ED_REGISTRATION", "ED_OUT", "TRANSFER")),
    ("diagnosis", ("DIAGNOSIS", "ICD", "CONDITION", "DX")),
    ("procedure", ("PROCEDURE", "CPT", "HCPCS", "PROC")),
    ("medication", ("MEDICATION", "DRUG", "ATC", "PRESCRIPTION", "RX", "INFUSION")),
    ("lab", ("LAB", "LOINC", "MEASUREMENT", "VITAL", "OBSERVATION")),
)

_ICD10 = re.compile(r"^[A-Z][0-9][0-9A-Z](\.?[0-9A-Z]{1,4})?$")
_ATC = re.compile(r"^[A-Z][0-9]{2}([A-Z]([A-Z]([0-9]{2})?)?)?$")


class Piece(NamedTuple):
    token: str
    kind: str  # "code" (a whole code or a hierarchical head) or "code_suffix"
    text: str  # the part of the code string this piece stands for


def code_category(code: str, static: bool = False) -> str:
    """The token category of a code; static rows default to demographic."""
    if code == DEATH_CODE:
        return "death"
    first = code.split("//", 1)[0].upper()
    for category, keywords in CATEGORY_KEYWORDS:
        if any(k in first for k in keywords):
            return category
    return "demographic" if static else "other"


def code_pieces(code: str) -> list[Piece]:
    """Split a code into its head and sub-tokens when its system is recognised; else one piece."""
    prefix, sep, last = code.rpartition("//")
    system = prefix.upper().replace("-", "")
    if sep and ("ICD//10" in system or "ICD10" in system) and _ICD10.match(last):
        head_len = 4 if len(last) > 3 and last[3] == "." else 3
        pieces = [Piece(prefix + sep + last[:head_len], "code", prefix + sep + last[:head_len])]
        rest = last[head_len:]
        pieces += [Piece(f"ICD10//{4 + i}:{ch}", "code_suffix", ch) for i, ch in enumerate(rest)]
        return pieces
    if sep and "ATC" in system and _ATC.match(last):
        pieces = [Piece(prefix + sep + last[:3], "code", prefix + sep + last[:3])]
        levels = [("L3", last[3:4]), ("L4", last[4:5]), ("L5", last[5:7])]
        pieces += [Piece(f"ATC//{level}:{text}", "code_suffix", text) for level, text in levels if text]
        return pieces
    return [Piece(code, "code", code)]
