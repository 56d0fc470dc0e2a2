"""From validated events to scrubbed rows: the one path both the inbox and the API take.

Every free-text field (``text``, ``item`` and the string values of ``context``) goes through
the scrubber in one batch before a row exists; raw text never leaves this function.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from insan_edge.config import Config
from insan_edge.duties import known_event_hashes
from insan_edge.events import EventRejected, InteractionEvent, parse_event
from insan_edge.ingest_tables import Quarantined, iso_utc
from insan_edge.store import Store


class ScrubbedText(Protocol):
    @property
    def text(self) -> str: ...
    @property
    def entities(self) -> dict[str, int]: ...


class TextScrubber(Protocol):
    def scrub(self, family_id: str, texts: list[str]) -> Sequence[ScrubbedText]: ...


def _strings(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            _strings(v, out)
    elif isinstance(value, list):
        for v in value:
            _strings(v, out)


def _replace(value: Any, it: Any) -> Any:
    if isinstance(value, str):
        return next(it)
    if isinstance(value, dict):
        return {k: _replace(v, it) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, it) for v in value]
    return value


def event_hash(event: InteractionEvent, key: bytes) -> str:
    """Identifies an event (a retried POST is not stored twice) without storing its content.

    Keyed with the box's own secret: a plain hash of a short message could be guessed back.
    """
    raw = json.dumps(event.model_dump(mode="json"), sort_keys=True).encode("utf-8")
    return hmac.new(key, raw, hashlib.sha256).hexdigest()


def scrub_events(
    scrubber: TextScrubber,
    family_id: str,
    events: Sequence[InteractionEvent],
    source: str,
    key: bytes,
) -> list[dict[str, Any]]:
    """Rows for the ``interactions`` table, every string scrubbed, plus per-row entity counts."""
    texts: list[str] = []
    spans: list[tuple[int, int]] = []
    for event in events:
        start = len(texts)
        texts.append(event.text or "")
        texts.append(event.item or "")
        _strings(event.context, texts)
        spans.append((start, len(texts)))
    scrubbed = scrubber.scrub(family_id, texts) if texts else []
    rows = []
    for event, (start, end) in zip(events, spans, strict=True):
        part = scrubbed[start:end]
        found: Counter[str] = Counter()
        for s in part:
            found.update(s.entities)
        context = _replace(event.context, iter(s.text for s in part[2:]))
        rows.append({
            "family_id": event.family,
            "member_id": event.member,
            "kind": event.kind,
            "text": part[0].text if event.text is not None else None,
            "item": part[1].text if event.item is not None else None,
            "rating": event.rating,
            "context": json.dumps(context),
            "ts": iso_utc(event.ts),
            "source": source,
            "event_hash": event_hash(event, key),
            "entities": json.dumps(dict(found)),
        })  # fmt: skip
    return rows


@dataclass(frozen=True)
class _Redacted:
    text: str = "[redacted]"
    entities: dict[str, int] = field(default_factory=dict)


class Redactor:
    """A scrubber that keeps no free text at all: every string becomes a marker (tests, tools)."""

    def scrub(self, family_id: str, texts: list[str]) -> list[_Redacted]:
        return [_Redacted() for _ in texts]


def redact_all(family_id: str, events: list[InteractionEvent]) -> list[dict[str, Any]]:
    """Inbox rows with every string redacted (the ``--redact-text`` tool and tests)."""
    return scrub_events(Redactor(), family_id, events, "inbox", b"insan-edge redact-all")


class Intake:
    """Events posted to the API: validate each, scrub per family in batches, store, answer per item."""

    def __init__(
        self,
        store: Store,
        get_config: Callable[[], Config],
        get_scrubber: Callable[[], TextScrubber],
        key: bytes,
        watch: Callable[[list[dict[str, Any]]], object] = lambda rows: None,
    ) -> None:
        self.store = store
        self.get_config = get_config
        self.get_scrubber = get_scrubber
        self.key = key
        self.watch = watch  # sees each new scrubbed row (crisis signals)

    def scrub_for_inbox(
        self, family_id: str, events: list[InteractionEvent]
    ) -> list[dict[str, Any]]:
        rows = scrub_events(self.get_scrubber(), family_id, events, "inbox", self.key)
        self.watch(rows)
        return rows

    def submit(self, items: Sequence[Any]) -> dict[str, Any]:
        config = self.get_config()
        limit = config.system.privacy.max_event_bytes
        results: list[dict[str, Any]] = [{} for _ in items]
        valid: dict[str, list[tuple[int, InteractionEvent]]] = {}
        rejects: list[Quarantined] = []
        for i, item in enumerate(items):
            raw = json.dumps(item, default=str).encode("utf-8")
            try:
                if not isinstance(item, dict):  # already decoded JSON: never parsed again
                    raise EventRejected("not_an_object", "an event must be a JSON object")
                if len(raw) > limit:
                    raise EventRejected(
                        "too_large", f"the event is {len(raw)} bytes; at most {limit}"
                    )
                event = parse_event(item, config, limit)
            except EventRejected as exc:
                digest = hashlib.sha256(raw).hexdigest()
                rejects.append(Quarantined("api", exc.reason, exc.message, digest, len(raw)))
                results[i] = {
                    "index": i,
                    "status": "quarantined",
                    "reason": exc.reason,
                    "message": exc.message,
                }
                continue
            valid.setdefault(event.family, []).append((i, event))
        rows: list[dict[str, Any]] = []
        order: list[int] = []
        for family_id, pairs in valid.items():
            rows += scrub_events(
                self.get_scrubber(), family_id, [e for _, e in pairs], "api", self.key
            )
            order += [i for i, _ in pairs]
        known = known_event_hashes(self.store, [r["event_hash"] for r in rows])
        self.store.add_interactions(rows, rejects)
        seen: set[str] = set()
        new = []
        for i, row in zip(order, rows, strict=True):
            duplicate = row["event_hash"] in known or row["event_hash"] in seen
            seen.add(row["event_hash"])
            results[i] = {"index": i, "status": "duplicate" if duplicate else "stored"}
            if not duplicate:
                new.append(row)
        self.watch(new)
        stored = sum(r["status"] == "stored" for r in results)
        return {"stored": stored, "quarantined": len(rejects), "results": results}
