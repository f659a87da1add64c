"""Labelled sentence pairs (STS-B and MRPC TSV formats) for embedding and cache evaluation."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    score: float  # similarity in 0..5 (STS) or 0/1 (MRPC label)
    paraphrase: bool  # STS score >= 4.0, or MRPC label 1


@dataclass
class PairsFile:
    pairs: list[Pair]
    format: str
    skipped: int


# STS-B gold 4 = "mostly equivalent, some unimportant details differ": the usual paraphrase cut.
STS_PARAPHRASE_MIN = 4.0


def _float(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


def load_pairs(path: str | Path) -> PairsFile:
    """Read an STS-B (genre, file, year, id, score, s1, s2) or MRPC (label, id1, id2, s1, s2) TSV.

    The format is recognised per row; rows in neither format are counted and skipped.
    """
    pairs: list[Pair] = []
    skipped = 0
    formats: set[str] = set()
    with open(path, encoding="utf-8-sig", newline="") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) >= 7 and (score := _float(row[4])) is not None:
                formats.add("sts")
                pairs.append(Pair(row[5], row[6], score, score >= STS_PARAPHRASE_MIN))
            elif len(row) >= 5 and row[0] in ("0", "1"):
                formats.add("mrpc")
                pairs.append(Pair(row[3], row[4], float(row[0]), row[0] == "1"))
            elif len(row) >= 3 and (score := _float(row[0])) is not None and len(row) == 3:
                formats.add("score-first")
                pairs.append(Pair(row[1], row[2], score, score >= STS_PARAPHRASE_MIN))
            else:
                skipped += 1
    fmt = "+".join(sorted(formats)) or "unknown"
    return PairsFile(pairs=pairs, format=fmt, skipped=skipped)
