"""Ingest through the real daemon: the events API, the PII corpus via the inbox, privacy duties."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml
from daemon_harness import family_config

from insan_edge.client import ClientError

DATA = Path(__file__).parent / "data"


def _event(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "family": "testfam",
        "member": "kim",
        "kind": "query",
        "ts": f"2026-11-2{n % 9}T10:00:00Z",
        **fields,
    }


def _found(value: str, data: bytes) -> bool:
    """``value`` as a whole word in ``data`` ("Theo" is not found inside "Theology")."""
    pattern = rb"(?<![A-Za-z0-9])" + re.escape(value.encode()) + rb"(?![A-Za-z0-9])"
    return re.search(pattern, data) is not None


def _rows(state: Path, sql: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(state / "insan-edge.db")) as db:
        return db.execute(sql).fetchall()


def test_events_api_answers_per_item_and_stores_only_scrubbed_text(
    daemon_factory, tiny_model_path, tmp_path
):  # type: ignore[no-untyped-def]
    d = daemon_factory(family_config(tiny_model_path, tmp_path / "s", tmp_path / "x.sock"))
    good = _event(
        1, text="Kim says call 555-0142 or write to kim.w@example.com", item="Star gazing"
    )
    batch = [
        good,
        _event(2, kind="teleport"),
        {**_event(3), "family": "nobody"},
        {**_event(4), "member": "zed"},
        _event(5, rating="five"),
        _event(6, text="x" * 20000),
    ]
    answer = d.client.request("POST", "/v1/interactions", batch)
    statuses = [(r["status"], r.get("reason")) for r in answer["results"]]
    assert statuses == [
        ("stored", None),
        ("quarantined", "invalid_field"),
        ("quarantined", "unknown_family"),
        ("quarantined", "unknown_member"),
        ("quarantined", "invalid_field"),
        ("quarantined", "too_large"),
    ]
    assert answer["stored"] == 1 and answer["quarantined"] == 5
    again = d.client.request("POST", "/v1/interactions", good)  # a retry: not stored twice
    assert again["results"] == [{"index": 0, "status": "duplicate"}]

    (text, item), = _rows(d.state_dir, "SELECT text, item FROM interactions")  # fmt: skip
    assert "<CHILD_1>" in text and "<PHONE>" in text and "<EMAIL>" in text
    assert item == "Star gazing"
    raw = (d.state_dir / "insan-edge.db").read_bytes() + (
        d.state_dir / "insan-edge.db-wal"
    ).read_bytes()
    assert b"555-0142" not in raw and b"kim.w@example.com" not in raw

    status = d.client.status()["ingest"]
    assert status["interactions"] == 1 and status["quarantined"] == 5
    assert status["quarantined_by_reason"]["invalid_field"] == 2
    assert status["scrubbed_entities"]["PHONE"] == 1 and status["scrubbed_entities"]["EMAIL"] == 1
    listed = d.client.request("GET", "/v1/quarantine")["quarantine"]
    assert {r["reason"] for r in listed} == {
        "invalid_field",
        "unknown_family",
        "unknown_member",
        "too_large",
    }
    assert all("555" not in json.dumps(r) for r in listed)

    with pytest.raises(ClientError) as err:
        d.client.request("POST", "/v1/interactions", [])
    assert err.value.status == 400
    odd = d.client.request("POST", "/v1/interactions", "just text")
    assert odd["results"][0]["reason"] == "not_an_object"


def test_pii_corpus_through_the_inbox_leaves_no_trace(daemon_factory, tiny_model_path, tmp_path):  # type: ignore[no-untyped-def]
    corpus = [
        json.loads(line)
        for line in (DATA / "pii_corpus.jsonl").read_text().splitlines()
        if line.strip()
    ]
    config = yaml.safe_load((DATA / "pii_family.yaml").read_text())
    base = family_config(tiny_model_path, tmp_path / "s", tmp_path / "x.sock")
    base["families"] = config["families"]
    base["system"]["log_level"] = "debug"  # the most the logs could ever say
    inbox = tmp_path / "inbox"
    base["system"]["paths"]["inbox"] = str(inbox)
    d = daemon_factory(base)
    member = next(iter(config["families"]["testfam"]["members"]))
    lines = [
        json.dumps({"family": "testfam", "member": member, "kind": "query", "text": m["text"],
                    "ts": "2026-11-24T09:00:00Z", "context": {"n": i}})
        for i, m in enumerate(corpus)
    ]  # fmt: skip
    (inbox / "app.jsonl").write_text("\n".join(lines) + "\n")
    deadline = time.monotonic() + 120
    while d.client.status()["ingest"]["interactions"] < len(corpus):
        assert time.monotonic() < deadline, d.log()[-2000:]
        time.sleep(0.2)
    assert d.client.status()["ingest"]["files"] == [
        {"path": "app.jsonl", "read_bytes": (inbox / "app.jsonl").stat().st_size, "lag_bytes": 0}
    ]
    d.stop()  # flush everything to disk, then read every byte the box kept
    # The shipped starter catalog is public content ("...the Brown family in London"), not
    # anything a family said: drop those rows (scope "*") from the database first, so every
    # other byte is read.
    with closing(sqlite3.connect(d.state_dir / "insan-edge.db")) as db:
        db.execute("DELETE FROM catalog_items WHERE scope = '*'")
        db.commit()
        db.execute("VACUUM")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    kept = b"".join(
        p.read_bytes() for p in d.state_dir.rglob("*") if p.is_file() and "models" not in p.parts
    )
    kept += d.log_path.read_bytes()
    leaked = {
        (lb["type"], lb["value"]) for m in corpus for lb in m["pii"] if _found(lb["value"], kept)
    }
    assert leaked == set()


def test_forget_and_export(daemon_factory, tiny_model_path, tmp_path):  # type: ignore[no-untyped-def]
    d = daemon_factory(family_config(tiny_model_path, tmp_path / "s", tmp_path / "x.sock"))
    events = [
        _event(i, member=m, kind="suggestion_accepted", item=f"Idea {i}")
        for i, m in enumerate(["kim", "kim", "pat"])
    ]
    assert d.client.request("POST", "/v1/interactions", events)["stored"] == 3
    exported = d.client.request("GET", "/v1/families/testfam/export")
    assert len(exported["interactions"]) == 3 and {m["id"] for m in exported["members"]} == {
        "kim",
        "pat",
    }
    result = d.client.request("DELETE", "/v1/families/testfam/members/kim")
    assert result["interactions_deleted"] == 2
    after = d.client.request("GET", "/v1/families/testfam/export")
    assert [i["member_id"] for i in after["interactions"]] == ["pat"]
    erasure = [a for a in after["audit_log"] if a["event"] == "member_erased"]
    assert erasure and erasure[0]["member_id"] == "kim" and "Idea" not in json.dumps(erasure)
    for path, code in (
        ("/v1/families/nobody/members/kim", "unknown_family"),
        ("/v1/families/testfam/members/zed", "unknown_member"),
    ):
        with pytest.raises(ClientError) as err:
            d.client.request("DELETE", path)
        assert err.value.code == code


def test_the_deny_list_follows_a_config_edit(daemon_factory, tiny_model_path, tmp_path):  # type: ignore[no-untyped-def]
    cfg = family_config(tiny_model_path, tmp_path / "s", tmp_path / "x.sock")
    d = daemon_factory(cfg)
    first = _event(1, text="Walked Pickles after school")
    d.client.request("POST", "/v1/interactions", first)
    cfg["families"]["testfam"]["privacy"] = {"pets": ["Pickles"]}
    d.write_config(cfg)
    deadline = time.monotonic() + 20
    for attempt in range(2, 1000):  # the daemon notices the edit within seconds
        later = _event(attempt, text="Fed Pickles twice", context={"attempt": attempt})
        d.client.request("POST", "/v1/interactions", later)
        texts = [t for (t,) in _rows(d.state_dir, "SELECT text FROM interactions ORDER BY id")]
        if len(texts) >= 2 and "<PET>" in texts[-1]:
            break
        assert time.monotonic() < deadline, texts
        time.sleep(0.5)
    assert texts[0] == "Walked Pickles after school"  # before the edit a pet's name was not known
    assert texts[-1] == "Fed <PET> twice"


def test_old_interactions_expire(tmp_path):  # type: ignore[no-untyped-def]
    from datetime import datetime, timezone

    from insan_edge.config import parse_config
    from insan_edge.duties import expire
    from insan_edge.store import Store

    store = Store(tmp_path / "db.sqlite")
    cfg = family_config(None, tmp_path, tmp_path / "x.sock")
    store.sync_families(dict(parse_config(yaml.safe_dump(cfg), "c.yaml").config.families))
    rows = [{"family_id": "testfam", "member_id": "kim", "kind": "query", "ts": ts, "event_hash": ts}
            for ts in ("2025-01-01T00:00:00Z", "2026-11-01T00:00:00Z", "2026-11-24T00:00:00Z")]  # fmt: skip
    store.add_interactions(rows)
    now = datetime(2026, 11, 25, tzinfo=timezone.utc)
    assert expire(store, 30, now) == 1
    assert expire(store, 30, now) == 0
    assert expire(store, 7, now) == 1
    assert [r["ts"] for r in store.db.query("SELECT ts FROM interactions")] == [
        "2026-11-24T00:00:00Z"
    ]
    audit = [r for r in store.audit_rows() if r["event"] == "retention"]
    assert len(audit) == 2 and "2025" not in json.dumps(audit)


def test_cli_quarantine_forget_export(daemon_factory, tiny_model_path, tmp_path):  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    d = daemon_factory(family_config(tiny_model_path, tmp_path / "s", tmp_path / "x.sock"))
    d.client.request("POST", "/v1/interactions", [_event(1, item="Kites"), _event(2, kind="nope")])

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "insan_edge.cli", *args, "--socket", str(d.socket)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    out = cli("quarantine")
    assert out.returncode == 0 and "invalid_field" in out.stdout
    target = tmp_path / "export.json"
    out = cli("export", "--family", "testfam", "--output", str(target))
    assert (
        out.returncode == 0 and json.loads(target.read_text())["interactions"][0]["item"] == "Kites"
    )
    out = cli("forget", "--family", "testfam")
    assert out.returncode == 0 and "testfam/kim: 1 interactions erased" in out.stdout
    out = cli("forget", "--family", "nobody")
    assert out.returncode == 1 and "no family 'nobody'" in out.stderr
