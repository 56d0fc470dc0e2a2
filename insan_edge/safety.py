"""The family policy, applied to every item before it leaves the daemon.

Checks an item against each target member: content rating (the stricter of what the item
claims and what its words and meaning suggest), blocked and avoided topics (keywords with a
built-in synonym table, and the topic model's reading of the meaning when it runs), and time
restrictions. Returns every rule that fired, in words a parent reads.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from insan_edge import titles
from insan_edge.config.family import CATEGORIES, RATINGS, Family, Member, SafetyLevel
from insan_edge.config.system import SafetySettings
from insan_edge.parents import first_match
from insan_edge.titles import KnownTitle
from insan_edge.topic_words import HARMLESS, RATING_FLOOR, TOPIC_WORDS
from insan_edge.topics import BUILTIN, Reading, canonical

# Highest rating by age band and safety level: (min age, {level: rating}).
_AGE_LIMITS: tuple[tuple[int, dict[SafetyLevel, str]], ...] = (
    (17, {SafetyLevel.strict: "PG-13", SafetyLevel.moderate: "R", SafetyLevel.relaxed: "R"}),
    (13, {SafetyLevel.strict: "PG", SafetyLevel.moderate: "PG-13", SafetyLevel.relaxed: "PG-13"}),
    (10, {SafetyLevel.strict: "PG", SafetyLevel.moderate: "PG", SafetyLevel.relaxed: "PG-13"}),
    (7, {SafetyLevel.strict: "G", SafetyLevel.moderate: "PG", SafetyLevel.relaxed: "PG"}),
    (0, {SafetyLevel.strict: "G", SafetyLevel.moderate: "G", SafetyLevel.relaxed: "PG"}),
)
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def rank(rating: str) -> int:
    """Position of a rating in G < PG < PG-13 < R; unknown ratings count as the highest."""
    return RATINGS.index(rating) if rating in RATINGS else len(RATINGS) - 1


def _stricter(*ratings: str | None) -> str:
    return min((r for r in ratings if r is not None), key=rank)


def ratings_within(limits: Iterable[str]) -> list[str]:
    """The ratings every member with these limits may see, G first."""
    strictest = _stricter(*limits)
    return [r for r in RATINGS if rank(r) <= rank(strictest)]


def member_rating_limit(member: Member, family: Family, settings: SafetySettings) -> str:
    level = member.effective_safety_level
    if settings.children_strict and member.is_child:
        level = SafetyLevel.strict
    by_age = next(limits[level] for min_age, limits in _AGE_LIMITS if member.age >= min_age)
    return _stricter(
        by_age, member.max_content_rating, family.safety.max_content_rating, settings.rating_cap
    )


def _singular(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _pattern(words: Iterable[str]) -> re.Pattern[str]:
    forms = {w.strip().lower() for w in words if w.strip()}
    forms |= {_singular(w) for w in forms}
    alternatives = sorted((re.escape(w) for w in forms), key=len, reverse=True)
    # Whole words, singular or plural: "spiders" matches "spider" but not "spidery".
    return re.compile(r"(?<![a-z0-9])(?:" + "|".join(alternatives) + r")(?:e?s)?(?![a-z0-9])")


_pattern_cache: dict[str, re.Pattern[str]] = {}


def topic_pattern(topic: str) -> re.Pattern[str]:
    key = topic.strip().lower()
    if key not in _pattern_cache:
        words = (*TOPIC_WORDS.get(key, ()), key)
        _pattern_cache[key] = _pattern(words)
    return _pattern_cache[key]


def neutral(text: str) -> str:
    """The text in lower case without the harmless phrases that hold a topic's word
    ("shooting star"); ``topic_eval`` measures raw keywords, as the topic model was fitted."""
    return HARMLESS.sub(" ", text.lower())


def topic_hits(text: str, topics: Iterable[str], harmless: bool = False) -> list[str]:
    lowered = HARMLESS.sub(" ", text.lower()) if harmless else text.lower()
    return [t for t in topics if topic_pattern(t).search(lowered)]


# The same floors for topics found by meaning (the topic model's names).
MEANING_FLOOR: dict[str, str] = {
    "sexual content": "R", "self-harm": "R", "hate": "R", "drugs and alcohol": "PG-13",
    "violence": "PG-13", "horror": "PG-13", "weapons": "PG-13", "gambling": "PG-13",
}  # fmt: skip


class Meaning(Protocol):
    """What the topic model reads in texts (see ``topics.TopicIndex``)."""

    def flags(self, texts: Sequence[str]) -> list[Reading]: ...


def _confirmed(topic: str, reading: Reading | None) -> bool:
    """A keyword match stands unless the model, reading the whole text, disagrees."""
    key = canonical(topic)
    return reading is None or not reading.topics_read or key not in BUILTIN or key in reading.weak


def estimated_rating(text: str, claimed: str, reading: Reading | None = None) -> str:
    """The item's rating: never lower than its words or its meaning suggest (claims are not
    trusted); ``reading`` is what the topic model (and the guard model) found in it."""
    floor = "G"
    lowered = neutral(text)
    for topic, minimum in RATING_FLOOR:
        if (
            rank(minimum) > rank(floor)
            and topic_pattern(topic).search(lowered)
            and _confirmed(topic, reading)
        ):
            floor = minimum
    if reading is not None:
        for topic in reading.strong:
            floor = max(floor, MEANING_FLOOR.get(topic, "G"), key=rank)
        if reading.guard is not None:
            floor = max(floor, reading.guard[0], key=rank)
    return max(claimed if claimed in RATINGS else "R", floor, key=rank)


def _topics_found(text: str, topics: Sequence[str], reading: Reading | None) -> dict[str, str]:
    """Of ``topics`` (as a parent wrote them), those the item is on, each with how it was found."""
    found = {t: "" for t in topic_hits(text, topics, harmless=True) if _confirmed(t, reading)}
    for t in topics:
        score = reading.strong.get(canonical(t)) if reading else None
        if score is not None and t not in found:
            found[t] = f" (by meaning, {score:.2f})"
    return found


@dataclass(frozen=True)
class Violation:
    rule: str  # content_rating | blocked_topic | avoided_topic | time_restriction | parent_deny | parent_allow
    member: str | None
    message: str
    blocks: bool = True  # False: a parent's allow-list lifted it, or it says so (parent_allow)


@dataclass(frozen=True)
class Assessment:
    """The one judgement of an item: its rating, what it is about, and every rule that fired."""

    rating: str  # the box's estimate: never below the claim, the words, the meaning, the title
    topics: dict[str, tuple[float | None, str]]  # topic -> (score by meaning, "keywords"|"meaning")
    known: KnownTitle | None
    violations: list[Violation]

    @property
    def allowed(self) -> bool:
        return not any(v.blocks for v in self.violations)


def _in_window(start_min: int, end_min: int, minute: int) -> bool:
    if start_min <= end_min:
        return start_min <= minute < end_min
    return minute >= start_min or minute < end_min


def check_item(
    *,
    title: str,
    description: str,
    category: str,
    content_rating: str,
    family: Family,
    members: Sequence[str],
    settings: SafetySettings,
    at: datetime,
    meaning: Meaning | None = None,
) -> list[Violation]:
    """Every rule the item breaks for any of ``members`` (ids in ``family``) at local time ``at``
    (the blocking ones of ``assess``)."""
    found = assess(
        title=title, description=description, category=category, content_rating=content_rating,
        family=family, members=members, settings=settings, at=at, meaning=meaning,
    )  # fmt: skip
    return [v for v in found.violations if v.blocks]


def _all_topics(text: str, family: Family, members: Sequence[str], reading: Reading | None) -> dict[str, tuple[float | None, str]]:  # fmt: skip
    names = [t for t, _ in RATING_FLOOR] + list(family.safety.blocked_topics)
    for m in members:
        names += family.members[m].avoided_topics
    out: dict[str, tuple[float | None, str]] = {}
    for t in topic_hits(text, dict.fromkeys(names), harmless=True):
        if _confirmed(t, reading):
            score = reading.weak.get(canonical(t)) if reading else None
            out[canonical(t)] = (None if score is None else round(score, 3), "keywords")
    for t, score in (reading.strong if reading else {}).items():
        out.setdefault(t, (round(score, 3), "meaning"))
    return out


def _parent_word(family: Family, member_id: str, title: str, description: str) -> Violation | None:
    """What a parent's lists say of this item for this member: the member's lists first, then
    the family's; on one level a deny beats an allow."""
    member = family.members[member_id]
    for who, allow, deny in (
        (f"{member_id}'s", member.allow_list, member.deny_list),
        ("the family's", family.safety.allow_list, family.safety.deny_list),
    ):
        if (phrase := first_match(deny, title, description)) is not None:
            return Violation("parent_deny", member_id, f"on {who} deny-list: '{phrase}'")
        if (phrase := first_match(allow, title)) is not None:
            return Violation(
                "parent_allow", member_id, f"on {who} allow-list: '{phrase}'", blocks=False
            )
    return None


def assess(
    *,
    title: str,
    description: str,
    category: str,
    content_rating: str,
    family: Family,
    members: Sequence[str],
    settings: SafetySettings,
    at: datetime,
    meaning: Meaning | None = None,
) -> Assessment:
    """Judge the item for ``members`` at local time ``at``: every rule that fired, in words a
    parent reads. Topics are matched by keywords and, with ``meaning`` (the topic model), by
    meaning too; known titles by the shipped table (``settings.title_table``). A parent's allow-
    or deny-list has the last word on content (not on time restrictions). Messages name members
    by id, never by name: they go into the audit log.
    """
    text = f"{title}. {description}"
    reading = meaning.flags([text])[0] if meaning is not None else None
    # By name only where the item is a film, show, game or book: a craft called "Halloween" is not the film.
    on_screen = settings.title_table and category in titles.MEDIA
    known = titles.table().lookup(title) if on_screen else None
    # A known title's official rating outweighs what the model guesses from its few words.
    rating = estimated_rating(text, content_rating, reading if known is None else None)
    if known is not None and rank(known.rating) > rank(rating):
        rating = known.rating
    family_rules: list[Violation] = []
    blocked = _topics_found(text, family.safety.blocked_topics, reading)
    for topic, how in blocked.items():
        family_rules.append(
            Violation("blocked_topic", None, f"blocked topic for the family: {topic}{how}")
        )
    out: list[Violation] = []
    words: list[Violation] = []  # a parent's word comes first in the reasons
    lifted_for: list[str] = []
    for member_id in members:
        member = family.members[member_id]
        content: list[Violation] = []
        limit = member_rating_limit(member, family, settings)
        if rank(rating) > rank(limit):
            content.append(
                Violation(
                    "content_rating",
                    member_id,
                    f"rated {rating}{_why_rated(rating, content_rating, known, reading)}, "
                    f"{member_id}'s limit is {limit}",
                )
            )
        for topic, how in _topics_found(text, member.avoided_topics, reading).items():
            if topic not in blocked:
                content.append(
                    Violation(
                        "avoided_topic", member_id, f"{member_id} avoids the topic: {topic}{how}"
                    )
                )
        word = _parent_word(family, member_id, title, description)
        if word is not None and not word.blocks:  # allowed by a parent: content rules stand aside
            lifted_for.append(member_id)
            content = [_lifted(v) for v in content]
        if word is not None:
            words.append(word)
        out.extend(content)
        out.extend(_time_violations(family, member_id, category, at))
    if lifted_for and len(lifted_for) == len(members):
        family_rules = [_lifted(v) for v in family_rules]
    topics = _all_topics(text, family, members, reading)
    return Assessment(rating, topics, known, words + family_rules + out)


def _lifted(v: Violation) -> Violation:
    return Violation(v.rule, v.member, f"{v.message} (overridden: a parent allowed it)", False)


def _why_rated(rating: str, claimed: str, known: KnownTitle | None, reading: Reading | None) -> str:  # fmt: skip
    if known is not None and known.rating == rating:
        return f": {known.describe()}"
    if known is None and reading is not None and reading.guard and reading.guard[0] == rating:
        return f" (the guard model is {reading.guard[1]:.0%} sure it is {rating} or above)"
    return "" if rating == claimed else f" (it claimed {claimed})"


def _time_violations(
    family: Family, member_id: str, category: str, at: datetime
) -> list[Violation]:
    out = []
    minute = at.hour * 60 + at.minute
    today = _DAYS[at.weekday()]
    yesterday = _DAYS[(at - timedelta(days=1)).weekday()]
    for rule in family.safety.time_restrictions:
        applies_to = (
            rule.members
            if rule.members is not None
            else [m for m, v in family.members.items() if v.is_child]
        )
        if member_id not in applies_to or category not in rule.category_set():
            continue
        start = rule.start.hour * 60 + rule.start.minute
        end = rule.end.hour * 60 + rule.end.minute
        if not _in_window(start, end, minute):
            continue
        # A window crossing midnight belongs to the day it started on.
        started_on = yesterday if start > end and minute < end else today
        if started_on not in rule.day_set():
            continue
        out.append(
            Violation(
                "time_restriction",
                member_id,
                f"{rule.name}: no {category.replace('_', ' ')} for {member_id} between "
                f"{rule.start:%H:%M} and {rule.end:%H:%M}",
            )
        )
    return out


def allowed_categories(family: Family, members: Sequence[str], at: datetime) -> list[str]:
    """Categories the family wants that no time restriction forbids right now (a pre-filter)."""
    wanted = family.preferences.content_categories or list(CATEGORIES)
    return [c for c in wanted if not any(_time_violations(family, m, c, at) for m in members)]
