"""The gateway under load from a second process, and a property-based run against its OpenAPI
document (schemathesis): no 5xx but the documented 503, and the daemon's memory stays flat."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_lan import Box, _start

from insan_edge.openapi import openapi_document

ROOT = Path(__file__).resolve().parent.parent


def test_load_on_the_gateway_from_a_second_process(tmp_path: Path, tiny_model_path: Path) -> None:
    out = tmp_path / "load.json"
    argv = [sys.executable, str(ROOT / "bench" / "lan_load.py"), "--model", str(tiny_model_path),
            "--clients", "12", "--seconds", "12", "--json", str(out)]  # fmt: skip
    run = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(out.read_text())
    print(run.stdout)  # the table: requests, p50/p95 per path, RSS
    for name, row in result["paths"].items():
        assert row["other_5xx"] == 0 and row["busy_without_retry_after"] == 0, (name, row)
        assert row["transport_errors"] == {}, (name, row)
        assert set(row["statuses"]) <= {"200", "503"}, (name, row)
        assert row["requests"] >= 20 and row["p95_ms"] >= row["p50_ms"] > 0, (name, row)
    memory = result["memory"]
    assert memory["gateway_last_mb"] - memory["gateway_first_mb"] < 48, memory


@pytest.fixture(scope="module")
def open_box(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Iterator[Box]:
    # Limits out of the way: schemathesis sends hundreds of requests, many without a token.
    b = _start(tmp_path_factory.mktemp("st"), tiny_model_path, requests_per_minute=100000,
               burst=10000, auth_failures_per_minute=10000)  # fmt: skip
    yield b
    assert b.daemon.stop() == 0, b.daemon.log()


@pytest.mark.parametrize("known", [False, True], ids=["any-ids", "known-ids"])
def test_schemathesis_finds_no_server_error(open_box: Box, tmp_path: Path, known: bool) -> None:
    """Generated requests for every operation (valid and invalid), with an admin token: first
    with made-up families and members (mostly 404s), then with the config's own."""
    token = open_box.token("admin")
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        '[parameters]\n"path.family" = "testfam"\n"path.member" = "kim"\n' if known else ""
    )
    seed = os.environ.get("INSAN_EDGE_FUZZ_SEED", "20261202")
    url = f"http://127.0.0.1:{open_box.port}/v1/openapi.json"
    argv = [str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(config),
            "run", url, "-H", f"Authorization: Bearer {token}",
            "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--phases", "examples,coverage,fuzzing", "--mode", "all", "--max-examples", "15",
            "--workers", "1", "--seed", seed, "--generation-database", "none", "--request-timeout", "120"]  # fmt: skip
    started = time.monotonic()
    run = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "failed" not in run.stdout.split("SUMMARY")[-1]
    print(f"schemathesis ({'known' if known else 'any'} ids): {time.monotonic() - started:.0f} s")
    assert open_box.daemon.client.health()["status"] == "ok"
    assert "api.crash" not in open_box.daemon.log()


def test_the_document_lists_every_route_the_server_has() -> None:
    from typing import cast

    from insan_edge.api import ApiBackend, build_app

    app = build_app(cast(ApiBackend, object()))
    served = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.resource and r.method != "HEAD"
    }
    doc = openapi_document()
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert served == documented
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            open_ = op.get("security") == []
            assert open_ == (path in ("/v1/health", "/v1/openapi.json")), (method, path)
