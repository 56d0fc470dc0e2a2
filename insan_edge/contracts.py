"""Shapes that cross the API: recommendation requests and answers (DESIGN.md, contract)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema

from insan_edge.config.family import CATEGORIES
from insan_edge.errors import BadRequestError
from insan_edge.scopes import APP_PATTERN, SCOPE_PATTERN, parse_scope

Short = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
MemberId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]
Category = Literal[
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
]
assert set(Category.__args__) == set(CATEGORIES)  # type: ignore[attr-defined]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestContext(_Strict):
    time_of_day: Literal["morning", "afternoon", "evening", "night"] | None = Field(
        default=None, description="Part of the day the suggestion is for."
    )
    day_of_week: (
        Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"] | None
    ) = Field(default=None, description="Day the suggestion is for.")
    activity: Short | None = Field(
        default=None, description="What the family is doing, e.g. breakfast."
    )
    present: list[MemberId] = Field(
        default_factory=list,
        max_length=32,
        description="Members present; suggestions must suit all of them.",
    )
    environment: list[Short] = Field(
        default_factory=list,
        max_length=16,
        description="Where and what kind of day, e.g. home, weekend, rainy.",
    )
    at: datetime | None = Field(
        default=None,
        description="Local time the suggestion is for (time restrictions); default now.",
    )


class RecommendationRequest(_Strict):
    member: MemberId | None = Field(
        default=None,
        description="Who the suggestions are for; default: everyone present, else the whole family.",
    )
    count: int = Field(default=3, ge=1, le=50, description="How many suggestions to return.")
    context: RequestContext = Field(default_factory=RequestContext, description="The situation.")
    mode: Literal["catalog", "generate", "mixed"] | None = Field(
        default=None,
        description="catalog: rank catalog items by the family model; generate: the model writes"
        " items; mixed: both, ranked together. Default: the config's recommendations.mode.",
    )


class Item(BaseModel):
    title: str
    description: str
    category: str
    content_rating: str
    for_members: list[str]
    reason: str
    source: Literal["catalog", "generated"] = Field(
        default="generated", description="Where the item came from."
    )
    score: float | None = Field(
        default=None,
        description="The family model's log-likelihood of the item (higher is better), when ranked.",
    )


class ModelRef(BaseModel):
    name: str = Field(description="The served base model.")
    version: str = Field(description="'base' until the family has a promoted adapter.")
    adapter: str | None = Field(default=None, description="The family adapter applied, if any.")


class Usage(BaseModel):
    rounds: int = Field(
        description="Generations run for this answer (more when safety dropped items)."
    )
    prompt_tokens: int = Field(description="Tokens in the prompt.")
    completion_tokens: int = Field(description="Tokens the model wrote, over all rounds.")
    generation_ms: float = Field(description="Time spent generating, over all rounds.")
    scored: int = Field(default=0, description="Catalog candidates the model scored.")
    scoring_ms: float = Field(default=0.0, description="Time spent scoring candidates.")


class RecommendationResponse(BaseModel):
    family: str
    members: list[str]
    items: list[Item]
    model: ModelRef
    generated: int = Field(description="Items the model wrote for this answer.")
    dropped: int = Field(description="Items safety removed before answering.")
    cached: bool
    latency_ms: float
    request_id: str
    usage: Usage
    mode: Literal["catalog", "generate", "mixed"] = Field(
        default="generate", description="How the items were found."
    )


def _scope(text: str) -> str:
    try:
        parse_scope(text)
    except BadRequestError as exc:
        raise ValueError(exc.message) from None
    return text


ScopeText = Annotated[
    str, AfterValidator(_scope), WithJsonSchema({"type": "string", "pattern": SCOPE_PATTERN})
]


class TokenRequest(_Strict):
    app: Annotated[str, StringConstraints(pattern=APP_PATTERN)] = Field(
        description="Which app the token is for, e.g. kitchen-tablet."
    )
    scopes: list[ScopeText] = Field(
        min_length=1,
        max_length=16,
        description="admin, ingest, ingest:FAMILY, recommend:FAMILY, recommend:FAMILY/MEMBER or recommend:*.",
    )


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. unknown_family.")
    message: str = Field(description="What went wrong, for a person.")


class Error(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: str
    version: str


class TokenInfo(BaseModel):
    id: str
    app: str
    scopes: list[str]
    created_at: str
    last_used_at: str | None
    revoked_at: str | None


class TokenCreated(TokenInfo):
    token: str = Field(description="The whole token; shown this once, stored only as a hash.")


class EventResult(BaseModel):
    index: int
    status: str = Field(description="stored, duplicate or quarantined.")
    reason: str | None = None
    message: str | None = None


class IngestResult(BaseModel):
    stored: int
    quarantined: int
    results: list[EventResult]


class TokenList(BaseModel):
    tokens: list[TokenInfo]


def _rating_text(text: str) -> str:
    from insan_edge.ratings import box_rating

    box_rating(text)  # ValueError names what is understood
    return text.strip()


RatingText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=16),
    AfterValidator(_rating_text),
]


class CheckItem(_Strict):
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)] = Field(
        description="The title as the app shows it, e.g. \"Watch 'Hereditary'\"."
    )  # fmt: skip
    description: Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)] = Field(
        default="", description="What the app knows of it, if anything."
    )
    content_rating: RatingText | None = Field(
        default=None,
        description="The rating the app claims (G, PG, PG-13, R, TV-14, E10+, PEGI 12, 12A, 10+, ...); never trusted above the box's own estimate.",
    )
    kind: Category = Field(
        default="video",
        description="What it is, for time restrictions: video, movie, show, game, ...",
    )


class CheckRequest(_Strict):
    member: MemberId | None = Field(default=None, description="Who it is for.")
    members: list[MemberId] = Field(
        default_factory=list, max_length=32, description="Or everyone present: it must suit all."
    )
    items: list[CheckItem] = Field(min_length=1, max_length=100, description="1 to 100 items.")
    context: RequestContext = Field(
        default_factory=RequestContext, description="The situation; context.at defaults to now."
    )


class CheckTopic(BaseModel):
    topic: str
    score: float | None = Field(description="The topic model's similarity; null: keywords only.")
    by: Literal["keywords", "meaning"]


class CheckReason(BaseModel):
    rule: str = Field(
        description="content_rating, blocked_topic, avoided_topic, time_restriction, parent_deny or parent_allow."
    )
    member: str | None = Field(description="Whom it concerns; null: the whole family.")
    message: str = Field(description="In words a parent reads.")
    blocks: bool = Field(description="False where a parent's allow-list lifted it.")


class KnownTitleRef(BaseModel):
    title: str
    year: int | None
    system: str = Field(description="MPAA, TV, ESRB, PEGI, BBFC or AGE.")
    official: str = Field(description="The official rating, as its system writes it.")


class CheckResult(BaseModel):
    index: int
    allowed: bool
    rating: str = Field(description="The box's estimate: G, PG, PG-13 or R.")
    claimed_rating: str | None
    known_title: KnownTitleRef | None = Field(description="The title table's entry, if matched.")
    topics: list[CheckTopic]
    reasons: list[CheckReason]


class CheckResponse(BaseModel):
    family: str
    members: list[str]
    at: str = Field(description="The local time judged at.")
    results: list[CheckResult]
    latency_ms: float
