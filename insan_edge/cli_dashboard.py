"""``insan-edge dashboard passwd``: set the parents' dashboard passphrase (stored scrypt-hashed)."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

DEFAULT_CONFIG = Path("/etc/insan-edge/config.yaml")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dash = sub.add_parser("dashboard", help="the parents' web dashboard")
    what = dash.add_subparsers(dest="dashboard_command", required=True)
    passwd = what.add_parser("passwd", help="set the passphrase parents log in with")
    passwd.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the YAML config file")
    passwd.add_argument(
        "--stdin", action="store_true", help="read the passphrase from standard input (scripts)"
    )


def run(args: argparse.Namespace) -> int | None:
    """Run this module's command; None when ``args.command`` is not one of them."""
    if args.command != "dashboard":
        return None
    from insan_edge.config import load_config
    from insan_edge.dashboard.auth import MIN_LENGTH, set_passphrase

    state_dir = load_config(args.config).config.system.paths.state_dir
    if args.stdin:
        passphrase = sys.stdin.readline().rstrip("\n")
    else:
        passphrase = getpass.getpass(
            f"New dashboard passphrase (at least {MIN_LENGTH} characters): "
        )
        if getpass.getpass("Again: ") != passphrase:
            print("the two passphrases differ; nothing was changed", file=sys.stderr)
            return 1
    path = set_passphrase(state_dir, passphrase)
    print(
        f"passphrase set (scrypt hash in {path}); it applies at the next login, no restart needed"
    )
    return 0
