"""The asyncio client (aiohttp), typed like ``Client``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from insan_edge.client.base import (
    M,
    Unreachable,
    _body,
    _decode,
    _discovered,
    _pause,
    _target,
    error_for,
)
from insan_edge.contracts import Health, IngestResult, RecommendationRequest, RecommendationResponse

if TYPE_CHECKING:
    import aiohttp  # imported when first used: the CLI loads this package and never needs it


class AsyncClient:
    """The typed asyncio client (aiohttp); use ``async with``."""

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
        max_wait: float = 30.0,
    ) -> None:
        self.target = _target(socket_path, host, port, tls, fingerprint)
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.max_wait = max_wait
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    async def discover(
        cls, token: str, name: str | None = None, timeout: float = 3.0, **kwargs: Any
    ) -> AsyncClient:

        t = await asyncio.to_thread(_discovered, name, timeout, kwargs.pop("interfaces", None))
        return cls(host=t.host, port=t.port, token=token, tls=t.tls, fingerprint=t.fingerprint, **kwargs)  # fmt: skip

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _open(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None:
            t = self.target
            connector: aiohttp.BaseConnector
            if t.socket is not None:
                connector = aiohttp.UnixConnector(path=str(t.socket))
            elif t.fingerprint:
                connector = aiohttp.TCPConnector(
                    ssl=aiohttp.Fingerprint(bytes.fromhex(t.fingerprint))
                )
            else:
                connector = aiohttp.TCPConnector()
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            self._session = aiohttp.ClientSession(
                base_url=self._base(),
                connector=connector,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        return self._session

    def _base(self) -> str:
        t = self.target
        if t.socket is not None:
            return "http://localhost"
        return f"{'https' if t.tls else 'http'}://{t.host}:{t.port}"

    async def request(self, method: str, path: str, body: Any = None) -> Any:

        import aiohttp

        session = self._open()
        for attempt in range(self.retries + 1):
            try:
                async with session.request(method, path, json=body) as response:
                    raw = await response.read()
                    status, retry_after = response.status, response.headers.get("Retry-After")
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                raise Unreachable(f"talking to insan-edge at {self.target.describe()} failed: {exc}") from None  # fmt: skip
            data = _decode(raw)
            if status < 400:
                return data
            error = error_for(status, data, retry_after)
            if status != 503 or attempt == self.retries:
                raise error
            await asyncio.sleep(_pause(error, attempt, self.max_wait))
        raise AssertionError("unreachable")

    async def _typed(self, model: type[M], method: str, path: str, body: Any = None) -> M:
        return model.model_validate(await self.request(method, path, body))

    async def health(self) -> Health:
        return await self._typed(Health, "GET", "/v1/health")

    async def recommend(
        self, family: str, request: RecommendationRequest | dict[str, Any]
    ) -> RecommendationResponse:
        path = f"/v1/families/{family}/recommendations"
        return await self._typed(RecommendationResponse, "POST", path, _body(request))

    async def ingest(self, events: list[dict[str, Any]]) -> IngestResult:
        return await self._typed(IngestResult, "POST", "/v1/interactions", {"events": events})
