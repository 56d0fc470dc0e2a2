"""mDNS discovery against real zeroconf on the loopback interface.

Every test uses its own instance name, since other advertisers (other tests, a daemon) may
share the loopback. Waits poll with a deadline. Just after a service is announced, responders
hold back their answers for a second (RFC 6762 section 14), so a fresh browse needs ~1.2 s:
the discover calls below listen for 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable

import pytest
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from insan_edge import cli_lan, discovery
from insan_edge.discovery import SERVICE_TYPE, Advertiser, Box, discover, discover_async

LOOP = ["127.0.0.1"]
FP = "ab" * 32
pytestmark = pytest.mark.timeout(60)


def _name() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


def _advertiser(name: str, addresses: list[str], port: int = 8765, tls: bool = False) -> Advertiser:
    props = discovery.txt_properties(f"box-{uuid.uuid4().hex[:8]}", tls, FP if tls else None)
    return Advertiser(name, port, props, addresses=lambda: list(addresses), interfaces=LOOP)


async def _until(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


class _Browser:
    """A long-lived browser on the loopback: its state changes and its cache."""

    def __init__(self) -> None:
        self.aiozc = AsyncZeroconf(interfaces=LOOP, ip_version=IPVersion.V4Only)
        self.events: list[tuple[str, ServiceStateChange]] = []
        self.browser = AsyncServiceBrowser(self.aiozc.zeroconf, SERVICE_TYPE, handlers=[self._on])

    def _on(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        self.events.append((name, state_change))

    def saw(self, name: str, change: ServiceStateChange) -> bool:
        return (f"{name}.{SERVICE_TYPE}", change) in self.events

    def addresses(self, name: str) -> list[str]:
        info = AsyncServiceInfo(SERVICE_TYPE, f"{name}.{SERVICE_TYPE}")
        info.load_from_cache(self.aiozc.zeroconf)
        return sorted(info.parsed_addresses(IPVersion.V4Only))

    async def close(self) -> None:
        await self.browser.async_cancel()
        await self.aiozc.async_close()


def _mine(boxes: list[Box], *names: str) -> list[Box]:
    return [b for b in boxes if b.name in names]


def test_txt_properties_and_url() -> None:
    assert discovery.txt_properties("b1", False, None) == {"api": "v1", "box": "b1", "tls": "0"}
    assert discovery.txt_properties("b1", True, FP) == {
        "api": "v1",
        "box": "b1",
        "tls": "1",
        "fp": FP,
    }
    assert "fp" not in discovery.txt_properties("b1", False, FP)
    with pytest.raises(ValueError, match="fingerprint"):
        discovery.txt_properties("b1", True, None)
    box = Box("n", "h.local.", ["10.0.0.5", "10.0.0.6"], 8765, "v1", "b1", True, FP)
    assert box.url == "https://10.0.0.5:8765"
    assert Box("n", "h.local.", [], 80, "v1", "b1", False, None).url == "http://h.local:80"
    mine = discovery.local_ipv4_addresses()
    assert mine == ["127.0.0.1"] or not any(a.startswith("127.") for a in mine)


def test_discover_refuses_to_block_a_running_event_loop() -> None:
    async def scenario() -> None:
        with pytest.raises(RuntimeError, match="discover_async"):
            discover(0.1, LOOP)

    asyncio.run(scenario())


def test_advertised_box_is_discovered_with_its_txt_records(
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = _name()
    caplog.set_level(logging.INFO, "insan_edge.discovery")

    async def scenario() -> list[Box]:
        adv = _advertiser(name, ["127.0.0.1"], port=18765, tls=True)
        await adv.start()
        try:
            assert adv.name == name
            return await asyncio.to_thread(discover, 2.0, LOOP)
        finally:
            await adv.close()

    [box] = _mine(asyncio.run(scenario()), name)
    assert box.addresses == ["127.0.0.1"]
    assert (box.port, box.api, box.tls, box.fingerprint) == (18765, "v1", True, FP)
    assert box.box_id.startswith("box-")
    assert box.host == f"insan-edge-{box.box_id}.local."
    assert box.url == "https://127.0.0.1:18765"
    assert f"lan.advertised name={name} addresses=127.0.0.1 port=18765" in caplog.text
    assert f"lan.withdrawn name={name}" in caplog.text


def test_refresh_reannounces_changed_addresses() -> None:
    name = _name()
    addresses = ["127.0.0.1"]

    async def scenario() -> list[Box]:
        browser = _Browser()
        adv = Advertiser(
            name, 8765, discovery.txt_properties("b", False, None), lambda: addresses, LOOP
        )
        try:
            await adv.start()
            assert await _until(lambda: browser.addresses(name) == ["127.0.0.1"])
            assert not await adv.refresh()  # nothing changed

            addresses[:] = ["127.0.0.2"]  # moved: the old address must go at once
            assert await adv.refresh()
            assert await _until(lambda: browser.addresses(name) == ["127.0.0.2"])
            assert adv.addresses == ["127.0.0.2"]

            addresses[:] = ["127.0.0.3", "127.0.0.2"]  # gained one
            assert await adv.refresh()
            assert await _until(lambda: browser.addresses(name) == ["127.0.0.2", "127.0.0.3"])
            addresses.reverse()  # same set, other order: no re-announce
            assert not await adv.refresh()
            return await discover_async(2.0, LOOP)
        finally:
            await adv.close()
            await browser.close()

    [box] = _mine(asyncio.run(scenario()), name)
    assert sorted(box.addresses) == ["127.0.0.2", "127.0.0.3"]


def test_close_withdraws_the_service_and_is_idempotent() -> None:
    name = _name()

    async def scenario() -> list[Box]:
        browser = _Browser()
        adv = _advertiser(name, ["127.0.0.1"])
        try:
            await Advertiser(name, 1, {}, lambda: ["127.0.0.1"], LOOP).close()  # never started
            await adv.start()
            assert await _until(lambda: browser.saw(name, ServiceStateChange.Added))
            await adv.close()
            assert await _until(lambda: browser.saw(name, ServiceStateChange.Removed))
            await adv.close()
            assert not await adv.refresh()
            return await discover_async(2.0, LOOP)
        finally:
            await adv.close()
            await browser.close()

    assert _mine(asyncio.run(scenario()), name) == []


def test_two_advertisers_with_one_name_both_register(caplog: pytest.LogCaptureFixture) -> None:
    name = _name()
    caplog.set_level(logging.INFO, "insan_edge.discovery")

    async def scenario() -> list[Box]:
        first = _advertiser(name, ["127.0.0.1"], port=18001)
        second = _advertiser(name, ["127.0.0.1"], port=18002)
        try:
            await first.start()
            # The first one answers the second's probes only a second after its announcement.
            await asyncio.sleep(1.2)
            await second.start()
            assert (first.name, second.name) == (name, f"{name}-2")
            return await discover_async(2.0, LOOP)
        finally:
            await first.close()
            await second.close()

    boxes = _mine(asyncio.run(scenario()), name, f"{name}-2")
    assert [(b.name, b.port) for b in boxes] == [(name, 18001), (f"{name}-2", 18002)]
    assert f"name={name}-2 addresses=127.0.0.1 port=18002 renamed_from={name}" in caplog.text


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli_lan.add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(list(argv))


def test_cli_discover_prints_a_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    name = _name()

    async def scenario() -> tuple[int | None, int | None]:
        adv = _advertiser(name, ["127.0.0.1"], port=18766, tls=True)
        await adv.start()
        try:
            table = await asyncio.to_thread(
                cli_lan.run, _args("discover", "--timeout", "2", "--interface", "127.0.0.1")
            )
            table_out = capsys.readouterr().out
            raw = await asyncio.to_thread(
                cli_lan.run,
                _args("discover", "--timeout", "2", "--interface", "127.0.0.1", "--json"),
            )
        finally:
            await adv.close()
        assert table_out.splitlines()[0].split() == ["NAME", "ADDRESS:PORT", "TLS", "BOX"]
        [row] = [line for line in table_out.splitlines() if line.startswith(name + " ")]
        assert row.split()[:3] == [name, "127.0.0.1:18766", "yes"]
        return table, raw

    assert asyncio.run(scenario()) == (0, 0)
    [found] = [b for b in json.loads(capsys.readouterr().out) if b["name"] == name]
    assert found["url"] == "https://127.0.0.1:18766"
    assert (found["fingerprint"], found["tls"], found["addresses"]) == (FP, True, ["127.0.0.1"])
    assert cli_lan.run(argparse.Namespace(command="status")) is None


def test_cli_discover_says_when_nobody_answered(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Other advertisers may share the loopback, so "nobody" is staged.
    monkeypatch.setattr(discovery, "discover", lambda timeout, interfaces: [])
    assert cli_lan.run(_args("discover")) == 1
    assert capsys.readouterr().out == "no insan-edge box answered within 3 s\n"
    assert cli_lan.run(_args("discover", "--timeout", "1.5", "--json")) == 1
    assert json.loads(capsys.readouterr().out) == []
