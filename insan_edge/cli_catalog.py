"""``insan-edge catalog add`` and ``insan-edge catalog list``: the candidate items in the store.

They open the database in the config's state directory directly (SQLite WAL: safe beside the
running daemon), so they work whether or not the daemon runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import ValidationError

DEFAULT_CONFIG = Path("/etc/insan-edge/config.yaml")


def add_parsers(sub: Any) -> None:
    cat = sub.add_parser("catalog", help="add and list the items recommendations are ranked from")
    actions = cat.add_subparsers(dest="catalog_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add an item for one family (or every family)")
    add.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    add.add_argument("--family", help="the family it is for; default: every family")
    add.add_argument("--title", required=True)
    add.add_argument("--description", required=True)
    add.add_argument("--category", required=True)
    add.add_argument("--rating", default="G", help="G, PG, PG-13 or R")
    add.add_argument("--topic", action="append", default=[], help="a topic tag (repeatable)")
    add.add_argument("--min-age", type=int, default=0)
    add.add_argument("--max-age", type=int, default=99)
    listing = actions.add_parser("list", help="list catalog items")
    listing.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    listing.add_argument("--family", help="include this family's own items")
    listing.add_argument("--category")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true", help="print the raw JSON")


def handle(args: argparse.Namespace) -> int:
    from insan_edge import catalog
    from insan_edge.config import load_config
    from insan_edge.config.family import CatalogEntry
    from insan_edge.store import Store

    config = load_config(args.config).config
    if args.family is not None and args.family not in config.families:
        print(f"error: no family '{args.family}' in {args.config}", file=sys.stderr)
        return 2
    store = Store(config.system.paths.state_dir / "insan-edge.db")
    try:
        catalog.sync(store, dict(config.families))
        if args.catalog_command == "add":
            try:
                entry = CatalogEntry(
                    title=args.title,
                    description=args.description,
                    category=args.category,
                    content_rating=args.rating,
                    topics=args.topic,
                    min_age=args.min_age,
                    max_age=args.max_age,
                )
            except ValidationError as exc:
                for err in exc.errors():
                    field = ".".join(str(p) for p in err["loc"]) or "item"
                    print(f"error: {field}: {err['msg']}", file=sys.stderr)
                return 2
            item = catalog.add(store, args.family or catalog.SHARED, entry, source="cli")
            print(f"added #{item.id}: {item.title} ({item.category}, {item.content_rating})")
            return 0
        rows = catalog.items(store, args.family, args.category, args.limit)
        if args.json:
            print(json.dumps([asdict(r) for r in rows], indent=2))
        else:
            for r in rows:
                ages = f"{r.min_age}+" if r.max_age >= 99 else f"{r.min_age}-{r.max_age}"
                print(
                    f"#{r.id:<5} {r.category:<10} {r.content_rating:<5} {ages:<6} {r.source:<11} {r.title}"
                )
        return 0
    finally:
        store.close()
