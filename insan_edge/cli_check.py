"""``insan-edge check`` (is this right for a member now?) and ``insan-edge audit`` (what the
box decided lately)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.parse
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from insan_edge.client import LocalClient
from insan_edge.config.family import CATEGORIES
from insan_edge.errors import InsanEdgeError
from insan_edge.ingest_tables import iso_utc

_AGO = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def add_parsers(sub: Any, socket_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    check = sub.add_parser(
        "check", help="is a title right for a member now? (exit 0 allowed, 1 not, 2 error)"
    )
    socket_arg(check)
    check.add_argument("--family", required=True)
    check.add_argument(
        "--member", action="append", required=True, help="repeat for everyone present"
    )
    check.add_argument("--kind", default="video", choices=CATEGORIES, help="default video")
    check.add_argument("--rating", help="the rating the app claims, e.g. PG, TV-14, E10+")
    check.add_argument("--at", help="local time, e.g. 2026-11-22T15:00 (default now)")
    check.add_argument("--json", action="store_true", help="print the raw JSON")
    check.add_argument("title")
    check.add_argument("description", nargs="?", default="")

    audit = sub.add_parser("audit", help="the family's recent safety decisions")
    socket_arg(audit)
    audit.add_argument("--family", required=True)
    audit.add_argument("--since", help="an ISO time, or how long ago: 30m, 12h, 7d, 2w")
    audit.add_argument("--limit", type=int, default=50)
    audit.add_argument("--json", action="store_true", help="print the raw JSON")


def _since(text: str) -> str:
    m = _AGO.match(text.strip())
    if m:
        moment = datetime.now(timezone.utc) - timedelta(**{_UNITS[m[2]]: int(m[1])})
    else:
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValueError(f"--since {text!r}: use an ISO time or 30m, 12h, 7d, 2w") from None
        moment = moment if moment.tzinfo else moment.astimezone()
    return iso_utc(moment, "milliseconds")


def handle(args: argparse.Namespace) -> int:
    try:
        client = LocalClient(args.socket)
        return _check(args, client) if args.command == "check" else _audit(args, client)
    except (InsanEdgeError, ValueError) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2


def _check(args: argparse.Namespace, client: LocalClient) -> int:
    item: dict[str, Any] = {"title": args.title, "description": args.description, "kind": args.kind}
    if args.rating:
        item["content_rating"] = args.rating
    body: dict[str, Any] = {"members": args.member, "items": [item]}
    if args.at:
        body["context"] = {"at": args.at}
    answer = client.request("POST", f"/v1/families/{args.family}/check", body)
    result = answer["results"][0]
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        verdict = "ALLOWED" if result["allowed"] else "NOT ALLOWED"
        print(f"{verdict} for {', '.join(answer['members'])}: {args.title!r} "
              f"(the box rates it {result['rating']})")  # fmt: skip
        for reason in result["reasons"]:
            mark = "-" if reason["blocks"] else "~"
            print(f"  {mark} {reason['message']}")
        if result["topics"]:
            found = ", ".join(
                t["topic"] + (f" {t['score']:.2f}" if t["score"] is not None else "")
                for t in result["topics"]
            )
            print(f"  topics: {found}")
    return 0 if result["allowed"] else 1


def _audit(args: argparse.Namespace, client: LocalClient) -> int:
    query = {"limit": str(args.limit)}
    if args.since:
        query["since"] = _since(args.since)
    path = f"/v1/families/{args.family}/audit?{urllib.parse.urlencode(query)}"
    rows = client.request("GET", path)["decisions"]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no decisions recorded" + (" since then" if args.since else ""))
    for row in rows:
        d = row["detail"]
        who = row["member_id"] or "family"
        what = row["rule"] or row["event"]
        title = d.get("title", "")
        message = d.get("message", "")
        source = "check" if row["event"] == "check_blocked" else row["event"].replace("_", " ")
        print(f"{row['ts'][:19].replace('T', ' ')}  {source:<14} {who:<10} {what:<17} "
              f"{title!r}" + (f": {message}" if message else ""))  # fmt: skip
    return 0
