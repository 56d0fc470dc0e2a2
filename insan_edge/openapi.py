"""The OpenAPI 3.1 document of ``/v1``, served at ``/v1/openapi.json``.

Request and answer shapes come from the same pydantic models the server validates with, so the
document cannot drift from them; the route list is checked against the app's routes by a test.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from insan_edge import __version__
from insan_edge.contracts import (
    CheckRequest,
    CheckResponse,
    Error,
    Health,
    IngestResult,
    RecommendationRequest,
    RecommendationResponse,
    TokenCreated,
    TokenInfo,
    TokenList,
    TokenRequest,
)
from insan_edge.events import InteractionEvent

ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"


MODELS: tuple[type[BaseModel], ...] = (
    Error,
    Health,
    RecommendationRequest,
    RecommendationResponse,
    CheckRequest,
    CheckResponse,
    InteractionEvent,
    IngestResult,
    TokenRequest,
    TokenInfo,
    TokenCreated,
    TokenList,
)
_ERRORS = {
    "400": "The request is malformed.",
    "401": "No valid app token (LAN gateway only).",
    "403": "The token's scopes do not allow this (LAN gateway only).",
    "404": "No such family, member, model or token (also: a scope naming one).",
    "413": "The body is larger than the configured limit.",
    "422": "A field has a wrong value; the message names it.",
    "429": "Over the token's or address's rate limit; see Retry-After.",
    "503": "The model is busy (generation cap) or the box is stopping; see Retry-After.",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(
    summary: str,
    answer: dict[str, Any] | None = None,
    *,
    body: dict[str, Any] | None = None,
    params: tuple[str, ...] = (),
    ok: str = "200",
    errors: tuple[str, ...] = ("401", "403", "429"),
    open_: bool = False,
    query: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            ok: _json(answer or {"type": "object"}),
            **{code: _json(_ref("Error"), _ERRORS[code]) for code in errors},
        },
    }
    parameters = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string", "pattern": ID_PATTERN}}
        for p in params
    ]  # fmt: skip
    if query:
        parameters += query
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if open_:
        op["security"] = []
    return op


_FAMILY = ("401", "403", "404", "429")
_BODY = ("400", "401", "403", "404", "413", "422", "429")


@functools.cache
def openapi_document() -> dict[str, Any]:
    _, defs = models_json_schema(
        [(m, "validation") for m in MODELS], ref_template="#/components/schemas/{model}"
    )
    events = {
        "oneOf": [
            _ref("InteractionEvent"),
            {"type": "array", "items": _ref("InteractionEvent"), "minItems": 1, "maxItems": 1000},
            {
                "type": "object",
                "properties": {
                    "events": {"type": "array", "items": _ref("InteractionEvent"), "minItems": 1, "maxItems": 1000}
                },
                "required": ["events"],
                "additionalProperties": False,
            },
        ]
    }  # fmt: skip
    train_body = {
        "type": "object",
        "properties": {"now": {"type": "boolean"}},
        "additionalProperties": False,
    }
    limit = [{"name": "limit", "in": "query", "required": False,
              "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}]  # fmt: skip
    paths = {
        "/v1/health": {"get": _op("Is the daemon up", _ref("Health"), errors=(), open_=True)},
        "/v1/openapi.json": {"get": _op("This document", errors=(), open_=True)},
        "/v1/status": {"get": _op("What the daemon is doing (admin)")},
        "/v1/families/{family}/recommendations": {
            "post": _op(
                "Safe, personal suggestions for members of a family",
                _ref("RecommendationResponse"),
                body=_ref("RecommendationRequest"),
                params=("family",),
                errors=(*_BODY, "503"),
            )
        },
        "/v1/families/{family}/check": {
            "post": _op(
                "Is this content right for these members now? One verdict per item, with reasons",
                _ref("CheckResponse"),
                body=_ref("CheckRequest"),
                params=("family",),
                errors=_BODY,
            )
        },
        "/v1/families/{family}/audit": {
            "get": _op(
                "The family's recent safety decisions, newest first (admin)",
                params=("family",),
                errors=("400", *_FAMILY),
                query=[
                    {
                        "name": "since",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "description": "ISO UTC time"},
                    },
                    *limit,
                ],
            )
        },
        "/v1/interactions": {
            "post": _op(
                "Store interaction events (scrubbed first; bad ones quarantined)",
                _ref("IngestResult"),
                body=events,
                errors=("400", "401", "403", "413", "429"),
            )
        },
        "/v1/families/{family}/members/{member}": {
            "delete": _op(
                "Erase what is stored about a member (admin)",
                params=("family", "member"),
                errors=_FAMILY,
            )
        },
        "/v1/families/{family}/export": {
            "get": _op(
                "Everything stored about a family (admin)", params=("family",), errors=_FAMILY
            )
        },
        "/v1/quarantine": {
            "get": _op(
                "Events that could not be stored, and why (admin)",
                query=limit,
                errors=("400", "401", "403", "429"),
            )
        },
        "/v1/families/{family}/train": {
            "post": _op(
                "Queue a training run (admin)",
                body=train_body,
                params=("family",),
                ok="202",
                errors=_BODY,
            )
        },
        "/v1/families/{family}/model": {
            "get": _op("The family's model versions (admin)", params=("family",), errors=_FAMILY),
            "delete": _op(
                "Remove the family's adapters (admin)", params=("family",), errors=_FAMILY
            ),
        },
        "/v1/families/{family}/model/rollback": {
            "post": _op(
                "Serve the previous version (admin)", params=("family",), errors=("400", *_FAMILY)
            )
        },
        "/v1/models": {"get": _op("Model versions of every family (admin)")},
        "/v1/models/validate": {"post": _op("Check every adapter file (admin)")},
        "/v1/alerts": {"get": _op("Crisis alerts not yet acknowledged (admin)")},
        "/v1/alerts/{alert}/acknowledge": {
            "post": _op(
                "A parent has seen the alert (admin)",
                errors=("400", *_FAMILY),
                query=[
                    {
                        "name": "alert",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
                    }
                ],
            )
        },
        "/v1/tokens": {
            "get": _op("App tokens, without their secrets (admin)", _ref("TokenList")),
            "post": _op(
                "Make an app token (admin)",
                _ref("TokenCreated"),
                body=_ref("TokenRequest"),
                ok="201",
                errors=("400", "401", "403", "404", "413", "422", "429"),
            ),
        },
        "/v1/tokens/{token}": {
            "delete": _op(
                "Revoke an app token (admin)", _ref("TokenInfo"), errors=_FAMILY, params=("token",)
            )
        },
    }
    paths["/metrics"] = {
        "get": {
            "summary": "Counters, histograms and gauges in Prometheus text format (admin)",
            "responses": {
                "200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}},
                **{code: _json(_ref("Error"), _ERRORS[code]) for code in ("401", "403", "429")},
            },
        }
    }  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "insan-edge",
            "version": __version__,
            "description": "The family box's local API. On the Unix socket no token is needed "
            "(its file mode decides who may connect); on the LAN gateway every route but "
            "/v1/health and /v1/openapi.json needs an app token.",
        },
        "paths": paths,
        "components": {
            "schemas": defs["$defs"],
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"token": []}],
    }
