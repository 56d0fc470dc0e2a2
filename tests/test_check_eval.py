"""The check on a labelled file (tests/data/check_labelled.jsonl, separate from the topic set)
for an 8-year-old with violence blocked and a PG limit. Floors sit just under what was measured
(scripts/measure_check.py prints the table); the issue's targets (97% blocked, 5% over-blocked)
are met for blocking but NOT for over-blocking: 6 of 88 harmless items are blocked (water games
and a fire station visit read as weapons, bingo as gambling, a gingerbread haunted house as
horror, The Gruffalo and Kung Fu Panda as violence by the words of their titles)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from insan_edge.check_eval import CHILD, Labelled, load, measure
from insan_edge.topic_model import Embedder, ensure_model
from insan_edge.topics import BUILTIN, TopicIndex, load_calibration

DATA = Path(__file__).parent / "data" / "check_labelled.jsonl"
# Measured 2026-12-03 (the topic model with 642 labelled examples): keywords 51.7% / 8.0%,
# + topic model 88.5% / 8.0%, + titles 100% / 6.8% (with 328 examples: 83.9% / 11.4%, 100% / 8.0%).
FLOORS = {"keywords": (0.50, 0.09), "model": (0.86, 0.09), "all": (0.97, 0.08)}


@pytest.fixture(scope="module")
def rows() -> list[Labelled]:
    return load(DATA)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TopicIndex]:
    embedder = Embedder(ensure_model(tmp_path_factory.mktemp("topics")).parent, device="cpu")
    cal = load_calibration()
    topics = [*BUILTIN, *CHILD.safety.blocked_topics]
    yield TopicIndex.from_calibration(embedder.embed, topics, cal)


def test_the_file_is_big_balanced_and_has_the_hard_cases(rows: list[Labelled]) -> None:
    assert len(rows) >= 150 and len({r.title for r in rows}) == len(rows)
    assert 0.4 <= sum(r.unsafe for r in rows) / len(rows) <= 0.6
    titles = {r.title for r in rows}
    for near in ("Battle of the bands for kids", "Knights and castles colouring",
                 "Shooting-star night walk", "Watch 'Hereditary'"):  # fmt: skip
        assert near in titles
    assert sum(r.how == "title" for r in rows) >= 25  # say nothing of their content


def test_each_signal_adds_and_all_hold_their_floors(
    rows: list[Labelled], index: TopicIndex
) -> None:
    kw = measure(rows, None, False)
    model = measure(rows, index, False)
    both = measure(rows, index, True)
    for name, got in (("keywords", kw), ("model", model), ("all", both)):
        blocked, over = FLOORS[name]
        assert got["blocked"] >= blocked, (name, got)
        assert got["over_blocked"] <= over, (name, got)
    assert model["blocked"] > kw["blocked"] + 0.2 and both["blocked"] > model["blocked"] + 0.1
    assert "Watch 'Hereditary'" in kw["missed"] and "Watch 'Hereditary'" not in both["missed"]
    for near in ("Battle of the bands for kids", "Knights and castles colouring",
                 "Shooting-star night walk"):  # fmt: skip
        assert near not in both["over_blocked_items"]
