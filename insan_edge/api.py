"""The local HTTP/1.1 + JSON API (``/v1``), served on a Unix socket by the daemon.

Every error leaves as ``{"error": {"code": ..., "message": ...}}`` with its status. Bodies are
capped by the config's ``api.max_body_bytes`` whether or not the client sends a length.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from insan_edge import __version__
from insan_edge.contracts import RecommendationRequest
from insan_edge.errors import BusyError, InsanEdgeError
from insan_edge.logs import kv
from insan_edge.recommender import Recommender

log = logging.getLogger("insan_edge.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HARD_BODY_LIMIT = 16 * 1024 * 1024


@dataclass
class ApiBackend:
    """What the API needs from the daemon, and nothing more."""

    recommender: Recommender
    status: Callable[[], dict[str, Any]]
    metrics: Callable[[], str]
    max_body_bytes: Callable[[], int]


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
    except BusyError as exc:
        return _error(exc.status, exc.code, exc.message, {"Retry-After": str(exc.retry_after)})
    except InsanEdgeError as exc:
        if exc.status >= 500:
            log.error(kv("api.error", path=request.path, code=exc.code, message=exc.message))
        return _error(exc.status, exc.code, exc.message)
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


def build_app(backend: ApiBackend) -> web.Application:
    app = web.Application(middlewares=[errors_middleware], client_max_size=HARD_BODY_LIMIT)
    routes = web.RouteTableDef()

    @routes.get("/v1/health")
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": __version__})

    @routes.get("/v1/status")
    async def status(request: web.Request) -> web.Response:
        return web.json_response(backend.status())

    @routes.post("/v1/families/{family}/recommendations")
    async def recommendations(request: web.Request) -> web.Response:
        body = await read_json(request, backend.max_body_bytes())
        if not isinstance(body, dict):
            raise _BadJson("the body must be a JSON object")
        req = RecommendationRequest.model_validate(body)
        answer = await backend.recommender.recommend(request.match_info["family"], req)
        return web.json_response(answer.model_dump(mode="json"))

    @routes.get("/metrics")
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=backend.metrics(), content_type="text/plain", charset="utf-8")

    app.add_routes(routes)
    return app
