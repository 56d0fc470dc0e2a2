"""Shared pytest fixtures."""

from __future__ import annotations

import pathlib

import pytest
from tinymodel import build_tiny_gguf


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A tiny random llama GGUF model (about 0.5 MB), built once per test session."""
    return build_tiny_gguf(tmp_path_factory.mktemp("tiny_model") / "tiny.gguf")


@pytest.fixture
def daemon_factory(tmp_path: pathlib.Path):  # type: ignore[no-untyped-def]
    """Start real daemons in ``tmp_path``; each is stopped (and must stop cleanly) at the end."""
    from daemon_harness import RunningDaemon, start_daemon

    started: list[RunningDaemon] = []

    def start(config, sub: str = "d", **kwargs):  # type: ignore[no-untyped-def]
        daemon = start_daemon(tmp_path / sub, config, **kwargs)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.proc.poll() is None:
            code = daemon.stop()
            assert code == 0, f"the daemon exited with {code}:\n{daemon.log()}"
