"""The LAN gateway's door: bearer tokens, scopes by route, and rate limits.

The Unix socket is trusted (its file mode decides who may connect); requests that arrive over
TCP pass this middleware first. A caller without a valid token learns nothing: every path but
``/v1/health`` and ``/v1/openapi.json`` answers 401 alike, whether the route or the family
exists or not.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from insan_edge.config.lan import LanSettings
from insan_edge.errors import ForbiddenError, RateLimitedError, UnauthorizedError
from insan_edge.logs import kv
from insan_edge.metrics import RequestMetrics
from insan_edge.tokens import Grant, Tokens

log = logging.getLogger("insan_edge.gateway")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
GRANT = web.RequestKey("grant", Grant)
OPEN_ROUTES = frozenset({"health", "openapi"})
SESSION_ROUTES = "dashboard."  # the parents' pages check their own session (insan_edge.dashboard)
MAX_TRACKED = 4096  # addresses and tokens with a bucket; the fullest are dropped beyond it


@dataclass
class Bucket:
    level: float
    at: float

    def take(self, rate_per_s: float, capacity: float, now: float) -> float:
        """0.0 when one request may pass now, else the seconds until it may."""
        self.level = min(capacity, self.level + (now - self.at) * rate_per_s)
        self.at = now
        if self.level >= 1.0:
            self.level -= 1.0
            return 0.0
        return (1.0 - self.level) / rate_per_s

    def peek(self, rate_per_s: float, capacity: float, now: float) -> float:
        level = min(capacity, self.level + (now - self.at) * rate_per_s)
        return 0.0 if level >= 1.0 else (1.0 - level) / rate_per_s


class Limits:
    """Token buckets by key, bounded in number."""

    def __init__(self) -> None:
        self.buckets: dict[str, Bucket] = {}

    def _bucket(self, key: str, capacity: float, now: float) -> Bucket:
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= MAX_TRACKED:
                fullest = sorted(self.buckets, key=lambda k: -self.buckets[k].level)
                for k in fullest[: MAX_TRACKED // 4]:
                    del self.buckets[k]
            bucket = self.buckets[key] = Bucket(capacity, now)
        return bucket

    def take(self, key: str, per_minute: float, capacity: float) -> float:
        now = time.monotonic()
        return self._bucket(key, capacity, now).take(per_minute / 60.0, capacity, now)

    def wait(self, key: str, per_minute: float, capacity: float) -> float:
        bucket = self.buckets.get(key)
        now = time.monotonic()
        return 0.0 if bucket is None else bucket.peek(per_minute / 60.0, capacity, now)


def _presented(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _authorize(grant: Grant, request: web.Request) -> None:
    """Route-level scope check; member- and event-level checks happen in the handlers."""
    route = request.match_info.route.name
    family = request.match_info.get("family")
    if route in ("recommendations", "check") and family is not None:
        if not any(s.kind == "recommend" for s in grant.scopes) and not grant.is_admin:
            raise ForbiddenError(f"the token of {grant.app!r} may not ask for suggestions")
        # May this token ask for anyone in this family? The exact members are checked later.
        if not (grant.may_recommend(family) or _has_members_of(grant, family)):
            raise ForbiddenError(
                f"the token of {grant.app!r} may not ask for suggestions in {family!r}"
            )
        return
    if route == "interactions":
        grant.require_ingest([None])
        return
    grant.require_admin()  # every other route, and any route added later, is the parents'


def _has_members_of(grant: Grant, family: str) -> bool:
    return any(s.kind == "recommend" and s.family == family for s in grant.scopes)


def gateway_middleware(
    tokens: Tokens, settings: Callable[[], LanSettings], metrics: RequestMetrics
) -> Middleware:
    failures = Limits()
    rates = Limits()

    @web.middleware
    async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.name
        if route in OPEN_ROUTES or (route or "").startswith(SESSION_ROUTES):
            return await handler(request)
        lan = settings()
        peer = request.remote or "?"
        per_minute = float(lan.auth_failures_per_minute)
        waiting = failures.wait(peer, per_minute, per_minute)
        if waiting > 0:
            metrics.limited("auth_failures")
            raise RateLimitedError(
                "too many failed attempts from this address; wait before trying again",
                math.ceil(waiting),
            )
        presented = _presented(request)
        try:
            if presented is None:
                raise UnauthorizedError("missing")
            grant = tokens.check(presented)
        except UnauthorizedError as exc:
            reason = exc.message
            metrics.auth_failed(reason)
            failures.take(peer, per_minute, per_minute)
            log.warning(kv("lan.auth_failed", peer=peer, reason=reason, method=request.method))
            raise UnauthorizedError(
                "this request needs a valid app token: 'Authorization: Bearer <token>' "
                "(a parent makes one with 'insan-edge tokens add')"
            ) from None
        waiting = rates.take(grant.token_id, float(lan.requests_per_minute), float(lan.burst))
        if waiting > 0:
            metrics.limited("token")
            log.info(kv("lan.rate_limited", token=grant.token_id, app=grant.app))
            raise RateLimitedError(
                f"the token of {grant.app!r} is over its limit of "
                f"{lan.requests_per_minute} requests a minute",
                math.ceil(waiting),
            )
        if request.match_info.http_exception is None:  # an unknown route stays a 404
            _authorize(grant, request)
        request[GRANT] = grant
        return await handler(request)

    return gate
