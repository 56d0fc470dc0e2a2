"""Catalog candidates for one request: filtered by safety and relevance, ranked by the family model.

The model's score is the summed log-likelihood of ``title_target(title)`` after
``plan_prompt(...).prompt + ANSWER_PREFIX``: the quantity the trainer optimizes and evaluation
reports as preference accuracy (``dataset``, ``training.evaluate``). The prompt is evaluated
once per request and every candidate after it (``Engine.score``).

Filters run cheapest first: category (time windows and the family's categories), rating (the
strictest target member's limit), age range (every target member), recently shown; then a
word-overlap relevance to the members' interests and the situation keeps the best
``candidates``; ``judge`` (``safety.assess``: keywords, meaning, titles) judges those, and only
those are scored.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from insan_edge.catalog import CatalogItem, title_key
from insan_edge.config.family import Family
from insan_edge.config.system import SafetySettings
from insan_edge.contracts import RequestContext
from insan_edge.engine import Adapter, Engine
from insan_edge.kept import Kept
from insan_edge.prompts import ANSWER_PREFIX, PromptPlan, title_target
from insan_edge.safety import Assessment, Meaning, assess

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    {"the", "and", "for", "with", "from", "are", "its", "this", "that", "your", "you"}
)


def _words(text: str) -> set[str]:
    out = set()
    for w in _WORD.findall(text.casefold()):
        if w in _STOP or len(w) < 3:
            continue
        out.add(w[:-1] if w.endswith("s") and len(w) > 3 else w)
    return out


@dataclass(frozen=True)
class Ranked:
    item: CatalogItem
    logprob: float
    relevance: int
    reason: str


@dataclass(frozen=True)
class Dropped:
    item: CatalogItem
    rule: str
    member: str | None
    message: str


@dataclass(frozen=True)
class Shortlist:
    candidates: list[tuple[CatalogItem, int, list[str]]]  # item, relevance, what it matched
    dropped: list[Dropped]  # safety refusals among the shortlisted (audited)
    considered: int
    ratings: dict[int, str] = field(default_factory=dict)  # item id -> the box's rating of it


def _interest_words(
    family: Family, targets: Sequence[str], context: RequestContext
) -> dict[str, str]:
    """word -> what it came from (for the reason)."""
    out: dict[str, str] = {}
    for m in targets:
        member = family.members[m]
        for phrase in [*member.interests, *member.preferred_topics]:
            for w in _words(phrase):
                out.setdefault(w, f"{member.name}'s interest in {phrase}")
    for phrase in family.preferences.educational_focus:
        for w in _words(phrase):
            out.setdefault(w, f"the family's focus on {phrase}")
    for phrase in [context.activity or "", *context.environment]:
        for w in _words(phrase):
            out.setdefault(w, f"the situation ({phrase})")
    return out


def shortlist(
    items: Sequence[CatalogItem],
    *,
    family: Family,
    targets: Sequence[str],
    plan: PromptPlan,
    context: RequestContext,
    safety: SafetySettings,
    at: datetime,
    meaning: Meaning | None,
    recent: set[str],
    size: int,
    salt: str,
) -> Shortlist:
    """The ``size`` most relevant safe items; ties broken by a hash of ``salt`` (varies by day)."""
    categories, ratings = set(plan.categories), set(plan.ratings)
    ages = [family.members[m].age for m in targets]
    wanted = _interest_words(family, targets, context)
    pool: list[tuple[int, str, CatalogItem, list[str]]] = []
    for item in items:
        if item.category not in categories or item.content_rating not in ratings:
            continue
        if any(not item.min_age <= age <= item.max_age for age in ages):
            continue
        if title_key(item.title) in recent:
            continue
        words = _words(" ".join([item.title, item.description, *item.topics]))
        hits = sorted({wanted[w] for w in words if w in wanted})
        tie = hashlib.sha256(f"{salt}|{item.id}".encode()).hexdigest()
        pool.append((len(hits), tie, item, hits))
    pool.sort(key=lambda p: (-p[0], p[1]))
    out: list[tuple[CatalogItem, int, list[str]]] = []
    dropped: list[Dropped] = []
    rated: dict[int, str] = {}
    batch = 2 * size
    at_ = 0
    while len(out) < size and at_ < len(pool):
        chunk = pool[at_ : at_ + batch]
        at_ += batch
        if meaning is not None:  # one batch for the topic model; judge then hits its cache
            meaning.flags([_safety_text(c[2]) for c in chunk])
        for relevance, _tie, item, hits in chunk:
            if len(out) >= size:
                break
            found = judge(
                item, family=family, targets=targets, safety=safety, at=at, meaning=meaning
            )
            violations = [v for v in found.violations if v.blocks]
            if violations:
                dropped.extend(Dropped(item, v.rule, v.member, v.message) for v in violations)
                continue
            out.append((item, relevance, hits))
            rated[item.id] = found.rating
    return Shortlist(out, dropped, len(pool), rated)


def _safety_text(item: CatalogItem) -> str:
    """Title, description and topic tags: what safety reads (tags name topics too)."""
    tags = f" Topics: {', '.join(item.topics)}." if item.topics else ""
    return f"{item.title}. {item.description}{tags}"


def judge(
    item: CatalogItem,
    *,
    family: Family,
    targets: Sequence[str],
    safety: SafetySettings,
    at: datetime,
    meaning: Meaning | None,
) -> Assessment:
    """``safety.assess`` of a catalog item as the shortlist reads it (with its topic tags)."""
    return assess(
        title=item.title, description=_safety_text(item).removeprefix(f"{item.title}. "),
        category=item.category, content_rating=item.content_rating, family=family,
        members=list(targets), settings=safety, at=at, meaning=meaning,
    )  # fmt: skip


def _reason(item: CatalogItem, hits: list[str], targets: Sequence[str], family: Family) -> str:
    if hits:
        text = "Fits " + " and ".join(hits[:2])
    elif len(targets) > 1:
        text = "Something everyone here can enjoy together"
    else:
        text = f"A good fit for {family.members[targets[0]].name} by the family's model"
    ages = f"ages {item.min_age}+" if item.max_age >= 99 else f"ages {item.min_age}-{item.max_age}"
    return f"{text} ({ages})."[:100]


# (adapter file, reference prompt digest, continuation) -> log-likelihood
ReferenceKept = Kept[tuple[str, str, str], float]


def reference_scores(
    engine: Engine,
    prompt: str,
    continuations: Sequence[str],
    *,
    adapter: Adapter | None,
    owner: str,
    kept: ReferenceKept,
    cancel: Any = None,
) -> list[float]:
    """Log-likelihood of each continuation after ``prompt + ANSWER_PREFIX``, each (adapter,
    prompt, continuation) scored once and then kept: the reference prompt repeats across
    requests, so after a family's first few requests this costs nothing. Keyed by the adapter's
    file, so one adapter's numbers never serve another."""
    tag = f"{adapter.key}|{adapter.path}" if adapter else ""
    digest = hashlib.sha256(prompt.encode("utf-8")).hexdigest()
    keys = [(tag, digest, c) for c in continuations]
    found = kept.found(keys)
    missing = [k[2] for k in dict.fromkeys(keys) if k not in found]
    if missing:
        fresh = engine.score(
            prompt + ANSWER_PREFIX, missing, adapter=adapter, owner=owner, cancel=cancel
        )
        new = {
            (tag, digest, c): lp
            for c, lp in zip(missing, fresh.logprobs, strict=True)
            if lp != float("-inf")  # cancelled: never kept
        }
        kept.keep(new)
        found.update(new)
    return [found.get(k, float("-inf")) for k in keys]


def rank(
    engine: Engine,
    short: Shortlist,
    *,
    plan: PromptPlan,
    family: Family,
    targets: Sequence[str],
    count: int,
    adapter: Adapter | None,
    owner: str,
    cancel: Any = None,
    reference: tuple[str, ReferenceKept] | None = None,
) -> tuple[list[Ranked], float]:
    """The ``count`` best shortlisted items by the family model, and the scoring seconds.

    With ``reference`` (a prompt and where its scores are kept: ``lift`` scoring), each item's
    score is its log-likelihood after ``plan``'s prompt minus that after the reference prompt.
    """
    if not short.candidates:
        return [], 0.0
    started = time.monotonic()
    targets_ = [title_target(c[0].title) for c in short.candidates]
    scores = engine.score(
        plan.prompt + ANSWER_PREFIX, targets_, adapter=adapter, owner=owner, cancel=cancel
    )
    logprobs = scores.logprobs
    if reference is not None:
        prompt, kept = reference
        base = reference_scores(
            engine, prompt, targets_, adapter=adapter, owner=owner, kept=kept, cancel=cancel
        )
        logprobs = [
            lp - ref if math.isfinite(lp) and math.isfinite(ref) else -math.inf
            for lp, ref in zip(logprobs, base, strict=True)
        ]
    ranked = [
        Ranked(item, lp, relevance, _reason(item, hits, targets, family))
        for (item, relevance, hits), lp in zip(short.candidates, logprobs, strict=True)
    ]
    ranked.sort(key=lambda r: -r.logprob)
    return ranked[:count], time.monotonic() - started
