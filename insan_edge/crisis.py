"""Crisis signals in what children type: self-harm or abuse raises an alert for the parents.

Runs on the scrubbed text of each stored event of a child member (the raw text is never kept):
a keyword list and the topic model, with thresholds calibrated on ``tests/data/crisis.jsonl``.
An alert is a row in ``alerts`` (family, member, signal, score; never the text), an audit
record, a flag in status, and optionally the parents' own hook command (``privacy.crisis_hook``),
run with the alert in its environment.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import Any

from insan_edge.config import Config
from insan_edge.ingest_tables import utcnow
from insan_edge.logs import kv
from insan_edge.store import Store
from insan_edge.topics import Embed, TopicIndex, load_calibration

log = logging.getLogger("insan_edge.crisis")
HOOK_TIMEOUT = 30.0

SIGNALS: dict[str, tuple[str, ...]] = {
    "self-harm": (
        "i want to die",
        "i want to kill myself",
        "i keep hurting myself on purpose",
        "everyone would be better off without me",
        "i don't want to be alive anymore",
        "how many pills does it take to die",
        "i feel hopeless and want it all to end",
    ),
    "abuse": (
        "an adult hits me and hurts me at home",
        "a grown-up touches me and says it is our secret",
        "i am scared of my dad when he gets angry and beats me",
        "someone older threatens me if i tell anyone",
        "my parent leaves me alone for days without food",
    ),
}
WORDS: dict[str, re.Pattern[str]] = {
    "self-harm": re.compile(
        r"\b(kill(ing)? myself|suicid\w*|end my life|want(ed)? to die|hurt(ing)? myself|"
        r"cut(ting)? myself|self[- ]harm|better off dead|don'?t want to live)\b"
    ),
    "abuse": re.compile(
        r"\b((hits|beats|hurts|touches|touched) me|our (little )?secret|"
        r"not allowed to tell|(he|she) (hit|beat|touched) me)\b"
    ),
}


def keyword_signals(text: str) -> list[str]:
    lowered = text.lower()
    return [s for s, pattern in WORDS.items() if pattern.search(lowered)]


def crisis_index(embed: Embed) -> TopicIndex:
    c = load_calibration().meta.get("crisis", {})
    return TopicIndex(embed, list(SIGNALS), c.get("thresholds", {}),
                      c.get("keyword_floors", {}), phrases=dict(SIGNALS))  # fmt: skip


def signals(index: TopicIndex | None, texts: Sequence[str]) -> list[dict[str, float]]:
    """Per text, the signals found: by meaning (its score), or by a keyword the meaning does not
    deny (score 1.0 without the model)."""
    readings = index.flags(list(texts)) if index is not None else [None] * len(texts)
    out = []
    for text, reading in zip(texts, readings, strict=True):
        found = dict(reading.strong) if reading else {}
        for s in keyword_signals(text):
            if reading is None:
                found[s] = 1.0
            elif s in reading.weak:
                found.setdefault(s, reading.weak[s])
        out.append(found)
    return out


class CrisisWatch:
    def __init__(
        self,
        store: Store,
        get_config: Callable[[], Config],
        get_index: Callable[[], TopicIndex | None],
    ) -> None:
        self.store = store
        self.get_config = get_config
        self.get_index = get_index

    def scan(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Alerts for the stored rows (scrubbed) of child members; each one recorded. A failure
        here is logged and never stops ingest (the events are stored either way)."""
        try:
            return self._scan(rows)
        except Exception:
            log.exception(kv("crisis.scan_failed", rows=len(rows)))
            return []

    def _scan(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        config = self.get_config()
        mine = []
        for row in rows:
            family = config.families.get(row["family_id"])
            member = family.members.get(row["member_id"]) if family else None
            if member is not None and member.is_child and row.get("text"):
                mine.append(row)
        if not mine:
            return []
        found = signals(self.get_index(), [r["text"] for r in mine])
        alerts = []
        for row, hits in zip(mine, found, strict=True):
            for signal, score in hits.items():
                alerts.append(self._raise(row, signal, score, config))
        return alerts

    def _raise(
        self, row: dict[str, Any], signal: str, score: float, config: Config
    ) -> dict[str, Any]:
        alert = {"family_id": row["family_id"], "member_id": row["member_id"], "signal": signal,
                 "score": round(float(score), 3), "source": row.get("source"), "event_ts": row.get("ts"),
                 "created_at": utcnow()}  # fmt: skip
        with self.store.transaction() as db:
            alert_id = int(db.table("alerts").insert(alert).last_pk or 0)
            db.table("audit_log").insert({"ts": alert["created_at"], "family_id": row["family_id"],
                "member_id": row["member_id"], "event": "crisis_alert", "rule": signal,
                "detail": json.dumps({"alert": alert_id, "score": alert["score"]})})  # fmt: skip
        alert["id"] = alert_id
        log.warning(kv("crisis.alert", id=alert_id, family=row["family_id"], member=row["member_id"],
                       signal=signal, score=alert["score"]))  # fmt: skip
        hook = config.system.privacy.crisis_hook
        if hook:
            threading.Thread(target=_run_hook, args=(list(hook), alert), daemon=True).start()
        return alert


def _run_hook(argv: list[str], alert: dict[str, Any]) -> None:
    """The parents' command, with the alert (never the text) in its environment."""
    env = {**os.environ, "INSAN_EDGE_ALERT_ID": str(alert["id"]),
           "INSAN_EDGE_ALERT_FAMILY": alert["family_id"], "INSAN_EDGE_ALERT_MEMBER": alert["member_id"],
           "INSAN_EDGE_ALERT_SIGNAL": alert["signal"], "INSAN_EDGE_ALERT_AT": alert["created_at"]}  # fmt: skip
    try:
        done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=HOOK_TIMEOUT, check=False)  # fmt: skip
        log.info(kv("crisis.hook_ran", id=alert["id"], exit=done.returncode))
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.error(kv("crisis.hook_failed", id=alert["id"], error=f"{type(exc).__name__}: {exc}"))


def open_alerts(store: Store, family_id: str | None = None) -> list[dict[str, Any]]:
    where, args = ("AND family_id = ?", [family_id]) if family_id else ("", [])
    sql = f"SELECT * FROM alerts WHERE acknowledged_at IS NULL {where} ORDER BY id DESC"
    return store.read(sql, args)


def acknowledge(store: Store, alert_id: int) -> dict[str, Any]:
    """A parent has seen the alert; the acknowledgement is audited."""
    from insan_edge.errors import NotFoundError

    with store.transaction() as db:
        rows = list(db.table("alerts").rows_where("id = ?", [alert_id]))
        if not rows:
            raise NotFoundError(f"no alert {alert_id}")
        if rows[0]["acknowledged_at"] is None:
            now = utcnow()
            db.table("alerts").update(alert_id, {"acknowledged_at": now})
            db.table("audit_log").insert({"ts": now, "family_id": rows[0]["family_id"],
                "member_id": rows[0]["member_id"], "event": "alert_acknowledged",
                "rule": rows[0]["signal"], "detail": json.dumps({"alert": alert_id})})  # fmt: skip
            rows = list(db.table("alerts").rows_where("id = ?", [alert_id]))
    return dict(rows[0])
