"""The inbox tailer: JSON-lines files in, scrubbed rows out, each event stored exactly once.

Files are tracked by inode, with their offset kept in SQLite and written in the same
transaction as the rows read up to it: a crash at any point either keeps a batch whole or
re-reads it whole. A renamed (rotated) file keeps its inode and is read to its end under its
new name; a file that shrank, or whose first line changed, is read again from the start. A last
line without its newline is left for later. A bad line is quarantined (reason, size, hash; never
its bytes) and the stream goes on. No asyncio here: the daemon calls ``poll`` from a thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import logging
import os
import re
import select
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from insan_edge.config import Config
from insan_edge.events import EventRejected, InteractionEvent, parse_event
from insan_edge.ingest_tables import IngestOffset, Quarantined
from insan_edge.logs import kv
from insan_edge.store import Store

log = logging.getLogger(__name__)

Scrub = Callable[[str, list[InteractionEvent]], list[dict[str, Any]]]

BATCH_LINES = 256
BATCH_BYTES = 1024 * 1024
CHUNK = 64 * 1024
HEAD_BYTES = 4096
GONE_AFTER_S = 10.0  # a file missing from the listing this long has its offset dropped
# x.jsonl, and rotated names that keep reading until drained: x.jsonl.1, x.jsonl-20250101
_NAME = re.compile(r".+\.jsonl([.-][0-9]+)?")


def _no_scrubber(family_id: str, events: list[InteractionEvent]) -> list[dict[str, Any]]:
    raise RuntimeError("no scrubber configured: inbox events cannot be stored unscrubbed")


@dataclass(frozen=True)
class _Line:
    offset: int  # where the line starts
    size: int  # bytes, newline included
    data: bytes | None  # None: longer than the limit, skipped unread
    sha256: str


def _lines(fd: int, pos: int, max_bytes: int) -> Iterator[_Line]:
    """Complete lines from ``pos``; stops before a last line that has no newline yet.

    A line longer than ``max_bytes`` is hashed chunk by chunk and never held whole.
    """
    buf = bytearray()
    start = read_pos = pos
    skipping: Any = None  # a hashlib object while skipping an over-long line
    while True:
        chunk = os.pread(fd, CHUNK, read_pos)
        if not chunk:
            return
        read_pos += len(chunk)
        if skipping is not None:
            nl = chunk.find(b"\n")
            if nl < 0:
                skipping.update(chunk)
                continue
            skipping.update(chunk[: nl + 1])
            end = read_pos - len(chunk) + nl + 1
            yield _Line(start, end - start, None, skipping.hexdigest())
            skipping, start = None, end
            buf = bytearray(chunk[nl + 1 :])
        else:
            buf += chunk
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) > max_bytes + 1:  # +1: a '\r' before the newline is not content
                    skipping = hashlib.sha256(buf)
                    buf = bytearray()
                break
            line = bytes(buf[: nl + 1])
            del buf[: nl + 1]
            yield _Line(start, len(line), line, "")
            start += len(line)


def _head_hash(fd: int, offset: int) -> str:
    """Hash of the first line (at most HEAD_BYTES) within the part already read; '' for none."""
    head = os.pread(fd, min(offset, HEAD_BYTES), 0) if offset > 0 else b""
    nl = head.find(b"\n")
    return hashlib.sha256(head[: nl + 1] if nl >= 0 else head).hexdigest() if head else ""


def _order(name: str) -> tuple[int, int, str]:
    """Rotated files first, oldest (highest number) first, then the live ones."""
    match = _NAME.fullmatch(name)
    suffix = match.group(1) if match else None
    return (1, 0, name) if not suffix else (0, -int(suffix[1:]), name)


class InboxTailer:
    def __init__(
        self,
        store: Store,
        inbox: Path,
        get_config: Callable[[], Config],
        scrub: Scrub | None,
        max_event_bytes: int,
    ) -> None:
        self.store = store
        self.inbox = inbox
        self.get_config = get_config
        self.scrub: Scrub = scrub or _no_scrubber
        self.max_event_bytes = max_event_bytes
        self._missing: dict[int, float] = {}
        self._stopping = False
        try:
            inbox.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning(kv("ingest.no_inbox", path=inbox, error=exc.strerror))
        self._watch = _Watch(inbox)

    def close(self) -> None:
        self._watch.close()

    def wait(self, timeout: float) -> None:
        """Sleep up to ``timeout`` s; returns early when the inbox changes (inotify) or on wake()."""
        self._watch.wait(timeout)

    def wake(self) -> None:
        self._watch.wake()

    def request_stop(self) -> None:
        """From another thread: ``poll`` returns after the batch in hand, ``wait`` at once."""
        self._stopping = True
        self._watch.wake()

    def poll(self) -> int:
        """Read every inbox file to its last complete line; returns the events stored."""
        try:
            with os.scandir(self.inbox) as listing:
                entries = sorted(
                    (e for e in listing if _NAME.fullmatch(e.name)), key=lambda e: _order(e.name)
                )
        except FileNotFoundError:
            entries = []
        config = self.get_config()
        offsets = self.store.offsets()
        seen: set[int] = set()
        stored = 0
        for entry in entries:
            if self._stopping:
                return stored  # the rest is read next time (and nothing unseen is forgotten)
            try:
                fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                continue  # gone, or a symlink: not followed
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_ino in seen:
                    continue
                seen.add(st.st_ino)
                known = offsets.get(st.st_ino)
                stored += self._read_file(fd, entry.name, st.st_ino, st.st_size, known, config)
            finally:
                os.close(fd)
        self._forget_gone(set(offsets) - seen)
        return stored

    def _forget_gone(self, missing: set[int]) -> None:
        # A file renamed while the directory is listed can be missed once: wait before forgetting.
        now = time.monotonic()
        for inode in list(self._missing):
            if inode not in missing:
                del self._missing[inode]
        for inode in missing:
            self._missing.setdefault(inode, now)
        gone = [i for i, since in self._missing.items() if now - since >= GONE_AFTER_S]
        if gone:
            self.store.forget_offsets(gone)
            for inode in gone:
                del self._missing[inode]

    def _read_file(
        self,
        fd: int,
        name: str,
        inode: int,
        size: int,
        known: IngestOffset | None,
        config: Config,
    ) -> int:
        pos = 0
        if known is not None:
            pos = known.offset
            why = (
                "truncated"
                if size < pos
                else "replaced"
                if _head_hash(fd, pos) != known.head_hash
                else ""
            )
            if why:
                log.warning(kv("ingest.restart_file", file=name, why=why, offset=pos, size=size))
                pos = 0
                self.store.ingest_batch(
                    path=name, inode=inode, head_hash="", new_offset=0, rows=[], rejects=[]
                )
            elif known.path != name:
                log.info(kv("ingest.renamed", file=known.path, now=name, offset=pos))
        if pos >= size:
            return 0
        stored = 0
        lines = _lines(fd, pos, self.max_event_bytes)
        while True:
            batch: list[_Line] = []
            nbytes = 0
            for line in lines:
                batch.append(line)
                nbytes += line.size if line.data is not None else 0
                if len(batch) >= BATCH_LINES or nbytes >= BATCH_BYTES:
                    break
            if not batch or self._stopping:
                return stored
            stored += self._store_batch(fd, name, inode, batch, config)

    def _store_batch(
        self, fd: int, name: str, inode: int, batch: list[_Line], config: Config
    ) -> int:
        rejects: list[Quarantined] = []
        by_family: dict[str, list[tuple[int, InteractionEvent]]] = {}

        def reject(line: _Line, reason: str, message: str) -> None:
            digest = line.sha256 or hashlib.sha256(line.data or b"").hexdigest()
            rejects.append(
                Quarantined("inbox", reason, message, digest, line.size, name, line.offset)
            )

        for index, line in enumerate(batch):
            if line.data is None:
                reject(
                    line,
                    "too_large",
                    f"the line is {line.size} bytes; at most {self.max_event_bytes}",
                )
                continue
            raw = line.data.rstrip(b"\r\n")
            if not raw.strip():
                continue  # blank lines are not events
            if b"\x00" in raw:
                reject(line, "binary", "the line holds NUL bytes: binary data, not JSON text")
                continue
            try:
                event = parse_event(raw, config, self.max_event_bytes)
            except EventRejected as exc:
                reject(line, exc.reason, exc.message)
                continue
            by_family.setdefault(event.family, []).append((index, event))
        rows: list[tuple[int, dict[str, Any]]] = []
        for family_id, pairs in by_family.items():
            scrubbed = self.scrub(family_id, [event for _, event in pairs])
            if len(scrubbed) != len(pairs):
                raise RuntimeError(
                    f"the scrubber returned {len(scrubbed)} rows for {len(pairs)} events"
                )
            rows.extend(zip((index for index, _ in pairs), scrubbed, strict=True))
        rows.sort(key=lambda pair: pair[0])
        new_offset = batch[-1].offset + batch[-1].size
        added = self.store.ingest_batch(
            path=name,
            inode=inode,
            head_hash=_head_hash(fd, new_offset),
            new_offset=new_offset,
            rows=[row for _, row in rows],
            rejects=rejects,
        )
        for q in rejects:
            log.warning(
                kv("ingest.quarantined", file=name, offset=q.offset, reason=q.reason, size=q.size)
            )
        return added


class _Watch:
    """inotify on the inbox directory through libc when it is there; otherwise plain sleeping."""

    _MASK = (
        0x2 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200 | 0x4
    )  # modify, close_write, moves, create, delete, attrib

    def __init__(self, inbox: Path) -> None:
        self._fd = -1
        self._pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd >= 0 and libc.inotify_add_watch(fd, os.fsencode(inbox), self._MASK) < 0:
                os.close(fd)
                fd = -1
            self._fd = fd
        except (OSError, AttributeError):
            self._fd = -1

    @property
    def active(self) -> bool:
        return self._fd >= 0

    def wait(self, timeout: float) -> None:
        fds = [self._pipe[0]] + ([self._fd] if self._fd >= 0 else [])
        ready, _, _ = select.select(fds, [], [], timeout)
        for fd in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(fd, 65536):
                    pass

    def wake(self) -> None:
        if self._pipe[1] >= 0:  # closed: nothing waits any more
            with contextlib.suppress(BlockingIOError):
                os.write(self._pipe[1], b"x")

    def close(self) -> None:
        for fd in (*self._pipe, self._fd):
            if fd >= 0:
                os.close(fd)
        self._fd = -1
        self._pipe = (-1, -1)
