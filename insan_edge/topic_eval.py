"""Precision and recall of the topic signals on a labelled set, and threshold calibration.

Used by ``scripts/calibrate_topics.py`` (which writes the shipped thresholds) and by the test
that holds the topic check to its floors. The set is split in two by line: thresholds are
chosen on the even lines and judged on the odd ones, so the reported numbers are not the
numbers the thresholds were fitted to.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from insan_edge.safety import topic_hits
from insan_edge.topics import BUILTIN


@dataclass(frozen=True)
class Labelled:
    text: str
    topics: frozenset[str]
    rating: str
    hard: bool


def load_labelled(path: Path) -> list[Labelled]:
    rows = []
    for line in path.read_text("utf-8").splitlines():
        if line.strip():
            d = json.loads(line)
            rows.append(Labelled(d["text"], frozenset(d["topics"]), d["rating"], bool(d["hard"])))
    return rows


def split(rows: Sequence[Labelled]) -> tuple[list[Labelled], list[Labelled]]:
    """(calibration, evaluation): even and odd lines."""
    return list(rows[0::2]), list(rows[1::2])


def _topic_words(text: str, topic: str) -> bool:
    return bool(topic_hits(text, [topic]))


def keyword_matrix(
    rows: Sequence[Labelled],
    topics: Sequence[str],
    hits: Callable[[str, str], bool] = _topic_words,
) -> np.ndarray:
    return np.array([[hits(r.text, t) for t in topics] for r in rows], dtype=bool)


def load_crisis(path: Path) -> list[Labelled]:
    """tests/data/crisis.jsonl: each message's signal as its one topic."""
    rows = []
    for line in path.read_text("utf-8").splitlines():
        if line.strip():
            d = json.loads(line)
            signal = d["signal"]
            rows.append(
                Labelled(d["text"], frozenset([signal] if signal else []), "G", bool(d["hard"]))
            )
    return rows


def truth_matrix(rows: Sequence[Labelled], topics: Sequence[str]) -> np.ndarray:
    return np.array([[t in r.topics for t in topics] for r in rows], dtype=bool)


def _pr(pred: np.ndarray, truth: np.ndarray) -> dict[str, float | int]:
    tp = int((pred & truth).sum())
    fp = int((pred & ~truth).sum())
    fn = int((~pred & truth).sum())
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 3), "recall": round(recall, 3), "f1": round(f1, 3),
            "tp": tp, "fp": fp, "fn": fn}  # fmt: skip


def combined(
    scores: np.ndarray, keywords: np.ndarray, threshold: float, floor: float
) -> np.ndarray:
    """What the safety check flags: the meaning alone, or a keyword the meaning does not deny."""
    return (scores >= threshold) | (keywords & (scores >= floor))


def calibrate(scores: np.ndarray, keywords: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(threshold, keyword floor) with the best F1 of ``combined`` on these rows; ties go to
    the higher threshold and the lower floor (fewer false flags, keywords kept)."""
    base = float(_pr(keywords, truth)["f1"])
    thresholds = np.array(sorted(np.unique(np.round(scores, 4)), reverse=True))
    floors = np.round(np.arange(-0.4, 0.41, 0.02), 2)
    # Every (threshold, floor) at once: [thresholds, floors, rows] predictions.
    pred = (scores[None, None, :] >= thresholds[:, None, None]) | (
        keywords[None, None, :] & (scores[None, None, :] >= floors[None, :, None])
    )
    tp = (pred & truth).sum(axis=2)
    fp = (pred & ~truth).sum(axis=2)
    fn = (~pred & truth).sum(axis=2)
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
    recall = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 1.0)
    f1 = np.where(
        precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0
    )
    f1 = np.round(np.where(floors[None, :] < thresholds[:, None], f1, -1.0), 3)
    best = np.unravel_index(int(np.argmax(f1)), f1.shape)  # the first of the best, row-major
    if f1[best] <= base + 1e-9:
        return 1.01, -1.0
    return round(float(thresholds[best[0]]), 4), round(float(floors[best[1]]), 2)


def report(
    rows: Sequence[Labelled],
    scores: np.ndarray,
    thresholds: dict[str, float],
    keyword_floors: dict[str, float],
    topics: Sequence[str] = tuple(BUILTIN),
    hits: Callable[[str, str], bool] = _topic_words,
) -> dict[str, Any]:
    """Per topic: keywords alone, the model alone, and both; plus false flags on hard negatives."""
    kw = keyword_matrix(rows, topics, hits)
    truth = truth_matrix(rows, topics)
    limits = np.array([thresholds[t] for t in topics], dtype=np.float32)
    floors = np.array([keyword_floors.get(t, -1.0) for t in topics], dtype=np.float32)
    model = scores >= limits
    both = combined(scores, kw, limits, floors)  # type: ignore[arg-type]
    hard = np.array([r.hard and not r.topics for r in rows], dtype=bool)
    out: dict[str, Any] = {}
    for j, topic in enumerate(topics):
        out[topic] = {
            "positives": int(truth[:, j].sum()),
            "keywords": _pr(kw[:, j], truth[:, j]),
            "model": _pr(model[:, j], truth[:, j]),
            "keywords+model": _pr(both[:, j], truth[:, j]),
            "threshold": thresholds[topic],
            "keyword_floor": keyword_floors.get(topic, -1.0),
        }
    out["_all"] = {
        "keywords": _pr(kw, truth),
        "keywords+model": _pr(both, truth),
        "hard_negatives": int(hard.sum()),
        "hard_negatives_flagged": int(both[hard].any(axis=1).sum()),
        "hard_negatives_flagged_by_keywords": int(kw[hard].any(axis=1).sum()),
    }
    return out
