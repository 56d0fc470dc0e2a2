"""write_atomic: the whole new file or the old one, never a part, and no temporary left over."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from insan_edge.files import write_atomic


def test_writes_and_replaces_with_the_mode_asked(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    write_atomic(path, '{"a": "é"}')
    assert path.read_text("utf-8") == '{"a": "é"}'
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    write_atomic(path, b"\x00secret", mode=0o600)
    assert path.read_bytes() == b"\x00secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.json"]


def test_a_failed_replace_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    # A directory in the way makes the rename fail after the data was written.
    blocked = tmp_path / "result.json"
    blocked.mkdir()
    (blocked / "inside").write_text("kept")
    with pytest.raises(OSError):
        write_atomic(blocked, "new")
    assert (blocked / "inside").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "pause.json"
    path.write_text("old")
    with pytest.raises(TypeError):
        write_atomic(path, 42)  # type: ignore[arg-type]
    assert path.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["pause.json"]
