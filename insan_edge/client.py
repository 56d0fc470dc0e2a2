"""A small synchronous client for the daemon's Unix socket (used by the CLI and scripts)."""

from __future__ import annotations

import http.client
import json
import os
import socket
from pathlib import Path
from typing import Any

from insan_edge.errors import InsanEdgeError

DEFAULT_SOCKET = Path(os.environ.get("INSAN_EDGE_SOCKET", "/run/insan-edge/api.sock"))


class ClientError(InsanEdgeError):
    """The daemon could not be reached, or answered with an error."""

    code = "client_error"

    def __init__(self, message: str, status: int = 0, code: str = "client_error") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


class LocalClient:
    def __init__(self, socket_path: Path = DEFAULT_SOCKET, timeout: float = 300.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> Any:
        conn = _UnixConnection(self.socket_path, self.timeout)
        payload = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (FileNotFoundError, ConnectionRefusedError):
            raise ClientError(
                f"insan-edge is not running at {self.socket_path} (start it with 'insan-edge run')"
            ) from None
        except PermissionError:
            raise ClientError(
                f"no permission to use {self.socket_path}; join the 'insan-edge' group"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise ClientError(
                f"talking to insan-edge at {self.socket_path} failed: {exc}"
            ) from None
        finally:
            conn.close()
        try:
            data = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            data = raw.decode("utf-8", "replace")
        if response.status >= 400:
            err = data.get("error", {}) if isinstance(data, dict) else {}
            raise ClientError(
                err.get("message", f"HTTP {response.status}"),
                response.status,
                err.get("code", "http_error"),
            )
        return data

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/v1/health")
        return result

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/v1/status")
        return result

    def recommend(self, family: str, request: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", f"/v1/families/{family}/recommendations", request
        )
        return result
