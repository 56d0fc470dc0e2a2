"""One SQLite database (sqlite-utils, WAL, foreign keys), migrated forward on open.

Only scrubbed or generated text is written here; member names from the config never are.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from insan_edge.config.family import Family
from insan_edge.errors import StoreError
from insan_edge.ingest_tables import IngestTables, utcnow


def _v1(db: sqlite_utils.Database) -> None:
    db.table("families").create(
        {"id": str, "display_name": str, "active": int, "created_at": str, "updated_at": str},
        pk="id",
    )
    db.table("members").create(
        {
            "family_id": str,
            "id": str,
            "role": str,
            "age": int,
            "active": int,
            "created_at": str,
            "updated_at": str,
        },
        pk=("family_id", "id"),
        foreign_keys=[("family_id", "families", "id")],
    )
    db.table("audit_log").create(
        {
            "id": int,
            "ts": str,
            "family_id": str,
            "member_id": str,
            "event": str,
            "rule": str,
            "detail": str,
        },
        pk="id",
        not_null={"ts", "event"},
    )
    db.table("audit_log").create_index(["family_id", "ts"])
    db.table("audit_log").create_index(["event", "rule"])
    db.table("recommendations").create(
        {
            "id": int,
            "request_id": str,
            "ts": str,
            "family_id": str,
            "members": str,
            "context": str,
            "items": str,
            "model": str,
            "generated": int,
            "dropped": int,
            "cached": int,
            "latency_ms": float,
        },
        pk="id",
        foreign_keys=[("family_id", "families", "id")],
    )
    db.table("recommendations").create_index(["family_id", "ts"])
    # Scrubbed interactions; filled by ingest. The prompt uses recently accepted items.
    db.table("interactions").create(
        {
            "id": int,
            "family_id": str,
            "member_id": str,
            "kind": str,
            "item": str,
            "text": str,
            "rating": int,
            "context": str,
            "ts": str,
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("family_id", "families", "id")],
    )
    db.table("interactions").create_index(["family_id", "kind", "ts"])


def _v2(db: sqlite_utils.Database) -> None:
    # Inbox files are tracked by inode (a rotated file keeps it under its new name); the path is
    # where it was last seen. head_hash: the file's first line (at most HEAD_BYTES) as read
    # up to ``offset``, to recognise a truncated or replaced file.
    db.table("ingest_offsets").create(
        {"inode": int, "path": str, "offset": int, "head_hash": str, "updated_at": str},
        pk="inode",
        not_null={"path", "offset", "head_hash"},
    )
    # What could not be stored, and why; never the raw content (it may hold personal data).
    db.table("quarantine").create(
        {
            "id": int,
            "ts": str,
            "source": str,
            "file": str,
            "offset": int,
            "size": int,
            "reason": str,
            "message": str,
            "sha256": str,
        },
        pk="id",
        not_null={"ts", "source", "reason"},
    )
    db.table("quarantine").create_index(["reason"])
    interactions = db.table("interactions")
    interactions.add_column("source", str)  # 'inbox' or 'api'
    interactions.add_column(
        "event_hash", str
    )  # keyed hash of the event: a retry is not stored twice
    interactions.add_column("entities", str)  # JSON: personal-data entities the scrubber replaced
    interactions.create_index(["event_hash"], unique=True)


def _v3(db: sqlite_utils.Database) -> None:
    # One row per training run of a family: queued -> running <-> paused -> stopped (resumable)
    # -> evaluating -> promoted | refused | failed. Progress columns are the trainer's last report.
    db.table("training_runs").create(
        {
            "id": int,
            "family_id": str,
            "status": str,
            "reason": str,
            "requested_by": str,
            "now": int,
            "created_at": str,
            "started_at": str,
            "finished_at": str,
            "updated_at": str,
            "job_dir": str,
            "attempts": int,
            "micro_batch_size": int,
            "step": int,
            "steps": int,
            "loss": float,
            "tokens_per_s": float,
            "eta_seconds": float,
            "since_id": int,
            "upto_id": int,
            "examples": int,
            "version": int,
        },
        pk="id",
        not_null={"family_id", "status", "created_at"},
    )
    db.table("training_runs").create_index(["family_id", "status"])
    # Adapter versions per family (files under adapters/<family>/v<N>); at most one is active.
    db.table("model_versions").create(
        {
            "family_id": str,
            "version": int,
            "status": str,
            "created_at": str,
            "promoted_at": str,
            "run_id": int,
            "path": str,
            "sha256": str,
            "base_model": str,
            "upto_id": int,
            "examples": int,
            "preference_accuracy": float,
            "heldout_loss": float,
            "safety_score": float,
            "scores": str,
            "reason": str,
            "needs_retraining": int,
        },
        pk=("family_id", "version"),
        not_null={"status", "created_at"},
    )


def _v4(db: sqlite_utils.Database) -> None:
    # App tokens for the LAN gateway: only a hash of the secret is kept; revoked rows stay
    # (revoked_at set) so the list shows what was cut off and when.
    db.table("tokens").create(
        {
            "id": str,
            "app": str,
            "scopes": str,
            "secret_sha256": str,
            "created_at": str,
            "last_used_at": str,
            "revoked_at": str,
        },
        pk="id",
        not_null={"app", "scopes", "secret_sha256", "created_at"},
    )


def _v5(db: sqlite_utils.Database) -> None:
    # Crisis alerts for the parents: who, which signal, when; never the text.
    db.table("alerts").create(
        {
            "id": int,
            "family_id": str,
            "member_id": str,
            "signal": str,
            "score": float,
            "source": str,
            "event_ts": str,
            "created_at": str,
            "acknowledged_at": str,
        },
        pk="id",
        not_null={"family_id", "member_id", "signal", "created_at"},
    )
    db.table("alerts").create_index(["family_id", "acknowledged_at"])


def _v6(db: sqlite_utils.Database) -> None:
    # Candidate items for ranking (catalog.py): scope '*' is every family's (the starter catalog),
    # else one family's (its config, `catalog add`, its interactions, generated items).
    db.table("catalog_items").create(
        {
            "id": int,
            "scope": str,
            "title_key": str,
            "title": str,
            "description": str,
            "category": str,
            "content_rating": str,
            "topics": str,
            "min_age": int,
            "max_age": int,
            "source": str,
            "created_at": str,
            "updated_at": str,
        },
        pk="id",
        not_null={"scope", "title_key", "title", "category", "content_rating", "source"},
    )
    db.table("catalog_items").create_index(["scope", "title_key"], unique=True)


# Each entry moves the schema one version forward; never edit a released one, append.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1, _v2, _v3, _v4, _v5, _v6]


class Store(IngestTables):
    """Thread-safe access to the database; every write is one transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                str(path), check_same_thread=False, isolation_level=None, timeout=10
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the database {path}: {exc}") from exc
        self._lock = threading.RLock()
        self.db = sqlite_utils.Database(conn)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(
                f"the database {path} is unreadable ({exc}); move it aside to start fresh"
            ) from exc

    @property
    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        current = self.schema_version
        if current > len(MIGRATIONS):
            raise StoreError(
                f"the database {self.path} has schema version {current}, newer than this "
                f"insan-edge knows ({len(MIGRATIONS)}); upgrade insan-edge"
            )
        for version in range(current, len(MIGRATIONS)):
            with self.transaction():
                MIGRATIONS[version](self.db)
                self.db.conn.execute(f"PRAGMA user_version = {version + 1}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite_utils.Database]:
        with self._lock:
            conn = self.db.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    conn.execute("ROLLBACK")
                    raise StoreError(f"could not save to the database: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()

    def read(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows of one query, without opening a write transaction (status pages, checks)."""
        with self._lock:
            return [dict(r) for r in self.db.query(sql, list(args))]

    # families ------------------------------------------------------------------------------

    def sync_families(self, families: dict[str, Family]) -> None:
        """Mirror the config's families and members (ids, role, age: no names); keep history."""
        now = utcnow()
        with self.transaction() as db:
            db.execute("UPDATE families SET active = 0")
            db.execute("UPDATE members SET active = 0")
            for fid, family in families.items():
                db.table("families").upsert(
                    {
                        "id": fid,
                        "display_name": None,  # a name: kept in the config only
                        "active": 1,
                        "updated_at": now,
                    },
                    pk="id",
                )
                db.execute(
                    "UPDATE families SET created_at = ? WHERE id = ? AND created_at IS NULL",
                    [now, fid],
                )
                for mid, member in family.members.items():
                    db.table("members").upsert(
                        {
                            "family_id": fid,
                            "id": mid,
                            "role": member.role.value,
                            "age": member.age,
                            "active": 1,
                            "updated_at": now,
                        },
                        pk=("family_id", "id"),
                    )
                    db.execute(
                        "UPDATE members SET created_at = ? WHERE family_id = ? AND id = ? AND created_at IS NULL",
                        [now, fid, mid],
                    )

    # audit and recommendations ----------------------------------------------------------------

    def record_answer(
        self,
        *,
        request_id: str,
        family_id: str,
        members: Sequence[str],
        context: dict[str, Any],
        items: list[dict[str, Any]],
        model: str,
        generated: int,
        dropped: int,
        cached: bool,
        latency_ms: float,
        decisions: list[dict[str, Any]],
    ) -> None:
        """The served answer and every safety decision behind it, in one transaction."""
        now = utcnow()
        with self.transaction() as db:
            db.table("recommendations").insert(
                {
                    "request_id": request_id,
                    "ts": now,
                    "family_id": family_id,
                    "members": json.dumps(list(members)),
                    "context": json.dumps(context, default=str),
                    "items": json.dumps(items),
                    "model": model,
                    "generated": generated,
                    "dropped": dropped,
                    "cached": int(cached),
                    "latency_ms": round(latency_ms, 1),
                }
            )
            db.table("audit_log").insert_all(
                {
                    "ts": now,
                    "family_id": family_id,
                    "member_id": d.get("member"),
                    "event": d["event"],
                    "rule": d.get("rule"),
                    "detail": json.dumps({"request_id": request_id, **d.get("detail", {})}),
                }
                for d in decisions
            )

    def audit_rows(self, family_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        where, args = ("WHERE family_id = ?", [family_id]) if family_id else ("", [])
        with self._lock:
            return [
                dict(r)
                for r in self.db.query(
                    f"SELECT * FROM audit_log {where} ORDER BY id DESC LIMIT ?", [*args, limit]
                )
            ]

    def recent_accepted(
        self, family_id: str, members: Sequence[str], limit: int, before: str | None = None
    ) -> list[str]:
        """Most recently accepted or well-rated items of these members, newest first, distinct.

        ``before`` (an ISO UTC timestamp) looks back from then: what the prompt held at that time.
        """
        if limit <= 0:
            return []
        marks = ",".join("?" for _ in members)
        sql = (
            "SELECT item, MAX(ts) AS last FROM interactions WHERE family_id = ? AND item IS NOT NULL AND item != '' "
            f"AND member_id IN ({marks}) AND (kind = 'suggestion_accepted' OR (kind = 'rating' AND rating >= 4)) "
            + ("AND ts < ? " if before is not None else "")
            + "GROUP BY item ORDER BY last DESC LIMIT ?"
        )
        args: list[Any] = [family_id, *members]
        if before is not None:
            args.append(before)
        with self._lock:
            return [r["item"] for r in self.db.query(sql, [*args, limit])]

    def safety_counts(self) -> dict[str, Any]:
        with self._lock:
            rows = list(
                self.db.query(
                    "SELECT event, rule, COUNT(*) AS n FROM audit_log WHERE event IN ('item_served', 'item_dropped') GROUP BY event, rule"
                )
            )
        served = sum(r["n"] for r in rows if r["event"] == "item_served")
        by_rule: dict[str, int] = {}
        dropped_items = 0
        for r in rows:
            if r["event"] == "item_dropped":
                by_rule[r["rule"]] = by_rule.get(r["rule"], 0) + r["n"]
        with self._lock:
            dropped_items = self.db.execute(
                "SELECT COUNT(DISTINCT json_extract(detail, '$.request_id') || json_extract(detail, '$.title')) FROM audit_log WHERE event = 'item_dropped'"
            ).fetchone()[0]
        return {"items_served": served, "items_dropped": dropped_items, "drops_by_rule": by_rule}
