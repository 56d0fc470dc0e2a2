"""Daemon wiring for per-family models: governor, scheduler, registry and adapters together,
and what the API and CLI ask of them (train, list, roll back, delete, validate).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from insan_edge.adapters import AdapterBook, safety_suite
from insan_edge.config.loader import LoadedConfig
from insan_edge.engine import Engine
from insan_edge.governor import Governor
from insan_edge.pause import LearningPause
from insan_edge.registry import ModelVersion, Registry
from insan_edge.scheduler import Scheduler
from insan_edge.store import Store


class Personalization:
    def __init__(
        self,
        store: Store,
        engine: Engine,
        get_config: Callable[[], LoadedConfig],
        model_path: Path,
        state_dir: Path,
    ) -> None:
        system = get_config().config.system
        self.get_config = get_config
        self.engine = engine
        self.registry = Registry(store, state_dir / "adapters")
        self.governor = Governor(system.governor, system.training)
        self.adapters = AdapterBook(engine, self.registry)
        self.scheduler = Scheduler(
            store,
            self.registry,
            self.governor,
            get_config,
            model_path,
            state_dir,
            self._safety_suite,
            self.adapters.forget,
        )
        self.pause = LearningPause(store, state_dir)
        self.scheduler.paused_until = self.pause.until

    def start(self) -> None:
        self.scheduler.start()

    def stop(self, timeout: float) -> None:
        self.scheduler.stop(timeout)

    def config_changed(self, loaded: LoadedConfig) -> None:
        system = loaded.config.system
        self.governor.update_settings(system.governor, system.training)

    def _safety_suite(
        self, family_id: str, version: ModelVersion, cancel: threading.Event
    ) -> dict[str, Any]:
        loaded = self.get_config()
        size = loaded.config.system.training.safety_suite_size
        return safety_suite(self.engine, loaded, family_id, version, cancel, size)

    # what the API asks ------------------------------------------------------------------

    def note_request(self) -> None:
        self.scheduler.note_request()

    def note_request_done(self) -> None:
        self.scheduler.note_request_done()

    async def train(self, family_id: str, now: bool, by: str = "api") -> dict[str, Any]:
        run = await asyncio.to_thread(self.scheduler.request, family_id, now=now, by=by)
        return {"family": family_id, "run": run}

    def _family_models(self, family_id: str) -> dict[str, Any]:
        versions = self.registry.versions(family_id)
        active = next((v for v in versions if v.active), None)
        loaded = self.get_config()
        return {
            "family": family_id,
            "serving": "base" if active is None else f"v{active.version}",
            "active": active.as_dict() if active else None,
            "last_update": active.promoted_at if active else None,
            "versions": [v.as_dict() for v in versions],
            "runs": self.scheduler.runs.recent(5, family_id),
            "due": self.scheduler.due(loaded, family_id),
        }

    async def model(self, family_id: str) -> dict[str, Any]:
        self.get_config().config.family(family_id)
        return await asyncio.to_thread(self._family_models, family_id)

    async def models(self) -> dict[str, Any]:
        families = list(self.get_config().config.families)
        out = await asyncio.to_thread(lambda: [self._family_models(f) for f in families])
        return {"base": {"name": self.engine.name, "file": str(self.engine.path)}, "families": out}

    async def delete_model(self, family_id: str) -> dict[str, Any]:
        self.get_config().config.family(family_id)
        self.adapters.forget(family_id)
        removed = await asyncio.to_thread(self.registry.delete, family_id)
        return {"family": family_id, "versions_removed": removed, "serving": "base"}

    async def rollback(self, family_id: str) -> dict[str, Any]:
        self.get_config().config.family(family_id)
        version = await asyncio.to_thread(self.registry.rollback, family_id)
        self.adapters.forget(family_id)
        return {
            "family": family_id,
            "serving": "base" if version is None else f"v{version.version}",
            "active": version.as_dict() if version else None,
        }

    async def validate(self) -> dict[str, Any]:
        results = await asyncio.to_thread(self.adapters.validate)
        return {"ok": all(r["ok"] for r in results), "models": results}

    def erased(self, family_id: str) -> None:
        """A member's data was erased (adapters marked): queue a retraining without it."""
        if self.get_config().config.system.training.enabled:
            self.scheduler.request(family_id, now=False, by="erasure")

    def status(self) -> dict[str, Any]:
        return self.scheduler.status()
