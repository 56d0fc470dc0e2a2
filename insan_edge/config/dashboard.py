"""Dashboard settings: the parents' web pages served by the daemon."""

from __future__ import annotations

from pydantic import Field

from insan_edge.config.base import ConfigModel


class DashboardSettings(ConfigModel):
    enabled: bool = Field(
        default=True,
        title="Dashboard",
        description="Serve the parents' pages at / on the LAN gateway (and on localhost_port when set).",
    )
    localhost_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        title="Localhost port",
        description="Also serve the dashboard (and the token-checked API) on 127.0.0.1 at this port, for a browser on the box itself; empty means only on the LAN gateway. 0 picks a free port.",
    )
    session_minutes: int = Field(
        default=60,
        ge=1,
        le=7 * 24 * 60,
        title="Session length",
        description="Minutes a parent stays logged in after logging in.",
    )
    login_attempts_per_minute: int = Field(
        default=5,
        ge=1,
        le=1000,
        title="Login attempts per minute",
        description="Failed logins one address may make a minute before it must wait.",
    )
