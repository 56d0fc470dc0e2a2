"""The daemon's topic check by meaning: the embedder, and the topic index of the running config.

Started once (the ONNX export is made on the first start); the index, with its topic vectors,
is rebuilt on each config load. Should the model be missing or broken, the box keeps judging
by keywords alone, and says so in its log and status.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from insan_edge.config import Config
from insan_edge.errors import InsanEdgeError
from insan_edge.guard import Guard, Reader
from insan_edge.logs import kv
from insan_edge.topics import BUILTIN, TopicIndex, load_calibration

log = logging.getLogger("insan_edge.meaning")


def config_topics(config: Config) -> list[str]:
    """The built-in topics and every topic a family blocks or a member avoids."""
    names = list(BUILTIN)
    for family in config.families.values():
        names += family.safety.blocked_topics
        for member in family.members.values():
            names += member.avoided_topics
    return list(dict.fromkeys(names))


class TopicService:
    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir
        self.embedder: Any = None  # topic_model.Embedder, imported only when enabled
        self.index: TopicIndex | None = None
        self.crisis: TopicIndex | None = None
        self.error: str | None = None
        self.model_sha256: str | None = None
        self.guard: Guard | None = None
        self.guard_error: str | None = None

    @property
    def reader(self) -> Reader | TopicIndex | None:
        """What the safety judgement asks: the topic index, with the guard's ratings if any."""
        return Reader(self.index, self.guard) if self.guard is not None else self.index

    def start(self, config: Config) -> None:
        """Blocking (the first start exports the model): run it in a thread."""
        self._start_topics(config)
        self._set_guard(config)

    def _set_guard(self, config: Config) -> None:
        """Load, keep or drop the guard model for this config."""
        settings = config.system.safety
        want = (settings.guard_model, settings.guard_certainty) if settings.guard_model else None
        have = (self.guard.path, self.guard.certainty) if self.guard is not None else None
        if want != have:
            # Not closed here: a check still holding the old reader finishes with it, and the
            # model is freed when the last reference goes (llama.cpp's Llama closes on delete).
            self.guard = None
            self.guard_error = None
            if want is not None:
                try:
                    self.guard = Guard(want[0], want[1])
                except InsanEdgeError as exc:
                    self.guard_error = exc.message
                    log.error(kv("guard.unavailable", model=want[0], error=exc.message))
                else:
                    log.info(kv("guard.ready", model=want[0].name, certainty=want[1]))

    def _start_topics(self, config: Config) -> None:
        settings = config.system.safety
        if not settings.topic_model:
            return
        started = time.monotonic()
        try:
            from insan_edge.topic_model import Embedder, ensure_model

            onnx = ensure_model(self.models_dir)
            self.embedder = Embedder(onnx.parent, device=settings.topic_device)
            self.model_sha256 = _sha256_of(onnx)
            self._index_for(config)
            from insan_edge.crisis import crisis_index

            self.crisis = crisis_index(self.embedder.embed)
        except (InsanEdgeError, OSError, ImportError, RuntimeError, ValueError) as exc:
            self.error = str(getattr(exc, "message", None) or exc)
            self.embedder = self.index = self.crisis = None
            log.error(kv("topics.unavailable", error=self.error, action="keywords only"))
            return
        log.info(kv("topics.ready", device=self.embedder.device, topics=len(self.index.names) if self.index else 0,
                    seconds=f"{time.monotonic() - started:.1f}"))  # fmt: skip

    def rebuild(self, config: Config) -> None:
        """The topic vectors for this config (once per load), and its guard model."""
        self._index_for(config)
        self._set_guard(config)

    def _index_for(self, config: Config) -> None:
        if self.embedder is None or not config.system.safety.topic_model:
            self.index = None
            return
        calibration = load_calibration()
        if calibration.model_sha256 and calibration.model_sha256 != self.model_sha256:
            log.warning(kv("topics.uncalibrated", expected=calibration.model_sha256,
                           found=self.model_sha256))  # fmt: skip
        self.index = TopicIndex.from_calibration(
            self.embedder.embed, config_topics(config), calibration
        )

    def status(self) -> dict[str, Any]:
        e = self.embedder
        return {
            "enabled": e is not None,
            "device": e.device if e is not None else None,
            "topics": len(self.index.names) if self.index else 0,
            "cache_hits": e.hits if e is not None else 0,
            "cache_misses": e.misses if e is not None else 0,
            "error": self.error,
            "guard": {**self.guard.status(), "error": None} if self.guard is not None
            else {"model": None, "error": self.guard_error},
        }  # fmt: skip


def _sha256_of(onnx: Path) -> str | None:
    import json

    manifest = onnx.with_suffix(".json")
    try:
        return str(json.loads(manifest.read_text("utf-8"))["sha256"])
    except (OSError, ValueError, KeyError):
        return None
