"""The real daemon on a temporary Unix socket, serving a tiny model the tests build."""

from __future__ import annotations

import json
import signal
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import family_config, start_daemon

from insan_edge.client import Busy, Client, ClientError, LocalClient
from insan_edge.contracts import RecommendationRequest, RecommendationResponse


def _raw(sock_path: Path, data: bytes) -> tuple[int, dict[str, Any]]:
    """Send raw bytes over the socket; parse the status and JSON body of the answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(sock_path))
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _error(client: LocalClient, method: str, path: str, body: Any = None) -> ClientError:
    with pytest.raises(ClientError) as info:
        client.request(method, path, body)
    return info.value


def test_serves_health_status_and_safe_recommendations(daemon_factory, tiny_model_path, tmp_path):  # type: ignore[no-untyped-def]
    d = daemon_factory(family_config(tiny_model_path, tmp_path / "s", tmp_path / "x.sock"))
    assert d.client.health()["status"] == "ok"
    assert stat.S_IMODE(d.socket.stat().st_mode) == 0o660
    status = d.client.status()
    assert status["model"]["architecture"] == "llama"
    assert [f["id"] for f in status["families"]] == ["testfam"]
    assert {m["id"] for m in status["families"][0]["members"]} == {"pat", "kim"}
    assert status["store"]["schema_version"] >= 1
    devices = status["devices"]  # this machine has no GPU: every part on the CPU, and why
    assert devices["serving"]["device"] == "cpu" and devices["serving"]["gpu_layers"] == 0
    assert devices["topics"]["device"] in ("cpu", None)
    assert devices["training"] == {"device": None, "reason": "chosen when a run starts"}

    request = {
        "member": "kim",
        "count": 2,
        "context": {"time_of_day": "morning", "at": "2026-11-23T10:00:00"},
    }
    answer = d.client.recommend("testfam", request)
    assert answer["family"] == "testfam" and answer["members"] == ["kim"]
    assert answer["model"] == {
        "name": "insan-edge tiny test model",
        "version": "base",
        "adapter": None,
    }
    assert answer["generated"] >= len(answer["items"]) and not answer["cached"]
    assert 1 <= len(answer["items"]) <= 2
    for item in answer["items"]:
        assert set(item) == {
            "title",
            "description",
            "category",
            "content_rating",
            "for_members",
            "reason",
            "source",
            "score",
        }
        assert item["source"] == "generated" and item["score"] is None
        assert item["content_rating"] == "G"  # kim is 8 and strict
        assert item["for_members"] == ["kim"] and len(item["title"]) >= 3

    again = d.client.recommend("testfam", request)
    assert again["cached"] and again["items"] == answer["items"]
    status = d.client.status()
    assert status["requests"]["recommendations"] == 2 and status["requests"]["cache_hits"] == 1
    assert status["safety"]["items_served"] == len(answer["items"])
    metrics = d.client.request("GET", "/metrics")
    assert "insan_edge_recommendation_requests_total 2" in metrics


def test_bad_requests_get_clear_json_errors(daemon_factory, tiny_model_path, tmp_path):  # type: ignore[no-untyped-def]
    cfg = family_config(
        tiny_model_path, tmp_path / "s", tmp_path / "x.sock", api={"max_body_bytes": 4096}
    )
    d = daemon_factory(cfg)
    c = d.client
    cases = [
        (("POST", "/v1/families/nobody/recommendations", {}), 404, "unknown_family"),
        (
            ("POST", "/v1/families/testfam/recommendations", {"member": "zed"}),
            404,
            "unknown_member",
        ),
        (
            ("POST", "/v1/families/testfam/recommendations", {"context": {"present": ["zed"]}}),
            404,
            "unknown_member",
        ),
        (
            ("POST", "/v1/families/testfam/recommendations", {"context": {"time_of_day": "noon"}}),
            422,
            "invalid_request",
        ),
        (
            ("POST", "/v1/families/testfam/recommendations", {"colour": "red"}),
            422,
            "invalid_request",
        ),
        (("POST", "/v1/families/testfam/recommendations", {"count": 0}), 422, "invalid_request"),
        (("POST", "/v1/families/testfam/recommendations", {"count": 11}), 400, "bad_request"),
        (("POST", "/v1/families/testfam/recommendations", [1, 2]), 400, "bad_json"),
        (
            ("POST", "/v1/families/testfam/recommendations", {"context": {"activity": "x" * 5000}}),
            413,
            "payload_too_large",
        ),
        (("GET", "/v1/nothing-here", None), 404, "not_found"),
        (("GET", "/v1/families/testfam/recommendations", None), 405, "method_not_allowed"),
    ]
    for (method, path, body), status, code in cases:
        err = _error(c, method, path, body)
        assert (err.status, err.code) == (status, code), (path, body, err.message)
        assert err.message
    assert (
        "noon"
        in _error(
            c, "POST", "/v1/families/testfam/recommendations", {"context": {"time_of_day": "noon"}}
        ).message
    )

    bad_json = b"{not json"
    head = f"POST /v1/families/testfam/recommendations HTTP/1.1\r\nHost: x\r\nContent-Length: {len(bad_json)}\r\nConnection: close\r\n\r\n"
    assert _raw(d.socket, head.encode() + bad_json)[0] == 400
    # A chunked body has no length up front: the cap must still hold.
    chunk = b"a" * 3000
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(3)) + b"0\r\n\r\n"
    head = "POST /v1/families/testfam/recommendations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    status, body = _raw(d.socket, head.encode() + chunked)
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    assert c.health()["status"] == "ok"  # still serving


def test_broken_edit_keeps_last_good_config_and_valid_edit_applies(
    daemon_factory, tiny_model_path, tmp_path
):  # type: ignore[no-untyped-def]
    cfg = family_config(tiny_model_path, tmp_path / "s", tmp_path / "x.sock")
    d = daemon_factory(cfg)
    broken = d.config_path.read_text().replace("age: 8", "age: eight")
    d.write_config(broken)
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while not (status := d.client.status())["config"]["last_reload_error"]:
        assert time.monotonic() < deadline, d.log()
        time.sleep(0.2)
    problem = status["config"]["last_reload_error"][0]
    assert "families.testfam.members.kim.age" in problem and "config.yaml:" in problem
    assert "config.rejected" in d.log() and "keeping the last good config" in d.log()
    answer = d.client.recommend(
        "testfam", {"member": "kim", "count": 1, "context": {"at": "2026-11-23T10:00:00"}}
    )
    assert answer["members"] == ["kim"]  # the old config still serves

    cfg["families"]["second"] = {"members": {"sam": {"name": "Sam", "age": 30, "role": "parent"}}}
    d.write_config(cfg)  # no signal: the daemon notices the file change itself
    deadline = time.monotonic() + 15
    while len(d.client.status()["families"]) != 2:
        assert time.monotonic() < deadline, d.log()
        time.sleep(0.2)
    status = d.client.status()
    assert status["config"]["last_reload_error"] is None
    assert d.client.recommend("second", {"count": 1})["members"] == ["sam"]


def test_sigterm_stops_cleanly_and_removes_the_socket(daemon_factory, tiny_model_path, tmp_path):  # type: ignore[no-untyped-def]
    d = daemon_factory(family_config(tiny_model_path, tmp_path / "s", tmp_path / "x.sock"))
    assert d.stop(signal.SIGTERM) == 0
    assert not d.socket.exists()
    assert "daemon.stopped" in d.log()


def test_stale_socket_is_replaced_but_a_live_one_is_not(daemon_factory, tiny_model_path, tmp_path):  # type: ignore[no-untyped-def]
    sock_path = tmp_path / "d" / "api.sock"
    sock_path.parent.mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock_path))
    stale.close()  # the file stays, nobody listens: what a killed daemon leaves behind
    d = daemon_factory(family_config(tiny_model_path, tmp_path / "s", sock_path))
    assert d.client.health()["status"] == "ok"
    cfg = family_config(tiny_model_path, tmp_path / "s2", d.socket)
    second = start_daemon(tmp_path / "d2", cfg, wait=False, socket=d.socket)
    try:
        assert second.proc.wait(60) == 1
    finally:
        second.stop(signal.SIGKILL)
    assert d.client.health()["status"] == "ok"  # the first one still owns its socket
    second_log = second.log_path.read_text()
    assert "another insan-edge is already listening" in second_log


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c: c["families"]["testfam"]["members"]["kim"].update(age="eight"),
            "members.kim.age",
        ),
        (lambda c: c["system"]["model"].update(path="/nonexistent/model.gguf"), "does not exist"),
    ],
)
def test_bad_start_exits_with_a_clear_message(tmp_path, tiny_model_path, edit, message):  # type: ignore[no-untyped-def]
    cfg = family_config(tiny_model_path, tmp_path / "s", tmp_path / "x.sock")
    edit(cfg)
    d = start_daemon(tmp_path / "d", cfg, wait=False)
    assert d.proc.wait(60) == 1
    assert message in d.log()


def test_not_a_gguf_is_refused(tmp_path):  # type: ignore[no-untyped-def]
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"PK\x03\x04 not a model")
    d = start_daemon(
        tmp_path / "d", family_config(fake, tmp_path / "s", tmp_path / "x.sock"), wait=False
    )
    assert d.proc.wait(60) == 1
    assert "not a GGUF model file" in d.log()


def test_speaks_sd_notify_with_watchdog(daemon_factory, tiny_model_path, tmp_path):  # type: ignore[no-untyped-def]
    notify_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.settimeout(10)
    env = {"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "1000000"}
    d = daemon_factory(family_config(tiny_model_path, tmp_path / "s", tmp_path / "x.sock"), env=env)
    seen: list[str] = []

    def collect_until(text: str) -> None:
        while not any(text in m for m in seen):
            seen.append(listener.recv(4096).decode())

    collect_until("READY=1")
    collect_until("WATCHDOG=1")
    d.proc.send_signal(signal.SIGHUP)
    collect_until("RELOADING=1")
    assert d.stop() == 0
    collect_until("STOPPING=1")
    listener.close()
    watchdog_pings = sum("WATCHDOG=1" in m for m in seen)
    assert watchdog_pings >= 1


def _slow_daemon(daemon_factory, tiny_model_path, tmp_path):  # type: ignore[no-untyped-def]
    """A daemon whose every generation is a forced ~2500-token answer (seconds, even when fast)."""
    long_item = {
        "title": "Slow one",
        "description": "x" * 2500,
        "category": "craft",
        "content_rating": "G",
        "reason": "r",
    }
    grammar = tmp_path / "slow.gbnf"
    grammar.write_text("root ::= " + json.dumps(json.dumps({"items": [long_item]})) + "\n")
    cfg = family_config(
        tiny_model_path, tmp_path / "s", tmp_path / "x.sock",
        model={"grammar_file": str(grammar), "context_length": 8192},
        api={"max_queue": 1, "request_timeout_seconds": 600},
        recommendations={"cache_seconds": 0, "description_max_chars": 600},
    )  # fmt: skip
    d = daemon_factory(cfg)
    outcome: list[Any] = []

    def first() -> None:
        try:
            outcome.append(d.client.recommend("testfam", {"count": 8}))
        except ClientError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=first)
    worker.start()
    deadline = time.monotonic() + 10
    while (
        d.client.status()["requests"]["generations"] < 1
        and d.client.status()["requests"]["recommendations"] < 1
    ):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return d, worker, outcome


def test_a_full_queue_answers_503_with_retry_after(daemon_factory, tiny_model_path, tmp_path):  # type: ignore[no-untyped-def]
    d, worker, outcome = _slow_daemon(daemon_factory, tiny_model_path, tmp_path)
    body = json.dumps({"count": 1}).encode()
    head = f"POST /v1/families/testfam/recommendations HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(d.socket))
        s.sendall(head.encode() + body)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 503"), reply[:200]
    assert b"Retry-After: " in reply and b'"code": "busy"' in reply
    assert d.client.status()["requests"]["rejected_busy"] == 1
    worker.join(300)
    assert outcome and isinstance(outcome[0], dict)  # the first request was still answered


def test_the_client_library_retries_a_503_until_the_model_is_free(
    daemon_factory, tiny_model_path, tmp_path
):  # type: ignore[no-untyped-def]
    d, worker, outcome = _slow_daemon(daemon_factory, tiny_model_path, tmp_path)
    with pytest.raises(Busy) as caught:  # no retries: the 503 reaches the caller
        Client(d.socket, retries=0).recommend("testfam", {"count": 1})
    assert caught.value.status == 503 and caught.value.retry_after >= 1
    patient = Client(d.socket, retries=8, timeout=300)
    started = time.monotonic()
    answer = patient.recommend("testfam", RecommendationRequest(count=1))
    assert isinstance(answer, RecommendationResponse) and answer.family == "testfam"
    worker.join(300)
    assert isinstance(outcome[0], dict)  # the first request was answered before the retry
    assert time.monotonic() - started > 1  # it did wait
    assert d.client.status()["requests"]["rejected_busy"] >= 2


def test_sigterm_during_a_generation_stops_promptly(daemon_factory, tiny_model_path, tmp_path):  # type: ignore[no-untyped-def]
    d, worker, outcome = _slow_daemon(daemon_factory, tiny_model_path, tmp_path)
    started = time.monotonic()
    assert d.stop(signal.SIGTERM, timeout=20) == 0
    assert time.monotonic() - started < 15
    worker.join(30)
    assert outcome  # the caller got an answer or a clear error, not a hang
