"""Privacy duties: erase a member, export a family, expire old interactions, the box's key."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from insan_edge.files import write_atomic
from insan_edge.ingest_tables import iso_utc, utcnow
from insan_edge.store import Store

KEY_BYTES = 32


def box_id(state_dir: Path) -> str:
    """A public name for this box (announced on the LAN), derived from its key, not revealing it."""
    return hashlib.sha256(b"insan-edge box id\0" + box_key(state_dir)).hexdigest()[:16]


def box_key(state_dir: Path) -> bytes:
    """This box's own random secret for keyed hashes, made once (0600) and kept in the state dir."""
    path = state_dir / "box.key"
    try:
        key = path.read_bytes()
        if len(key) == KEY_BYTES:
            return key
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(KEY_BYTES)
    write_atomic(path, key, mode=0o600)
    return key


def forget(store: Store, family_id: str, member_id: str | None) -> dict[str, Any]:
    """Delete a member's (or, without one, the whole family's) interactions and feedback.

    The erasure itself is audited, without any of the data. The family's adapters, which were
    trained on that data, are marked for retraining in the same transaction.
    """
    where = "family_id = ?" + (" AND member_id = ?" if member_id else "")
    args = [family_id, member_id] if member_id else [family_id]
    with store.transaction() as db:
        deleted = db.conn.execute(f"DELETE FROM interactions WHERE {where}", args).rowcount
        db.conn.execute(f"DELETE FROM alerts WHERE {where}", args)
        marked = db.conn.execute(
            "UPDATE model_versions SET needs_retraining = 1 WHERE family_id = ? "
            "AND status IN ('candidate', 'active', 'retired', 'refused', 'rolled_back')",
            [family_id],
        ).rowcount
        detail = {"interactions_deleted": deleted, "adapters_marked_for_retraining": marked}
        db.conn.execute(
            "INSERT INTO audit_log (ts, family_id, member_id, event, rule, detail) VALUES (?,?,?,?,?,?)",
            [utcnow(), family_id, member_id, "member_erased" if member_id else "family_erased", None, json.dumps(detail)],
        )  # fmt: skip
    return {"family": family_id, "member": member_id, **detail}


def export(store: Store, family_id: str) -> dict[str, Any]:
    """Everything stored about a family, as JSON-ready data (data portability)."""

    def rows(sql: str) -> list[dict[str, Any]]:
        out = []
        for row in store.db.query(sql, [family_id]):
            for key in ("context", "entities", "detail", "items", "members"):
                if isinstance(row.get(key), str):
                    with contextlib.suppress(json.JSONDecodeError):
                        row[key] = json.loads(row[key])
            out.append(row)
        return out

    queries = {
        "family": "SELECT id, display_name, active, created_at FROM families WHERE id = ?",
        "members": "SELECT id, role, age, active, created_at FROM members WHERE family_id = ?",
        "interactions": "SELECT member_id, kind, item, text, rating, context, ts, source, entities,"
        " created_at FROM interactions WHERE family_id = ? ORDER BY ts",
        "recommendations": "SELECT request_id, ts, members, context, items, model, generated,"
        " dropped FROM recommendations WHERE family_id = ? ORDER BY ts",
        "audit_log": "SELECT ts, member_id, event, rule, detail FROM audit_log"
        " WHERE family_id = ? ORDER BY id",
    }
    with store.transaction():  # one consistent snapshot, and the store's lock
        return {"exported_at": utcnow(), **{name: rows(sql) for name, sql in queries.items()}}


def expire(store: Store, days: int, now: datetime | None = None) -> int:
    """Delete interactions older than ``days``; the number deleted (audited when any)."""
    cutoff = iso_utc((now or datetime.now(timezone.utc)) - timedelta(days=days))
    with store.transaction() as db:
        deleted = db.conn.execute("DELETE FROM interactions WHERE ts < ?", [cutoff]).rowcount
        if deleted:
            db.conn.execute(
                "INSERT INTO audit_log (ts, event, detail) VALUES (?, 'retention', ?)",
                [utcnow(), json.dumps({"interactions_deleted": deleted, "older_than_days": days})],
            )
    return int(deleted)


def known_event_hashes(store: Store, hashes: list[str]) -> set[str]:
    if not hashes:
        return set()
    marks = ",".join("?" for _ in hashes)
    sql = f"SELECT event_hash FROM interactions WHERE event_hash IN ({marks})"
    with store.transaction() as db:
        return {r["event_hash"] for r in db.query(sql, hashes)}


def scrubbed_entities(store: Store) -> dict[str, int]:
    """Personal-data entities replaced so far, by type (role tokens count as their role)."""
    sql = (
        "SELECT j.key AS kind, SUM(j.value) AS n FROM interactions, json_each(interactions.entities) j"
        " WHERE interactions.entities IS NOT NULL GROUP BY j.key"
    )
    return {r["kind"]: int(r["n"]) for r in store.read(sql)}


def inbox_lag(store: Store, inbox: Path) -> list[dict[str, Any]]:
    """Each inbox file the tailer follows: bytes read and bytes still to read."""
    out = []
    for offset in store.offsets().values():
        try:
            size = os.stat(inbox / offset.path).st_size
        except OSError:
            size = offset.offset
        out.append(
            {
                "path": offset.path,
                "read_bytes": offset.offset,
                "lag_bytes": max(size - offset.offset, 0),
            }
        )
    return sorted(out, key=lambda f: f["path"])
