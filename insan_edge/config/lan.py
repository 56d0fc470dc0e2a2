"""LAN settings: the token-checked TCP gateway, its TLS, its abuse limits and mDNS discovery."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from insan_edge.config.base import ConfigModel


class LanSettings(ConfigModel):
    enabled: bool = Field(
        default=False,
        title="LAN access",
        description="Serve the API on the network to apps holding a token, and advertise the box over mDNS.",
    )
    host: str = Field(
        default="0.0.0.0",
        min_length=1,
        title="Listen address",
        description="Address the gateway listens on: 0.0.0.0 for every interface, or one address.",
    )
    port: int = Field(
        default=8765,
        ge=0,
        le=65535,
        title="Port",
        description="TCP port of the gateway; 0 picks a free one (the announced port is the real one).",
    )
    instance_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        title="Name on the network",
        description="What apps see when they look for boxes; empty means 'insan-edge on <hostname>'.",
    )
    advertise: bool = Field(
        default=True,
        title="Advertise over mDNS",
        description="Announce _insan-edge._tcp.local. so apps find the box without typing its address.",
    )
    interfaces: list[str] | None = Field(
        default=None,
        title="Advertised addresses",
        description="IPv4 addresses to announce on; empty means every address of the box.",
    )
    tls: bool = Field(
        default=False,
        title="TLS",
        description="Serve HTTPS with the certificate made by 'insan-edge lan cert'; its fingerprint is announced so apps can pin it.",
    )
    cert_file: Path | None = Field(
        default=None,
        title="Certificate",
        description="PEM certificate; empty means lan/cert.pem in the state directory.",
    )
    key_file: Path | None = Field(
        default=None,
        title="Certificate key",
        description="PEM private key; empty means lan/key.pem in the state directory.",
    )
    requests_per_minute: int = Field(
        default=120,
        ge=1,
        le=100000,
        title="Requests per minute per token",
        description="Sustained rate one app token may use; beyond it, 429 with Retry-After.",
    )
    burst: int = Field(
        default=20,
        ge=1,
        le=10000,
        title="Burst per token",
        description="Requests a token may send at once before the per-minute rate applies.",
    )
    auth_failures_per_minute: int = Field(
        default=10,
        ge=1,
        le=10000,
        title="Failed logins per minute",
        description="Failed authentications one address may make before it is refused for a while.",
    )
    reannounce_seconds: float = Field(
        default=30,
        ge=1,
        le=3600,
        title="Address check interval",
        description="How often the box checks its addresses and re-announces itself when they change.",
    )

    def files(self, state_dir: Path) -> tuple[Path, Path]:
        """The certificate and key files, defaults resolved."""
        return (
            self.cert_file or state_dir / "lan" / "cert.pem",
            self.key_file or state_dir / "lan" / "key.pem",
        )

    @model_validator(mode="after")
    def _paired_files(self) -> LanSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both cert_file and key_file, or neither")
        return self
