"""Interaction events as apps send them (DESIGN.md, contract), validated against the config."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from insan_edge.config import Config
from insan_edge.contracts import MemberId

KINDS = (
    "suggestion_shown",
    "suggestion_accepted",
    "suggestion_rejected",
    "rating",
    "query",
    "activity",
)
Kind = Literal[
    "suggestion_shown", "suggestion_accepted", "suggestion_rejected", "rating", "query", "activity"
]
MAX_CONTEXT_BYTES = 4096


class EventRejected(Exception):
    """Why an event cannot be stored; ``reason`` is a short code, ``message`` says more."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class InteractionEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    family: MemberId = Field(description="The family id from the config.")
    member: MemberId = Field(description="The member id from the config.")
    kind: Kind = Field(description="What happened.")
    item: str | None = Field(
        default=None, max_length=200, description="The suggestion or content concerned."
    )
    text: str | None = Field(
        default=None, max_length=2000, description="Free text (scrubbed before storage)."
    )
    rating: int | None = Field(default=None, ge=1, le=5, description="1 to 5, for kind 'rating'.")
    context: dict[str, Any] = Field(
        default_factory=dict, description="Situation, as in recommendation requests."
    )
    ts: datetime = Field(description="When it happened (ISO 8601; without a zone, local time).")

    @field_validator("context")
    @classmethod
    def _small_context(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value, default=str)) > MAX_CONTEXT_BYTES:
            raise ValueError(f"context is larger than {MAX_CONTEXT_BYTES} bytes")
        return value

    @field_validator("ts")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return (value if value.tzinfo else value.astimezone()).astimezone(timezone.utc)


def parse_event(
    raw: bytes | str | dict[str, Any], config: Config, max_bytes: int
) -> InteractionEvent:
    """One event from a JSON line or object; raises EventRejected with a reason code."""
    if isinstance(raw, bytes):
        if len(raw) > max_bytes:
            raise EventRejected("too_large", f"the event is {len(raw)} bytes; at most {max_bytes}")
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise EventRejected("invalid_utf8", "the line is not UTF-8 text") from None
    if isinstance(raw, str):
        if len(raw.encode("utf-8")) > max_bytes:
            raise EventRejected("too_large", f"the event is larger than {max_bytes} bytes")
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise EventRejected(
                "invalid_json", f"not valid JSON: {exc.msg} at column {exc.colno}"
            ) from None
    if not isinstance(raw, dict):
        raise EventRejected("not_an_object", "an event must be a JSON object")
    try:
        event = InteractionEvent.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "event"
        raise EventRejected("invalid_field", f"{where}: {first['msg']}") from None
    family = config.families.get(event.family)
    if family is None:
        raise EventRejected("unknown_family", f"there is no family '{event.family}' on this box")
    if event.member not in family.members:
        raise EventRejected(
            "unknown_member", f"'{event.member}' is not a member of '{event.family}'"
        )
    return event
