"""The ingest half of the store: inbox offsets, quarantine, interactions written in batches.

A mixin of ``Store``: every method runs inside the store's own transaction and lock.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import sqlite_utils


def iso_utc(moment: datetime, timespec: str = "auto") -> str:
    """An aware time as stored: ISO 8601 in UTC with a 'Z'."""
    return moment.astimezone(timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")


def utcnow() -> str:
    return iso_utc(datetime.now(timezone.utc), "milliseconds")


INTERACTION_COLUMNS = (
    "family_id",
    "member_id",
    "kind",
    "item",
    "text",
    "rating",
    "context",
    "ts",
    "source",
    "event_hash",
    "entities",
)


@dataclass(frozen=True)
class IngestOffset:
    inode: int
    path: str
    offset: int
    head_hash: str


@dataclass(frozen=True)
class Quarantined:
    """One rejected event: where it was and why, with a hash of its bytes (never the bytes)."""

    source: str
    reason: str
    message: str
    sha256: str
    size: int
    file: str | None = None
    offset: int | None = None


class IngestTables:
    db: sqlite_utils.Database
    _lock: threading.RLock
    transaction: Callable[[], AbstractContextManager[sqlite_utils.Database]]

    def _write_interactions(
        self, db: sqlite_utils.Database, rows: Sequence[dict[str, Any]], default_source: str
    ) -> int:
        now, added = utcnow(), 0
        marks = ",".join("?" for _ in range(len(INTERACTION_COLUMNS) + 1))
        sql = f"INSERT OR IGNORE INTO interactions ({','.join(INTERACTION_COLUMNS)}, created_at) VALUES ({marks})"
        for row in rows:
            values: list[Any] = []
            for column in INTERACTION_COLUMNS:
                value = row.get(column)
                if column == "source" and value is None:
                    value = default_source
                elif isinstance(value, (dict, list)):
                    value = json.dumps(value)
                values.append(value)
            added += db.conn.execute(sql, [*values, now]).rowcount
        return added

    def _write_quarantine(self, db: sqlite_utils.Database, rejects: Sequence[Quarantined]) -> None:
        now = utcnow()
        db.conn.executemany(
            "INSERT INTO quarantine (ts, source, file, offset, size, reason, message, sha256) VALUES (?,?,?,?,?,?,?,?)",
            [
                (now, q.source, q.file, q.offset, q.size, q.reason, q.message, q.sha256)
                for q in rejects
            ],
        )

    def ingest_batch(
        self,
        *,
        path: str,
        inode: int,
        head_hash: str,
        new_offset: int,
        rows: Sequence[dict[str, Any]],
        rejects: Sequence[Quarantined],
    ) -> int:
        """Scrubbed rows, quarantined lines and the file's new offset, in ONE transaction.

        Returns the rows added (an event whose ``event_hash`` is already stored is skipped).
        """
        with self.transaction() as db:
            added = self._write_interactions(db, rows, "inbox")
            self._write_quarantine(db, rejects)
            db.conn.execute(
                "INSERT INTO ingest_offsets (inode, path, offset, head_hash, updated_at) VALUES (?,?,?,?,?) "
                "ON CONFLICT(inode) DO UPDATE SET path = excluded.path, offset = excluded.offset, "
                "head_hash = excluded.head_hash, updated_at = excluded.updated_at",
                [inode, path, new_offset, head_hash, utcnow()],
            )
        return added

    def add_interactions(
        self, rows: Sequence[dict[str, Any]], rejects: Sequence[Quarantined] = ()
    ) -> int:
        """Rows (and rejects) that come without a file offset, e.g. from the API; rows added."""
        with self.transaction() as db:
            added = self._write_interactions(db, rows, "api")
            self._write_quarantine(db, rejects)
        return added

    def offsets(self) -> dict[int, IngestOffset]:
        with self._lock:
            return {
                r["inode"]: IngestOffset(r["inode"], r["path"], r["offset"], r["head_hash"])
                for r in self.db.query("SELECT inode, path, offset, head_hash FROM ingest_offsets")
            }

    def forget_offsets(self, inodes: Sequence[int]) -> None:
        """Drop the offsets of files that are gone."""
        with self.transaction() as db:
            db.conn.executemany(
                "DELETE FROM ingest_offsets WHERE inode = ?", [(i,) for i in inodes]
            )

    def quarantine_rows(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            return [
                dict(r)
                for r in self.db.query("SELECT * FROM quarantine ORDER BY id DESC LIMIT ?", [limit])
            ]

    def ingest_counts(self) -> dict[str, Any]:
        """For status: interactions stored (by source, by family), quarantined (by reason)."""
        with self._lock:
            by_family = {
                r["family_id"]: r["n"]
                for r in self.db.query(
                    "SELECT family_id, COUNT(*) AS n FROM interactions GROUP BY family_id"
                )
            }
            by_source = {
                r["source"] or "unknown": r["n"]
                for r in self.db.query(
                    "SELECT source, COUNT(*) AS n FROM interactions GROUP BY source"
                )
            }
            by_reason = {
                r["reason"]: r["n"]
                for r in self.db.query(
                    "SELECT reason, COUNT(*) AS n FROM quarantine GROUP BY reason"
                )
            }
        return {
            "interactions": sum(by_family.values()),
            "interactions_by_source": by_source,
            "interactions_by_family": by_family,
            "quarantined": sum(by_reason.values()),
            "quarantined_by_reason": by_reason,
        }
