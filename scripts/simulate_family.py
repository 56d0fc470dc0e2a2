#!/usr/bin/env python3
"""Simulated interaction logs for one family, with hidden preferences to learn.

Each day has a few sessions (breakfast, after school, evening, weekend outings...). In a session
the app shows one member 3-4 catalog titles it may show them (time restrictions and the family's
safety rules hold); the member accepts the one a hidden preference model favours (with noise),
rejects some of the others and sometimes rates what they did. The preferences depend only on
what the serving prompt shows: who asks, who is present, time of day, day of week, activity and
environment. ``truth()`` (``--truth``) writes the model down, with probe situations and their
favourite titles, so a benchmark can check what training learned.

    simulate_family.py --config tests/data/sim_family.yaml --family larkin --days 60 --seed 1 \\
        --out inbox/sim.jsonl [--truth truth.json] [--start 2026-10-01]

Times are local wall-clock times of the machine that runs this, written as UTC ('Z').
The output depends only on the config, the family, --days, --seed and --start (and that zone).
"""

# No ``from __future__ import annotations``: tests load this file with importlib, sometimes
# without registering it in sys.modules, and dataclasses with string annotations need that.

import argparse
import json
import math
import os
import random
import sys
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from insan_edge.config import Config, load_config
from insan_edge.config.family import Family, Role
from insan_edge.safety import allowed_categories, check_item

# title | category | tags (invented, family-safe, plain text: they survive the privacy scrubber)
_CATALOG = """
Paper plate dinosaur masks | craft | dino art messy
Salt dough dinosaur footprints | craft | dino art messy
Paint rocks to look like dinosaur eggs | craft | dino art
Cardboard box dinosaur puppet | craft | dino art building
Leaf rubbing nature collage | craft | nature art calm
Pine cone bird feeder | craft | birds nature messy
Friendship bracelets with embroidery thread | craft | art calm
Toilet roll animal figures | craft | animals art messy
Watercolour sunset painting | craft | art calm
Folded paper animal zoo | craft | animals art calm
Sock puppet theatre | craft | story art family
Homemade play dough in three colours | craft | art messy
Cardboard marble run | craft | building science
Pressed flower bookmarks | craft | nature garden calm
Pancake breakfast together | cooking | breakfast sweet family
Fluffy waffles with berries | cooking | breakfast sweet
Homemade pizza night | cooking | savory family
Slow cooked vegetable stew | cooking | savory
Baking banana bread together | cooking | sweet baking
Oatmeal raisin cookies | cooking | sweet baking
Fresh pasta from scratch | cooking | savory
Build your own taco bar | cooking | savory family
Fruit kebabs with yogurt dip | cooking | sweet easy
Scrambled eggs on toast | cooking | breakfast savory easy
Grilled vegetable skewers outside | cooking | savory outside
Homemade bread rolls | cooking | baking savory
Apple crumble with custard | cooking | sweet baking
Vegetable fried rice | cooking | savory easy
Decorate gingerbread biscuits | cooking | sweet baking art
Fruit smoothie bowl breakfast | cooking | breakfast sweet easy
Backyard dinosaur fossil dig | outdoor | dino science messy active
Bike ride along the river path | outdoor | cycling active
Kick a football in the park | outdoor | football sport active
Penalty kick practice in the garden | outdoor | football sport active
Nature scavenger hunt | outdoor | nature active family
Bird watching walk with binoculars | outdoor | birds nature calm
Plant sunflower seeds | outdoor | garden nature
Long hike in the woods with a picnic | outdoor | hiking nature active
Puddle jumping in rain boots | outdoor | active messy rainy
Kite flying on the hill | outdoor | active family
Pond dipping for tadpoles | outdoor | animals nature science
Chalk drawing on the driveway | outdoor | art active
Tend the vegetable patch | outdoor | garden nature
Stargazing in the back garden | outdoor | space calm
Family bike picnic | outdoor | cycling family active
Feed the ducks at the pond | outdoor | birds animals nature
Dinosaur memory matching game | game | dino calm
Family board game night | game | board family
Cooperative treasure island board game | game | board family
Card game of snap | game | cards family
Play rummy with the whole family | game | cards family
Charades with animal sounds | game | animals family loud
Hide and seek indoors | game | active rainy
Jigsaw puzzle of the solar system | game | puzzle space calm
Word chain game | game | calm easy
Chess practice for beginners | game | board calm
Dominoes tournament | game | board family
Giant floor puzzle of dinosaurs | game | dino puzzle
I spy with colours | game | calm easy
Picture book about baby dinosaurs | book | dino story calm
Bedtime story about a sleepy owl | book | story calm birds
Read aloud adventure chapter book | book | story calm
Graphic novel about a football team | book | football story
Encyclopedia of the ocean for kids | book | science animals
Poetry book for quiet evenings | book | reading calm
Mystery novel by the fire | book | reading calm
Gardening guide for small plots | book | garden reading
Cookbook of family favourites | book | savory reading
Book of amazing inventions | book | science building reading
Field guide to garden birds | book | birds nature reading
Homemade shakers from dried rice | music | music messy loud
Family sing along in the kitchen | music | music family loud
Soft piano music before bed | music | music calm
Dance party in the living room | music | music active loud
Learn a song on the ukulele | music | music
Musical statues | music | music active loud
Baking soda volcano experiment | learning | science messy
Grow crystals in a jar | learning | science calm
Paper bridge building challenge | learning | building science
Star spotting with a sky map | learning | space calm
Make a rain gauge for the garden | learning | science garden
Dinosaur fact cards quiz | learning | dino calm
Simple coding with a robot kit | learning | building science
Magnet fishing science game | learning | science
Nature documentary about whales | show | animals calm
Animated show about dinosaur friends | show | dino
Baking competition show | show | baking sweet
Science experiment show for kids | show | science
Football highlights from the weekend | show | football sport
Cartoon about a clever fox | show | animals
Family movie night with popcorn | movie | family
Animated movie about a lost penguin | movie | animals family
Space adventure movie for kids | movie | space family
Musical movie sing along | movie | music family loud
Indoor obstacle course | activity | active rainy
Make a family time capsule | activity | family calm
Yoga for kids with animal poses | activity | calm animals
Tidy up race with music | activity | active music loud
Brick building challenge | activity | building
Camp out in the living room | activity | family rainy
Feed the birds in the garden | activity | birds nature calm
"""


@dataclass(frozen=True)
class Title:
    title: str
    category: str
    tags: frozenset[str]


def _catalog() -> tuple[Title, ...]:
    out = []
    for line in _CATALOG.strip().splitlines():
        title, category, tags = (part.strip() for part in line.split("|"))
        screen = {"screen"} if category in ("show", "movie", "video", "video_game") else set()
        out.append(Title(title, category, frozenset(tags.split()) | screen))
    return tuple(out)


CATALOG = _catalog()
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
INTEREST_TAGS = {
    "dinosaur": "dino", "drawing": "art", "painting": "art", "animal": "animals", "space": "space",
    "football": "football", "soccer": "football", "cooking": "savory", "baking": "baking",
    "cycling": "cycling", "board game": "board", "gardening": "garden", "reading": "reading",
    "hiking": "hiking", "music": "music", "science": "science", "building": "building",
    "minecraft": "building", "bird": "birds", "card game": "cards",
}  # fmt: skip
DISLIKED = -4.0  # a score at or below which the member always rejects the title

# Archetypes: base liking per tag ("cat:<category>" for a category) and what they reject.
ARCHETYPES: dict[str, tuple[dict[str, float], tuple[str, ...]]] = {
    "young_child": ({"dino": 1.5, "animals": 1.0, "art": 0.5}, ("football", "savory")),
    "older_child": ({"football": 1.5, "building": 1.0, "science": 1.0}, ("cat:craft", "story")),
    "cook": ({"savory": 1.0, "cycling": 1.0, "board": 0.5}, ("messy", "cat:show")),
    "reader": ({"garden": 1.0, "reading": 1.0, "nature": 1.0, "hiking": 0.5}, ("football", "loud")),
    "grandparent": ({"baking": 1.5, "cards": 1.5, "birds": 1.5}, ("screen", "loud")),
}
# (who: archetype or "*", when, boosts, what a person would say). "when" keys: tod, days,
# weekend, activity, env (all listed words in the environment), with (archetype present).
RULES: tuple[tuple[str, dict[str, Any], dict[str, float], str], ...] = (
    ("young_child", {"tod": "afternoon", "weekend": False}, {"cat:craft": 2.0, "dino": 1.0},
     "the youngest child loves (dinosaur) crafts after school"),
    ("young_child", {"tod": "evening"}, {"story": 2.0, "calm": 1.0},
     "the youngest child wants a bedtime story in the evening"),
    ("older_child", {"tod": "afternoon", "weekend": False}, {"football": 1.5, "building": 1.0},
     "the older child plays football or builds things after school"),
    ("older_child", {"tod": "evening"}, {"board": 1.5, "puzzle": 1.5},
     "the older child likes board games and puzzles in the evening"),
    ("cook", {"weekend": True, "tod": "morning"}, {"cat:cooking": 2.5, "breakfast": 1.0},
     "the first parent cooks breakfast at weekends"),
    ("cook", {"weekend": True, "tod": "afternoon"}, {"cat:cooking": 2.5},
     "the first parent picks cooking on weekend afternoons"),
    ("cook", {"weekend": False, "tod": "evening"}, {"board": 1.5},
     "the first parent plays board games on weekday evenings"),
    ("reader", {"tod": "evening"}, {"reading": 2.0, "calm": 1.0},
     "the second parent reads in the evening"),
    ("reader", {"weekend": True, "tod": "afternoon", "env": ["sunny"]},
     {"garden": 1.5, "hiking": 1.5}, "the second parent gardens or hikes on sunny weekends"),
    ("grandparent", {}, {"cat:cooking": 0.5, "calm": 1.0}, "the grandparent likes calm things"),
    ("*", {"env": ["school night"]}, {"calm": 1.0}, "school nights are for calm things"),
    ("*", {"tod": "evening", "days": ["friday", "saturday"]}, {"cat:movie": 2.5},
     "Friday and Saturday evenings are movie nights"),
    ("*", {"env": ["rainy"]}, {"cat:outdoor": -2.0, "rainy": 1.5},
     "nobody wants to go out in the rain"),
    ("*", {"env": ["sunny"]}, {"cat:outdoor": 1.0}, "sunny days are for going out"),
    ("*", {"with": "grandparent"}, {"cards": 1.0, "baking": 1.0},
     "with the grandparent there, cards and baking win"),
    ("*", {"activity": ["breakfast"]}, {"breakfast": 2.5, "easy": 0.5},
     "breakfast calls for breakfast food"),
)  # fmt: skip


@dataclass(frozen=True)
class Situation:
    member: str
    present: tuple[str, ...]
    time_of_day: str
    activity: str
    environment: tuple[str, ...]
    at: datetime  # local wall-clock time (naive)

    @property
    def day_of_week(self) -> str:
        return DAYS[self.at.weekday()]

    def context(self) -> dict[str, Any]:
        return {
            "time_of_day": self.time_of_day,
            "day_of_week": self.day_of_week,
            "activity": self.activity,
            "present": list(self.present),
            "environment": list(self.environment),
        }


def archetypes(family: Family) -> dict[str, str]:
    """member id -> archetype, from role, age and config order (never from names)."""
    out, parents = {}, 0
    for mid, m in family.members.items():
        if m.role == Role.grandparent:
            out[mid] = "grandparent"
        elif m.is_child:
            out[mid] = "young_child" if m.age < 10 else "older_child"
        else:
            out[mid] = "cook" if parents % 2 == 0 else "reader"
            parents += 1
    return out


class Preferences:
    """The hidden preference model of one family: a score per (situation, title)."""

    def __init__(self, config: Config, family_id: str) -> None:
        self.family_id = family_id
        self.family = config.families[family_id]
        self.safety = config.system.safety
        self.kind = archetypes(self.family)
        self.base: dict[str, dict[str, float]] = {}
        for mid, member in self.family.members.items():
            base = dict(ARCHETYPES[self.kind[mid]][0])
            for interest in member.interests:
                for word, tag in INTEREST_TAGS.items():
                    if word in interest.lower():
                        base[tag] = base.get(tag, 0.0) + 0.5
            self.base[mid] = base
        self._safe: dict[tuple[tuple[str, ...], tuple[str, ...]], tuple[Title, ...]] = {}

    def _applies(self, when: dict[str, Any], s: Situation) -> bool:
        weekend = s.day_of_week in ("saturday", "sunday")
        return (
            when.get("tod", s.time_of_day) == s.time_of_day
            and s.day_of_week in when.get("days", DAYS)
            and when.get("weekend", weekend) == weekend
            and s.activity in when.get("activity", [s.activity])
            and all(e in s.environment for e in when.get("env", []))
            and (
                "with" not in when
                or any(self.kind[m] == when["with"] and m != s.member for m in s.present)
            )
        )

    def boosts(self, s: Situation) -> dict[str, float]:
        """What the situation adds per tag (the rules that apply to this member now)."""
        out: dict[str, float] = {}
        for who, when, boost, _ in RULES:
            if who in ("*", self.kind[s.member]) and self._applies(when, s):
                for key, value in boost.items():
                    out[key] = out.get(key, 0.0) + value
        return out

    def score(self, s: Situation, item: Title, boosts: dict[str, float] | None = None) -> float:
        """The member's liking of the title in the situation: their strongest standing liking
        among its tags plus what the situation adds; DISLIKED for what they reject."""
        b = self.boosts(s) if boosts is None else boosts
        keys = [*item.tags, f"cat:{item.category}"]
        if any(k in ARCHETYPES[self.kind[s.member]][1] for k in keys):
            return DISLIKED
        base = self.base[s.member]
        return max([0.0, *(base.get(k, 0.0) for k in keys)]) + sum(b.get(k, 0.0) for k in keys)

    def allowed(self, s: Situation) -> tuple[Title, ...]:
        """Titles the app may show: categories allowed now, nothing unsafe for those present."""
        categories = tuple(allowed_categories(self.family, s.present, s.at))
        key = (s.present, categories)
        if key not in self._safe:
            self._safe[key] = tuple(
                t for t in CATALOG
                if t.category in categories and not check_item(
                    title=t.title, description=t.title, category=t.category, content_rating="G",
                    family=self.family, members=s.present, settings=self.safety, at=s.at,
                )
            )  # fmt: skip
        return self._safe[key]

    def ranked(self, s: Situation) -> list[tuple[float, Title]]:
        b = self.boosts(s)
        return sorted(((self.score(s, t, b), t) for t in self.allowed(s)), key=lambda p: -p[0])


def _sessions(prefs: Preferences, day: date, rng: random.Random) -> list[Situation]:
    """The day's sessions: (requester, present, time of day, activity, environment, time)."""
    kinds = prefs.kind
    everyone = list(prefs.family.members)
    home = [m for m in everyone if kinds[m] != "grandparent"] or everyone
    kids = [m for m in home if kinds[m].endswith("child")]
    adults = [m for m in home if m not in kids] or home
    grand = [m for m in everyone if kinds[m] == "grandparent"]
    weekday = day.weekday()
    weekend = weekday >= 5
    rainy = rng.random() < 0.3
    weather = ["rainy"] if rainy else (["sunny"] if rng.random() < 0.6 else [])
    plan: list[tuple[float, str, str, list[str], list[str], tuple[int, int]]] = []
    if weekend:
        visit = grand if weekday == 6 and rng.random() < 0.7 else []
        plan.append((0.7, "morning", "breakfast", home, ["home", "weekend"], (8 * 60 + 20, 90)))
        where = ["home", "weekend", *weather] if rainy else ["outdoors", "weekend", *weather]
        plan.append((0.8, "afternoon", "free time", home + visit, where, (13 * 60 + 30, 120)))
        plan.append((0.5, "evening", "family time", home + visit, ["home", "weekend"], (18 * 60 + 30, 80)))  # fmt: skip
    else:
        day_kind = ["home", "school day"]
        plan.append((0.25, "morning", "breakfast", home, day_kind, (7 * 60, 40)))
        carer = [rng.choice(adults)] if adults else []
        where = ["home", "school day", *weather]
        plan.append((0.8, "afternoon", "afternoon snack", kids + carer, where, (15 * 60 + 40, 80)))
        night = ["home", "weekend"] if weekday == 4 else ["home", "school night"]
        plan.append((0.5, "evening", "evening free time", home, night, (19 * 60, 75)))
    out = []
    for p, tod, activity, present, env, (start, span) in plan:
        if rng.random() >= p:
            continue
        minute = start + rng.randrange(span)
        at = datetime(day.year, day.month, day.day, minute // 60, minute % 60, rng.randrange(60))
        rounds = 2 if rng.random() < 0.15 and len(present) > 1 else 1
        for i, member in enumerate(rng.sample(present, rounds)):
            when = at + timedelta(minutes=6 * i)
            ordered = tuple(m for m in everyone if m in present)
            out.append(Situation(member, ordered, tod, activity, tuple(env), when))
    return out


def _utc(local: datetime) -> str:
    return local.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


QUERIES = (
    "something calm before bed",
    "ideas for a rainy afternoon",
    "what can we cook this weekend",
    "a quick idea before school",
    "an outdoor idea for today",
)


def _session_events(
    prefs: Preferences, s: Situation, rng: random.Random, family_id: str
) -> list[dict[str, Any]]:
    allowed = prefs.allowed(s)
    if len(allowed) < 4:
        return []
    b = prefs.boosts(s)
    scores = {t.title: prefs.score(s, t, b) for t in allowed}
    # The app is somewhat personalised already: one slot leans to what the member liked before.
    weights = [math.exp(min(scores[t.title], 6.0)) for t in allowed]
    shown = [rng.choices(allowed, weights)[0]]
    shown += rng.sample([t for t in allowed if t is not shown[0]], rng.choice((2, 2, 3)))
    rng.shuffle(shown)
    base = {"family": family_id, "member": s.member, "context": s.context()}
    events: list[dict[str, Any]] = []

    def emit(kind: str, seconds: float, **extra: Any) -> None:
        events.append(
            {**base, "kind": kind, **extra, "ts": _utc(s.at + timedelta(seconds=seconds))}
        )

    if rng.random() < 0.1:
        emit("query", 0, text=rng.choice(QUERIES))
    for i, t in enumerate(shown):
        emit("suggestion_shown", 1 + i, item=t.title)
    liked = [t for t in shown if scores[t.title] > DISLIKED]
    chosen: Title | None = None
    if liked and max(scores[t.title] for t in liked) > -1.0:
        if rng.random() < 0.1:  # noise: anything not disliked
            chosen = rng.choice(liked)
        else:
            chosen = max(liked, key=lambda t: scores[t.title] - 0.6 * math.log(-math.log(rng.random() or 1e-12)))  # fmt: skip
    for t in shown:
        if t is not chosen and (scores[t.title] <= DISLIKED or rng.random() < 0.5):
            emit("suggestion_rejected", rng.uniform(10, 60), item=t.title)
    if chosen is not None:
        emit("suggestion_accepted", rng.uniform(20, 90), item=chosen.title)
        if rng.random() < 0.25:
            sc = scores[chosen.title]
            rating = 5 if sc >= 3 else 4 if sc >= 1.5 else 3 if sc >= 0 else 2
            emit("rating", rng.uniform(1800, 5400), item=chosen.title, rating=rating)
    return events


def simulate(
    config: Config, family_id: str, days: int, seed: int, start: date | str = "2026-10-01"
) -> list[dict[str, Any]]:
    """Events (contract dicts) for ``days`` days from ``start``, in time order."""
    if family_id not in config.families:
        raise KeyError(f"no family '{family_id}' in the config")
    first = date.fromisoformat(start) if isinstance(start, str) else start
    prefs = Preferences(config, family_id)
    rng = random.Random(f"insan-edge-sim:{family_id}:{seed}")
    events: list[dict[str, Any]] = []
    for n in range(days):
        for situation in _sessions(prefs, first + timedelta(days=n), rng):
            events += _session_events(prefs, situation, rng, family_id)
    events.sort(key=lambda e: e["ts"])  # stable: same-second events keep their order
    return events


# Probe situations for the truth file: name, time of day, activity, environment, days after a
# Monday, hour, minute, and whether a grandparent (who only visits at weekends) is probed there.
# fmt: off
PROBES: tuple[tuple[str, str, str, tuple[str, ...], int, int, int, bool], ...] = (
    ("weekday after school", "afternoon", "afternoon snack", ("home", "school day"), 1, 16, 10, False),
    ("school night", "evening", "evening free time", ("home", "school night"), 2, 19, 45, False),
    ("friday evening", "evening", "evening free time", ("home", "weekend"), 4, 19, 30, False),
    ("saturday breakfast", "morning", "breakfast", ("home", "weekend"), 5, 8, 45, False),
    ("sunny weekend afternoon", "afternoon", "free time", ("outdoors", "weekend", "sunny"), 5, 14, 0, True),
    ("rainy weekend afternoon", "afternoon", "free time", ("home", "weekend", "rainy"), 6, 14, 0, True),
)
# fmt: on


def truth(config: Config, family_id: str, top: int = 5) -> dict[str, Any]:
    """The hidden preference model, with probe situations and their favourite/rejected titles."""
    prefs = Preferences(config, family_id)
    monday = date(2026, 10, 5)
    members: dict[str, Any] = {}
    for mid, kind in prefs.kind.items():
        members[mid] = {
            "archetype": kind,
            "likes": prefs.base[mid],
            "rejects": list(ARCHETYPES[kind][1]),
            "rules": [why for who, _, _, why in RULES if who in ("*", kind)],
        }
    probes = []
    home = [m for m in prefs.family.members if prefs.kind[m] != "grandparent"]
    for mid in prefs.family.members:
        for name, tod, activity, env, offset, hour, minute, visit in PROBES:
            if prefs.kind[mid] == "grandparent" and not visit:
                continue
            d = monday + timedelta(days=offset)
            at = datetime(d.year, d.month, d.day, hour, minute)
            present = tuple(m for m in prefs.family.members if m in home or m == mid)
            s = Situation(mid, present, tod, activity, env, at)
            ranked = prefs.ranked(s)
            probes.append({
                "name": name, "member": mid, "context": s.context(), "at": at.isoformat(),
                "favourites": [t.title for _, t in ranked[:top]],
                "rejected": [t.title for sc, t in ranked if sc <= DISLIKED],
                "scores": {t.title: round(sc, 2) for sc, t in ranked},
            })  # fmt: skip
    return {
        "family": family_id,
        "catalog": [
            {"title": t.title, "category": t.category, "tags": sorted(t.tags)} for t in CATALOG
        ],
        "members": members,
        "probes": probes,
    }


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")  # not *.jsonl: the inbox tailer ignores it
    tmp.write_text(text, "utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--family", help="family id (default: the first in the config)")
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", default="2026-10-01", help="first day, YYYY-MM-DD")
    ap.add_argument("--out", type=Path, required=True, help="JSON lines file to write")
    ap.add_argument("--truth", type=Path, help="also write the hidden preferences (JSON)")
    args = ap.parse_args(argv)
    config = load_config(args.config).config
    family = args.family or next(iter(config.families))
    events = simulate(config, family, args.days, args.seed, args.start)
    _write(args.out, "".join(json.dumps(e) + "\n" for e in events))
    if args.truth:
        info = {"seed": args.seed, "days": args.days, "start": args.start, "events": len(events)}
        _write(args.truth, json.dumps({**truth(config, family), **info}, indent=1) + "\n")
    print(f"{len(events)} events for '{family}' over {args.days} days -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
