"""What the dashboard pages show, read from the store (``Store.read``: no write transaction).

Only ids, counts, titles, rules and timestamps leave here: never interaction text, never the
names in the config (members are shown by their id, as the API names them).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from insan_edge import jetson
from insan_edge.config import Config
from insan_edge.safety import member_rating_limit
from insan_edge.store import Store

CHART_DAYS = 60
SAFETY_DAYS = 7
TOP = 3
# Audit detail keys whose values are ids, rules, counts or titles (never free text).
SHOWN_DETAIL = ("title", "category", "rating", "reason", "alert", "until", "was_until", "by",
                "action", "interactions_deleted", "version", "family", "member")  # fmt: skip


def _utc(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def local_midnight_utc(day: date) -> str:
    return _utc(datetime.combine(day, datetime.min.time()).astimezone())


def box_readings(root: Path = Path("/")) -> dict[str, Any]:
    zone = jetson.hottest_zone(root)
    mode = jetson.power_mode(root)
    return {
        "temperature_c": zone.celsius if zone is not None else None,
        "sensor": zone.name if zone is not None else None,
        "power_mode": mode.label if mode is not None else None,
    }


def events_today(store: Store, today: date) -> int:
    rows = store.read(
        "SELECT COUNT(*) AS n FROM interactions WHERE ts >= ?", [local_midnight_utc(today)]
    )
    return int(rows[0]["n"])


def per_day(store: Store, family_id: str, today: date, days: int = CHART_DAYS) -> list[int]:
    """Interactions per day of the last ``days`` days (UTC days), oldest first."""
    first = today - timedelta(days=days - 1)
    rows = store.read(
        "SELECT substr(ts, 1, 10) AS d, COUNT(*) AS n FROM interactions "
        "WHERE family_id = ? AND ts >= ? GROUP BY d",
        [family_id, first.isoformat()],
    )
    counts = {r["d"]: int(r["n"]) for r in rows}
    return [counts.get((first + timedelta(days=i)).isoformat(), 0) for i in range(days)]


def learned(store: Store, family_id: str) -> dict[str, dict[str, list[tuple[str, int]]]]:
    """Per member, the titles most often accepted (or rated 4-5) and rejected (or rated 1-2)."""
    rows = store.read(
        "SELECT member_id, item, CASE WHEN kind = 'suggestion_accepted' OR rating >= 4 "
        "THEN 'accepted' ELSE 'rejected' END AS way, COUNT(*) AS n FROM interactions "
        "WHERE family_id = ? AND item IS NOT NULL AND item != '' AND (kind IN "
        "('suggestion_accepted', 'suggestion_rejected') OR (kind = 'rating' AND rating != 3)) "
        "GROUP BY member_id, item, way",
        [family_id],
    )
    out: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    for r in rows:
        out[r["member_id"]][r["way"]][r["item"]] += int(r["n"])
    return {m: {way: c.most_common(TOP) for way, c in ways.items()} for m, ways in out.items()}


def versions(store: Store, family_id: str) -> list[dict[str, Any]]:
    return store.read(
        "SELECT version, status, created_at, promoted_at, examples, preference_accuracy, "
        "heldout_loss, safety_score, reason FROM model_versions WHERE family_id = ? "
        "ORDER BY version",
        [family_id],
    )


def runs(store: Store, family_id: str, limit: int = 5) -> list[dict[str, Any]]:
    return store.read(
        "SELECT id, status, reason, requested_by, created_at, finished_at, step, steps, version "
        "FROM training_runs WHERE family_id = ? ORDER BY id DESC LIMIT ?",
        [family_id, limit],
    )


def blocked(store: Store, since: str) -> dict[str, Any]:
    rows = store.read(
        "SELECT family_id, member_id, rule, COUNT(*) AS n FROM audit_log "
        "WHERE event = 'item_dropped' AND ts >= ? GROUP BY family_id, member_id, rule",
        [since],
    )
    by_rule: Counter[str] = Counter()
    by_member: Counter[str] = Counter()
    for r in rows:
        by_rule[r["rule"] or "unspecified"] += int(r["n"])
        by_member[f"{r['family_id'] or '-'}/{r['member_id'] or 'everyone'}"] += int(r["n"])
    return {"by_rule": by_rule.most_common(), "by_member": by_member.most_common()}


def audit(store: Store, limit: int = 20) -> list[dict[str, Any]]:
    rows = store.read(
        "SELECT id, ts, family_id, member_id, event, rule, detail FROM audit_log "
        "ORDER BY id DESC LIMIT ?",
        [limit],
    )
    for r in rows:
        try:
            detail = json.loads(r["detail"] or "{}")
        except ValueError:
            detail = {}
        shown = detail if isinstance(detail, dict) else {}
        r["detail"] = {k: shown[k] for k in SHOWN_DETAIL if k in shown and shown[k] is not None}
    return rows


def stored(store: Store, family_id: str) -> dict[str, dict[str, Any]]:
    rows = store.read(
        "SELECT member_id, COUNT(*) AS n, MIN(ts) AS oldest FROM interactions "
        "WHERE family_id = ? GROUP BY member_id",
        [family_id],
    )
    return {r["member_id"]: {"interactions": int(r["n"]), "oldest": r["oldest"]} for r in rows}


def alerts(store: Store) -> list[dict[str, Any]]:
    return store.read(
        "SELECT id, family_id, member_id, signal, created_at FROM alerts "
        "WHERE acknowledged_at IS NULL ORDER BY id DESC LIMIT 50"
    )


def rating_limits(config: Config, family_id: str) -> dict[str, str]:
    family = config.families[family_id]
    return {
        mid: member_rating_limit(m, family, config.system.safety)
        for mid, m in family.members.items()
    }
