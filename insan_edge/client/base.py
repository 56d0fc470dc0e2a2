"""What both clients share: the target, the errors, decoding and backoff."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from insan_edge.errors import InsanEdgeError

DEFAULT_SOCKET = Path(os.environ.get("INSAN_EDGE_SOCKET", "/run/insan-edge/api.sock"))
M = TypeVar("M", bound=BaseModel)


class ClientError(InsanEdgeError):
    """The daemon could not be reached, or answered with an error."""

    code = "client_error"

    def __init__(
        self, message: str, status: int = 0, code: str = "client_error", retry_after: float = 0
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after


class Unreachable(ClientError):
    """No daemon answered at the address (or it is not one)."""


class Unauthorized(ClientError):
    """401: the token is missing, wrong or revoked."""


class Forbidden(ClientError):
    """403: the token's scopes do not allow this request."""


class NotFound(ClientError):
    """404: no such family, member, model, token or route."""


class Rejected(ClientError):
    """400, 413 or 422: the request itself is wrong; the message names the field."""


class RateLimited(ClientError):
    """429: over the token's rate; ``retry_after`` says when to try again."""


class Busy(ClientError):
    """503: the model is busy or the box is stopping, still so after the retries."""


_BY_STATUS: dict[int, type[ClientError]] = {
    400: Rejected, 401: Unauthorized, 403: Forbidden, 404: NotFound, 413: Rejected,
    422: Rejected, 429: RateLimited, 503: Busy,
}  # fmt: skip


def error_for(status: int, body: Any, retry_after: str | None) -> ClientError:
    err = body.get("error", {}) if isinstance(body, dict) else {}
    err = err if isinstance(err, dict) else {}
    try:
        wait = float(retry_after) if retry_after else 0.0
    except ValueError:
        wait = 0.0
    kind = _BY_STATUS.get(status, ClientError)
    return kind(
        str(err.get("message", f"HTTP {status}")),
        status,
        str(err.get("code", "http_error")),
        wait,
    )


@dataclass(frozen=True)
class Target:
    """Where the daemon is: a Unix socket, or host and port (with TLS and a pinned cert)."""

    socket: Path | None = None
    host: str | None = None
    port: int = 8765
    tls: bool = False
    fingerprint: str | None = None  # sha256 hex of the certificate; pins a self-signed one

    def describe(self) -> str:
        if self.socket is not None:
            return str(self.socket)
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return raw.decode("utf-8", "replace")


def _pause(error: ClientError, attempt: int, max_wait: float) -> float:
    """Seconds before retry ``attempt``: the server's Retry-After, at least a backoff."""
    return float(min(max_wait, max(error.retry_after, 0.25 * 2**attempt)))


def _target(
    socket_path: Path | None, host: str | None, port: int, tls: bool, pin: str | None
) -> Target:
    if (socket_path is None) == (host is None):
        raise ValueError("give either socket_path (on the box) or host (on the LAN)")
    return Target(socket_path, host, port, tls or pin is not None, pin)


def _discovered(name: str | None, timeout: float, interfaces: list[str] | None) -> Target:
    from insan_edge.discovery import discover

    boxes = [b for b in discover(timeout, interfaces) if name is None or b.name == name]
    if not boxes:
        which = f" named {name!r}" if name else ""
        raise Unreachable(f"no insan-edge box{which} answered on the network within {timeout} s")
    if len(boxes) > 1:
        names = ", ".join(b.name for b in boxes)
        raise Unreachable(f"several boxes answered ({names}); pick one with name=")
    box = boxes[0]
    return Target(None, box.addresses[0], box.port, box.tls, box.fingerprint)


def _body(request: BaseModel | dict[str, Any]) -> dict[str, Any]:
    if isinstance(request, BaseModel):
        return request.model_dump(mode="json", exclude_none=True)
    return request
