"""Apps ask whether content is right for family members: the check behind
``POST /v1/families/{family}/check``, judged by ``safety.assess`` (the recommendations' judgement).

Every item not allowed is written to the audit log with its title scrubbed (URLs lose their path
and query, names in the family's config become placeholders) and counted per rule in status.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from insan_edge.config import LoadedConfig
from insan_edge.config.family import Family
from insan_edge.contracts import (
    CheckReason,
    CheckRequest,
    CheckResponse,
    CheckResult,
    CheckTopic,
    KnownTitleRef,
)
from insan_edge.ingest_tables import utcnow
from insan_edge.logs import kv
from insan_edge.ratings import box_rating
from insan_edge.safety import Meaning, assess
from insan_edge.store import Store

log = logging.getLogger("insan_edge.checker")
AUDIT_EVENT = "check_blocked"
_URL = re.compile(r"\b(?:https?://|www\.)([^\s/?#]+)[^\s]*", re.IGNORECASE)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")
_DIGITS = re.compile(r"\d[\d -]{6,}\d")


def scrub(text: str, family: Family) -> str:
    """What the audit log may keep of an app's text: no URL paths or queries, no names."""
    text = _URL.sub(lambda m: f"<URL {m.group(1).lower()}>", text)
    text = _EMAIL.sub("<EMAIL>", text)
    text = _DIGITS.sub("<NUMBER>", text)
    tokens = family.role_tokens()
    names = [(m.name, tokens[mid]) for mid, m in family.members.items()]
    p = family.privacy
    names += [(n, "<NAME>") for n in (*p.pets, *p.other_names)]
    names += [(n, "<PLACE>") for n in (*p.schools, *p.streets, *p.towns)]
    for name, token in sorted(names, key=lambda n: -len(n[0])):
        for part in {name, *name.split()}:
            if len(part) >= 2:
                text = re.sub(rf"(?<!\w){re.escape(part)}(?!\w)", token, text, flags=re.IGNORECASE)
    return text


def _local(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now()
    return at.astimezone().replace(tzinfo=None) if at.tzinfo else at


class Checker:
    def __init__(
        self,
        store: Store,
        get_config: Callable[[], LoadedConfig],
        meaning: Callable[[], Meaning | None],
    ) -> None:
        self.store = store
        self.get_config = get_config
        self.meaning = meaning

    def check(self, family_id: str, request: CheckRequest) -> CheckResponse:
        started = time.perf_counter()
        config = self.get_config().config
        wanted = [*([request.member] if request.member else []), *request.members,
                  *request.context.present]  # fmt: skip
        family = config.family(family_id, wanted)
        targets = list(dict.fromkeys(wanted)) or list(family.members)
        at = _local(request.context.at)
        meaning = self.meaning()
        if meaning is not None:  # one batch for the topic model; assess then hits its cache
            meaning.flags([f"{i.title}. {i.description}" for i in request.items])
        results: list[CheckResult] = []
        audit: list[dict[str, Any]] = []
        request_id = uuid.uuid4().hex[:16]
        for n, item in enumerate(request.items):
            claimed = box_rating(item.content_rating) if item.content_rating else "G"
            found = assess(
                title=item.title, description=item.description, category=item.kind,
                content_rating=claimed, family=family, members=targets,
                settings=config.system.safety, at=at, meaning=meaning,
            )  # fmt: skip
            k = found.known
            results.append(
                CheckResult(
                    index=n,
                    allowed=found.allowed,
                    rating=found.rating,
                    claimed_rating=item.content_rating,
                    known_title=KnownTitleRef(
                        title=k.title, year=k.year, system=k.system, official=k.official
                    )
                    if k
                    else None,
                    topics=[
                        CheckTopic(topic=t, score=s, by=by) for t, (s, by) in found.topics.items()
                    ],
                    reasons=[
                        CheckReason(
                            rule=v.rule, member=v.member, message=v.message, blocks=v.blocks
                        )
                        for v in found.violations
                    ],
                )
            )
            if not found.allowed:
                title = scrub(item.title, family)[:200]
                audit += [
                    {"member_id": v.member, "rule": v.rule,
                     "detail": {"request_id": request_id, "index": n, "title": title,
                                "kind": item.kind, "message": scrub(v.message, family)}}
                    for v in found.violations if v.blocks
                ]  # fmt: skip
        if audit:
            self._audit(family_id, audit)
        blocked = sum(not r.allowed for r in results)
        latency = (time.perf_counter() - started) * 1000
        log.debug(kv("check", family=family_id, items=len(results), blocked=blocked,
                     ms=f"{latency:.1f}"))  # fmt: skip
        return CheckResponse(
            family=family_id,
            members=targets,
            at=at.isoformat(timespec="seconds"),
            results=results,
            latency_ms=round(latency, 2),
        )

    def _audit(self, family_id: str, rows: list[dict[str, Any]]) -> None:
        now = utcnow()
        with self.store.transaction() as db:
            db.table("audit_log").insert_all(
                {"ts": now, "family_id": family_id, "member_id": r["member_id"],
                 "event": AUDIT_EVENT, "rule": r["rule"], "detail": json.dumps(r["detail"])}
                for r in rows
            )  # fmt: skip


def check_counts(store: Store) -> dict[str, Any]:
    """Items apps were told were not allowed, in all and per rule (from the audit log)."""
    rows = store.read(
        "SELECT rule, COUNT(*) AS n FROM audit_log WHERE event = ? GROUP BY rule", [AUDIT_EVENT]
    )
    items = store.read(
        "SELECT COUNT(DISTINCT json_extract(detail, '$.request_id') || '/' || "
        "json_extract(detail, '$.index')) AS n FROM audit_log WHERE event = ?",
        [AUDIT_EVENT],
    )
    return {"items_blocked": items[0]["n"], "blocked_by_rule": {r["rule"]: r["n"] for r in rows}}


def audit_since(
    store: Store, family_id: str, since: str | None, limit: int
) -> list[dict[str, Any]]:
    """The family's recent safety decisions, newest first (``since``: an ISO UTC time)."""
    where, args = "family_id = ?", [family_id]
    if since:
        where, args = where + " AND ts >= ?", [*args, since]
    rows = store.read(
        f"SELECT ts, member_id, event, rule, detail FROM audit_log WHERE {where} "
        "ORDER BY id DESC LIMIT ?",
        [*args, limit],
    )
    return [{**r, "detail": json.loads(r["detail"] or "{}")} for r in rows]
