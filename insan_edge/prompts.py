"""The recommendation prompt and output schema, shared by serving and training.

Training teaches the model to continue ``plan_prompt(...).prompt`` with ``ANSWER_PREFIX`` and
the accepted title; evaluation and ranking score titles the same way (``title_target``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from insan_edge.config.family import CATEGORIES, RATINGS, Family
from insan_edge.config.system import SafetySettings
from insan_edge.contracts import RequestContext
from insan_edge.safety import allowed_categories, member_rating_limit, ratings_within

REASON_MAX_CHARS = 100
# Any character of a text field after the first. It also keeps out every control token
# ('<start_of_image>', '<unused0>', '[multimodal]'): each contains one of these brackets.
TEXT_CHAR = r'[^"\\{}\[\]<>\x00-\x1F\x7F]'


def _member_line(member_id: str, family: Family, limit: str) -> str:
    m = family.members[member_id]
    bits = [f"{m.age}, {m.role.value}"]
    if m.interests:
        bits.append("likes " + ", ".join(m.interests))
    if m.preferred_topics:
        bits.append("enjoys topics " + ", ".join(m.preferred_topics))
    bits.append(f"learns best {'by doing' if m.learning_style == 'hands-on' else m.learning_style}")
    bits.append(f"{m.difficulty_level} level")
    bits.append(f"rated {limit} at most")
    return f"- {m.name} ({'; '.join(bits)})"


def build_prompt(
    family: Family,
    members: Sequence[str],
    context: RequestContext,
    limits: dict[str, str],
    recent: Sequence[str],
    categories: Sequence[str],
) -> str:
    """A document a base model continues with the suggestions as JSON."""
    prefs = family.preferences
    lines = [
        "Family activity and content ideas, chosen by a caring, safety-minded family coach.",
        "",
    ]
    about = f"Family: {family.display_name or 'a family'}. Tone: {prefs.communication_style}."
    if prefs.educational_focus:
        about += " Learning focus: " + ", ".join(prefs.educational_focus) + "."
    lines.append(about)
    lines.append("The ideas are for:")
    lines.extend(_member_line(m, family, limits[m]) for m in members)
    situation: list[str] = [p for p in (context.day_of_week, context.time_of_day) if p]
    if context.activity:
        situation.append(f"during {context.activity}")
    situation.extend(context.environment)
    if situation:
        lines.append("Situation: " + ", ".join(situation) + ".")
    if recent:
        lines.append("Recently enjoyed: " + "; ".join(recent) + ".")
    lines.append("Categories to choose from: " + ", ".join(categories) + ".")
    lines.append(
        "Every idea is age-appropriate for everyone listed, with a clear title, a one-sentence"
        " description and the reason it fits them."
    )
    lines.append("")
    lines.append("Ideas as JSON:")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PromptPlan:
    """The prompt for one situation and the limits it was written under."""

    prompt: str
    limits: dict[str, str]
    categories: list[str]
    ratings: list[str]


def plan_prompt(
    family: Family,
    members: Sequence[str],
    context: RequestContext,
    safety: SafetySettings,
    recent: Sequence[str],
    at: datetime,
) -> PromptPlan:
    """The serving prompt for ``members`` at ``at``; training builds its examples with this too."""
    limits = {m: member_rating_limit(family.members[m], family, safety) for m in members}
    categories = allowed_categories(family, members, at)
    prompt = build_prompt(family, members, context, limits, recent, categories)
    return PromptPlan(prompt, limits, categories, ratings_within(limits.values()))


def reference_prompt(family: Family, safety: SafetySettings) -> str:
    """The family's prompt with no situation: every member, the family's categories, nothing
    recently enjoyed. ``lift`` scoring subtracts a title's log-likelihood after it, so what is
    left is how much the situation raises the title, not how common its words are."""
    members = list(family.members)
    limits = {m: member_rating_limit(family.members[m], family, safety) for m in members}
    categories = family.preferences.content_categories or list(CATEGORIES)
    return build_prompt(family, members, RequestContext(), limits, [], categories)


# How an answer starts, as the output grammar allows it (one space after ':' and ',').
ANSWER_PREFIX = '{"items": [{"title": "'


def title_target(title: str) -> str:
    """The continuation after ``ANSWER_PREFIX`` that names ``title`` (what training learns)."""
    return title.replace("\\", " ").replace('"', "'") + '"'


def _text(shortest: int, longest: int) -> dict[str, Any]:
    """Plain text: starts with a letter or digit; no JSON punctuation, markup or control bytes.

    A small model otherwise leaks structure into its strings ('}, {' as a reason).
    """
    return {
        "type": "string",
        "pattern": f"^[A-Za-z0-9]{TEXT_CHAR}{{{shortest - 1},{longest - 1}}}$",
    }


def output_schema(
    count: int,
    categories: Sequence[str],
    ratings: Sequence[str],
    title_max: int,
    description_max: int,
) -> dict[str, Any]:
    """JSON schema of one answer: exactly ``count`` items, every string bounded.

    ``ratings`` are those every target member may see: the model is not offered a rating that
    would be refused (safety still judges the item's words, whatever rating it claims).
    """
    item = {
        "type": "object",
        "properties": {
            "title": _text(3, title_max),
            "description": _text(10, description_max),
            "category": {"enum": list(categories)},
            "content_rating": {"enum": [r for r in RATINGS if r in ratings]},
            "reason": _text(3, REASON_MAX_CHARS),
        },
        "required": ["title", "description", "category", "content_rating", "reason"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": item, "minItems": count, "maxItems": count}
        },
        "required": ["items"],
        "additionalProperties": False,
        "x-order": ["items", "title", "description", "category", "content_rating", "reason"],
    }


def token_budget(count: int, title_max: int, description_max: int) -> int:
    """Enough tokens for ``count`` items at their longest, even at one character a token."""
    return count * (title_max + description_max + REASON_MAX_CHARS + 60) + 16
