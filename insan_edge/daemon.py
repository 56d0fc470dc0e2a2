"""Daemon wiring: config, store, model and API; the one place for signals and shutdown.

SIGTERM/SIGINT stop gracefully (in-flight requests get ``SHUTDOWN_GRACE`` seconds), SIGHUP or a
change of the config file reloads it; a broken edit keeps the last good config and says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
from aiohttp import web

from insan_edge import __version__, sdnotify
from insan_edge.api import ApiBackend, build_app
from insan_edge.config import LoadedConfig, load_config
from insan_edge.engine import Engine
from insan_edge.errors import ConfigError, InsanEdgeError, ModelError
from insan_edge.logs import kv
from insan_edge.modelfiles import ModelFile, resolve_model
from insan_edge.recommender import Recommender
from insan_edge.store import Store

log = logging.getLogger("insan_edge.daemon")
SHUTDOWN_GRACE = 10.0
CONFIG_POLL_SECONDS = 2.0
_RESTART_ONLY = ("model", "paths")


class Daemon:
    def __init__(
        self, loaded: LoadedConfig, state_dir: Path | None = None, socket_path: Path | None = None
    ) -> None:
        self.loaded = loaded
        paths = loaded.config.system.paths
        self.state_dir = state_dir or paths.state_dir
        self.socket_path = socket_path or paths.socket
        self.started = time.monotonic()
        self.started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.config_loaded_at = self.started_at
        self.last_reload_error: list[str] | None = None
        self._config_stamp = self._stamp()
        self._stop = asyncio.Event()
        self.store: Store | None = None
        self.engine: Engine | None = None
        self.model_file: ModelFile | None = None
        self.recommender: Recommender | None = None

    # lifecycle ------------------------------------------------------------------------------

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload("SIGHUP")))
        keepalive = loop.create_task(self._keepalive())
        runner: web.AppRunner | None = None
        own_socket = False
        try:
            await self._start()
            if self._stop.is_set():
                return 0
            assert self.recommender is not None
            backend = ApiBackend(
                self.recommender,
                self.status,
                self.metrics,
                lambda: self.loaded.config.system.api.max_body_bytes,
            )
            runner = web.AppRunner(
                build_app(backend),
                handle_signals=False,
                access_log=None,
                shutdown_timeout=SHUTDOWN_GRACE,
            )
            await runner.setup()
            self._claim_socket()
            await web.UnixSite(runner, str(self.socket_path)).start()
            own_socket = True
            os.chmod(self.socket_path, 0o660)
            sdnotify.notify("READY=1\nSTATUS=serving")
            log.info(
                kv(
                    "daemon.ready",
                    socket=self.socket_path,
                    families=len(self.loaded.config.families),
                    seconds=f"{time.monotonic() - self.started:.1f}",
                )
            )
            watcher = loop.create_task(self._watch_config())
            await self._stop.wait()
            watcher.cancel()
            return 0
        finally:
            sdnotify.notify("STOPPING=1")
            log.info(kv("daemon.stopping"))
            keepalive.cancel()
            if self.engine is not None:
                self.engine.abort()  # an in-flight generation ends now, not when it is done
            if runner is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(runner.cleanup(), SHUTDOWN_GRACE + 2)
            if own_socket:  # never remove a socket another daemon is serving on
                with contextlib.suppress(FileNotFoundError):
                    self.socket_path.unlink()
            if self.engine is not None:
                self.engine.close()
            if self.store is not None:
                self.store.close()
            log.info(kv("daemon.stopped"))

    async def _start(self) -> None:
        config = self.loaded.config
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.state_dir / "insan-edge.db")
        self.store.sync_families(dict(config.families))
        sdnotify.notify("STATUS=preparing the model")
        self.model_file = await asyncio.to_thread(
            resolve_model, config.system.model.path, self.state_dir / "models"
        )
        self.engine = await asyncio.to_thread(Engine, self.model_file.path, config.system.model)
        self.recommender = Recommender(self.engine, self.store, lambda: self.loaded)
        self.recommender.load_forced_grammar()

    async def _keepalive(self) -> None:
        """Watchdog pings, plus start-timeout extensions while the model is prepared."""
        interval = sdnotify.watchdog_interval()
        while True:
            if self.recommender is None:
                sdnotify.notify("EXTEND_TIMEOUT_USEC=30000000")
            if interval is not None:
                sdnotify.notify("WATCHDOG=1")
            await asyncio.sleep(min(interval or 10.0, 10.0))

    def _claim_socket(self) -> None:
        path = self.socket_path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()  # left over from a process that died
            else:
                raise InsanEdgeError(f"another insan-edge is already listening on {path}")
            finally:
                probe.close()

    # config reload --------------------------------------------------------------------------

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.loaded.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    async def _watch_config(self) -> None:
        while True:
            await asyncio.sleep(CONFIG_POLL_SECONDS)
            stamp = self._stamp()
            if stamp is not None and stamp != self._config_stamp:
                self._config_stamp = stamp
                await self.reload("file changed")

    async def reload(self, why: str) -> bool:
        """Swap in the edited config if it is valid; otherwise keep the running one."""
        sdnotify.notify(
            f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
        )
        try:
            self._config_stamp = self._stamp()
            new = await asyncio.to_thread(load_config, self.loaded.path)
            grammar_file = new.config.system.model.grammar_file
            if grammar_file is not None and self.engine is not None:
                self.engine.grammar(grammar_file.read_text("utf-8"))
        except (ConfigError, ModelError, OSError) as exc:
            problems = (
                [str(p) for p in exc.problems] if isinstance(exc, ConfigError) else [str(exc)]
            )
            self.last_reload_error = problems
            for problem in problems:
                log.error(
                    kv(
                        "config.rejected",
                        reason=why,
                        problem=problem,
                        action="keeping the last good config",
                    )
                )
            return False
        finally:
            sdnotify.notify("READY=1")
        old = self.loaded
        for section in _RESTART_ONLY:
            if getattr(old.config.system, section) != getattr(new.config.system, section):
                log.warning(kv("config.restart_needed", section=f"system.{section}"))
        self.loaded = new
        self.config_loaded_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.last_reload_error = None
        logging.getLogger().setLevel(new.config.system.log_level.upper())
        if self.store is not None:
            self.store.sync_families(dict(new.config.families))
        if self.recommender is not None:
            self.recommender.reset()
            self.recommender.load_forced_grammar()
        log.info(
            kv("config.reloaded", reason=why, digest=new.digest, families=len(new.config.families))
        )
        return True

    # status ---------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        assert self.store is not None and self.recommender is not None and self.engine is not None
        config = self.loaded.config
        proc = psutil.Process()
        vm = psutil.virtual_memory()
        safety = self.store.safety_counts()
        checked = safety["items_served"] + safety["items_dropped"]
        counters = self.recommender.counters
        return {
            "version": __version__,
            "uptime_seconds": round(time.monotonic() - self.started, 1),
            "started_at": self.started_at,
            "config": {
                "path": str(self.loaded.path),
                "digest": self.loaded.digest,
                "preset": self.loaded.preset,
                "preset_reason": self.loaded.preset_reason,
                "loaded_at": self.config_loaded_at,
                "last_reload_error": self.last_reload_error,
            },
            "model": {
                "name": self.engine.name,
                "file": str(self.model_file.path if self.model_file else ""),
                "embedded": bool(self.model_file and self.model_file.embedded),
                "sha256": self.model_file.sha256 if self.model_file else None,
                "architecture": self.engine.architecture,
                "context_length": self.engine.n_ctx,
                "device": self.engine.device,
                "threads": self.engine.threads,
                "load_seconds": round(self.engine.load_seconds, 2),
            },
            "families": [
                {
                    "id": fid,
                    "display_name": fam.display_name,
                    "members": [
                        {"id": mid, "role": m.role.value, "age": m.age}
                        for mid, m in fam.members.items()
                    ],
                    "model": {"version": "base", "adapter": None},
                }
                for fid, fam in config.families.items()
            ],
            "safety": {
                **safety,
                "pass_rate": round(safety["items_served"] / checked, 4) if checked else None,
            },
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
            "store": {"path": str(self.store.path), "schema_version": self.store.schema_version},
        }

    def metrics(self) -> str:
        s = self.status()
        lines = [
            "# TYPE insan_edge_uptime_seconds gauge",
            f"insan_edge_uptime_seconds {s['uptime_seconds']}",
            "# TYPE insan_edge_recommendation_requests_total counter",
            f"insan_edge_recommendation_requests_total {s['requests']['recommendations']}",
            "# TYPE insan_edge_cache_hits_total counter",
            f"insan_edge_cache_hits_total {s['requests']['cache_hits']}",
            "# TYPE insan_edge_generated_tokens_total counter",
            f"insan_edge_generated_tokens_total {s['requests']['generated_tokens']}",
            "# TYPE insan_edge_generation_seconds_total counter",
            f"insan_edge_generation_seconds_total {s['requests']['generation_seconds']}",
            "# TYPE insan_edge_items_served_total counter",
            f"insan_edge_items_served_total {s['safety']['items_served']}",
            "# TYPE insan_edge_items_dropped_total counter",
        ]
        lines += [
            f'insan_edge_items_dropped_total{{rule="{rule}"}} {n}'
            for rule, n in sorted(s["safety"]["drops_by_rule"].items())
        ]
        lines += [
            "# TYPE insan_edge_resident_memory_bytes gauge",
            f"insan_edge_resident_memory_bytes {int(s['memory']['rss_mb'] * 2**20)}",
        ]
        return "\n".join(lines) + "\n"


def run(config_path: Path, state_dir: Path | None = None, socket_path: Path | None = None) -> int:
    """Run the daemon in the foreground until SIGTERM/SIGINT; the exit status."""
    from insan_edge import logs

    loaded = load_config(config_path)
    logs.setup(loaded.config.system.log_level)
    log.info(
        kv(
            "daemon.starting",
            version=__version__,
            config=config_path,
            preset=loaded.preset,
            preset_reason=loaded.preset_reason,
            pid=os.getpid(),
        )
    )
    daemon = Daemon(loaded, state_dir, socket_path)
    return asyncio.run(daemon.serve())
