"""mDNS discovery of boxes on the LAN: advertise this one, browse for others.

The only module that imports zeroconf (IPv4 only). The service is ``_insan-edge._tcp.local.``;
its TXT records carry the API version, the box id and, with TLS, the certificate's fingerprint.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import ifaddr
from zeroconf import (
    DNSQuestionType,
    InterfaceChoice,
    IPVersion,
    ServiceBrowser,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from insan_edge.logs import kv

SERVICE_TYPE = "_insan-edge._tcp.local."
API_VERSION = "v1"
_RESOLVE_MS = 1500
# Ask for multicast answers: a unicast answer goes to one socket on port 5353, not
# necessarily ours when another mDNS stack (Avahi, another advertiser) shares the port.
_QM = DNSQuestionType.QM

log = logging.getLogger("insan_edge.discovery")


@dataclass(frozen=True)
class Box:
    """One box that answered on the LAN."""

    name: str
    host: str
    addresses: list[str]
    port: int
    api: str
    box_id: str
    tls: bool
    fingerprint: str | None

    @property
    def url(self) -> str:
        """Base URL of the gateway, on the first address (the host name if there is none)."""
        where = self.addresses[0] if self.addresses else self.host.rstrip(".")
        return f"{'https' if self.tls else 'http'}://{where}:{self.port}"


def txt_properties(box_id: str, tls: bool, fingerprint: str | None) -> dict[str, str]:
    """TXT records for the advertisement; ``fp`` (sha256 of the certificate) only with TLS."""
    props = {"api": API_VERSION, "box": box_id, "tls": "1" if tls else "0"}
    if tls:
        if not fingerprint:
            raise ValueError("TLS is on but there is no certificate fingerprint to announce")
        props["fp"] = fingerprint
    return props


def local_ipv4_addresses() -> list[str]:
    """Every non-loopback IPv4 address of this machine, or 127.0.0.1 when there is none."""
    ips = [ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips]
    found = [ip for ip in ips if isinstance(ip, str) and not ipaddress.IPv4Address(ip).is_loopback]
    return list(dict.fromkeys(found)) or ["127.0.0.1"]


def _host_label(text: str) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:52].strip("-")
    return f"insan-edge-{label}" if label else "insan-edge"


def _interfaces(interfaces: list[str] | None) -> InterfaceChoice | list[str]:
    return InterfaceChoice.All if interfaces is None else list(interfaces)


class Advertiser:
    """Announces this box over mDNS until closed; ``refresh`` follows address changes."""

    def __init__(
        self,
        name: str,
        port: int,
        properties: dict[str, str],
        addresses: Callable[[], list[str]] | None = None,
        interfaces: list[str] | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self._properties = dict(properties)
        self._read = addresses or local_ipv4_addresses
        self._interfaces = interfaces
        # Not the machine's host name (Avahi may own that): one per box, so two boxes
        # with the same instance name never fight over their address records.
        self._server = _host_label(properties.get("box") or name) + ".local."
        self._aiozc: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None
        self.addresses: list[str] = []

    def _addresses(self) -> list[str]:
        return list(dict.fromkeys(self._read()))

    def _service(self, full_name: str, addresses: list[str]) -> AsyncServiceInfo:
        return AsyncServiceInfo(
            SERVICE_TYPE,
            full_name,
            port=self.port,
            properties=self._properties,
            server=self._server,
            parsed_addresses=addresses,
        )

    async def start(self) -> None:
        """Probe for the name (renaming on a conflict), then announce the service."""
        if self._aiozc is not None:
            return
        addresses = self._addresses()
        aiozc = AsyncZeroconf(interfaces=_interfaces(self._interfaces), ip_version=IPVersion.V4Only)
        info = self._service(f"{self.name}.{SERVICE_TYPE}", addresses)
        try:
            # Probes get unicast answers, which reach one socket of those sharing port 5353
            # (maybe not ours); a multicast browse fills our cache, where the rename looks.
            browser = AsyncServiceBrowser(
                aiozc.zeroconf, SERVICE_TYPE, handlers=[_Seen().on_change], question_type=_QM
            )
            try:
                announced = await aiozc.async_register_service(info, allow_name_change=True)
            finally:
                await browser.async_cancel()
            await announced
        except BaseException:
            await aiozc.async_close()
            raise
        self._aiozc, self._info, self.addresses = aiozc, info, addresses
        requested, self.name = self.name, info.name[: -len(SERVICE_TYPE) - 1]
        extra = {"renamed_from": requested} if self.name != requested else {}
        where = ",".join(addresses)
        log.info(kv("lan.advertised", name=self.name, addresses=where, port=self.port, **extra))

    async def refresh(self) -> bool:
        """Re-read the addresses; re-announce and return True when they changed."""
        if self._aiozc is None or self._info is None:
            return False
        addresses = self._addresses()
        if sorted(addresses) == sorted(self.addresses):
            return False
        name = self._info.name
        gone = [a for a in self.addresses if a not in addresses]
        info = self._service(name, addresses)
        if gone:
            # Goodbyes (TTL 0) for the addresses that went away, beside the new records:
            # else a browser keeps an address it cached less than 1 s ago (RFC 6762 10.2).
            out = self._aiozc.zeroconf.generate_service_broadcast(info, None)
            for record in self._service(name, gone).dns_addresses(override_ttl=0):
                out.add_answer_at_time(record, 0)
            self._aiozc.zeroconf.async_send(out)
        await (await self._aiozc.async_update_service(info))
        was, now = ",".join(self.addresses), ",".join(addresses)
        log.info(kv("lan.readvertised", name=self.name, addresses=now, was=was))
        self._info, self.addresses = info, addresses
        return True

    async def close(self) -> None:
        """Withdraw the service (goodbye packets) and close zeroconf; safe to repeat."""
        aiozc, info = self._aiozc, self._info
        self._aiozc = self._info = None
        if aiozc is None:
            return
        try:
            if info is not None:
                await (await aiozc.async_unregister_service(info))
        finally:
            await aiozc.async_close()
        log.info(kv("lan.withdrawn", name=self.name))


def _box(info: ServiceInfo) -> Box:
    props = {k: v or "" for k, v in info.decoded_properties.items()}
    tls = props.get("tls") == "1"
    return Box(
        name=info.name[: -len(SERVICE_TYPE) - 1],
        host=info.server or "",
        addresses=info.parsed_addresses(IPVersion.V4Only),
        port=info.port or 0,
        api=props.get("api", ""),
        box_id=props.get("box", ""),
        tls=tls,
        fingerprint=(props.get("fp") or None) if tls else None,
    )


class _Seen:
    """Service names currently present, fed by a browser's state changes."""

    def __init__(self) -> None:
        self.names: dict[str, None] = {}  # read once the browser is cancelled

    def on_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is ServiceStateChange.Removed:
            self.names.pop(name, None)
        else:
            self.names[name] = None


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def discover(timeout: float = 3.0, interfaces: list[str] | None = None) -> list[Box]:
    """Browse for ``timeout`` seconds; the boxes that answered, sorted by name.

    Blocking, with zeroconf's own thread: from a coroutine use ``discover_async``.
    """
    if _loop_running():  # zeroconf would adopt that loop, and then we would block it
        raise RuntimeError("discover() blocks its event loop: await discover_async() instead")
    zc = Zeroconf(interfaces=_interfaces(interfaces), ip_version=IPVersion.V4Only)
    try:
        seen = _Seen()
        browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[seen.on_change], question_type=_QM)
        try:
            time.sleep(timeout)
        finally:
            browser.cancel()
        boxes = []
        for name in list(seen.names):
            info = zc.get_service_info(SERVICE_TYPE, name, _RESOLVE_MS, _QM)
            if info is not None:
                boxes.append(_box(info))
    finally:
        zc.close()
    return sorted(boxes, key=lambda b: b.name)


async def discover_async(timeout: float = 3.0, interfaces: list[str] | None = None) -> list[Box]:
    """``discover`` for a running event loop."""
    aiozc = AsyncZeroconf(interfaces=_interfaces(interfaces), ip_version=IPVersion.V4Only)
    try:
        seen = _Seen()
        browser = AsyncServiceBrowser(
            aiozc.zeroconf, SERVICE_TYPE, handlers=[seen.on_change], question_type=_QM
        )
        try:
            await asyncio.sleep(timeout)
        finally:
            await browser.async_cancel()
        infos = [AsyncServiceInfo(SERVICE_TYPE, name) for name in list(seen.names)]
        found = await asyncio.gather(
            *(i.async_request(aiozc.zeroconf, _RESOLVE_MS, _QM) for i in infos)
        )
        boxes = [_box(info) for info, ok in zip(infos, found, strict=True) if ok]
    finally:
        await aiozc.async_close()
    return sorted(boxes, key=lambda b: b.name)
