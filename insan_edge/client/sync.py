"""The sync clients: ``LocalClient`` (raw JSON, for the CLI) and ``Client`` (typed, for apps)."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import ssl
import time
from pathlib import Path
from typing import Any

from insan_edge.client.base import (
    DEFAULT_SOCKET,
    M,
    Target,
    Unreachable,
    _body,
    _decode,
    _discovered,
    _pause,
    _target,
    error_for,
)
from insan_edge.contracts import Health, IngestResult, RecommendationRequest, RecommendationResponse


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


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a self-signed box: the certificate must have the pinned SHA-256."""

    def __init__(self, host: str, port: int, timeout: float, pin: str) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # trust comes from the pin below, checked before use
        super().__init__(host, port, timeout=timeout, context=ctx)
        self._pin = pin.lower()

    def connect(self) -> None:
        super().connect()
        assert isinstance(self.sock, ssl.SSLSocket)
        der = self.sock.getpeercert(binary_form=True) or b""
        if hashlib.sha256(der).hexdigest() != self._pin:
            self.sock.close()
            raise ssl.SSLError("the box's certificate does not match the pinned fingerprint")


class LocalClient:
    """Raw JSON in and out; no retries unless asked. Used by the CLI and scripts."""

    def __init__(
        self,
        socket_path: Path | None = DEFAULT_SOCKET,
        timeout: float = 300.0,
        *,
        target: Target | None = None,
        token: str | None = None,
        retries: int = 0,
        max_wait: float = 30.0,
    ) -> None:
        self.target = target or Target(socket=socket_path)
        self.socket_path = self.target.socket
        self.timeout = timeout
        self.token = token
        self.retries = retries
        self.max_wait = max_wait

    def _connection(self) -> http.client.HTTPConnection:
        t = self.target
        if t.socket is not None:
            return _UnixConnection(t.socket, self.timeout)
        assert t.host is not None
        if t.tls and t.fingerprint:
            return _PinnedHTTPSConnection(t.host, t.port, self.timeout, t.fingerprint)
        if t.tls:
            return http.client.HTTPSConnection(t.host, t.port, timeout=self.timeout)
        return http.client.HTTPConnection(t.host, t.port, timeout=self.timeout)

    def _once(self, method: str, path: str, payload: bytes | None) -> tuple[int, Any, str | None]:
        conn = self._connection()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        where = self.target.describe()
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (FileNotFoundError, ConnectionRefusedError):
            raise Unreachable(
                f"insan-edge is not running at {where} (start it with 'insan-edge run')"
            ) from None
        except PermissionError:
            raise Unreachable(
                f"no permission to use {where}; join the 'insan-edge' group"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise Unreachable(f"talking to insan-edge at {where} failed: {exc}") from None
        finally:
            conn.close()
        return response.status, _decode(raw), response.getheader("Retry-After")

    def request(self, method: str, path: str, body: Any = None) -> Any:
        payload = None if body is None else json.dumps(body).encode("utf-8")
        for attempt in range(self.retries + 1):
            status, data, retry_after = self._once(method, path, payload)
            if status < 400:
                return data
            error = error_for(status, data, retry_after)
            if status != 503 or attempt == self.retries:
                raise error
            time.sleep(_pause(error, attempt, self.max_wait))
        raise AssertionError("unreachable")

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


class Client:
    """The typed sync client for apps; retries 503 three times by default."""

    def __init__(
        self,
        socket_path: Path | None = None,
        *,
        host: str | None = None,
        port: int = 8765,
        token: str | None = None,
        tls: bool = False,
        fingerprint: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
    ) -> None:
        target = _target(socket_path, host, port, tls, fingerprint)
        self.raw = LocalClient(None, timeout, target=target, token=token, retries=retries)

    @classmethod
    def discover(
        cls,
        token: str,
        name: str | None = None,
        timeout: float = 3.0,
        interfaces: list[str] | None = None,
        **kwargs: Any,
    ) -> Client:
        """The box found by mDNS (the one named ``name``, or the only one), its cert pinned."""
        t = _discovered(name, timeout, interfaces)
        return cls(host=t.host, port=t.port, token=token, tls=t.tls, fingerprint=t.fingerprint, **kwargs)  # fmt: skip

    def _typed(self, model: type[M], method: str, path: str, body: Any = None) -> M:
        return model.model_validate(self.raw.request(method, path, body))

    def health(self) -> Health:
        return self._typed(Health, "GET", "/v1/health")

    def recommend(
        self, family: str, request: RecommendationRequest | dict[str, Any]
    ) -> RecommendationResponse:
        path = f"/v1/families/{family}/recommendations"
        return self._typed(RecommendationResponse, "POST", path, _body(request))

    def ingest(self, events: list[dict[str, Any]]) -> IngestResult:
        return self._typed(IngestResult, "POST", "/v1/interactions", {"events": events})
