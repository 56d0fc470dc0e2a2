"""The localhost-only TCP site (``system.dashboard.localhost_port``): the same gated app as the
LAN gateway (dashboard and token-checked API), bound to 127.0.0.1 for a browser on the box."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from insan_edge.api import ApiBackend, build_app
from insan_edge.config.dashboard import DashboardSettings
from insan_edge.config.lan import LanSettings
from insan_edge.gateway import gateway_middleware
from insan_edge.logs import kv

log = logging.getLogger("insan_edge.dashboard")
HOST = "127.0.0.1"


class LocalSite:
    def __init__(self) -> None:
        self.runner: web.AppRunner | None = None
        self.port: int | None = None
        self.error: str | None = None

    async def start(
        self,
        backend: ApiBackend,
        lan: Callable[[], LanSettings],
        settings: DashboardSettings,
        shutdown_timeout: float,
    ) -> None:
        if not settings.enabled or settings.localhost_port is None:
            return
        gate = gateway_middleware(backend.tokens, lan, backend.request_metrics)
        self.runner = web.AppRunner(build_app(backend, via="local", gate=gate),
                                    handle_signals=False, access_log=None,
                                    shutdown_timeout=shutdown_timeout)  # fmt: skip
        await self.runner.setup()
        try:
            await web.TCPSite(self.runner, HOST, settings.localhost_port).start()
        except OSError as exc:
            self.error = f"the dashboard cannot listen on {HOST}:{settings.localhost_port}: {exc}"
            log.error(kv("dashboard.failed", port=settings.localhost_port, error=self.error))
            await self.close(shutdown_timeout)
            return
        self.port = int(self.runner.addresses[0][1])
        log.info(kv("dashboard.listening", url=f"http://{HOST}:{self.port}/"))

    async def close(self, timeout: float) -> None:
        if self.runner is not None:
            with contextlib.suppress(Exception):
                await self.runner.cleanup()
            self.runner = None

    def status(self, lan: dict[str, Any], enabled: bool) -> dict[str, Any]:
        return {"enabled": enabled, "localhost_port": self.port, "error": self.error,
                "on_lan": bool(enabled and lan.get("port"))}  # fmt: skip
