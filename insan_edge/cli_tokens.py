"""``insan-edge tokens`` (app tokens for the LAN gateway) and ``insan-edge lan cert``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from insan_edge.client import LocalClient

DEFAULT_CONFIG = Path("/etc/insan-edge/config.yaml")


def add_parsers(sub: Any, socket_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    tokens = sub.add_parser("tokens", help="make, list and revoke app tokens for the LAN")
    actions = tokens.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="make a token (shown once) for one app")
    socket_arg(add)
    add.add_argument("--app", required=True, help="which app holds it, e.g. kitchen-tablet")
    add.add_argument(
        "--scope",
        action="append",
        required=True,
        help="admin, ingest, ingest:FAMILY, recommend:FAMILY, recommend:FAMILY/MEMBER or "
        "recommend:* (repeat for several)",
    )
    add.add_argument("--json", action="store_true", help="print the raw JSON")
    listing = actions.add_parser("list", help="list tokens (never their secrets)")
    socket_arg(listing)
    listing.add_argument("--json", action="store_true", help="print the raw JSON")
    revoke = actions.add_parser("revoke", help="cut a token off at once")
    socket_arg(revoke)
    revoke.add_argument("id", help="the token's id (see 'insan-edge tokens list')")

    lan = sub.add_parser("lan", help="the LAN gateway's TLS certificate")
    lan_actions = lan.add_subparsers(dest="lan_command", required=True, metavar="ACTION")
    cert = lan_actions.add_parser(
        "cert", help="make the self-signed certificate (or show its fingerprint)"
    )
    cert.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the YAML config file")
    cert.add_argument("--force", action="store_true", help="replace the existing certificate")


def handle_tokens(args: argparse.Namespace, client: LocalClient) -> int:
    if args.tokens_command == "add":
        made = client.request("POST", "/v1/tokens", {"app": args.app, "scopes": args.scope})
        if args.json:
            print(json.dumps(made, indent=2))
            return 0
        print(f"token for {made['app']} ({', '.join(made['scopes'])}), id {made['id']}:")
        print(f"  {made['token']}")
        print("Copy it into the app now: it is not shown again (only a hash is kept).")
        return 0
    if args.tokens_command == "list":
        rows = client.request("GET", "/v1/tokens")["tokens"]
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        if not rows:
            print("no app tokens yet (make one with 'insan-edge tokens add')")
        for r in rows:
            state = f"revoked {r['revoked_at']}" if r["revoked_at"] else "active"
            used = r["last_used_at"] or "never"
            print(
                f"{r['id']}  {r['app']:<20} {' '.join(r['scopes']):<30} {state}; last used {used}"
            )
        return 0
    revoked = client.request("DELETE", f"/v1/tokens/{args.id}")
    print(f"token {revoked['id']} of {revoked['app']}: revoked {revoked['revoked_at']}")
    return 0


def handle_lan(args: argparse.Namespace) -> int:
    from insan_edge.config import load_config
    from insan_edge.lan import ensure_certificate

    system = load_config(args.config).config.system
    cert, sha256 = ensure_certificate(system.lan, system.paths.state_dir, force=args.force)
    print(f"certificate: {cert}")
    print(f"sha256 fingerprint: {sha256}")
    if not system.lan.tls:
        print("TLS is off: set system.lan.tls: true in the config to serve HTTPS with it.")
    print("Apps pin this fingerprint; the box also announces it over mDNS. Restart the daemon")
    print("after replacing the certificate.")
    return 0
