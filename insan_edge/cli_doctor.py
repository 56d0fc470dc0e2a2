"""``insan-edge doctor``: check this machine against the memory budget and the config.

Exit status: 0 when nothing failed (warnings allowed), 1 when a check failed, 2 with --strict
when only warnings were found; a config that does not load fails like ``config check``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = Path("/etc/insan-edge/config.yaml")
MARK = {"ok": "OK  ", "warn": "WARN", "fail": "FAIL", "skip": "--  "}


def add_parser(sub: Any) -> None:
    doctor = sub.add_parser("doctor", help="check this machine against the budget and the config")
    doctor.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the YAML config")
    doctor.add_argument("--state-dir", type=Path, help="override system.paths.state_dir")
    doctor.add_argument("--unit", type=Path, help="the installed unit (default: /etc/systemd/...)")
    doctor.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    doctor.add_argument("--strict", action="store_true", help="exit 2 on warnings too")
    doctor.add_argument("--json", action="store_true", help="print the findings as JSON")


def run(args: argparse.Namespace) -> int:
    from insan_edge.config import load_config
    from insan_edge.doctor import run_checks

    loaded = load_config(args.config)
    config = loaded.config
    if args.state_dir is not None:
        paths = config.system.paths.model_copy(update={"state_dir": args.state_dir})
        config = config.model_copy(
            update={"system": config.system.model_copy(update={"paths": paths})}
        )
    findings = run_checks(config, root=args.root, unit=args.unit)
    failed = sum(f.level == "fail" for f in findings)
    warned = sum(f.level == "warn" for f in findings)
    if args.json:
        print(json.dumps([asdict(f) for f in findings], indent=2, ensure_ascii=False))
    else:
        print(f"insan-edge doctor: {args.config} (preset {loaded.preset})")
        for f in findings:
            print(f"  {MARK[f.level]}  {f.check}: {f.message}")
            if f.fix:
                print(f"        change: {f.fix}")
        verdict = "fine" if not failed and not warned else "see above"
        print(f"{failed} failed, {warned} warning{'s' if warned != 1 else ''}: {verdict}")
    return 1 if failed else 2 if warned and args.strict else 0
