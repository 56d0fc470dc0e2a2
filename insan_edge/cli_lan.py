"""``insan-edge discover``: find the boxes on the local network over mDNS."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    discover = sub.add_parser("discover", help="find insan-edge boxes on the local network (mDNS)")
    discover.add_argument(
        "--timeout",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="how long to listen for answers (default 3)",
    )
    discover.add_argument(
        "--interface",
        action="append",
        metavar="ADDRESS",
        help="listen only on this IPv4 address (repeatable; default: every interface)",
    )
    discover.add_argument("--json", action="store_true", help="print the raw JSON")


def run(args: argparse.Namespace) -> int | None:
    """Run one of this module's commands; None when ``args.command`` is not one of them."""
    if args.command != "discover":
        return None
    from insan_edge.discovery import discover

    boxes = discover(args.timeout, getattr(args, "interface", None))
    if args.json:
        print(json.dumps([{**asdict(b), "url": b.url} for b in boxes], indent=2))
        return 0 if boxes else 1
    if not boxes:
        print(f"no insan-edge box answered within {args.timeout:g} s")
        return 1
    rows = [("NAME", "ADDRESS:PORT", "TLS", "BOX")]
    for b in boxes:
        where = f"{b.addresses[0] if b.addresses else b.host.rstrip('.')}:{b.port}"
        rows.append((b.name, where, "yes" if b.tls else "no", b.box_id))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join([*(row[i].ljust(widths[i]) for i in range(3)), row[3]]))
    return 0
