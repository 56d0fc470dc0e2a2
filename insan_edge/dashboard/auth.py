"""Who may see the dashboard: a parent passphrase (scrypt), sessions and CSRF tokens.

A *parent* is whoever holds a token with the ``admin`` scope (the scope that already governs
everything the API lets parents do) or the passphrase set with ``insan-edge dashboard passwd``.
App tokens (``ingest``, ``recommend:*``) get nothing. Sessions live in the daemon's memory (a
restart logs everyone out); each has its own CSRF token, checked on every POST.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from insan_edge.errors import BadRequestError
from insan_edge.files import write_atomic

FILE = "dashboard-passphrase.json"
MIN_LENGTH = 10
# scrypt: 2**15 x 8 x 128 bytes = 32 MiB and about 0.1 s a try: slow for a guesser, fine here.
N, R, P = 2**15, 8, 1
MAX_SESSIONS = 256


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        passphrase.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=2 * 128 * r * n + 2**20,
        dklen=32,
    )  # fmt: skip


def set_passphrase(state_dir: Path, passphrase: str) -> Path:
    if len(passphrase) < MIN_LENGTH:
        raise BadRequestError(f"use a passphrase of at least {MIN_LENGTH} characters")
    salt = os.urandom(16)
    record = {"kdf": "scrypt", "n": N, "r": R, "p": P, "salt": salt.hex(),
              "hash": _derive(passphrase, salt, N, R, P).hex()}  # fmt: skip
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / FILE
    write_atomic(path, json.dumps(record), mode=0o600)
    return path


def check_passphrase(state_dir: Path, passphrase: str) -> bool:
    try:
        record = json.loads((state_dir / FILE).read_text("utf-8"))
        salt = bytes.fromhex(record["salt"])
        want = bytes.fromhex(record["hash"])
        n, r, p = int(record["n"]), int(record["r"]), int(record["p"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if len(passphrase) > 1024:
        return False
    return hmac.compare_digest(_derive(passphrase, salt, n, r, p), want)


@dataclass
class Session:
    who: str
    csrf: str
    expires: float


class Sessions:
    def __init__(self) -> None:
        self._by_id: dict[str, Session] = {}

    def open(self, who: str, minutes: int) -> tuple[str, Session]:
        now = time.monotonic()
        self._by_id = {k: s for k, s in self._by_id.items() if s.expires > now}
        if len(self._by_id) >= MAX_SESSIONS:  # the oldest go first
            for key in sorted(self._by_id, key=lambda k: self._by_id[k].expires)[:32]:
                del self._by_id[key]
        sid = secrets.token_urlsafe(32)
        session = Session(who, secrets.token_urlsafe(32), now + minutes * 60)
        self._by_id[sid] = session
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        session = self._by_id.get(sid)
        if session is None or session.expires <= time.monotonic():
            self._by_id.pop(sid, None)
            return None
        return session

    def close(self, sid: str | None) -> None:
        if sid:
            self._by_id.pop(sid, None)


def csrf_ok(session: Session, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(session.csrf, presented or "")
