"""How well the check judges a labelled file of items for an 8-year-old (violence blocked, a PG
limit): the share of unsafe items blocked and of harmless ones over-blocked, for keywords alone,
plus the topic model, plus the title table. Used by a test and ``scripts/measure_check.py``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from insan_edge.config.family import Family
from insan_edge.config.system import SafetySettings
from insan_edge.ratings import box_rating
from insan_edge.safety import Meaning, assess

AT = datetime(2026, 11, 23, 15, 0)  # a Monday afternoon: no time window applies
CHILD = Family.model_validate(
    {"members": {"child": {"name": "Sam", "age": 8, "role": "child", "safety_level": "moderate"}},
     "safety": {"max_content_rating": "PG-13", "blocked_topics": ["violence"]}}
)  # fmt: skip


@dataclass(frozen=True)
class Labelled:
    title: str
    description: str
    kind: str
    unsafe: bool
    how: str  # title | words | meaning | rating | near
    content_rating: str | None = None


def load(path: Path) -> list[Labelled]:
    return [Labelled(**json.loads(line)) for line in path.read_text("utf-8").splitlines() if line]


def measure(rows: list[Labelled], meaning: Meaning | None, title_table: bool) -> dict[str, Any]:
    settings = SafetySettings(topic_model=meaning is not None, title_table=title_table)
    if meaning is not None:
        meaning.flags([f"{r.title}. {r.description}" for r in rows])
    blocked_unsafe, over_blocked, missed, wrong = 0, 0, [], []
    for r in rows:
        found = assess(
            title=r.title, description=r.description, category=r.kind,
            content_rating=box_rating(r.content_rating) if r.content_rating else "G",
            family=CHILD, members=["child"], settings=settings, at=AT, meaning=meaning,
        )  # fmt: skip
        if r.unsafe and not found.allowed:
            blocked_unsafe += 1
        elif r.unsafe:
            missed.append(r.title)
        elif not found.allowed:
            over_blocked += 1
            wrong.append(r.title)
    unsafe = sum(r.unsafe for r in rows)
    harmless = len(rows) - unsafe
    return {
        "blocked": round(blocked_unsafe / unsafe, 3),
        "over_blocked": round(over_blocked / harmless, 3),
        "unsafe": unsafe,
        "harmless": harmless,
        "missed": missed,
        "over_blocked_items": wrong,
    }
