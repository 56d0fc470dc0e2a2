"""What ``insan-edge status`` and ``GET /v1/status`` show: one dict from the daemon's parts."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import psutil

from insan_edge import __version__
from insan_edge.checker import check_counts
from insan_edge.crisis import open_alerts
from insan_edge.duties import inbox_lag, scrubbed_entities

if TYPE_CHECKING:
    from insan_edge.daemon import Daemon


def _serving(d: Daemon) -> dict[str, dict[str, Any]]:
    """The active adapter per family (a read, not a transaction: status is polled often)."""
    assert d.store is not None
    rows = d.store.read(
        "SELECT family_id, version, sha256 FROM model_versions WHERE status = 'active'"
    )
    # The same key as registry.ModelVersion.key: family, version and content.
    return {
        r["family_id"]: {
            "version": f"v{r['version']}",
            "adapter": f"{r['family_id']}/v{r['version']}/{(r['sha256'] or '')[:12]}",
        }
        for r in rows
    }


def _alerts(d: Daemon) -> dict[str, Any]:
    assert d.store is not None
    waiting = open_alerts(d.store)
    latest = waiting[0] if waiting else None
    keep = ("id", "family_id", "member_id", "signal", "created_at")
    return {"open": len(waiting), "latest": {k: latest[k] for k in keep} if latest else None}


def _devices(d: Daemon, training: dict[str, Any] | None) -> dict[str, Any]:
    """Which device each part uses and why (serving, topic model, trainer)."""
    assert d.engine is not None
    topics = d.topics.status()
    trainer = (training or {}).get("device")
    return {
        "serving": d.engine.placement.as_dict(),
        "topics": {
            "device": topics.get("device") if topics.get("enabled") else None,
            "reason": topics.get("error") or ("loaded" if topics.get("enabled") else "not loaded"),
        },
        "training": {
            "device": trainer,
            "reason": "reported by the last run" if trainer else "chosen when a run starts",
        },
    }


def daemon_status(d: Daemon) -> dict[str, Any]:
    assert d.store is not None and d.recommender is not None and d.engine is not None
    config = d.loaded.config
    proc = psutil.Process()
    vm = psutil.virtual_memory()
    safety = d.store.safety_counts()
    checked = safety["items_served"] + safety["items_dropped"]
    counters = d.recommender.counters
    serving = _serving(d)
    training = d.personal.status() if d.personal else None
    return {
        "version": __version__,
        "uptime_seconds": round(time.monotonic() - d.started, 1),
        "started_at": d.started_at,
        "config": {
            "path": str(d.loaded.path),
            "digest": d.loaded.digest,
            "preset": d.loaded.preset,
            "preset_reason": d.loaded.preset_reason,
            "loaded_at": d.config_loaded_at,
            "last_reload_error": d.last_reload_error,
        },
        "model": {
            "name": d.engine.name,
            "file": str(d.model_file.path if d.model_file else ""),
            "embedded": bool(d.model_file and d.model_file.embedded),
            "sha256": d.model_file.sha256 if d.model_file else None,
            "architecture": d.engine.architecture,
            "context_length": d.engine.n_ctx,
            "device": d.engine.device,
            "threads": d.engine.threads,
            "load_seconds": round(d.engine.load_seconds, 2),
        },
        "families": [
            {
                "id": fid,
                "display_name": fam.display_name,
                "members": [
                    {"id": mid, "role": m.role.value, "age": m.age}
                    for mid, m in fam.members.items()
                ],
                "model": serving.get(fid, {"version": "base", "adapter": None}),
            }
            for fid, fam in config.families.items()
        ],
        "safety": {
            **safety,
            "pass_rate": round(safety["items_served"] / checked, 4) if checked else None,
        },
        "checks": check_counts(d.store),
        "requests": {
            "recommendations": counters.requests,
            "cache_hits": counters.cache_hits,
            "generations": counters.generations,
            "generated_tokens": counters.generated_tokens,
            "generation_seconds": round(counters.generation_seconds, 2),
            "unparseable_generations": counters.unparseable,
            "rejected_busy": counters.busy,
        },
        "memory": {
            "rss_mb": round(proc.memory_info().rss / 2**20, 1),
            "available_mb": round(vm.available / 2**20),
            "total_mb": round(vm.total / 2**20),
        },
        "training": training,
        "devices": _devices(d, training),
        "store": {"path": str(d.store.path), "schema_version": d.store.schema_version},
        "lan": d.lan.status(),
        "dashboard": d.local_site.status(d.lan.status(), config.system.dashboard.enabled),
        "topics": d.topics.status(),
        "alerts": _alerts(d),
        "ingest": {
            **d.store.ingest_counts(),
            "scrubbed_entities": scrubbed_entities(d.store),
            "inbox": str(d.inbox),
            "files": inbox_lag(d.store, d.inbox),
        },
    }
