"""The inbox tailer on real files and a real SQLite database, and under SIGKILL."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import tracemalloc
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml
from daemon_harness import family_config

from insan_edge.config import Config, parse_config
from insan_edge.events import InteractionEvent
from insan_edge.ingest import InboxTailer
from insan_edge.intake import redact_all
from insan_edge.store import Store

MAX = 16384


def _config(tmp: Path) -> Config:
    data = family_config(None, tmp / "state", tmp / "api.sock")
    return parse_config(yaml.safe_dump(data)).config


def line(n: int, **fields: Any) -> bytes:
    event = {
        "family": "testfam",
        "member": "kim",
        "kind": "rating",
        "item": f"Kim's drawing {n}",
        "rating": 4,
        "context": {"n": n},
        "ts": "2026-03-01T10:00:00Z",
        **fields,
    }
    return (json.dumps(event) + "\n").encode()


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.config = _config(tmp)
        self.inbox = tmp / "inbox"
        self.store = Store(tmp / "state" / "insan-edge.db")
        self.store.sync_families(dict(self.config.families))
        self.tailer = self.new_tailer()

    def new_tailer(self) -> InboxTailer:
        return InboxTailer(self.store, self.inbox, lambda: self.config, redact_all, MAX)

    def numbers(self) -> list[int]:
        rows = self.store.db.query("SELECT context FROM interactions ORDER BY id")
        return [json.loads(r["context"])["n"] for r in rows]

    def reasons(self) -> list[str]:
        return [r["reason"] for r in reversed(self.store.quarantine_rows(1000))]


@pytest.fixture
def env(tmp_path: Path):  # type: ignore[no-untyped-def]
    e = Env(tmp_path)
    yield e
    e.tailer.close()
    e.store.close()


def test_appends_partial_lines_and_new_files(env: Env) -> None:
    a = env.inbox / "app.jsonl"
    append(a, line(1) + line(2) + line(3))
    assert env.tailer.poll() == 3
    assert env.tailer.poll() == 0
    half = line(4)
    append(a, half[:20])
    assert env.tailer.poll() == 0  # no newline yet: wait for it
    append(a, half[20:] + line(5)[:-1])
    assert env.tailer.poll() == 1
    append(a, b"\n\n")  # a blank line is no event
    assert env.tailer.poll() == 1
    append(env.inbox / "other.jsonl", line(6) + line(7))
    (env.inbox / "notes.txt").write_bytes(line(99))  # not an inbox file
    assert env.tailer.poll() == 2
    assert env.numbers() == [1, 2, 3, 4, 5, 6, 7]
    assert env.new_tailer().poll() == 0  # a restart reads nothing twice
    offsets = {o.path: o.offset for o in env.store.offsets().values()}
    assert offsets == {"app.jsonl": a.stat().st_size, "other.jsonl": len(line(6) + line(7))}
    counts = env.store.ingest_counts()
    assert counts["interactions"] == 7 and counts["interactions_by_source"] == {"inbox": 7}
    assert counts["quarantined"] == 0
    stored = env.store.db.execute("SELECT item, text FROM interactions").fetchall()
    assert {tuple(r) for r in stored} == {("[redacted]", None)}


def test_rotation_drains_the_old_file_first(env: Env) -> None:
    a = env.inbox / "app.jsonl"
    append(a, line(1) + line(2))
    assert env.tailer.poll() == 2
    old = a.open("ab")  # the app still holds the file while it is rotated
    old.write(line(3))
    old.flush()
    a.rename(env.inbox / "app.jsonl.1")
    old.write(line(4) + line(5)[:10])
    old.flush()
    append(a, line(6))
    assert env.tailer.poll() == 3
    old.write(line(5)[10:])
    old.close()
    assert env.tailer.poll() == 1
    assert env.numbers() == [1, 2, 3, 4, 6, 5]
    (env.inbox / "app.jsonl.1").rename(env.inbox / "app.jsonl.2")
    append(a, line(7))
    assert env.new_tailer().poll() == 1
    assert sorted(env.numbers()) == [1, 2, 3, 4, 5, 6, 7]


def test_truncation_and_replacement_read_from_the_start(env: Env) -> None:
    a = env.inbox / "app.jsonl"
    append(a, line(1) + line(2) + line(3))
    assert env.tailer.poll() == 3
    with a.open("r+b") as f:
        f.truncate(0)
    append(a, line(4))
    assert env.tailer.poll() == 1
    # Replaced in place by a longer file: the size alone cannot tell; the first line does.
    a.write_bytes(b"".join(line(n) for n in range(5, 10)))
    assert env.tailer.poll() == 5
    # Replaced by a new file (new inode); the old one's offset is dropped once it is gone.
    tmp = env.inbox / "new.tmp"
    tmp.write_bytes(line(10))
    tmp.replace(a)
    assert env.tailer.poll() == 1
    assert env.numbers() == list(range(1, 11))
    assert len(env.store.offsets()) == 2


def test_bad_lines_are_quarantined_without_their_content(env: Env) -> None:
    secret = b"SECRET-5551234"
    bad = {
        "invalid_json": b'{"family": "testfam", "text": "' + secret + b'"\n',
        "invalid_field": line(0, rating="five", text=secret.decode()),
        "not_an_object": b'["' + secret + b'"]\n',
        "unknown_family": line(0, family="nofam", text=secret.decode()),
        "unknown_member": line(0, member="zed", text=secret.decode()),
        "too_large": b'{"text": "' + secret + b"x" * 10_000_000 + b'"}\n',
        "binary": b"\x00\x01\x02PK\x03\x04" + secret + b"\xff\xfe\x00\n",
        "invalid_utf8": b'{"text": "' + secret + b'\xc3\x28 \xff"}\n',
    }
    a = env.inbox / "app.jsonl"
    append(a, line(1) + b"".join(bad.values()) + line(2, text=secret.decode()))
    tracemalloc.start()
    try:
        assert env.tailer.poll() == 2
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4_000_000, f"the 10 MB line was held in memory ({peak} bytes)"
    assert env.numbers() == [1, 2]
    assert env.reasons() == list(bad)
    rows = list(reversed(env.store.quarantine_rows(100)))
    offset = len(line(1))
    for row, raw in zip(rows, bad.values(), strict=True):
        assert (row["source"], row["file"], row["offset"]) == ("inbox", "app.jsonl", offset)
        assert row["size"] == len(raw) and row["sha256"] == hashlib.sha256(raw).hexdigest()
        assert secret.decode() not in row["message"]
        offset += len(raw)
    counts = env.store.ingest_counts()
    assert counts["quarantined"] == len(bad)
    assert counts["quarantined_by_reason"] == dict.fromkeys(bad, 1)
    assert env.tailer.poll() == 0
    env.store.close()
    state = env.tmp / "state"
    data = b"".join(p.read_bytes() for p in state.iterdir() if p.name.startswith("insan-edge.db"))
    assert b"interactions" in data and secret not in data
    env.store = Store(state / "insan-edge.db")  # for the fixture to close


def test_without_a_scrubber_nothing_is_stored(env: Env) -> None:
    a = env.inbox / "app.jsonl"
    append(a, line(1))
    tailer = InboxTailer(env.store, env.inbox, lambda: env.config, None, MAX)
    with pytest.raises(RuntimeError, match="no scrubber"):
        tailer.poll()
    tailer.close()
    assert env.numbers() == [] and env.store.offsets() == {}

    def short(family_id: str, events: list[InteractionEvent]) -> list[dict[str, Any]]:
        return redact_all(family_id, events)[:-1]

    tailer = InboxTailer(env.store, env.inbox, lambda: env.config, short, MAX)
    with pytest.raises(RuntimeError, match="0 rows for 1 events"):
        tailer.poll()
    tailer.close()
    assert env.tailer.poll() == 1


def test_wait_returns_early_on_a_change_or_wake(env: Env) -> None:
    start = time.monotonic()
    timer = threading.Timer(0.2, append, [env.inbox / "app.jsonl", line(1)])
    timer.start()
    env.tailer.wait(5)
    timer.join()
    assert time.monotonic() - start < 2
    time.sleep(0.1)
    env.tailer.wait(0)  # the rest of the write's notifications
    start = time.monotonic()
    timer = threading.Timer(0.2, env.tailer.wake)
    timer.start()
    env.tailer.wait(5)
    timer.join()
    assert 0.15 < time.monotonic() - start < 2
    tailer = env.new_tailer()
    tailer.request_stop()
    assert tailer.poll() == 0  # stopping: reads nothing more
    tailer.close()
    assert env.tailer.poll() == 1
    env.tailer.close()
    env.tailer.wake()  # after close: harmless


# the crash test -------------------------------------------------------------------------------


# Runs the real entry point, but SIGKILLs itself now and then just before a transaction, after
# its writes but before its COMMIT, and right after the COMMIT: the moments that matter most.
CRASHER = """
import os, random, signal, sys
from contextlib import contextmanager
from insan_edge.store import Store

p = float(os.environ["INGEST_CRASH_P"])
original = Store.transaction

def maybe_die():
    if random.random() < p:
        os.kill(os.getpid(), signal.SIGKILL)

@contextmanager
def transaction(self):
    maybe_die()
    with original(self) as db:
        yield db
        maybe_die()
    maybe_die()

Store.transaction = transaction
if sys.argv[1] == "daemon":
    from insan_edge.cli import main
    sys.exit(main(["run", *sys.argv[2:]]))
from insan_edge.ingest_main import main
sys.exit(main(sys.argv[2:]))
"""


SELF_KILLS = 2  # the fewest crashes around transactions a run must see


class Ingest:
    """The tailer as its own process, SIGKILLed (by the test, or by itself) and started again."""

    def __init__(self, tmp: Path, inbox: Path, crash_p: float, daemon: bool = False) -> None:
        common = ["--config", str(tmp / "config.yaml"), "--state-dir", str(tmp / "state")]
        if daemon:  # the whole daemon, scrubbing with Presidio; the inbox comes from the config
            self.args = [
                sys.executable,
                "-c",
                CRASHER,
                "daemon",
                *common,
                "--socket",
                str(tmp / "api.sock"),
            ]
            self.ready = "daemon.ready"
            self.life = (0.3, 2.5)  # a start costs seconds (spaCy, model): let each life work
        else:
            self.args = [
                sys.executable, "-c", CRASHER, "tailer", *common, "--inbox", str(inbox),
                "--redact-text", "--interval", "0.05",
            ]  # fmt: skip
            self.ready = "ingest.started"
            self.life = (0.02, 0.8)
        self.env = {**os.environ, "INGEST_CRASH_P": str(crash_p)}
        self.log = (tmp / "ingest.log").open("ab")
        # Set while the writer waits for a checkpoint: no kills from the killer, and once the
        # process has crashed itself SELF_KILLS times it comes back without crashing, so a slow,
        # busy machine gets there and the crashes around transactions still happen.
        self.calm = threading.Event()
        self.kills = self.self_kills = 0
        self.proc = self.start()

    def start(self) -> subprocess.Popen[bytes]:
        self.log_mark = len(self.log_text())
        # On a slow machine a daemon's start costs seconds, and one that keeps crashing as it
        # starts would never reach the checkpoint: past the floor, a calm start does not crash.
        clean = self.calm.is_set() and self.self_kills >= SELF_KILLS
        env = {**self.env, "INGEST_CRASH_P": "0"} if clean else self.env
        return subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text("utf-8", "replace")

    def started(self) -> bool:
        return self.ready in self.log_text()[self.log_mark :]

    def kill_and_restart(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.kills += 1
        self.proc = self.start()

    def restart_if_dead(self) -> bool:
        code = self.proc.poll()
        if code is not None:
            assert code == -signal.SIGKILL, f"the ingest process exited with {code}"
            self.self_kills += 1
            self.proc = self.start()
            return True
        return False

    def run_killer(self, rng: random.Random, stop: threading.Event) -> None:
        """Kill at a random moment once the process is up (a slow start is no excuse to starve)."""
        next_kill: float | None = None
        while not stop.wait(0.02):
            if self.restart_if_dead():
                next_kill = None
            if next_kill is None and self.started():
                next_kill = time.monotonic() + rng.uniform(*self.life)
            if next_kill is not None and time.monotonic() >= next_kill and not self.calm.is_set():
                self.kill_and_restart()
                next_kill = None


def _stored(db: Path) -> tuple[int, int]:
    if not db.exists():
        return 0, 0
    try:
        with closing(sqlite3.connect(db, timeout=10)) as conn:
            n = conn.execute("SELECT COUNT(*) FROM interactions").fetchone()[0]
            q = conn.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]
        return int(n), int(q)
    except sqlite3.OperationalError:
        return 0, 0  # being created or migrated


def _wait_for(
    db: Path, expected: tuple[int, int], timeout: float, ingest: Ingest | None = None
) -> tuple[int, int]:
    """Until the store holds ``expected``; restarting ``ingest`` if it killed itself meanwhile."""
    deadline = time.monotonic() + timeout
    while (got := _stored(db)) != expected and time.monotonic() < deadline:
        if ingest is not None:
            ingest.restart_if_dead()
        time.sleep(0.05)
    return got


@pytest.mark.parametrize("daemon", [False, True], ids=["tailer", "daemon"])
def test_sigkill_at_random_moments_neither_loses_nor_duplicates(
    tmp_path: Path, tiny_model_path: Path, daemon: bool
) -> None:
    """N numbered events go to two files, one rotated and later truncated, while the ingest
    process is SIGKILLed and restarted at random moments; every event is stored exactly once.

    The writer truncates only once everything written so far is stored: lines written before a
    truncation and not yet read are destroyed by the truncation itself (as with logrotate's
    copytruncate), so without that wait the expected set would depend on timing.
    """
    seed = int(os.environ.get("INGEST_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    total, bad_every = 3000, 250
    inbox, db = tmp_path / "inbox", tmp_path / "state" / "insan-edge.db"
    config = family_config(tiny_model_path, tmp_path / "state", tmp_path / "api.sock")
    config["system"]["paths"]["inbox"] = str(inbox)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    inbox.mkdir()
    x, y = inbox / "x.jsonl", inbox / "y.jsonl"
    files = {x: open(x, "ab", buffering=0), y: open(y, "ab", buffering=0)}  # noqa: SIM115
    # The daemon writes fewer, larger batches: a higher chance per transaction gets enough crashes.
    ingest = Ingest(tmp_path, inbox, crash_p=0.04 if daemon else 0.006, daemon=daemon)
    stop = threading.Event()
    killing = threading.Thread(target=ingest.run_killer, args=(random.Random(seed), stop))
    killing.start()
    bad = 0
    try:
        for n in range(total):
            f = files[x if rng.random() < 0.7 else y]
            data = line(n, text=f"note {n} from Kim")
            if rng.random() < 0.1:  # a line written in two parts
                cut = rng.randrange(1, len(data))
                f.write(data[:cut])
                time.sleep(0.005)
                f.write(data[cut:])
            else:
                f.write(data)
            if n % bad_every == 0:
                f.write(b'{"not json\n')
                bad += 1
            if n == 1000:  # rotation; the app writes one more line to the old file
                x.rename(inbox / "x.jsonl.1")
                files[x].write(b'{"broken\n')
                bad += 1
                files[x].close()
                files[x] = open(x, "ab", buffering=0)  # noqa: SIM115
            if n == 2000:
                waited = time.monotonic()
                # No restarts from here: the killer thread restarts a dead process, and two
                # threads restarting it at once would leave an orphan running.
                ingest.calm.set()
                got = _wait_for(db, (n + 1, bad), 300)
                ingest.calm.clear()
                waited = time.monotonic() - waited
                assert got == (n + 1, bad), f"seed {seed}: before truncation"
                os.ftruncate(files[x].fileno(), 0)
            if rng.random() < 0.2:
                time.sleep(rng.uniform(0, 0.03))
    except BaseException:
        stop.set()
        killing.join()
        ingest.proc.kill()  # never leave the process behind when the writer side fails
        ingest.proc.wait()
        ingest.log.close()
        raise
    finally:
        stop.set()
        killing.join()
        for f in files.values():
            f.close()
    try:
        while ingest.kills < 5:  # a short run: a few more
            time.sleep(0.3)
            ingest.kill_and_restart()
        final = time.monotonic()
        ingest.calm.set()
        got = _wait_for(db, (total, bad), 300, ingest)
        final = time.monotonic() - final
        ingest.restart_if_dead()
        ingest.env["INGEST_CRASH_P"] = "0"
        ingest.kill_and_restart()  # a last one that does not crash, to stop cleanly
        deadline = time.monotonic() + 60
        while not ingest.started():
            assert time.monotonic() < deadline, ingest.log_text()[-3000:]
            time.sleep(0.05)
        got = _wait_for(db, (total, bad), 2)
    finally:
        ingest.proc.send_signal(signal.SIGTERM)
        code = ingest.proc.wait(30)
        ingest.log.close()
    log = (tmp_path / "ingest.log").read_text("utf-8", "replace")
    assert got == (total, bad), f"seed {seed}, kills {ingest.kills}:\n{log[-3000:]}"
    assert code == 0, log[-3000:]
    assert ingest.kills >= 5 and ingest.self_kills >= SELF_KILLS, f"seed {seed}: too few kills"
    with closing(sqlite3.connect(db)) as conn:
        numbers = [
            r[0] for r in conn.execute("SELECT json_extract(context, '$.n') FROM interactions")
        ]
    assert len(numbers) == total and set(numbers) == set(range(total)), f"seed {seed}"
    print(
        f"seed {seed}: {total} events written and stored, {bad} quarantined; "
        f"{ingest.kills} kills at random moments, {ingest.self_kills} around transactions; "
        f"waited {waited:.1f} s before truncating, {final:.1f} s at the end"
    )


def test_a_version_1_database_migrates_with_its_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from insan_edge import store as store_module

    path = tmp_path / "db.sqlite"
    monkeypatch.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:1])
    old = Store(path)
    old.sync_families(dict(_config(tmp_path).families))
    old.db.execute(
        "INSERT INTO interactions (family_id, member_id, kind, ts) VALUES ('testfam', 'kim', 'query', 'x')"
    )
    assert old.schema_version == 1
    old.close()
    monkeypatch.undo()
    new = Store(path)
    assert new.schema_version == len(store_module.MIGRATIONS)
    assert new.ingest_counts()["interactions_by_source"] == {"unknown": 1}
    row = {"family_id": "testfam", "member_id": "kim", "kind": "query", "event_hash": "h1"}
    assert new.add_interactions([row, row]) == 1  # the same event twice is stored once
    assert new.ingest_counts()["interactions_by_source"] == {"unknown": 1, "api": 1}
    new.close()
