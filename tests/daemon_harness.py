"""Start the real daemon (a subprocess) on a temporary Unix socket, and talk to it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from insan_edge.client import ClientError, LocalClient


def family_config(
    model_path: Path | None, state: Path, socket: Path, **system: Any
) -> dict[str, Any]:
    """A test family with a child whose limits the tests aim at (invented people)."""
    model_settings: dict[str, Any] = {
        "path": str(model_path) if model_path else None,
        "context_length": 1024,
    }
    model_settings.update(system.pop("model", {}))
    # Training stays off unless a test turns it on: a trainer must not start behind its back.
    system.setdefault("training", {"enabled": False})
    # The topic model (an ONNX export per state dir) only where a test is about it.
    system.setdefault("safety", {"topic_model": False})
    # The tests written for generation keep generating; catalog tests ask for catalog mode.
    system["recommendations"] = {"mode": "generate", **system.get("recommendations", {})}
    return {
        "system": {
            "preset": "development",
            "paths": {"state_dir": str(state), "socket": str(socket)},
            "model": model_settings,
            **system,
        },
        "families": {
            "testfam": {
                "display_name": "Test family",
                "members": {
                    "pat": {"name": "Pat", "age": 40, "role": "parent"},
                    "kim": {
                        "name": "Kim",
                        "age": 8,
                        "role": "child",
                        "interests": ["drawing", "space"],
                        "avoided_topics": ["spiders"],
                        "safety_level": "strict",
                    },
                },
                "safety": {
                    "max_content_rating": "PG-13",
                    "blocked_topics": ["violence"],
                    "time_restrictions": [
                        {
                            "name": "no screens at night",
                            "days": ["every_day"],
                            "start": "19:00",
                            "end": "07:00",
                            "members": ["kim"],
                            "restricted": ["screen"],
                        }
                    ],
                },
            }
        },
    }


@dataclass
class RunningDaemon:
    proc: subprocess.Popen[bytes]
    config_path: Path
    state_dir: Path
    socket: Path
    log_path: Path
    client: LocalClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = LocalClient(self.socket, timeout=120)

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace")

    def write_config(self, data: dict[str, Any] | str) -> None:
        text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config_path)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"the daemon did not stop within {timeout} s:\n{self.log()}"
            ) from None


def start_daemon(
    tmp: Path,
    config: dict[str, Any] | str,
    env: dict[str, str] | None = None,
    wait: bool = True,
    timeout: float = 60,
    socket: Path | None = None,
) -> RunningDaemon:
    """Write ``config`` to ``tmp/config.yaml`` and run ``insan-edge run`` on it."""
    tmp.mkdir(parents=True, exist_ok=True)
    config_path = tmp / "config.yaml"
    text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
    config_path.write_text(text)
    state, socket = tmp / "state", socket or tmp / "api.sock"
    log_path = tmp / "daemon.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "insan_edge.cli", "run", "--config", str(config_path),
             "--state-dir", str(state), "--socket", str(socket)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )  # fmt: skip
    daemon = RunningDaemon(proc, config_path, state, socket, log_path)
    if wait:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the daemon exited with {proc.returncode}:\n{daemon.log()}")
            try:
                daemon.client.health()
                break
            except ClientError:
                if time.monotonic() > deadline:
                    daemon.stop(signal.SIGKILL)
                    raise AssertionError(
                        f"the daemon did not answer in {timeout} s:\n{daemon.log()}"
                    ) from None
                time.sleep(0.1)
    return daemon
