"""Labelled sentence pairs (STS-B, MRPC, SICK and score-first TSV formats) for embedding and
cache evaluation."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    score: float  # similarity in 0..5 (STS), 1..5 (SICK relatedness) or 0/1 (MRPC label)
    paraphrase: bool  # STS score >= 4.0, MRPC label 1, SICK ENTAILMENT with relatedness >= 4


@dataclass
class PairsFile:
    pairs: list[Pair]
    format: str
    skipped: int


# STS-B gold 4 = "mostly equivalent, some unimportant details differ": the usual paraphrase cut.
STS_PARAPHRASE_MIN = 4.0
# SICK: relatedness alone also rates "no man is smiling" / "a man is smiling" at ~4 (it scores
# topic, not meaning), so a SICK pair is a paraphrase only when also judged an entailment.
SICK_JUDGEMENTS = frozenset({"ENTAILMENT", "NEUTRAL", "CONTRADICTION"})


def _float(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


def load_pairs(path: str | Path) -> PairsFile:
    """Read an STS-B (genre, file, year, id, score, s1, s2), MRPC (label, id1, id2, s1, s2), SICK
    (pair_ID, sentence_A, sentence_B, relatedness_score, entailment_judgment) or score-first
    (score, s1, s2) TSV.

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
            elif (len(row) == 5 and row[4] in SICK_JUDGEMENTS and row[0].isdigit()
                  and (score := _float(row[3])) is not None):
                formats.add("sick")
                pairs.append(Pair(row[1], row[2], score,
                                  score >= STS_PARAPHRASE_MIN and row[4] == "ENTAILMENT"))
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
