"""Training inside a real daemon on the tiny model: it yields to the family's apps within a
second, resumes from its checkpoint to the same adapter, and an out-of-memory trainer leaves
the daemon serving.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psutil
import pytest
from daemon_harness import RunningDaemon, family_config
from tinymodel import TRAINABLE_CONFIG, build_tiny_gguf

FAMILY = "testfam"
LIKED, DISLIKED = "Paper rocket craft", "Clay dragon figures"
ASK = {"member": "kim", "count": 1, "context": {"time_of_day": "afternoon", "at": "2026-11-03T16:00:00"}}  # fmt: skip


@pytest.fixture(scope="module")
def trainable_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_gguf(tmp_path_factory.mktemp("m") / "tiny.gguf", seed=1, config=TRAINABLE_CONFIG)  # fmt: skip


def _config(model: Path, tmp: Path, **training: Any) -> dict[str, Any]:
    settings = {
        "enabled": True,
        "idle_window": {"start": "00:00", "end": "00:00"},  # always open
        "quiet_period_seconds": 0,
        "min_interactions_for_training": 100000,  # only asked-for runs
        "epochs": 40,
        "batch_size": 4,
        "micro_batch_size": 2,
        "learning_rate": 0.005,
        "max_seq_tokens": 48,
        "checkpoint_every_steps": 5,
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.0},
        "safety_suite_size": 2,
        "safety_threshold": 0.0,
        "pause_grace_seconds": 120,
        **training,
    }
    config = family_config(
        model, tmp / "state", tmp / "api.sock", training=settings, model={"threads": 1}
    )
    config["system"]["governor"] = {"max_cpu_percent": 100, "memory_reserve_mb": 0}
    return config


def _events() -> list[dict[str, Any]]:
    """Kim turns down the dragons and takes the rockets, every school day for six weeks."""
    out = []
    start = datetime(2026, 10, 1, 15, 0, tzinfo=timezone.utc)
    for day in range(40):
        at = start + timedelta(days=day)
        context = {"time_of_day": "afternoon", "activity": "after school"}
        for minutes, kind, item in ((0, "suggestion_rejected", DISLIKED), (1, "suggestion_accepted", LIKED)):  # fmt: skip
            ts = (at + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")
            out.append({"family": FAMILY, "member": "kim", "kind": kind, "item": item, "context": context, "ts": ts})  # fmt: skip
    return out


def _ingest(d: RunningDaemon) -> None:
    answer = d.client.request("POST", "/v1/interactions", {"events": _events()})
    assert all(r["status"] == "stored" for r in answer["results"]), answer


def _until(what: Callable[[], Any], timeout: float, why: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {why}")


def _trainer(d: RunningDaemon) -> psutil.Process | None:
    for child in psutil.Process(d.proc.pid).children(recursive=True):
        try:
            if "insan_edge.training.worker" in " ".join(child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def _run(d: RunningDaemon, run_id: int) -> dict[str, Any]:
    runs = d.client.request("GET", f"/v1/families/{FAMILY}/model")["runs"]
    return next(r for r in runs if r["id"] == run_id)


def _finished(d: RunningDaemon, run_id: int, timeout: float = 240) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        run = _run(d, run_id)
        return run if run["status"] in ("promoted", "refused", "failed") else None

    return _until(ended, timeout, f"run {run_id} to end:\n{d.log()[-3000:]}", every=0.5)  # type: ignore[no-any-return]


def _train_now(d: RunningDaemon) -> int:
    answer = d.client.request("POST", f"/v1/families/{FAMILY}/train", {"now": True})
    return int(answer["run"]["id"])


def _stepping(d: RunningDaemon, run_id: int, past: int) -> bool:
    run = _run(d, run_id)
    return run["status"] == "running" and (run["step"] or 0) >= past


def _state(proc: psutil.Process) -> str:
    try:
        return str(proc.status())
    except psutil.NoSuchProcess:
        return "gone"


@contextlib.contextmanager
def _slow_request(d: RunningDaemon) -> Iterator[dict[str, Any]]:
    """A recommendation request that is in flight for as long as the block runs.

    Its headers go first, its body when the block ends (a request the model takes seconds over,
    as the embedded Gemma does, made deterministic); the answer is put in the yielded dict.
    """
    body = json.dumps(ASK).encode()
    head = (
        f"POST /v1/families/{FAMILY}/recommendations HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    result: dict[str, Any] = {}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(60)
        sock.connect(str(d.socket))
        sock.sendall(head.encode())
        yield result
        sock.sendall(body)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    status_line, _, rest = raw.partition(b"\r\n")
    result["status"] = int(status_line.split()[1])
    result["answer"] = json.loads(rest.partition(b"\r\n\r\n")[2])


def _version_sha(d: RunningDaemon, run: dict[str, Any]) -> str:
    versions = d.client.request("GET", f"/v1/families/{FAMILY}/model")["versions"]
    return str(next(v for v in versions if v["version"] == run["version"])["sha256"])


def test_a_request_pauses_the_run_within_a_second_and_it_resumes_to_the_same_adapter(
    daemon_factory, trainable_model, tmp_path
):  # type: ignore[no-untyped-def]
    # Uninterrupted, for reference.
    quiet = daemon_factory(_config(trainable_model, tmp_path / "a"), sub="a", timeout=120)
    _ingest(quiet)
    reference = _finished(quiet, _train_now(quiet))
    assert reference["status"] == "promoted", reference
    assert reference["attempts"] == 1
    reference_sha = _version_sha(quiet, reference)
    quiet.stop()

    # Paused by a request, then (grace 0) checkpointed and stopped, then resumed. The same box
    # key gives the same event hashes, so the same held-out split.
    (tmp_path / "b" / "state").mkdir(parents=True)
    shutil.copy2(quiet.state_dir / "box.key", tmp_path / "b" / "state" / "box.key")
    d = daemon_factory(_config(trainable_model, tmp_path / "b", pause_grace_seconds=0), sub="b")
    _ingest(d)
    run_id = _train_now(d)
    _until(lambda: _stepping(d, run_id, 3), 120, "the trainer to make progress")
    trainer = _trainer(d)
    assert trainer is not None and _state(trainer) != psutil.STATUS_STOPPED

    with _slow_request(d) as answer:
        asked = time.monotonic()
        _until(lambda: _state(trainer) == psutil.STATUS_STOPPED, 1.0, "the trainer to pause")
        yielded = time.monotonic() - asked
        # Paused past the grace (0 s): it checkpoints and exits; no new run while we wait.
        _until(lambda: _run(d, run_id)["status"] == "stopped", 30, "a checkpoint and stop")
        time.sleep(0.5)
        assert _run(d, run_id)["status"] == "stopped" and _trainer(d) is None
    assert answer["status"] == 200 and answer["answer"]["items"], answer

    final = _finished(d, run_id)
    assert final["status"] == "promoted", final
    assert final["attempts"] >= 2, final  # it was stopped and started again
    log = d.log()
    assert "trainer.paused" in log and "trainer.stopping" in log
    print(f"\nthe trainer yielded {yielded * 1000:.0f} ms after the request was sent")
    # The resumed run trained the very same adapter as the run nobody interrupted.
    assert _version_sha(d, final) == reference_sha
    assert final["step"] == reference["step"], (final, reference)


def test_a_paused_run_continues_when_the_request_is_done(daemon_factory, trainable_model, tmp_path):  # type: ignore[no-untyped-def]
    d = daemon_factory(_config(trainable_model, tmp_path))
    _ingest(d)
    run_id = _train_now(d)
    _until(lambda: _stepping(d, run_id, 3), 120, "the trainer to make progress")
    trainer = _trainer(d)
    assert trainer is not None
    with _slow_request(d) as answer:
        _until(lambda: _state(trainer) == psutil.STATUS_STOPPED, 1.0, "the trainer to pause")
        time.sleep(1.0)
        assert _state(trainer) == psutil.STATUS_STOPPED  # held while the request is served
        assert d.client.status()["training"]["state"] == "paused"
    assert answer["status"] == 200
    # Continued by the same process once the request is answered (SIGCONT).
    _until(lambda: _state(trainer) != psutil.STATUS_STOPPED, 2, "the trainer to continue")
    assert _trainer(d) is not None and _trainer(d).pid == trainer.pid  # type: ignore[union-attr]
    status = d.client.status()["training"]
    assert status["state"] in ("running", "evaluating", "idle"), status
    final = _finished(d, run_id)
    assert final["status"] == "promoted" and final["attempts"] == 1, final
    answer = d.client.recommend(FAMILY, {**ASK, "context": {"time_of_day": "evening"}})
    assert answer["model"]["version"] == "v1" and answer["model"]["adapter"]
    [shown] = [f for f in d.client.status()["families"] if f["id"] == FAMILY]
    assert shown["model"] == {"version": "v1", "adapter": answer["model"]["adapter"]}

    # What a parent sees and does from the command line.
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "insan_edge.cli", *args, "--socket", str(d.socket)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    listed = cli("models")
    assert listed.returncode == 0 and "family testfam: serving v1" in listed.stdout, listed
    assert "* v1" in listed.stdout and "promoted" in listed.stdout
    every = d.client.request("GET", "/v1/models")
    [fam] = every["families"]
    active = fam["active"]
    assert active["version"] == 1 and active["preference_accuracy"] is not None
    assert active["safety_score"] is not None and fam["last_update"]
    valid = cli("models", "validate")
    assert valid.returncode == 0 and "testfam v1 (active): ok" in valid.stdout, valid
    status = cli("status")
    assert status.returncode == 0 and "training: idle" in status.stdout, status
    # The run reported its device; this machine has no GPU, so every part is on the CPU.
    assert "devices: serving cpu (n_gpu_layers is 0 in the config)" in status.stdout, status
    assert ", training cpu" in status.stdout, status
    assert d.client.status()["devices"]["training"] == {
        "device": "cpu",
        "reason": "reported by the last run",
    }
    assert cli("models", "rollback").returncode != 0  # needs --family
    back = cli("models", "rollback", "--family", FAMILY)
    assert back.returncode == 0 and "now serving base" in back.stdout, back
    assert d.client.recommend(FAMILY, {**ASK, "count": 2})["model"]["version"] == "base"
    gone = cli("models", "delete", "--family", FAMILY)
    assert gone.returncode == 0 and "versions removed" in gone.stdout, gone
    assert d.client.request("GET", f"/v1/families/{FAMILY}/model")["versions"] == []
    unknown = cli("train", "--family", "nobody")
    assert unknown.returncode != 0 and "nobody" in unknown.stderr, unknown


def test_a_trainer_out_of_memory_leaves_the_daemon_serving(
    daemon_factory, trainable_model, tmp_path
):  # type: ignore[no-untyped-def]
    # The kernel's OOM killer (the unit's MemoryMax): SIGKILL mid-run. Retried with half the
    # micro-batch, from scratch.
    d = daemon_factory(_config(trainable_model, tmp_path / "k"), sub="k")
    _ingest(d)
    run_id = _train_now(d)
    _until(lambda: _stepping(d, run_id, 2), 120, "the trainer to make progress")
    trainer = _trainer(d)
    assert trainer is not None
    trainer.kill()
    retry = _until(lambda: (r := _run(d, run_id))["micro_batch_size"] == 1 and r, 10, "a retry")
    assert "out of memory" in retry["reason"] and "retrying with 1" in retry["reason"]
    assert d.client.health()["status"] == "ok"
    assert d.client.recommend(FAMILY, ASK)["items"]
    final = _finished(d, run_id)
    assert final["status"] == "promoted" and final["attempts"] == 2, final
    d.stop()

    # The trainer's own cap (RLIMIT_DATA): too small for even its imports.
    d = daemon_factory(_config(trainable_model, tmp_path / "c", max_training_memory_mb=300), sub="c")  # fmt: skip
    _ingest(d)
    final = _finished(d, _train_now(d))
    assert final["status"] == "failed" and "out of memory under the 300 MB" in final["reason"]
    assert d.client.health()["status"] == "ok"
    answer = d.client.recommend(FAMILY, ASK)
    assert answer["items"] and answer["model"]["version"] == "base"
    assert d.client.status()["training"]["state"] == "idle"
