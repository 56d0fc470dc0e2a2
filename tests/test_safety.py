"""The family policy on its own: rating limits, topics, time windows."""

from __future__ import annotations

from datetime import datetime

import pytest

from insan_edge.config import parse_config
from insan_edge.config.family import Family
from insan_edge.config.system import SafetySettings
from insan_edge.safety import (
    allowed_categories,
    check_item,
    estimated_rating,
    member_rating_limit,
    topic_hits,
)

CONFIG = """
families:
  f:
    members:
      tot: {name: Tot, age: 4, role: child}
      kid: {name: Kid, age: 8, role: child}
      tween: {name: Tween, age: 11, role: child, safety_level: relaxed}
      teen: {name: Teen, age: 14, role: child}
      capped: {name: Capped, age: 15, role: child, max_content_rating: PG}
      adult: {name: Adult, age: 40, role: parent}
      nan: {name: Nan, age: 70, role: grandparent, safety_level: strict, avoided_topics: [gambling]}
    safety:
      max_content_rating: PG-13
      blocked_topics: [violence, board games]
      time_restrictions:
        - name: bedtime
          days: [school_days]
          start: "20:00"
          end: "07:00"
          restricted: [screen]
        - name: no games at lunch
          days: [weekends]
          start: "12:00"
          end: "13:00"
          members: [adult]
          restricted: [games]
"""


@pytest.fixture(scope="module")
def family() -> Family:
    return parse_config(CONFIG, "t.yaml").config.families["f"]


@pytest.mark.parametrize(
    ("member", "limit"),
    [("tot", "G"), ("kid", "G"), ("tween", "PG-13"), ("teen", "PG-13"), ("capped", "PG"),
     ("adult", "PG-13"), ("nan", "PG-13")],
)  # fmt: skip
def test_rating_limit_is_the_strictest_of_age_level_member_and_family(family, member, limit):  # type: ignore[no-untyped-def]
    assert member_rating_limit(family.members[member], family, SafetySettings()) == limit


def test_box_wide_cap_and_strict_children(family):  # type: ignore[no-untyped-def]
    child_safe = SafetySettings(rating_cap="PG", children_strict=True)
    assert member_rating_limit(family.members["adult"], family, child_safe) == "PG"
    assert member_rating_limit(family.members["tween"], family, child_safe) == "PG"  # strict at 11


@pytest.mark.parametrize(
    ("text", "topics", "hits"),
    [
        ("A documentary about the battle of Stalingrad", ["violence"], ["violence"]),
        ("Violet's birthday party", ["violence"], []),
        ("Build your skills at chess", ["violence"], []),  # 'kill' inside 'skills'
        ("Family board game night", ["board games"], ["board games"]),
        ("Spiders of the world", ["spiders"], ["spiders"]),
        ("A SPIDER craft", ["spiders"], ["spiders"]),
        ("Poker night", ["gambling"], ["gambling"]),
        ("Homework help", ["gambling", "violence"], []),
    ],
)
def test_topic_words_match_whole_words(text, topics, hits):  # type: ignore[no-untyped-def]
    assert topic_hits(text, topics) == hits


@pytest.mark.parametrize(
    ("text", "claimed", "estimate"),
    [("Paint a rainbow", "G", "G"), ("A scary haunted house", "G", "PG-13"),
     ("A heist with guns", "PG", "PG-13"), ("An explicit film", "PG-13", "R"),
     ("Paint a rainbow", "R", "R"), ("Paint a rainbow", "X", "R")],
)  # fmt: skip
def test_rating_claims_are_never_trusted_below_the_words(text, claimed, estimate):  # type: ignore[no-untyped-def]
    assert estimated_rating(text, claimed) == estimate


def _rules(
    family: Family, members: list[str], at: datetime, **item: str
) -> set[tuple[str, str | None]]:
    defaults = {
        "title": "Paper boats",
        "description": "Fold boats and float them.",
        "category": "craft",
        "content_rating": "G",
    }
    found = check_item(
        **{**defaults, **item}, family=family, members=members, settings=SafetySettings(), at=at
    )  # type: ignore[arg-type]
    return {(v.rule, v.member) for v in found}


MON_2100 = datetime(2026, 11, 23, 21, 0)
TUE_0630 = datetime(2026, 11, 24, 6, 30)  # inside the window Monday night started
SAT_0630 = datetime(2026, 11, 28, 6, 30)  # Friday night started it: a school day
SUN_0630 = datetime(2026, 11, 29, 6, 30)  # Saturday night: not a school day
SAT_1230 = datetime(2026, 11, 28, 12, 30)


def test_time_windows_cross_midnight_and_belong_to_the_day_they_start(family):  # type: ignore[no-untyped-def]
    show = {"category": "show"}
    assert _rules(family, ["kid"], MON_2100, **show) == {("time_restriction", "kid")}
    assert _rules(family, ["kid"], TUE_0630, **show) == {("time_restriction", "kid")}
    assert _rules(family, ["kid"], SAT_0630, **show) == {("time_restriction", "kid")}
    assert _rules(family, ["kid"], SUN_0630, **show) == set()
    assert (
        _rules(family, ["kid"], datetime(2026, 11, 24, 7, 0), **show) == set()
    )  # end is exclusive
    assert _rules(family, ["adult"], MON_2100, **show) == set()  # default: children only
    assert _rules(family, ["kid"], MON_2100, category="craft") == set()


def test_window_for_named_members_and_category_groups(family):  # type: ignore[no-untyped-def]
    assert _rules(family, ["adult"], SAT_1230, category="video_game") == {
        ("time_restriction", "adult")
    }
    assert _rules(family, ["adult"], SAT_1230, category="game") == {("time_restriction", "adult")}
    assert _rules(family, ["kid"], SAT_1230, category="game") == set()


def test_every_member_present_is_checked(family):  # type: ignore[no-untyped-def]
    pg = {"title": "Treasure hunt", "description": "A pirate adventure.", "content_rating": "PG"}
    assert _rules(family, ["adult"], SAT_1230, **pg) == set()
    assert _rules(family, ["adult", "kid", "tot"], SAT_1230, **pg) == {
        ("content_rating", "kid"),
        ("content_rating", "tot"),
    }
    gamble = {"title": "Casino night", "description": "Learn poker with chips."}
    assert ("avoided_topic", "nan") in _rules(family, ["nan"], SAT_1230, **gamble)
    assert ("avoided_topic", "nan") not in _rules(family, ["adult"], SAT_1230, **gamble)
    violent = {"title": "War stories", "description": "Tales of the front."}
    assert ("blocked_topic", None) in _rules(family, ["adult"], SAT_1230, **violent)


def test_allowed_categories_prefilter(family):  # type: ignore[no-untyped-def]
    at_night = allowed_categories(family, ["kid"], MON_2100)
    assert "show" not in at_night and "video_game" not in at_night and "craft" in at_night
    assert "show" in allowed_categories(family, ["kid"], SAT_1230)
