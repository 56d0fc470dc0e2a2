"""Clients for the daemon: by Unix socket on the box, or by address (or mDNS) plus a token.

``Client`` (sync) and ``AsyncClient`` speak the typed shapes of ``insan_edge.contracts``, retry
a 503 (the generation cap) after its ``Retry-After`` with backoff, and raise one exception per
kind of failure. ``LocalClient`` is the raw-JSON sync client the CLI uses.

    client = Client.discover(token="iet_...")            # a box on the LAN
    answer = client.recommend("smith", RecommendationRequest(member="emma", count=3))
"""

from insan_edge.client.aio import AsyncClient
from insan_edge.client.base import (
    DEFAULT_SOCKET,
    Busy,
    ClientError,
    Forbidden,
    NotFound,
    RateLimited,
    Rejected,
    Target,
    Unauthorized,
    Unreachable,
    error_for,
)
from insan_edge.client.sync import Client, LocalClient

__all__ = [
    "DEFAULT_SOCKET",
    "AsyncClient",
    "Busy",
    "Client",
    "ClientError",
    "Forbidden",
    "LocalClient",
    "NotFound",
    "RateLimited",
    "Rejected",
    "Target",
    "Unauthorized",
    "Unreachable",
    "error_for",
]
