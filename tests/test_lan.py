"""The LAN gateway end to end: a real daemon with its TCP gateway on loopback, real zeroconf,
real tokens in its SQLite store, and the client library as an app would use it."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import RunningDaemon, family_config, start_daemon

from insan_edge.client import (
    AsyncClient,
    Client,
    Forbidden,
    RateLimited,
    Unauthorized,
    Unreachable,
)
from insan_edge.contracts import RecommendationRequest, RecommendationResponse
from insan_edge.discovery import discover
from insan_edge.duties import box_id
from insan_edge.tls import fingerprint

LOOPBACK = ["127.0.0.1"]
ASK = {"member": "kim", "count": 2, "context": {"time_of_day": "afternoon"}}


@dataclass
class Box:
    daemon: RunningDaemon
    name: str
    port: int

    def token(self, *scopes: str, app: str = "test-app") -> str:
        made = self.daemon.client.request(
            "POST", "/v1/tokens", {"app": app, "scopes": list(scopes)}
        )
        return str(made["token"])

    def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        body: Any = None,
        source: str = "127.0.0.1",
    ) -> tuple[int, dict[str, str], Any]:
        conn = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=120, source_address=(source, 0)
        )
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            conn.request(method, path, json.dumps(body) if body is not None else None, headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        data = (
            json.loads(raw)
            if raw and resp.getheader("Content-Type", "").startswith("application/json")
            else raw.decode()
        )
        return resp.status, dict(resp.getheaders()), data


def lan_config(model: Path, tmp: Path, name: str, **lan: Any) -> dict[str, Any]:
    cfg = family_config(
        model, tmp / "state", tmp / "api.sock",
        lan={"enabled": True, "port": 0, "host": "127.0.0.1", "instance_name": name,
             "interfaces": LOOPBACK, "reannounce_seconds": 1, **lan},
    )  # fmt: skip
    other = json.loads(json.dumps(cfg["families"]["testfam"]))
    other["display_name"] = "Other family"
    cfg["families"]["otherfam"] = other
    return cfg


def _start(tmp: Path, model: Path, **lan: Any) -> Box:
    name = f"test box {uuid.uuid4().hex[:8]}"
    daemon = start_daemon(tmp, lan_config(model, tmp, name, **lan))
    deadline = time.monotonic() + 30  # the socket answers first; the gateway follows
    while (port := daemon.client.status()["lan"]["port"]) is None:
        if time.monotonic() > deadline:
            daemon.stop(signal.SIGKILL)
            raise AssertionError(f"the gateway did not start:\n{daemon.log()}")
        time.sleep(0.1)
    return Box(daemon, name, port)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Iterator[Box]:
    b = _start(tmp_path_factory.mktemp("lan"), tiny_model_path)
    yield b
    assert b.daemon.stop() == 0, b.daemon.log()


def _found(name: str, timeout: float = 3.0) -> Any:
    return next((b for b in discover(timeout, LOOPBACK) if b.name == name), None)


def test_an_app_discovers_the_box_and_gets_recommendations_with_a_token(box: Box) -> None:
    status = box.daemon.client.status()
    found = _found(box.name)
    assert found is not None, "the box was not discovered over mDNS"
    assert found.port == box.port and found.api == "v1" and not found.tls
    assert found.box_id == box_id(box.daemon.state_dir)  # public id, derived from the box key
    assert status["lan"]["advertised_as"].startswith(box.name)

    client = Client.discover(box.token("recommend:testfam"), name=box.name, interfaces=LOOPBACK)
    answer = client.recommend("testfam", RecommendationRequest.model_validate(ASK))
    assert isinstance(answer, RecommendationResponse)
    assert answer.family == "testfam" and answer.members == ["kim"] and answer.items
    assert client.health().status == "ok"

    async def from_asyncio() -> RecommendationResponse:
        token = box.token("recommend:testfam/kim")
        async with await AsyncClient.discover(token, name=box.name, interfaces=LOOPBACK) as app:
            return await app.recommend("testfam", ASK)

    assert asyncio.run(from_asyncio()).members == ["kim"]


def test_without_a_valid_token_nothing_is_revealed(box: Box) -> None:
    answers = [
        box.call("POST", "/v1/families/testfam/recommendations", None, ASK),
        box.call("POST", "/v1/families/nosuchfamily/recommendations", None, ASK),
        box.call("GET", "/v1/status"),
        box.call("GET", "/no/such/route"),
        box.call("GET", "/metrics", "iet_0123abcd_" + "x" * 43),
        box.call("GET", "/v1/models", "not a token"),
    ]
    bodies = set()
    for status, headers, body in answers:
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert body["error"]["code"] == "unauthorized"
        bodies.add(json.dumps(body))
    assert len(bodies) == 1  # the same answer whether the family or the route exists or not
    assert "testfam" not in bodies.pop()
    assert box.call("GET", "/v1/health")[0] == 200  # open: says only that it is up
    assert box.call("GET", "/v1/openapi.json")[0] == 200
    log = box.daemon.log()
    assert "lan.auth_failed" in log and "x" * 43 not in log  # logged, never the token


def test_revoked_and_out_of_scope_tokens_get_401_and_403(box: Box) -> None:
    family = box.token("recommend:testfam")
    assert box.call("POST", "/v1/families/testfam/recommendations", family, ASK)[0] == 200
    status, _, body = box.call("POST", "/v1/families/otherfam/recommendations", family, ASK)
    assert status == 403 and body["error"]["code"] == "forbidden"
    # A family that does not exist answers the same as one that does but is not the token's.
    assert box.call("POST", "/v1/families/nosuchfamily/recommendations", family, ASK)[0] == 403
    for admin_only in [("GET", "/v1/status"), ("GET", "/v1/tokens"), ("GET", "/metrics"),
                       ("DELETE", "/v1/families/testfam/members/kim"), ("GET", "/v1/families/testfam/export")]:  # fmt: skip
        assert box.call(*admin_only, family)[0] == 403, admin_only

    kim = box.token("recommend:testfam/kim")
    assert box.call("POST", "/v1/families/testfam/recommendations", kim, ASK)[0] == 200
    for not_kim in [{**ASK, "member": "pat"}, {"count": 1}, {"count": 1, "context": {"present": ["kim", "pat"]}}]:  # fmt: skip
        assert box.call("POST", "/v1/families/testfam/recommendations", kim, not_kim)[0] == 403

    ingest = box.token("ingest:testfam")
    event = {"family": "testfam", "member": "kim", "kind": "suggestion_accepted", "item": "Kite",
             "ts": "2026-11-30T10:00:00Z"}  # fmt: skip
    status, _, stored = box.call("POST", "/v1/interactions", ingest, {"events": [event]})
    assert status == 200 and stored["stored"] == 1
    other = {**event, "family": "otherfam"}
    assert box.call("POST", "/v1/interactions", ingest, {"events": [event, other]})[0] == 403
    assert box.call("POST", "/v1/families/testfam/recommendations", ingest, ASK)[0] == 403
    assert box.call("POST", "/v1/interactions", family, event)[0] == 403

    admin = box.token("admin")
    assert box.call("GET", "/v1/status", admin)[0] == 200
    listed = box.call("GET", "/v1/tokens", admin)[2]["tokens"]
    [mine] = [t for t in listed if family.startswith(f"iet_{t['id']}_")]
    assert box.call("DELETE", f"/v1/tokens/{mine['id']}", admin)[0] == 200
    status, _, body = box.call("POST", "/v1/families/testfam/recommendations", family, ASK)
    assert status == 401  # revoked: cut off at once

    with pytest.raises(Unauthorized):
        Client(host="127.0.0.1", port=box.port, token=family).recommend("testfam", ASK)
    with pytest.raises(Forbidden):
        Client(host="127.0.0.1", port=box.port, token=kim).recommend("testfam", {"count": 1})


def test_tokens_must_name_families_and_members_of_the_config(box: Box) -> None:
    c = box.daemon.client
    for scopes, code in [(["recommend:nobody"], 404), (["recommend:testfam/nobody"], 404),
                         (["sudo"], 422), ([], 422)]:  # fmt: skip
        with pytest.raises(Exception) as caught:
            c.request("POST", "/v1/tokens", {"app": "x", "scopes": scopes})
        assert getattr(caught.value, "status", None) == code, (scopes, caught.value)


def test_failed_logins_are_throttled_per_address(box: Box) -> None:
    # From another loopback address, so the other tests' address keeps its clean record.
    good = box.token("admin")
    statuses = [box.call("GET", "/v1/status", "iet_badbadba_nope", source="127.0.0.9")[0]
                for _ in range(12)]  # fmt: skip
    assert statuses[:10] == [401] * 10 and statuses[10:] == [429, 429]
    status, headers, body = box.call("GET", "/v1/status", good, source="127.0.0.9")
    assert (
        status == 429
        and int(headers["Retry-After"]) >= 1
        and body["error"]["code"] == "rate_limited"
    )
    assert box.call("GET", "/v1/status", good)[0] == 200  # other addresses are not affected


def test_a_token_over_its_rate_gets_429_with_retry_after(box: Box) -> None:
    token = box.token("ingest:testfam")
    statuses = []
    for _ in range(40):  # the burst is 20 and the rate 2 a second: this is far faster
        status, headers, _ = box.call("POST", "/v1/interactions", token, {"events": []})
        statuses.append(status)
        if status == 429:
            assert int(headers["Retry-After"]) >= 1
    assert statuses.count(400) >= 20 and statuses.count(429) >= 10, statuses
    with pytest.raises(RateLimited) as caught:
        Client(host="127.0.0.1", port=box.port, token=token, retries=0).ingest([])
    assert caught.value.retry_after >= 1


def test_metrics_count_requests_by_route_and_status(box: Box) -> None:
    box.call("GET", "/v1/status")  # one 401 more, at least
    page = box.daemon.client.request("GET", "/metrics")
    assert isinstance(page, str)
    families: dict[str, str] = {}
    samples: dict[str, float] = {}
    for line in page.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            families[name] = kind
            continue
        if line.startswith("#"):
            continue
        m = re.fullmatch(
            r'([a-z_]+)(\{(?:[a-z_]+="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9.e+-]+|NaN)', line
        )
        assert m, f"not Prometheus text: {line!r}"
        base = re.sub(r"_(bucket|sum|count)$", "", m[1])
        assert base in families or m[1] in families, f"{m[1]} has no TYPE line"
        samples[m[1] + (m[2] or "")] = float(m[3])
    lan_401 = [
        k
        for k in samples
        if k.startswith("insan_edge_http_requests_total")
        and 'via="lan"' in k
        and 'status="401"' in k
    ]
    assert lan_401 and sum(samples[k] for k in lan_401) >= 7
    ok = 'insan_edge_http_requests_total{via="lan",route="recommendations",method="POST",status="200"}'
    assert samples[ok] >= 2
    inf = samples[
        'insan_edge_http_request_seconds_bucket{via="lan",route="recommendations",le="+Inf"}'
    ]
    assert (
        inf == samples['insan_edge_http_request_seconds_count{via="lan",route="recommendations"}']
    )
    assert samples['insan_edge_auth_failures_total{reason="missing"}'] >= 1
    assert samples['insan_edge_rate_limited_total{limit="auth_failures"}'] >= 2
    assert samples['insan_edge_family_model_version{family="testfam"}'] == 0
    assert samples['insan_edge_training_runs{state="running"}'] == 0
    for name in ("generated_tokens_total", "items_dropped_total", "interactions_stored",
                 "quarantined_events", "resident_memory_bytes"):  # fmt: skip
        assert f"insan_edge_{name}" in families


def test_the_record_is_withdrawn_at_shutdown(tmp_path: Path, tiny_model_path: Path) -> None:
    b = _start(tmp_path, tiny_model_path)
    assert _found(b.name) is not None
    assert b.daemon.stop(signal.SIGTERM) == 0
    assert "lan.withdrawn" in b.daemon.log() or _found(b.name, 2.0) is None
    assert _found(b.name, 2.0) is None


def test_tls_with_a_pinned_certificate(tmp_path: Path, tiny_model_path: Path) -> None:
    b = _start(tmp_path, tiny_model_path, tls=True)
    try:
        cert = b.daemon.state_dir / "lan" / "cert.pem"
        fp = fingerprint(cert)
        assert b.daemon.client.status()["lan"]["fingerprint"] == fp
        found = _found(b.name)
        assert found is not None and found.tls and found.fingerprint == fp
        token = b.token("recommend:testfam")
        client = Client.discover(token, name=b.name, interfaces=LOOPBACK)
        assert client.recommend("testfam", ASK).items
        wrong = Client(host="127.0.0.1", port=b.port, token=token, fingerprint="00" * 32)
        with pytest.raises(Unreachable, match="fingerprint"):
            wrong.recommend("testfam", ASK)

        async def pinned() -> int:
            async with AsyncClient(
                host="127.0.0.1", port=b.port, token=token, fingerprint=fp
            ) as app:
                return len((await app.recommend("testfam", ASK)).items)

        assert asyncio.run(pinned()) >= 1
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            b.call("GET", "/v1/health")  # plain HTTP to the TLS port
    finally:
        assert b.daemon.stop() == 0, b.daemon.log()


def test_oversized_and_malformed_requests_on_the_gateway_get_clear_4xx(box: Box) -> None:
    token = box.token("recommend:testfam", "ingest:testfam")
    huge = {"member": "kim", "context": {"activity": "x" * 70000}}
    status, _, body = box.call("POST", "/v1/families/testfam/recommendations", token, huge)
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    status, _, body = box.call(
        "POST", "/v1/families/testfam/recommendations", token, {"count": 999}
    )
    assert status == 422 and "count" in body["error"]["message"]
    long_field = {**ASK, "context": {"activity": "y" * 65}}
    assert box.call("POST", "/v1/families/testfam/recommendations", token, long_field)[0] == 422
    assert box.daemon.client.health()["status"] == "ok"


def test_a_taken_port_leaves_the_box_serving_on_its_socket(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = lan_config(tiny_model_path, tmp_path, f"taken {uuid.uuid4().hex[:8]}", port=port)
        d = start_daemon(tmp_path, cfg)
        try:
            deadline = time.monotonic() + 30
            while not (lan := d.client.status()["lan"])["error"]:
                assert time.monotonic() < deadline, d.log()
                time.sleep(0.1)
            assert f"127.0.0.1:{port}" in lan["error"] and lan["port"] is None
            assert d.client.recommend("testfam", ASK)["items"]  # the socket still serves
            shown = subprocess.run(
                [sys.executable, "-m", "insan_edge.cli", "status", "--socket", str(d.socket)],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert "lan: NOT SERVING" in shown.stdout, shown
            assert "lan.failed" in d.log()
        finally:
            assert d.stop() == 0, d.log()
