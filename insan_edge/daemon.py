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
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aiohttp import web
from threadpoolctl import threadpool_limits

from insan_edge import __version__, catalog, sdnotify
from insan_edge.api import ApiBackend, build_app
from insan_edge.config import LoadedConfig, load_config
from insan_edge.crisis import CrisisWatch, acknowledge, open_alerts
from insan_edge.dashboard.site import LocalSite
from insan_edge.dashboard.web import DashboardBackend, install
from insan_edge.duties import box_key, expire, export, forget
from insan_edge.engine import Engine
from insan_edge.errors import (
    ConfigError,
    InsanEdgeError,
    ModelError,
)
from insan_edge.ingest import InboxTailer
from insan_edge.intake import Intake
from insan_edge.lan import Lan
from insan_edge.logs import kv
from insan_edge.meaning import TopicService
from insan_edge.metrics import RequestMetrics, render
from insan_edge.modelfiles import ModelFile, resolve_model
from insan_edge.personalization import Personalization
from insan_edge.privacy import Scrubber
from insan_edge.recommender import Recommender
from insan_edge.status import daemon_status
from insan_edge.store import Store
from insan_edge.tokens import Tokens

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
        self.personal: Personalization | None = None
        self.scrubber: Scrubber | None = None
        self.intake: Intake | None = None
        self.tailer: InboxTailer | None = None
        self._ingest_stop = threading.Event()
        self._ingest_thread: threading.Thread | None = None
        self.tokens: Tokens | None = None
        self.request_metrics = RequestMetrics()
        self.lan = Lan(lambda: self.loaded.config.system.lan, self.state_dir)
        self.local_site = LocalSite()
        self.topics = TopicService(self.state_dir / "models")

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
            assert self.recommender is not None and self.personal is not None
            assert self.tokens is not None and self.store is not None
            store, store_tokens = self.store, self.tokens
            backend = ApiBackend(
                self.recommender,
                self.status,
                lambda: self.loaded.config.system.api.max_body_bytes,
                self._submit_events,
                self._forget,
                self._export,
                store.quarantine_rows,
                self.personal,
                self.tokens,
                lambda app, scopes: store_tokens.add(app, scopes, self.loaded.config),
                self.request_metrics,
                self._metrics_page,
                lambda: open_alerts(store),
                lambda alert_id: acknowledge(store, alert_id),
            )
            if self.loaded.config.system.dashboard.enabled:
                pages = DashboardBackend(store, lambda: self.loaded, self.status, self.state_dir,
                    store_tokens, self.personal, self._forget, self._export,
                    lambda alert_id: acknowledge(store, alert_id))  # fmt: skip
                backend.pages = lambda app: install(app, pages)
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
            if self.loaded.config.system.lan.enabled:
                await self.lan.start(backend, SHUTDOWN_GRACE)
            await self.local_site.start(backend, lambda: self.loaded.config.system.lan,
                                        self.loaded.config.system.dashboard, SHUTDOWN_GRACE)  # fmt: skip
            sdnotify.notify("READY=1\nSTATUS=serving")
            log.info(
                kv(
                    "daemon.ready",
                    socket=self.socket_path,
                    families=len(self.loaded.config.families),
                    seconds=f"{time.monotonic() - self.started:.1f}",
                )
            )
            self.personal.start()
            watcher = loop.create_task(self._watch_config())
            retention = loop.create_task(self._retention())
            await self._stop.wait()
            watcher.cancel()
            retention.cancel()
            return 0
        finally:
            sdnotify.notify("STOPPING=1")
            log.info(kv("daemon.stopping"))
            keepalive.cancel()
            if self.engine is not None:
                self.engine.abort()  # an in-flight generation ends now, not when it is done
            self._stop_ingest()
            await self.lan.close(SHUTDOWN_GRACE)  # the mDNS record is withdrawn first
            await self.local_site.close(SHUTDOWN_GRACE)
            if self.personal is not None:  # the trainer saves a checkpoint and exits
                await asyncio.to_thread(self.personal.stop, SHUTDOWN_GRACE)
            if runner is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(runner.cleanup(), SHUTDOWN_GRACE + 2)
            if own_socket:  # never remove a socket another daemon is serving on
                with contextlib.suppress(FileNotFoundError):
                    self.socket_path.unlink()
            if self.engine is not None:
                self.engine.close()
            if self.topics.guard is not None:
                self.topics.guard.close()
            if self.store is not None:
                self.store.close()
            log.info(kv("daemon.stopped"))

    async def _start(self) -> None:
        config = self.loaded.config
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.state_dir / "insan-edge.db")
        self.store.sync_families(dict(config.families))
        catalog.sync(self.store, dict(config.families))
        self.tokens = Tokens(self.store)
        sdnotify.notify("STATUS=preparing the model")
        self.model_file = await asyncio.to_thread(
            resolve_model, config.system.model.path, self.state_dir / "models"
        )
        self.engine = await asyncio.to_thread(Engine, self.model_file.path, config.system.model)
        self.personal = Personalization(
            self.store, self.engine, lambda: self.loaded, self.model_file.path, self.state_dir
        )
        sdnotify.notify("STATUS=preparing the topic model")
        await asyncio.to_thread(self.topics.start, config)
        self.recommender = Recommender(
            self.engine, self.store, lambda: self.loaded, self.personal.adapters,
            lambda: self.topics.reader,
        )  # fmt: skip
        self.recommender.load_forced_grammar()
        self.scrubber = await asyncio.to_thread(
            Scrubber, dict(config.families), config.system.privacy.spacy_model
        )
        watch = CrisisWatch(self.store, lambda: self.loaded.config, lambda: self.topics.crisis)
        self.intake = Intake(
            self.store, lambda: self.loaded.config, self._current_scrubber,
            box_key(self.state_dir), watch.scan,
        )  # fmt: skip
        self._start_ingest()

    def _current_scrubber(self) -> Scrubber:
        assert self.scrubber is not None
        return self.scrubber

    # ingest -----------------------------------------------------------------------------------

    @property
    def inbox(self) -> Path:
        return self.loaded.config.system.paths.inbox or self.state_dir / "inbox"

    def _start_ingest(self) -> None:
        assert self.store is not None and self.intake is not None
        self.inbox.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(self.inbox, 0o2770)  # household apps in the group drop files here
        self.tailer = InboxTailer(
            self.store,
            self.inbox,
            lambda: self.loaded.config,
            self.intake.scrub_for_inbox,
            self.loaded.config.system.privacy.max_event_bytes,
        )
        self._ingest_thread = threading.Thread(target=self._ingest_loop, name="ingest", daemon=True)
        self._ingest_thread.start()

    def _ingest_loop(self) -> None:
        assert self.tailer is not None
        while not self._ingest_stop.is_set():
            try:
                self.tailer.poll()
            except Exception:  # one bad poll must not end ingest; the next one retries
                log.exception(kv("ingest.poll_failed"))
            self.tailer.wait(0.5)

    def _stop_ingest(self) -> None:
        self._ingest_stop.set()
        if self.tailer is not None:
            self.tailer.request_stop()
        if self._ingest_thread is not None:
            self._ingest_thread.join(SHUTDOWN_GRACE)
        if self.tailer is not None:
            self.tailer.close()

    async def _retention(self) -> None:
        while True:
            if self.store is not None:
                days = self.loaded.config.system.privacy.retention_days
                deleted = await asyncio.to_thread(expire, self.store, days)
                if deleted:
                    log.info(kv("retention.expired", interactions=deleted, older_than_days=days))
            await asyncio.sleep(24 * 3600)

    async def _submit_events(self, events: list[Any]) -> dict[str, Any]:
        assert self.intake is not None
        return await asyncio.to_thread(self.intake.submit, events)

    async def _forget(self, family_id: str, member_id: str | None) -> dict[str, Any]:
        assert self.store is not None
        self.loaded.config.family(family_id, [member_id] if member_id else [])
        result = await asyncio.to_thread(forget, self.store, family_id, member_id)
        if self.personal is not None and result["adapters_marked_for_retraining"]:
            await asyncio.to_thread(self.personal.erased, family_id)
        log.info(kv("privacy.erased", family=family_id, member=member_id or "*",
                    interactions=result["interactions_deleted"]))  # fmt: skip
        return result

    async def _export(self, family_id: str) -> dict[str, Any]:
        assert self.store is not None
        self.loaded.config.family(family_id)
        return await asyncio.to_thread(export, self.store, family_id)

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
            scrubber = await asyncio.to_thread(
                Scrubber, dict(new.config.families), new.config.system.privacy.spacy_model
            )
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
        if self.lan.needs_restart(new.config.system.lan):
            log.warning(kv("config.restart_needed", section="system.lan"))
        self.loaded = new
        self.scrubber = scrubber  # the deny-list follows the config's names
        self.config_loaded_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.last_reload_error = None
        logging.getLogger().setLevel(new.config.system.log_level.upper())
        if self.store is not None:
            self.store.sync_families(dict(new.config.families))
            catalog.sync(self.store, dict(new.config.families))
        await asyncio.to_thread(self.topics.rebuild, new.config)
        if self.recommender is not None:
            self.recommender.reset()
            self.recommender.load_forced_grammar()
        if self.personal is not None:
            self.personal.config_changed(new)
        log.info(
            kv("config.reloaded", reason=why, digest=new.digest, families=len(new.config.families))
        )
        return True

    # status ---------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return daemon_status(self)

    def _metrics_page(self) -> str:
        assert self.store is not None and self.personal is not None
        rows = self.store.read("SELECT status, COUNT(*) AS n FROM training_runs GROUP BY status")
        runs = {r["status"]: r["n"] for r in rows}
        registry = self.personal.registry
        versions = {}
        for family_id in self.loaded.config.families:
            active = registry.active(family_id)
            versions[family_id] = active.version if active else 0
        return render(self.status(), self.request_metrics, runs, versions)


def run(config_path: Path, state_dir: Path | None = None, socket_path: Path | None = None) -> int:
    """Run the daemon in the foreground until SIGTERM/SIGINT; the exit status."""
    from insan_edge import logs

    loaded = load_config(config_path)
    logs.setup(loaded.config.system.log_level)
    # numpy's BLAS only multiplies small matrices here (topic scores), but its idle threads spin
    # on the cores onnxruntime and llama.cpp compute on: one thread halves a check's latency.
    threadpool_limits(limits=1, user_api="blas")
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
