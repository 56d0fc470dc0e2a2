"""``insan-edge train`` and ``insan-edge models``: per-family adapters from the command line."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from insan_edge.client import LocalClient


def add_parsers(sub: Any, socket_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    train = sub.add_parser("train", help="ask for a training run of a family's adapter")
    socket_arg(train)
    train.add_argument("--family", required=True)
    train.add_argument(
        "--now",
        action="store_true",
        help="start as soon as the box has the memory, not in the next idle window",
    )
    train.add_argument("--json", action="store_true", help="print the raw JSON")

    models = sub.add_parser("models", help="list, roll back, delete or validate family models")
    socket_arg(models)
    models.add_argument(
        "action", nargs="?", default="list", choices=("list", "rollback", "delete", "validate")
    )
    models.add_argument("--family", help="one family (required for rollback and delete)")
    models.add_argument("--json", action="store_true", help="print the raw JSON")


def _score(v: dict[str, Any] | None, key: str) -> str:
    value = None if v is None else v.get(key)
    return "-" if value is None else f"{value:.3f}"


def _print_family(f: dict[str, Any]) -> None:
    print(
        f"family {f['family']}: serving {f['serving']}" + (f"; due: {f['due']}" if f["due"] else "")
    )
    for v in f["versions"]:
        mark = "*" if v["active"] else " "
        print(
            f" {mark} v{v['version']:<3} {v['status']:<11} {v['created_at']}  "
            f"preference {_score(v, 'preference_accuracy')}  loss {_score(v, 'heldout_loss')}  "
            f"safety {_score(v, 'safety_score')}"
            + (f"  ({v['reason']})" if v.get("reason") else "")
        )
    for r in f["runs"][:3]:
        progress = f"step {r['step']}/{r['steps']}" if r.get("steps") else ""
        print(f"   run {r['id']}: {r['status']} {progress} {r['reason'] or ''}".rstrip())


def handle(args: argparse.Namespace, client: LocalClient) -> int:
    if args.command == "train":
        body = {"now": bool(args.now)}
        result = client.request("POST", f"/v1/families/{args.family}/train", body)
        run = result["run"]
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            when = "as soon as the box allows" if run["now"] else "in the next idle window"
            print(f"run {run['id']} for {args.family}: {run['status']} ({when})")
        return 0
    action = args.action
    if action in ("rollback", "delete") and not args.family:
        raise SystemExit(f"insan-edge models {action} needs --family")
    if action == "rollback":
        result = client.request("POST", f"/v1/families/{args.family}/model/rollback")
    elif action == "delete":
        result = client.request("DELETE", f"/v1/families/{args.family}/model")
    elif action == "validate":
        result = client.request("POST", "/v1/models/validate")
    elif args.family:
        result = client.request("GET", f"/v1/families/{args.family}/model")
    else:
        result = client.request("GET", "/v1/models")
    if args.json:
        print(json.dumps(result, indent=2))
    elif action == "rollback":
        print(f"{args.family}: now serving {result['serving']}")
    elif action == "delete":
        print(f"{args.family}: {result['versions_removed']} versions removed; serving the base")
    elif action == "validate":
        for m in result["models"]:
            state = "ok" if m["ok"] else "BROKEN: " + "; ".join(m["problems"])
            print(f"{m['family']} v{m['version']} ({m['status']}): {state}")
        print("all models valid" if result["ok"] else "some models are broken")
        return 0 if result["ok"] else 1
    elif "families" in result:
        print(f"base model: {result['base']['name']}")
        for f in result["families"]:
            _print_family(f)
    else:
        _print_family(result)
    return 0
