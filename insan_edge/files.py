"""Files replaced whole or not at all: ``write_atomic``.

A file the box keeps (a job, its result, a key, a certificate, the pause flag, the topic
model's export) is written to a temporary file beside it, flushed to disk, then renamed over
it, so a killed process or a full disk leaves the old file (or none), never half of one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8), readable per ``mode`` from its
    first byte. On any error the temporary file is removed and ``path`` is as it was."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # The rename itself reaches the disk with the directory (best effort: not every
    # filesystem lets a directory be opened for that).
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
