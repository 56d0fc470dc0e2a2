"""Pausing learning until a date: a parent's hold on scheduled training.

The hold is one small JSON file in the state directory (``learning-paused.json``), not a
setting: the YAML stays the source of truth for how training works, and this only says "not
before this date". While it holds, the scheduler starts no scheduled run (a run already going
finishes; a run a parent asks for with "train now" still starts). It ends by itself at the start
of the day after ``until`` (local time), or when a parent resumes. Setting and lifting it are
audited (event ``learning_paused`` / ``learning_resumed``).
"""

from __future__ import annotations

import contextlib
import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from insan_edge.errors import BadRequestError
from insan_edge.files import write_atomic
from insan_edge.ingest_tables import utcnow
from insan_edge.store import Store

FILE = "learning-paused.json"
MAX_DAYS = 366


class LearningPause:
    def __init__(self, store: Store, state_dir: Path) -> None:
        self.store = store
        self.path = state_dir / FILE

    def until(self, today: date | None = None) -> date | None:
        """The last paused day, or None when learning is not paused (or the pause has ended)."""
        try:
            until = date.fromisoformat(json.loads(self.path.read_text("utf-8"))["until"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return until if until >= (today or datetime.now().date()) else None

    def pause(self, until: date, by: str, today: date | None = None) -> dict[str, Any]:
        today = today or datetime.now().date()
        if until < today:
            raise BadRequestError(f"pick a date from today ({today.isoformat()}) on")
        if until > today + timedelta(days=MAX_DAYS):
            raise BadRequestError(f"learning can be paused for at most {MAX_DAYS} days")
        write_atomic(self.path, json.dumps({"until": until.isoformat(), "by": by, "at": utcnow()}))
        self._audit("learning_paused", {"until": until.isoformat(), "by": by})
        return {"paused_until": until.isoformat()}

    def resume(self, by: str, today: date | None = None) -> dict[str, Any]:
        was = self.until(today)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if was is not None:
            self._audit("learning_resumed", {"was_until": was.isoformat(), "by": by})
        return {"paused_until": None}

    def _audit(self, event: str, detail: dict[str, Any]) -> None:
        with self.store.transaction() as db:
            db.table("audit_log").insert(
                {"ts": utcnow(), "event": event, "rule": "parent", "detail": json.dumps(detail)}
            )
