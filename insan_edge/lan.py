"""The daemon's LAN side: the token-checked TCP gateway (optionally TLS) and its mDNS record.

Started after the Unix socket when ``system.lan.enabled``; stopped first at shutdown, so the
record is withdrawn before the gateway closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from insan_edge.api import ApiBackend, build_app
from insan_edge.config.lan import LanSettings
from insan_edge.discovery import Advertiser, txt_properties
from insan_edge.duties import box_id
from insan_edge.errors import InsanEdgeError
from insan_edge.gateway import gateway_middleware
from insan_edge.logs import kv
from insan_edge.tls import fingerprint, make_certificate, server_context

log = logging.getLogger("insan_edge.lan")


def instance_name(lan: LanSettings) -> str:
    return lan.instance_name or f"insan-edge on {socket.gethostname()}"[:63]


def ensure_certificate(lan: LanSettings, state_dir: Path, force: bool = False) -> tuple[Path, str]:
    """The certificate file and its fingerprint, made first if there is none (or ``force``)."""
    cert, key = lan.files(state_dir)
    if force or not cert.exists() or not key.exists():
        made = make_certificate(cert, key, instance_name(lan))
        log.info(kv("lan.certificate_made", file=cert, sha256=made))
        return cert, made
    return cert, fingerprint(cert)


class Lan:
    def __init__(self, settings: Callable[[], LanSettings], state_dir: Path) -> None:
        self.settings = settings
        self.state_dir = state_dir
        self.runner: web.AppRunner | None = None
        self.advertiser: Advertiser | None = None
        self.port: int | None = None
        self.fingerprint: str | None = None
        self.error: str | None = None
        self.started_with: LanSettings | None = None
        self._reannounce: asyncio.Task[None] | None = None

    async def start(self, backend: ApiBackend, shutdown_timeout: float) -> None:
        """Open the gateway; on failure (port taken, bad certificate) log and keep the box
        serving on its socket: the error shows in status until a restart fixes it."""
        lan = self.settings()
        self.started_with = lan
        try:
            await self._start(lan, backend, shutdown_timeout)
        except (OSError, InsanEdgeError) as exc:
            detail = str(getattr(exc, "message", None) or exc)
            self.error = f"the LAN gateway cannot start on {lan.host}:{lan.port}: {detail}"
            log.error(kv("lan.failed", host=lan.host, port=lan.port, error=self.error))
            await self.close(shutdown_timeout)
            self.port = None

    async def _start(self, lan: LanSettings, backend: ApiBackend, shutdown_timeout: float) -> None:
        ssl_context = None
        if lan.tls:
            cert, self.fingerprint = await asyncio.to_thread(
                ensure_certificate, lan, self.state_dir
            )
            _, key = lan.files(self.state_dir)
            ssl_context = server_context(cert, key)
        gate = gateway_middleware(backend.tokens, self.settings, backend.request_metrics)
        self.runner = web.AppRunner(
            build_app(backend, via="lan", gate=gate),
            handle_signals=False,
            access_log=None,
            shutdown_timeout=shutdown_timeout,
        )
        await self.runner.setup()
        await web.TCPSite(self.runner, lan.host, lan.port, ssl_context=ssl_context).start()
        self.port = int(self.runner.addresses[0][1])
        log.info(kv("lan.listening", host=lan.host, port=self.port, tls=lan.tls))
        if lan.advertise:
            props = txt_properties(box_id(self.state_dir), lan.tls, self.fingerprint)
            addresses = (lambda: list(lan.interfaces or [])) if lan.interfaces else None
            self.advertiser = Advertiser(
                instance_name(lan), self.port, props, addresses=addresses, interfaces=lan.interfaces
            )
            await self.advertiser.start()
            self._reannounce = asyncio.get_running_loop().create_task(self._watch(lan))

    async def _watch(self, lan: LanSettings) -> None:
        while True:
            await asyncio.sleep(lan.reannounce_seconds)
            if self.advertiser is not None:
                try:
                    await self.advertiser.refresh()
                except Exception:  # the next check tries again; the gateway keeps serving
                    log.exception(kv("lan.reannounce_failed"))

    async def close(self, timeout: float) -> None:
        if self._reannounce is not None:
            self._reannounce.cancel()
        if self.advertiser is not None:
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await asyncio.wait_for(self.advertiser.close(), 5)
            self.advertiser = None
        if self.runner is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.runner.cleanup(), timeout)
            self.runner = None

    def needs_restart(self, new: LanSettings) -> bool:
        """Whether ``new`` changes what only a restart applies (the limits apply at once)."""
        live = {"requests_per_minute", "burst", "auth_failures_per_minute"}
        old = self.started_with
        if old is None:
            return new.enabled
        return old.model_dump(exclude=live) != new.model_dump(exclude=live)

    def status(self) -> dict[str, Any]:
        lan = self.started_with
        return {
            "enabled": lan is not None,
            "port": self.port,
            "tls": bool(lan and lan.tls),
            "fingerprint": self.fingerprint,
            "advertised_as": self.advertiser.name if self.advertiser else None,
            "error": self.error,
        }
