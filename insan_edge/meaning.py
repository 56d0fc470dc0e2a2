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

    def start(self, config: Config) -> None:
        """Blocking (the first start exports the model): run it in a thread."""
        settings = config.system.safety
        if not settings.topic_model:
            return
        started = time.monotonic()
        try:
            from insan_edge.topic_model import Embedder, ensure_model

            onnx = ensure_model(self.models_dir)
            self.embedder = Embedder(onnx.parent, device=settings.topic_device)
            self.model_sha256 = _sha256_of(onnx)
            self.rebuild(config)
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
        """The topic vectors for this config (once per load)."""
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
        }


def _sha256_of(onnx: Path) -> str | None:
    import json

    manifest = onnx.with_suffix(".json")
    try:
        return str(json.loads(manifest.read_text("utf-8"))["sha256"])
    except (OSError, ValueError, KeyError):
        return None
