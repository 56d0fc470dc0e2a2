"""The local HTTP/1.1 + JSON API (``/v1``), served on a Unix socket by the daemon.

Every error leaves as ``{"error": {"code": ..., "message": ...}}`` with its status. Bodies are
capped by the config's ``api.max_body_bytes`` whether or not the client sends a length.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import ValidationError

from insan_edge import __version__
from insan_edge.checker import Checker, audit_since
from insan_edge.contracts import CheckRequest, RecommendationRequest, TokenRequest
from insan_edge.errors import BadRequestError, InsanEdgeError, UnauthorizedError
from insan_edge.gateway import GRANT
from insan_edge.logs import kv
from insan_edge.metrics import RequestMetrics
from insan_edge.openapi import openapi_document
from insan_edge.personalization import Personalization
from insan_edge.recommender import Recommender
from insan_edge.tokens import Grant, Tokens

log = logging.getLogger("insan_edge.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HARD_BODY_LIMIT = 16 * 1024 * 1024
MAX_EVENTS_PER_POST = 1000
CHECK_MAX_BODY = 256 * 1024  # 100 items with long descriptions fit


@dataclass
class ApiBackend:
    """What the API needs from the daemon, and nothing more."""

    recommender: Recommender
    status: Callable[[], dict[str, Any]]
    max_body_bytes: Callable[[], int]
    submit_events: Callable[[list[Any]], Awaitable[dict[str, Any]]]
    forget: Callable[[str, str | None], Awaitable[dict[str, Any]]]
    export: Callable[[str], Awaitable[dict[str, Any]]]
    quarantine: Callable[[int], list[dict[str, Any]]]
    models: Personalization
    tokens: Tokens
    add_token: Callable[[str, list[str]], dict[str, Any]]
    request_metrics: RequestMetrics
    metrics_page: Callable[[], str]
    alerts: Callable[[], list[dict[str, Any]]]
    acknowledge: Callable[[int], dict[str, Any]]
    # Adds the parents' dashboard routes to the gated TCP apps (LAN, localhost); never the socket.
    pages: Callable[[web.Application], None] | None = None


# App traffic that means the family is using the box: training pauses for it.
_ACTIVITY = {"recommendations", "interactions"}


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        msg = str(err["msg"]).replace("Input should be", "should be")
        if err["type"] == "extra_forbidden":
            msg = "is not a known field"
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except InsanEdgeError as exc:
        if exc.status >= 500:
            log.error(kv("api.error", path=request.path, code=exc.code, message=exc.message))
        headers = {}
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        if isinstance(exc, UnauthorizedError):
            headers["WWW-Authenticate"] = 'Bearer realm="insan-edge"'
        return _error(exc.status, exc.code, exc.message, headers or None)
    except ValidationError as exc:
        return _error(422, "invalid_request", _validation_message(exc))
    except web.HTTPException as exc:
        if exc.status == 413:
            return _error(413, "payload_too_large", "the request body is too large")
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        message = {
            404: f"no such route: {request.path}",
            405: f"{request.method} is not allowed on {request.path}",
        }.get(exc.status, exc.reason)
        return _error(exc.status, code, message)
    except Exception:
        log.exception(kv("api.crash", path=request.path))
        return _error(500, "internal_error", "something went wrong inside insan-edge; see its log")


async def read_json(request: web.Request, limit: int) -> Any:
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _BadJson(f"the body is not valid JSON: {exc}") from None


class _BadJson(InsanEdgeError):
    code = "bad_json"
    status = 400


def _grant(request: web.Request) -> Grant | None:
    """The LAN caller's grant; None on the trusted Unix socket."""
    return request.get(GRANT)


def _event_family(event: Any) -> str | None:
    """The family an event names; None when it names none (it will be quarantined)."""
    family = event.get("family") if isinstance(event, dict) else None
    return family if isinstance(family, str) else None


def build_app(
    backend: ApiBackend, via: str = "socket", gate: Middleware | None = None
) -> web.Application:
    @web.middleware
    async def measured(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        finally:
            route = request.match_info.route.name or "unmatched"
            backend.request_metrics.observe(
                via, route, request.method, status, time.perf_counter() - started
            )

    @web.middleware
    async def activity(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.name
        if route not in _ACTIVITY:
            return await handler(request)
        backend.models.note_request()  # a running trainer is paused before this is answered
        try:
            return await handler(request)
        finally:
            backend.models.note_request_done()

    chain: list[Middleware] = [measured, errors_middleware]
    if gate is not None:
        chain.append(gate)
    chain.append(activity)
    app = web.Application(middlewares=chain, client_max_size=HARD_BODY_LIMIT)
    routes = web.RouteTableDef()

    @routes.get("/v1/health", name="health")
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": __version__})

    @routes.get("/v1/openapi.json", name="openapi")
    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(openapi_document())

    @routes.get("/v1/status", name="status")
    async def status(request: web.Request) -> web.Response:
        return web.json_response(backend.status())

    @routes.post("/v1/families/{family}/recommendations", name="recommendations")
    async def recommendations(request: web.Request) -> web.Response:
        body = await read_json(request, backend.max_body_bytes())
        if not isinstance(body, dict):
            raise _BadJson("the body must be a JSON object")
        req = RecommendationRequest.model_validate(body)
        family = request.match_info["family"]
        grant = _grant(request)
        if grant is not None:
            members = [req.member] if req.member else req.context.present or None
            grant.require_recommend(family, members)
        answer = await backend.recommender.recommend(family, req)
        return web.json_response(answer.model_dump(mode="json"))

    @routes.post("/v1/families/{family}/check", name="check")
    async def check(request: web.Request) -> web.Response:
        body = await read_json(request, CHECK_MAX_BODY)
        if not isinstance(body, dict):
            raise _BadJson("the body must be a JSON object")
        req = CheckRequest.model_validate(body)
        family = request.match_info["family"]
        grant = _grant(request)
        if grant is not None:
            wanted = [*([req.member] if req.member else []), *req.members, *req.context.present]
            grant.require_recommend(family, wanted or None)
        rec = backend.recommender
        checker = Checker(rec.store, rec.get_config, rec.meaning)
        answer = await asyncio.to_thread(checker.check, family, req)
        return web.json_response(answer.model_dump(mode="json"))

    @routes.get("/v1/families/{family}/audit", name="audit")
    async def audit(request: web.Request) -> web.Response:
        try:
            limit = min(max(int(request.query.get("limit", "100")), 1), 1000)
        except ValueError:
            raise BadRequestError("limit must be a whole number") from None
        family = request.match_info["family"]
        backend.recommender.get_config().config.family(family)  # 404 for an unknown one
        since = request.query.get("since") or None
        rows = await asyncio.to_thread(audit_since, backend.recommender.store, family, since, limit)
        return web.json_response({"family": family, "decisions": rows})

    @routes.post("/v1/interactions", name="interactions")
    async def interactions(request: web.Request) -> web.Response:
        body = await read_json(request, backend.max_body_bytes())
        events = body.get("events") if isinstance(body, dict) and "events" in body else body
        events = events if isinstance(events, list) else [events]
        if not 1 <= len(events) <= MAX_EVENTS_PER_POST:
            raise BadRequestError(f"send 1 to {MAX_EVENTS_PER_POST} events per request")
        grant = _grant(request)
        if grant is not None:  # a family-scoped token: each event must name one of its own
            grant.require_ingest(_event_family(e) for e in events)
        return web.json_response(await backend.submit_events(events))

    @routes.delete("/v1/families/{family}/members/{member}", name="forget_member")
    async def forget_member(request: web.Request) -> web.Response:
        result = await backend.forget(request.match_info["family"], request.match_info["member"])
        return web.json_response(result)

    @routes.get("/v1/families/{family}/export", name="export")
    async def export(request: web.Request) -> web.Response:
        return web.json_response(await backend.export(request.match_info["family"]))

    @routes.get("/v1/quarantine", name="quarantine")
    async def quarantine(request: web.Request) -> web.Response:
        try:
            limit = min(max(int(request.query.get("limit", "100")), 1), 1000)
        except ValueError:
            raise BadRequestError("limit must be a whole number") from None
        return web.json_response({"quarantine": backend.quarantine(limit)})

    @routes.post("/v1/families/{family}/train", name="train")
    async def train(request: web.Request) -> web.Response:
        body = await read_json(request, backend.max_body_bytes())
        now = body.get("now", False) if isinstance(body, dict) else None
        if not isinstance(now, bool):
            raise BadRequestError('the body may only be {"now": true|false}')
        result = await backend.models.train(request.match_info["family"], now)
        return web.json_response(result, status=202)

    @routes.get("/v1/families/{family}/model", name="family_model")
    async def family_model(request: web.Request) -> web.Response:
        return web.json_response(await backend.models.model(request.match_info["family"]))

    @routes.delete("/v1/families/{family}/model", name="delete_model")
    async def delete_model(request: web.Request) -> web.Response:
        return web.json_response(await backend.models.delete_model(request.match_info["family"]))

    @routes.post("/v1/families/{family}/model/rollback", name="rollback")
    async def rollback(request: web.Request) -> web.Response:
        return web.json_response(await backend.models.rollback(request.match_info["family"]))

    @routes.get("/v1/models", name="models")
    async def models(request: web.Request) -> web.Response:
        return web.json_response(await backend.models.models())

    @routes.post("/v1/models/validate", name="validate")
    async def validate(request: web.Request) -> web.Response:
        return web.json_response(await backend.models.validate())

    @routes.get("/v1/tokens", name="tokens")
    async def tokens(request: web.Request) -> web.Response:
        return web.json_response({"tokens": await asyncio.to_thread(backend.tokens.list)})

    @routes.post("/v1/tokens", name="add_token")
    async def add_token(request: web.Request) -> web.Response:
        body = await read_json(request, backend.max_body_bytes())
        req = TokenRequest.model_validate(body)
        made = await asyncio.to_thread(backend.add_token, req.app, req.scopes)
        return web.json_response(made, status=201)

    @routes.delete("/v1/tokens/{token}", name="revoke_token")
    async def revoke_token(request: web.Request) -> web.Response:
        token_id = request.match_info["token"]
        return web.json_response(await asyncio.to_thread(backend.tokens.revoke, token_id))

    @routes.get("/v1/alerts", name="alerts")
    async def alerts(request: web.Request) -> web.Response:
        return web.json_response({"alerts": await asyncio.to_thread(backend.alerts)})

    @routes.post("/v1/alerts/{alert}/acknowledge", name="acknowledge_alert")
    async def acknowledge_alert(request: web.Request) -> web.Response:
        try:
            alert_id = int(request.match_info["alert"])
        except ValueError:
            alert_id = 0
        if not 1 <= alert_id < 2**63:  # SQLite's integers: a larger one cannot be an alert
            raise BadRequestError("an alert id is a whole number from 1 (see GET /v1/alerts)")
        return web.json_response(await asyncio.to_thread(backend.acknowledge, alert_id))

    @routes.get("/metrics", name="metrics")
    async def metrics(request: web.Request) -> web.Response:
        page = await asyncio.to_thread(backend.metrics_page)
        return web.Response(text=page, content_type="text/plain", charset="utf-8")

    app.add_routes(routes)
    if via != "socket" and backend.pages is not None:  # HTML pages: never on the socket
        backend.pages(app)
    return app
