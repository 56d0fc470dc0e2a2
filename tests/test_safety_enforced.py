"""Safety must bite: a grammar forces the model to write known violations, and none get out."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import family_config

BAD_AND_GOOD = [
    # blocked topic (violence) for the whole family, and words that push the rating up
    {"title": "Zombie war night", "description": "A bloody battle movie marathon.",
     "category": "craft", "content_rating": "G", "reason": "exciting"},
    # kim avoids spiders
    {"title": "Spider safari", "description": "Find and count the spiders in the garden.",
     "category": "outdoor", "content_rating": "G", "reason": "nature"},
    # claimed rating above kim's limit (8, strict: G)
    {"title": "Teen detective novel", "description": "A mystery book for older readers.",
     "category": "book", "content_rating": "PG-13", "reason": "mystery"},
    # a screen category inside kim's 19:00-07:00 restriction
    {"title": "Cartoon marathon", "description": "Three episodes of a friendly cartoon.",
     "category": "show", "content_rating": "G", "reason": "relaxing"},
    # fine for kim at any time
    {"title": "Paper rocket craft", "description": "Fold and launch paper rockets together.",
     "category": "craft", "content_rating": "G", "reason": "loves space"},
]  # fmt: skip


def _forcing_grammar(path: Path, items: list[dict[str, Any]]) -> Path:
    """A GBNF that only admits this exact JSON: the model has no choice."""
    text = json.dumps({"items": items}, ensure_ascii=False)
    path.write_text("root ::= " + json.dumps(text, ensure_ascii=False) + "\n")
    return path


def _audit(
    state: Path, request_id: str
) -> list[tuple[str, str | None, str | None, dict[str, Any]]]:
    with sqlite3.connect(state / "insan-edge.db") as db:
        rows = db.execute(
            "SELECT event, rule, member_id, detail FROM audit_log ORDER BY id"
        ).fetchall()
    out = [(e, r, m, json.loads(d)) for e, r, m, d in rows]
    return [row for row in out if row[3].get("request_id") == request_id]


@pytest.fixture
def forced_daemon(daemon_factory, tiny_model_path, tmp_path):  # type: ignore[no-untyped-def]
    """A real daemon whose model can only write BAD_AND_GOOD (the tiny model has no choice)."""
    grammar = _forcing_grammar(tmp_path / "force.gbnf", BAD_AND_GOOD)
    model = {"grammar_file": str(grammar), "context_length": 4096}
    return daemon_factory(
        family_config(tiny_model_path, tmp_path / "s", tmp_path / "x.sock", model=model)
    )


def test_forced_violations_never_reach_the_response(forced_daemon):  # type: ignore[no-untyped-def]
    d = forced_daemon
    evening = {"member": "kim", "count": 3, "context": {"at": "2026-11-23T20:00:00"}}
    answer = d.client.recommend("testfam", evening)

    titles = [i["title"] for i in answer["items"]]
    assert titles == ["Paper rocket craft"]  # one good item; the rest must never be served
    assert answer["dropped"] >= 4 and answer["generated"] >= 5
    rows = _audit(d.state_dir, answer["request_id"])
    fired = {(r[3]["title"], r[1], r[2]) for r in rows if r[0] == "item_dropped"}
    assert ("Zombie war night", "blocked_topic", None) in fired
    assert ("Zombie war night", "content_rating", "kim") in fired  # its words say PG-13 at least
    assert ("Spider safari", "avoided_topic", "kim") in fired
    assert ("Teen detective novel", "content_rating", "kim") in fired
    assert ("Cartoon marathon", "time_restriction", "kim") in fired
    served = [r[3]["title"] for r in rows if r[0] == "item_served"]
    assert served == ["Paper rocket craft"]
    # Later rounds produced the good item again: counted as a duplicate, not served twice.
    assert any(r[1] == "duplicate" for r in rows)
    messages = {r[1]: r[3]["message"] for r in rows if r[0] == "item_dropped"}
    assert "violence" in messages["blocked_topic"]
    assert "limit is G" in messages["content_rating"]
    assert "no screens at night" in messages["time_restriction"]

    status = d.client.status()["safety"]
    assert status["items_served"] == 1 and status["items_dropped"] == 4
    assert set(status["drops_by_rule"]) >= {
        "blocked_topic",
        "avoided_topic",
        "content_rating",
        "time_restriction",
    }

    # The same show in the morning is outside the window: the time rule no longer fires.
    morning = {"member": "kim", "count": 3, "context": {"at": "2026-11-24T10:00:00"}}
    titles = [i["title"] for i in d.client.recommend("testfam", morning)["items"]]
    assert titles == ["Cartoon marathon", "Paper rocket craft"]

    # The parent may see the PG-13 book but not the violent or screen items... at night:
    # the restriction names kim only, and pat's limit is PG-13.
    parent = d.client.recommend(
        "testfam", {"member": "pat", "count": 3, "context": {"at": "2026-11-23T20:00:00"}}
    )
    assert [i["title"] for i in parent["items"]] == [
        "Spider safari",
        "Teen detective novel",
        "Cartoon marathon",
    ]


def test_everyone_present_must_pass(forced_daemon):  # type: ignore[no-untyped-def]
    d = forced_daemon
    both = {
        "member": "pat",
        "count": 5,
        "context": {"present": ["kim"], "at": "2026-11-24T10:00:00"},
    }
    answer = d.client.recommend("testfam", both)
    assert answer["members"] == ["pat", "kim"]
    assert [i["title"] for i in answer["items"]] == ["Cartoon marathon", "Paper rocket craft"]
    assert all(i["for_members"] == ["pat", "kim"] for i in answer["items"])


VIOLENT_IN_MEANING_ONLY = [
    {"title": "The Long Winter", "description": "Soldiers starve and freeze through the siege of Leningrad.",
     "category": "movie", "content_rating": "G", "reason": "history"},
    {"title": "The Last Round", "description": "A boxer is beaten half to death in an underground ring.",
     "category": "movie", "content_rating": "G", "reason": "sports"},
]  # fmt: skip
NEAR_MISSES = [
    {"title": "Violet's birthday party", "description": "Party games, balloons and a chocolate cake.",
     "category": "activity", "content_rating": "G", "reason": "fun"},
    {"title": "Fight the germs", "description": "A cartoon about washing hands before dinner.",
     "category": "show", "content_rating": "G", "reason": "healthy habits"},
]  # fmt: skip


def test_a_child_with_violence_blocked_never_gets_violence_its_words_do_not_name(
    daemon_factory, tiny_model_path, tmp_path
):  # type: ignore[no-untyped-def]
    """The model can only propose violent items without a violent word, and harmless ones that
    sound close; the topic model drops the first and serves the rest. (Two known misses, one
    each way, are the strict xfails below.)"""
    grammar = _forcing_grammar(tmp_path / "force.gbnf", [*VIOLENT_IN_MEANING_ONLY, *NEAR_MISSES])
    cfg = family_config(tiny_model_path, tmp_path / "s", tmp_path / "x.sock",
                        model={"grammar_file": str(grammar), "context_length": 4096},
                        safety={"topic_model": True})  # fmt: skip
    d = daemon_factory(cfg)
    topics = d.client.status()["topics"]
    assert topics["enabled"] and topics["device"] == "cpu" and topics["error"] is None
    answer = d.client.recommend("testfam", {"member": "kim", "count": 2,
                                            "context": {"at": "2026-11-24T10:00:00"}})  # fmt: skip
    assert sorted(i["title"] for i in answer["items"]) == sorted(n["title"] for n in NEAR_MISSES)
    rows = _audit(d.state_dir, answer["request_id"])
    dropped = {
        r[3]["title"]: r[3]["message"]
        for r in rows
        if r[0] == "item_dropped" and r[1] == "blocked_topic"
    }
    assert set(dropped) == {v["title"] for v in VIOLENT_IN_MEANING_ONLY}, rows
    assert all("violence (by meaning" in m for m in dropped.values()), dropped
    # A blocked topic is blocked for the whole family: the parent does not get them either.
    parent = d.client.recommend(
        "testfam", {"member": "pat", "count": 6, "context": {"at": "2026-11-24T10:00:00"}}
    )
    assert not {i["title"] for i in parent["items"]} & set(dropped)


@pytest.mark.xfail(strict=True, reason="violence recall is 0.66 on the held-out set: a story of mob "
                   "revenge without a violent word scores 0.162 against a 0.175 threshold")  # fmt: skip
def test_known_miss_a_mob_revenge_story_is_not_read_as_violence(tmp_path):  # type: ignore[no-untyped-def]
    from insan_edge.topic_model import Embedder, ensure_model
    from insan_edge.topics import TopicIndex, load_calibration

    c = load_calibration()
    index = TopicIndex.from_calibration(
        Embedder(ensure_model(tmp_path).parent, device="cpu").embed, ["violence"], c
    )
    [reading] = index.flags(
        ["Family Business. A mob family settles scores with its rivals in 1930s Chicago."]
    )
    assert "violence" in reading.strong


@pytest.mark.xfail(strict=True, reason="over-blocking: a garden treasure hunt for chocolate coins reads "
                   "as gambling (0.198 against 0.147), so its estimated rating rises to PG-13")  # fmt: skip
def test_known_miss_a_treasure_hunt_is_not_read_as_gambling(tmp_path):  # type: ignore[no-untyped-def]
    from insan_edge.topic_model import Embedder, ensure_model
    from insan_edge.topics import BUILTIN, TopicIndex, load_calibration

    c = load_calibration()
    index = TopicIndex.from_calibration(
        Embedder(ensure_model(tmp_path).parent, device="cpu").embed, list(BUILTIN), c
    )
    [reading] = index.flags(
        ["Pirate treasure hunt. Follow the map round the garden to find chocolate coins."]
    )
    assert reading.strong == {}
