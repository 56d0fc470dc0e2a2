"""Pausing learning until a date: the hold's limits, its audit, and the scheduler honouring it."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from daemon_harness import family_config

from insan_edge.config import load_config
from insan_edge.errors import BadRequestError
from insan_edge.governor import Governor
from insan_edge.pause import LearningPause
from insan_edge.registry import Registry
from insan_edge.scheduler import Scheduler
from insan_edge.store import Store

TODAY = date(2026, 12, 2)


def _store(tmp_path: Path) -> tuple[Store, Path]:
    config = family_config(None, tmp_path / "state", tmp_path / "x.sock")
    config["system"]["training"] = {"enabled": True}
    # Refuse every start on memory: a run that got past the pause stops at the governor.
    config["system"]["governor"] = {"memory_reserve_mb": 10**9}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    store = Store(tmp_path / "state" / "insan-edge.db")
    store.sync_families(dict(load_config(path).config.families))
    return store, path


def test_pause_limits_expiry_and_audit(tmp_path: Path) -> None:
    store, _ = _store(tmp_path)
    pause = LearningPause(store, tmp_path / "state")
    assert pause.until(TODAY) is None
    with pytest.raises(BadRequestError, match="from today"):
        pause.pause(TODAY - timedelta(days=1), "test", today=TODAY)
    with pytest.raises(BadRequestError, match="at most 366 days"):
        pause.pause(TODAY + timedelta(days=400), "test", today=TODAY)
    pause.pause(TODAY + timedelta(days=2), "dashboard:token:ab12cd34", today=TODAY)
    assert pause.until(TODAY) == TODAY + timedelta(days=2)
    assert pause.until(TODAY + timedelta(days=2)) == TODAY + timedelta(days=2)  # inclusive
    assert pause.until(TODAY + timedelta(days=3)) is None  # over by itself
    pause.resume("test", today=TODAY)  # the pause still held that day: the resume is audited
    assert pause.until(TODAY) is None
    events = [r["event"] for r in store.read("SELECT event FROM audit_log ORDER BY id")]
    assert events == ["learning_paused", "learning_resumed"]
    store.close()


def test_the_scheduler_starts_no_scheduled_run_while_paused(tmp_path: Path) -> None:
    store, path = _store(tmp_path)
    loaded = load_config(path)
    system = loaded.config.system
    registry = Registry(store, tmp_path / "state" / "adapters")
    three_am = datetime(2026, 12, 2, 3, 0)  # inside the default idle window (01:00-06:00)
    scheduler = Scheduler(store, registry, Governor(system.governor, system.training),
                          lambda: loaded, tmp_path / "none.gguf", tmp_path / "state",
                          lambda *a: {}, lambda f: None, clock=lambda: three_am)  # fmt: skip
    pause = LearningPause(store, tmp_path / "state")
    scheduler.paused_until = lambda: pause.until(TODAY)
    scheduler.request("testfam", now=False, by="test")
    pause.pause(TODAY + timedelta(days=1), "test", today=TODAY)
    scheduler.tick()
    assert scheduler.verdict is None  # stopped at the pause: the governor was never asked
    assert scheduler.status()["paused_until"] == "2026-12-03"
    scheduler.request("testfam", now=True, by="test")  # a parent's "train now" still goes
    scheduler.tick()
    assert scheduler.verdict is not None and scheduler.live is None
    scheduler.verdict = None
    scheduler.runs.update(scheduler.runs.open_runs("testfam")[0]["id"], now=0)
    pause.resume("test")
    scheduler.tick()
    assert scheduler.verdict is not None and scheduler.verdict.action != "run"
    assert scheduler.live is None
    store.close()
