"""``insan-edge``: run the daemon, check a config, talk to a running daemon."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from insan_edge import (
    __version__,
    cli_catalog,
    cli_check,
    cli_dashboard,
    cli_doctor,
    cli_lan,
    cli_models,
    cli_tokens,
)
from insan_edge.client import DEFAULT_SOCKET, LocalClient
from insan_edge.errors import ConfigError, InsanEdgeError


def _socket_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--socket",
        type=Path,
        default=DEFAULT_SOCKET,
        help=f"daemon socket (default {DEFAULT_SOCKET}, or $INSAN_EDGE_SOCKET)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="insan-edge", description="Private family recommendations on this box."
    )
    parser.add_argument("--version", action="version", version=f"insan-edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon in the foreground")
    run.add_argument("--config", type=Path, required=True, help="the YAML config file")
    run.add_argument("--state-dir", type=Path, help="override system.paths.state_dir")
    run.add_argument("--socket", type=Path, help="override system.paths.socket")

    status = sub.add_parser("status", help="show what the running daemon is doing")
    _socket_arg(status)
    status.add_argument("--json", action="store_true", help="print the raw JSON")

    rec = sub.add_parser("recommend", help="ask the running daemon for recommendations")
    _socket_arg(rec)
    rec.add_argument("--family", required=True)
    rec.add_argument("--member")
    rec.add_argument("--count", type=int, default=3)
    rec.add_argument("--context", default="{}", help='JSON, e.g. \'{"time_of_day": "morning"}\'')
    rec.add_argument(
        "--mode", choices=["catalog", "generate", "mixed"], help="default: the config's"
    )
    rec.add_argument("--json", action="store_true", help="print the raw JSON")

    quarantine = sub.add_parser("quarantine", help="list events that could not be stored, and why")
    _socket_arg(quarantine)
    quarantine.add_argument("--limit", type=int, default=50)
    quarantine.add_argument("--json", action="store_true", help="print the raw JSON")

    forget = sub.add_parser("forget", help="erase a member's (or a family's) interactions")
    _socket_arg(forget)
    forget.add_argument("--family", required=True)
    forget.add_argument("--member", help="one member; without it, every member of the family")

    export = sub.add_parser("export", help="write everything stored about a family as JSON")
    _socket_arg(export)
    export.add_argument("--family", required=True)
    export.add_argument("--output", type=Path, help="file to write (default: standard output)")

    cli_models.add_parsers(sub, _socket_arg)
    cli_tokens.add_parsers(sub, _socket_arg)
    cli_check.add_parsers(sub, _socket_arg)
    cli_lan.add_parsers(sub)
    cli_doctor.add_parser(sub)
    cli_dashboard.add_parsers(sub)
    cli_catalog.add_parsers(sub)

    config = sub.add_parser("config", help="work with the config file")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_sub.add_parser("check", help="validate a config file and report every problem")
    check.add_argument("file", type=Path)
    return parser


def _print_status(s: dict[str, Any]) -> None:
    model = s["model"]
    print(
        f"insan-edge {s['version']}, up {s['uptime_seconds']:.0f} s, config {s['config']['path']} (preset {s['config']['preset']})"
    )
    alerts = s.get("alerts") or {}
    if alerts.get("open"):
        a = alerts["latest"]
        print(f"ALERT: {alerts['open']} crisis alert(s) waiting for a parent; latest: "
              f"{a['signal']} signal from {a['family_id']}/{a['member_id']} at {a['created_at']} "
              f"(GET /v1/alerts; acknowledge with POST /v1/alerts/ID/acknowledge)")  # fmt: skip
    topics = s.get("topics") or {}
    if topics.get("error"):
        print(f"topic model: NOT RUNNING ({topics['error']}); topics are matched by keywords only")
    if s["config"]["last_reload_error"]:
        print("  last config edit was REJECTED (the previous config is still running):")
        for problem in s["config"]["last_reload_error"]:
            print(f"    {problem}")
    print(
        f"model: {model['name']} on {model['device']} ({model['architecture']}, context {model['context_length']})"
    )
    if dev := s.get("devices"):
        print(f"devices: serving {dev['serving']['device']} ({dev['serving']['reason']}), "
              f"topics {dev['topics']['device'] or 'off'}, "
              f"training {dev['training']['device'] or 'not yet run'}")  # fmt: skip
    for fam in s["families"]:
        members = ", ".join(f"{m['id']} ({m['age']})" for m in fam["members"])
        print(f"family {fam['id']}: {members}; model {fam['model']['version']}")
    safety = s["safety"]
    print(
        f"safety: {safety['items_served']} items served, {safety['items_dropped']} dropped {safety['drops_by_rule'] or ''}"
    )
    req = s["requests"]
    print(f"requests: {req['recommendations']} recommendations, {req['cache_hits']} from cache")
    ing = s["ingest"]
    print(f"ingest: {ing['interactions']} interactions stored, {ing['quarantined']} quarantined "
          f"{ing['quarantined_by_reason'] or ''}; scrubbed {ing['scrubbed_entities'] or 'nothing yet'}")  # fmt: skip
    for f in ing["files"]:
        print(f"  inbox {f['path']}: {f['read_bytes']} bytes read, {f['lag_bytes']} waiting")
    t = s.get("training")
    if t:
        window = t["idle_window"]
        print(f"training: {t['state']}; idle window {window['start']}-{window['end']} "
              f"({'open' if window['open'] else 'closed'})")  # fmt: skip
        if t["governor"] and t["governor"]["reasons"]:
            print(f"  governor: {t['governor']['action']}: {'; '.join(t['governor']['reasons'])}")
        run = t["run"]
        if run:
            print(f"  run {run['id']} ({run['family_id']}): step {run['step']}/{run['steps']}, "
                  f"loss {run['loss']}, {run['tokens_per_s']} tokens/s, ETA {run['eta_seconds']} s")  # fmt: skip
        for fid, why in t["due"].items():
            if why:
                print(f"  {fid} is due: {why}")
    lan = s.get("lan") or {}
    if lan.get("error"):
        print(f"lan: NOT SERVING: {lan['error']}")
    elif lan.get("enabled"):
        tls = f"TLS, sha256 {lan['fingerprint']}" if lan["tls"] else "no TLS"
        name = f"; announced as '{lan['advertised_as']}'" if lan["advertised_as"] else ""
        print(f"lan: gateway on port {lan['port']} ({tls}){name}")
    mem = s["memory"]
    print(
        f"memory: {mem['rss_mb']:.0f} MB used by the daemon, {mem['available_mb']} MB of {mem['total_mb']} MB free"
    )


def _print_answer(a: dict[str, Any]) -> None:
    print(
        f"for {', '.join(a['members'])} (model {a['model']['name']}@{a['model']['version']}, "
        f"{a['latency_ms']:.0f} ms{', cached' if a['cached'] else ''}; {a['dropped']} dropped by safety)"
    )
    if not a["items"]:
        print("  no suggestion passed the family's safety rules this time")
    for n, item in enumerate(a["items"], 1):
        print(f"{n}. {item['title']} [{item['category']}, {item['content_rating']}]")
        print(f"   {item['description']}")
        if item["reason"]:
            print(f"   why: {item['reason']}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            from insan_edge.daemon import run

            return run(args.config, args.state_dir, args.socket)
        if args.command == "config":
            from insan_edge.config import load_config

            loaded = load_config(args.file)
            families = loaded.config.families
            members = sum(len(f.members) for f in families.values())
            print(
                f"{args.file}: OK ({len(families)} famil{'y' if len(families) == 1 else 'ies'}, "
                f"{members} members, preset {loaded.preset}: {loaded.preset_reason})"
            )
            return 0
        if args.command == "doctor":
            return cli_doctor.run(args)
        if args.command == "lan":
            return cli_tokens.handle_lan(args)
        if args.command == "catalog":
            return cli_catalog.handle(args)
        if (code := cli_lan.run(args)) is not None:
            return code
        if args.command in ("check", "audit"):
            return cli_check.handle(args)
        if (code := cli_dashboard.run(args)) is not None:
            return code
        client = LocalClient(args.socket)
        if args.command == "tokens":
            return cli_tokens.handle_tokens(args, client)
        if args.command == "status":
            s = client.status()
            print(json.dumps(s, indent=2)) if args.json else _print_status(s)
            return 0
        if args.command == "recommend":
            try:
                context = json.loads(args.context)
            except json.JSONDecodeError as exc:
                print(f"error: --context is not valid JSON: {exc}", file=sys.stderr)
                return 2
            body: dict[str, Any] = {"count": args.count, "context": context}
            if args.member:
                body["member"] = args.member
            if args.mode:
                body["mode"] = args.mode
            answer = client.recommend(args.family, body)
            print(json.dumps(answer, indent=2)) if args.json else _print_answer(answer)
            return 0
        if args.command == "quarantine":
            rows = client.request("GET", f"/v1/quarantine?limit={args.limit}")["quarantine"]
            if args.json:
                print(json.dumps(rows, indent=2))
            for row in rows if not args.json else []:
                where = f"{row['file']}@{row['offset']}" if row.get("file") else row["source"]
                print(f"{row['ts']}  {where}  {row['reason']}: {row['message']}")
            if not rows and not args.json:
                print("nothing in quarantine")
            return 0
        if args.command == "forget":
            if args.member:
                erase = [args.member]
            else:
                status = client.status()
                family = next((f for f in status["families"] if f["id"] == args.family), None)
                if family is None:
                    print(f"error: there is no family '{args.family}' on this box", file=sys.stderr)
                    return 1
                erase = [m["id"] for m in family["members"]]
            for member in erase:
                result = client.request("DELETE", f"/v1/families/{args.family}/members/{member}")
                print(
                    f"{args.family}/{member}: {result['interactions_deleted']} interactions erased"
                )
            return 0
        if args.command in ("train", "models"):
            return cli_models.handle(args, client)
        if args.command == "export":
            data = client.request("GET", f"/v1/families/{args.family}/export")
            text = json.dumps(data, indent=2)
            if args.output:
                args.output.write_text(text + "\n", "utf-8")
                print(
                    f"{args.output}: {len(data['interactions'])} interactions, {len(data['recommendations'])} answers"
                )
            else:
                print(text)
            return 0
    except ConfigError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    except InsanEdgeError as exc:  # ClientError included
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
