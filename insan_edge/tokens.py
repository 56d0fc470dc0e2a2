"""App tokens for the LAN gateway: scopes, hashed storage, checking and revocation.

A token reads ``iet_<id>_<secret>``. Only the SHA-256 of the secret is stored (the secret is
256 random bits, so a plain hash is enough); the whole token is shown once, when it is made.

Scopes: ``admin`` (everything), ``ingest`` or ``ingest:FAMILY`` (post interactions),
``recommend:FAMILY``, ``recommend:FAMILY/MEMBER`` or ``recommend:*`` (ask for suggestions).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from insan_edge.config import Config
from insan_edge.errors import BadRequestError, ForbiddenError, NotFoundError, UnauthorizedError
from insan_edge.ingest_tables import utcnow
from insan_edge.logs import kv
from insan_edge.scopes import APP_PATTERN, Scope, parse_scope
from insan_edge.store import Store

log = logging.getLogger("insan_edge.tokens")
PREFIX = "iet_"
_ID = re.compile(r"^[0-9a-f]{8}$")
_APP = re.compile(APP_PATTERN)
LAST_USED_EVERY = 60.0  # seconds between writes of a token's last use


@dataclass(frozen=True)
class Grant:
    """What one presented token may do."""

    token_id: str
    app: str
    scopes: tuple[Scope, ...]

    @property
    def is_admin(self) -> bool:
        return any(s.kind == "admin" for s in self.scopes)

    def require_admin(self) -> None:
        if not self.is_admin:
            raise ForbiddenError(f"the token of {self.app!r} does not have the admin scope")

    def may_recommend(self, family: str, members: Collection[str] | None = None) -> bool:
        """``members`` None asks about the family as a whole (every member)."""
        if self.is_admin:
            return True
        mine = [s for s in self.scopes if s.kind == "recommend" and s.family in (None, family)]
        if any(s.member is None for s in mine):
            return True
        allowed = {s.member for s in mine}
        return members is not None and bool(members) and set(members) <= allowed

    def require_recommend(self, family: str, members: Collection[str] | None = None) -> None:
        if not self.may_recommend(family, members):
            who = "the whole family" if not members else ", ".join(sorted(members))
            raise ForbiddenError(
                f"the token of {self.app!r} may not ask for suggestions for {who} in {family!r}"
            )

    def may_ingest(self, family: str | None) -> bool:
        """``family`` None: any family at all (the route itself)."""
        if self.is_admin:
            return True
        return any(
            s.kind == "ingest" and (s.family is None or family is None or s.family == family)
            for s in self.scopes
        )

    def require_ingest(self, families: Iterable[str | None]) -> None:
        for family in families:
            if not self.may_ingest(family):
                raise ForbiddenError(
                    f"the token of {self.app!r} may not send interactions for {family!r}"
                    if family
                    else f"the token of {self.app!r} may not send interactions"
                )


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class Tokens:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._used: dict[str, float] = {}

    def add(self, app: str, scopes: Iterable[str], config: Config | None = None) -> dict[str, Any]:
        """Make a token; the answer holds the only copy of the secret. With ``config``, every
        family and member a scope names must exist in it (a typo is an error, not a dead token)."""
        app = app.strip()
        if not _APP.match(app):
            raise BadRequestError(
                "an app name is 1 to 64 letters, digits, spaces, dots, dashes or underscores"
            )
        parsed = list(dict.fromkeys(parse_scope(s) for s in scopes))
        if not parsed:
            raise BadRequestError("give the token at least one scope (--scope)")
        for scope in parsed:
            if config is not None and scope.family is not None:
                config.family(scope.family, [scope.member] if scope.member else [])
        token_id = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)
        row = {
            "id": token_id,
            "app": app,
            "scopes": json.dumps([str(s) for s in parsed]),
            "secret_sha256": _hash(secret),
            "created_at": utcnow(),
        }
        with self.store.transaction() as db:
            db.table("tokens").insert(row)
        log.info(kv("lan.token_added", id=token_id, app=app, scopes=row["scopes"]))
        return {**self._public(row), "token": f"{PREFIX}{token_id}_{secret}"}

    def list(self) -> list[dict[str, Any]]:
        rows = self.store.read("SELECT * FROM tokens ORDER BY created_at")
        return [self._public(r) for r in rows]

    def revoke(self, token_id: str) -> dict[str, Any]:
        with self.store.transaction() as db:
            rows = list(db.table("tokens").rows_where("id = ?", [token_id]))
            if not rows:
                raise NotFoundError(f"no token with id {token_id!r} (see 'insan-edge tokens list')")
            if rows[0]["revoked_at"] is None:
                db.table("tokens").update(token_id, {"revoked_at": utcnow()})
                rows = list(db.table("tokens").rows_where("id = ?", [token_id]))
                log.info(kv("lan.token_revoked", id=token_id, app=rows[0]["app"]))
        return self._public(rows[0])

    def check(self, presented: str) -> Grant:
        """The grant of a presented token; UnauthorizedError (with a reason) otherwise."""
        if not presented.startswith(PREFIX) or len(presented) < len(PREFIX) + 10:
            raise UnauthorizedError("malformed")
        token_id, sep, secret = presented[len(PREFIX) :].partition("_")
        if not sep or not _ID.match(token_id):
            raise UnauthorizedError("malformed")
        rows = self.store.read("SELECT * FROM tokens WHERE id = ?", [token_id])
        if not rows or not hmac.compare_digest(rows[0]["secret_sha256"], _hash(secret)):
            raise UnauthorizedError("unknown")
        row = rows[0]
        if row["revoked_at"] is not None:
            raise UnauthorizedError("revoked")
        now = time.monotonic()
        if now - self._used.get(token_id, -LAST_USED_EVERY) >= LAST_USED_EVERY:
            self._used[token_id] = now
            with self.store.transaction() as db:
                db.table("tokens").update(token_id, {"last_used_at": utcnow()})
        scopes = tuple(parse_scope(s) for s in json.loads(row["scopes"]))
        return Grant(token_id, row["app"], scopes)

    @staticmethod
    def _public(row: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": row["id"],
            "app": row["app"],
            "scopes": json.loads(row["scopes"]),
            "created_at": row["created_at"],
            "last_used_at": row.get("last_used_at"),
            "revoked_at": row.get("revoked_at"),
        }
