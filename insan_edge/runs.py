"""Training runs in the store: what was asked, what ran, how far it got and how it ended."""

from __future__ import annotations

from typing import Any

from insan_edge.ingest_tables import utcnow
from insan_edge.store import Store

# queued: waiting for its window (or --now); running/paused: a trainer process exists;
# stopped: checkpointed and resumable; evaluating: trained, being judged; then one of the ends.
OPEN = ("queued", "running", "paused", "stopped", "evaluating")
ENDED = ("promoted", "refused", "failed", "cancelled")
PROGRESS = ("step", "steps", "loss", "tokens_per_s", "eta_seconds", "micro_batch_size")


class Runs:
    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, family_id: str, *, requested_by: str, now: bool) -> dict[str, Any]:
        stamp = utcnow()
        with self.store.transaction() as db:
            table = db.table("training_runs")
            table.insert(
                {
                    "family_id": family_id,
                    "status": "queued",
                    "requested_by": requested_by,
                    "now": int(now),
                    "created_at": stamp,
                    "updated_at": stamp,
                    "attempts": 0,
                }
            )
            run_id = int(str(table.last_pk))
        return self.get(run_id)

    def get(self, run_id: int) -> dict[str, Any]:
        with self.store.transaction() as db:
            return dict(db.table("training_runs").get(run_id))

    def update(self, run_id: int, **values: Any) -> None:
        values["updated_at"] = utcnow()
        with self.store.transaction() as db:
            db.table("training_runs").update(run_id, values)

    def open_runs(self, family_id: str | None = None) -> list[dict[str, Any]]:
        sql = f"SELECT * FROM training_runs WHERE status IN ({','.join('?' for _ in OPEN)})"
        args: list[Any] = list(OPEN)
        if family_id is not None:
            sql += " AND family_id = ?"
            args.append(family_id)
        return self.store.read(sql + " ORDER BY id", args)

    def recent(self, limit: int = 20, family_id: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM training_runs"
        args: list[Any] = []
        if family_id is not None:
            sql += " WHERE family_id = ?"
            args.append(family_id)
        return self.store.read(sql + " ORDER BY id DESC LIMIT ?", [*args, limit])

    def trained_upto(self, family_id: str) -> int | None:
        """Highest interaction id a finished run of the family has used (its 'since' next time)."""
        row = self.store.read(
            "SELECT MAX(upto_id) AS upto FROM training_runs WHERE family_id = ? AND status IN ('promoted', 'refused', 'failed')",
            [family_id],
        )[0]
        return None if row["upto"] is None else int(row["upto"])

    def interrupted(self) -> list[dict[str, Any]]:
        """Runs a previous daemon left running, paused or evaluating (it died): resumable."""
        return self.store.read(
            "SELECT * FROM training_runs WHERE status IN ('running', 'paused', 'evaluating') ORDER BY id"
        )
