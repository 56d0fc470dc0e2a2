"""Parent-facing part of the config: families, members and their safety settings."""

from __future__ import annotations

import re
from datetime import time
from enum import Enum
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, Field, field_validator, model_validator

from insan_edge.config.base import ConfigModel

RATINGS: tuple[str, ...] = ("G", "PG", "PG-13", "R")
Rating = Literal["G", "PG", "PG-13", "R"]

CATEGORIES: tuple[str, ...] = (
    "activity",
    "outdoor",
    "craft",
    "cooking",
    "book",
    "music",
    "learning",
    "game",
    "video_game",
    "show",
    "movie",
    "video",
)
# Names a parent may use in a time restriction for several categories at once.
CATEGORY_GROUPS: dict[str, tuple[str, ...]] = {
    "screen": ("video_game", "show", "movie", "video"),
    "screens": ("video_game", "show", "movie", "video"),
    "games": ("game", "video_game"),
    "all": CATEGORIES,
}
DAY_NAMES: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_GROUPS: dict[str, tuple[str, ...]] = {
    "weekdays": DAY_NAMES[:5],
    "school_days": DAY_NAMES[:5],
    "weekends": DAY_NAMES[5:],
    "every_day": DAY_NAMES,
}
_DAY_FULL: tuple[str, ...] = (
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
)
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def check_id(value: str) -> str:
    if not _ID.match(value):
        raise ValueError(
            f"'{value}' cannot be used as a name here: use lowercase letters, digits, '-' or '_'"
            " (up to 32), for example 'emma' or 'smith-family'"
        )
    return value


Ident = Annotated[str, AfterValidator(check_id)]


def parse_clock(value: object) -> time:
    # A number is never taken as a time: the loader keeps an unquoted 19:30 as the text "19:30"
    # (YAML 1.1 reads 1170); guessing minutes turned 1200 into 20:00 and 0700 into 07:28.
    if isinstance(value, time):
        return value
    text = str(value).strip()
    m = _TIME.match(text)
    if not m:
        raise ValueError(
            f"'{text}' is not a time of day: write it as HH:MM in 24-hour time, for example 07:00 or 19:30"
        )
    return time(int(m.group(1)), int(m.group(2)))


class Role(str, Enum):
    parent = "parent"
    guardian = "guardian"
    child = "child"
    grandparent = "grandparent"
    other = "other"


# The placeholder prefix each role's members are scrubbed to.
ROLE_PREFIX: dict[Role, str] = {
    Role.parent: "PARENT",
    Role.guardian: "PARENT",
    Role.child: "CHILD",
    Role.grandparent: "GRANDPARENT",
    Role.other: "MEMBER",
}


class SafetyLevel(str, Enum):
    strict = "strict"
    moderate = "moderate"
    relaxed = "relaxed"


class Member(ConfigModel):
    name: str = Field(
        title="Name",
        description="What the family calls this person (used in prompts only, never stored).",
        min_length=1,
        max_length=64,
    )
    age: int = Field(
        title="Age",
        description="Age in years; sets the default content rating limit.",
        ge=0,
        le=120,
    )
    role: Role = Field(title="Role", description="parent, guardian, child, grandparent or other.")
    interests: list[str] = Field(
        default_factory=list,
        title="Interests",
        description="Things this person enjoys, in a few words each.",
        max_length=50,
    )
    learning_style: Literal["visual", "auditory", "reading", "hands-on", "mixed"] = Field(
        default="mixed", title="Learning style", description="How this person likes to learn."
    )
    difficulty_level: Literal["beginner", "intermediate", "advanced"] = Field(
        default="beginner",
        title="Difficulty level",
        description="How challenging suggestions should be.",
    )
    preferred_topics: list[str] = Field(
        default_factory=list,
        title="Preferred topics",
        description="Topics to lean towards.",
        max_length=50,
    )
    avoided_topics: list[str] = Field(
        default_factory=list,
        title="Avoided topics",
        description="Topics never suggested to this person.",
        max_length=50,
    )
    safety_level: SafetyLevel | None = Field(
        default=None,
        title="Safety level",
        description="strict, moderate or relaxed; default strict under 13, moderate otherwise.",
    )
    max_content_rating: Rating | None = Field(
        default=None,
        title="Max content rating",
        description="Optional personal limit; the strictest of this, the age-based limit and the family limit applies.",
    )
    allow_list: list[str] = Field(
        default_factory=list,
        title="Allow-list",
        description="Titles or phrases this person may always have, whatever the other rules say (time restrictions still apply); this list is asked before the family's.",
        max_length=200,
    )
    deny_list: list[str] = Field(
        default_factory=list,
        title="Deny-list",
        description="Titles or phrases never allowed for this person, in a title or description.",
        max_length=200,
    )

    @property
    def effective_safety_level(self) -> SafetyLevel:
        if self.safety_level is not None:
            return self.safety_level
        return SafetyLevel.strict if self.age < 13 else SafetyLevel.moderate

    @property
    def is_child(self) -> bool:
        return self.role == Role.child or self.age < 18


class Preferences(ConfigModel):
    communication_style: Literal["friendly", "playful", "concise", "detailed"] = Field(
        default="friendly",
        title="Communication style",
        description="Tone of descriptions and reasons.",
    )
    content_categories: list[str] = Field(
        default_factory=list,
        title="Content categories",
        description=f"Kinds of suggestions the family wants; any of: {', '.join(CATEGORIES)}.",
    )
    educational_focus: list[str] = Field(
        default_factory=list,
        title="Educational focus",
        description="Subjects to weave in, e.g. science, reading.",
    )

    @field_validator("content_categories")
    @classmethod
    def _known_categories(cls, value: list[str]) -> list[str]:
        for item in value:
            if item not in CATEGORIES:
                raise ValueError(f"'{item}' is not a category; use any of: {', '.join(CATEGORIES)}")
        return value


class TimeRestriction(ConfigModel):
    name: str = Field(
        default="time restriction",
        title="Name",
        description="A label parents will recognise in the audit log.",
        max_length=64,
    )
    days: list[str] = Field(
        default_factory=lambda: ["every_day"],
        title="Days",
        description="mon..sun, or weekdays, school_days, weekends, every_day.",
        min_length=1,
    )
    start: Annotated[time, Field(title="Start", description="HH:MM, 24-hour local time.")]
    end: Annotated[
        time, Field(title="End", description="HH:MM; may be earlier than start to cross midnight.")
    ]
    members: list[str] | None = Field(
        default=None,
        title="Members",
        description="Who it applies to; default: every child in the family.",
    )
    restricted: list[str] = Field(
        title="Restricted content",
        description=f"Categories not allowed in the window: {', '.join(CATEGORIES)}, or groups {', '.join(CATEGORY_GROUPS)}.",
        min_length=1,
    )

    @field_validator("start", "end", mode="before")
    @classmethod
    def _clock(cls, value: object) -> time:
        return parse_clock(value)

    @field_validator("days")
    @classmethod
    def _days(cls, value: list[str]) -> list[str]:
        for day in value:
            d = day.lower()
            # a day's name or its start ("tues", "thurs"): not "mon-fri", which is not Monday only
            named = len(d) >= 3 and any(full.startswith(d) for full in _DAY_FULL)
            if d not in DAY_GROUPS and not named:
                raise ValueError(
                    f"'{day}' is not a day: use mon, tue, wed, thu, fri, sat, sun, weekdays, weekends or every_day"
                )
        return value

    @field_validator("restricted")
    @classmethod
    def _restricted(cls, value: list[str]) -> list[str]:
        for item in value:
            if item not in CATEGORIES and item not in CATEGORY_GROUPS:
                raise ValueError(
                    f"'{item}' is not a category; use any of: {', '.join(CATEGORIES + tuple(CATEGORY_GROUPS))}"
                )
        return value

    def day_set(self) -> frozenset[str]:
        out: set[str] = set()
        for day in self.days:
            d = day.lower()
            out.update(DAY_GROUPS.get(d, (d[:3],)))
        return frozenset(out)

    def category_set(self) -> frozenset[str]:
        out: set[str] = set()
        for item in self.restricted:
            out.update(CATEGORY_GROUPS.get(item, (item,)))
        return frozenset(out)


class FamilySafety(ConfigModel):
    max_content_rating: Rating = Field(
        default="PG-13",
        title="Max content rating",
        description="The highest rating anyone in the family is shown: G, PG, PG-13 or R.",
    )
    blocked_topics: list[str] = Field(
        default_factory=list,
        title="Blocked topics",
        description="Topics never suggested to anyone in the family.",
        max_length=100,
    )
    time_restrictions: list[TimeRestriction] = Field(
        default_factory=list,
        title="Time restrictions",
        description="Windows in which some content is not suggested.",
    )
    allow_list: list[str] = Field(
        default_factory=list,
        title="Allow-list",
        description="Titles or phrases anyone in the family may have, whatever the other rules say (time restrictions still apply; a member's own lists are asked first).",
        max_length=500,
    )
    deny_list: list[str] = Field(
        default_factory=list,
        title="Deny-list",
        description="Titles or phrases never allowed in the family, in a title or description; a deny beats an allow on the same list level.",
        max_length=500,
    )


class FamilyPrivacy(ConfigModel):
    pets: list[str] = Field(
        default_factory=list,
        title="Pets' names",
        description="Scrubbed from everything the box keeps.",
        max_length=50,
    )
    schools: list[str] = Field(
        default_factory=list, title="Schools", description="School names to scrub.", max_length=20
    )
    streets: list[str] = Field(
        default_factory=list, title="Streets", description="Street names to scrub.", max_length=20
    )
    towns: list[str] = Field(
        default_factory=list,
        title="Towns",
        description="Town or neighbourhood names to scrub.",
        max_length=20,
    )
    other_names: list[str] = Field(
        default_factory=list,
        title="Other names",
        description="Relatives, friends, anyone else to scrub.",
        max_length=100,
    )


class CatalogEntry(ConfigModel):
    title: str = Field(
        title="Title", description="What the item is called.", min_length=2, max_length=120
    )
    description: str = Field(
        title="Description",
        description="One sentence about it (what the ranking model reads besides the title).",
        min_length=3,
        max_length=300,
    )
    category: str = Field(title="Category", description=f"One of: {', '.join(CATEGORIES)}.")
    content_rating: Rating = Field(
        default="G", title="Content rating", description="G, PG, PG-13 or R."
    )
    topics: list[str] = Field(
        default_factory=list,
        max_length=12,
        title="Topics",
        description="Short tags (science, nature...): matched against interests and blocked topics.",
    )
    min_age: int = Field(
        default=0, ge=0, le=120, title="Youngest age", description="Youngest it suits."
    )
    max_age: int = Field(
        default=99, ge=0, le=120, title="Oldest age", description="Oldest it suits (99: no limit)."
    )

    @field_validator("category")
    @classmethod
    def _catalog_category(cls, value: str) -> str:
        if value not in CATEGORIES:
            raise ValueError(f"'{value}' is not a category; use any of: {', '.join(CATEGORIES)}")
        return value

    @model_validator(mode="after")
    def _catalog_ages(self) -> Self:
        if self.min_age > self.max_age:
            raise ValueError(f"min_age {self.min_age} is above max_age {self.max_age}")
        return self


class Family(ConfigModel):
    display_name: str = Field(
        default="",
        title="Display name",
        description="How the family is shown in status output.",
        max_length=64,
    )
    members: dict[Ident, Member] = Field(
        title="Members",
        description="Everyone in the household, keyed by a short id such as 'emma'.",
        min_length=1,
    )
    preferences: Preferences = Field(
        default_factory=Preferences,
        title="Preferences",
        description="What the family wants from suggestions.",
    )
    privacy: FamilyPrivacy = Field(
        default_factory=FamilyPrivacy,
        title="Privacy",
        description="Names and places scrubbed from everything the box keeps, besides the members' names.",
    )
    safety: FamilySafety = Field(
        default_factory=FamilySafety,
        title="Safety",
        description="Limits that apply to every recommendation.",
    )
    catalog: list[CatalogEntry] = Field(
        default_factory=list,
        max_length=2000,
        title="Catalog",
        description="The family's own items (activities, books, games...) ranked beside the starter catalog.",
    )

    def role_tokens(self) -> dict[str, str]:
        """member id -> its stable role token ('<CHILD_1>'), numbered per role in config order.

        What the privacy scrubber writes for a member's name, and how the training set reads a
        stored ``present`` list back.
        """
        seen: dict[str, int] = {}
        out: dict[str, str] = {}
        for member_id, member in self.members.items():
            prefix = ROLE_PREFIX[member.role]
            seen[prefix] = seen.get(prefix, 0) + 1
            out[member_id] = f"<{prefix}_{seen[prefix]}>"
        return out


def cross_check(families: dict[str, Family]) -> list[tuple[tuple[str | int, ...], str]]:
    """References between sections that a single field cannot check: (location, message)."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for fid, family in families.items():
        known = sorted(family.members)
        for i, rule in enumerate(family.safety.time_restrictions):
            for j, member in enumerate(rule.members or ()):
                if member not in family.members:
                    problems.append(
                        (
                            ("families", fid, "safety", "time_restrictions", i, "members", j),
                            f"'{member}' is not a member of this family (members are: {', '.join(known)})",
                        )
                    )
    return problems
