"""Dashboard page render time with a year of simulated interactions, against GET /v1/status.

Builds a state dir holding a year (``--days``) of the family simulator's events for 'larkin'
(``scripts/simulate_family.py``; ``--copies N`` stores N seeds' years, for a heavier household),
written straight into the store (the bench times pages, not the scrubber), plus 12 model versions
and 2,000 audit records. Starts the real daemon (tiny model) with the LAN gateway on 127.0.0.1,
logs in with an admin token, and times each page (``--rounds`` sequential requests each, after
one warm-up) and the JSON status endpoint (the same token, the same gateway) as the baseline,
measured in the same run. Prints median and p95 ms per path and the ratio of medians to the
baseline. Exit status 1 if a page's median is over ``--target-ms`` (200).

    .venv/bin/python bench/dashboard.py [--days 365] [--copies 1] [--rounds 30]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from contextlib import closing
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from daemon_harness import family_config, start_daemon  # noqa: E402
from tinymodel import build_tiny_gguf  # noqa: E402

from insan_edge.config import load_config  # noqa: E402
from insan_edge.store import Store  # noqa: E402

SIM = ROOT / "scripts" / "simulate_family.py"
SIM_FAMILY = ROOT / "tests" / "data" / "sim_family.yaml"
PAGES = ("/", "/family", "/safety", "/privacy")


def simulate(days: int, seed: int, out: Path) -> list[dict[str, Any]]:
    start = (date.today() - timedelta(days=days - 1)).isoformat()
    subprocess.run([sys.executable, str(SIM), "--config", str(SIM_FAMILY), "--family", "larkin",
                    "--days", str(days), "--seed", str(seed), "--start", start, "--out", str(out)],
                   check=True, capture_output=True, env={"PYTHONPATH": str(ROOT)})  # fmt: skip
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def fill(db_path: Path, events: list[dict[str, Any]]) -> None:
    store = Store(db_path)
    store.sync_families(dict(load_config(SIM_FAMILY).config.families))
    rows = [{"family_id": e["family"], "member_id": e["member"], "kind": e["kind"],
             "item": e.get("item"), "text": None, "rating": e.get("rating"),
             "context": json.dumps(e.get("context", {})), "ts": e["ts"].rstrip("Z"),
             "created_at": e["ts"].rstrip("Z"), "source": "inbox",
             "event_hash": hashlib.sha256(f"{i}{e}".encode()).hexdigest()}
            for i, e in enumerate(events)]  # fmt: skip
    with store.transaction() as db:
        db.table("interactions").insert_all(rows, batch_size=1000)
        for v in range(1, 13):
            db.table("model_versions").insert({"family_id": "larkin", "version": v,
                "status": "active" if v == 12 else "retired", "created_at": events[0]["ts"],
                "path": f"/nonexistent/v{v}", "examples": 100 * v,
                "preference_accuracy": 0.5 + v / 40, "heldout_loss": 2 - v / 10,
                "safety_score": 1.0, "scores": "{}"})  # fmt: skip
        db.table("audit_log").insert_all(
            [{"ts": events[i % len(events)]["ts"].rstrip("Z"), "family_id": "larkin",
              "member_id": "mia", "event": "item_dropped", "rule": ("rating", "blocked_topic")[i % 2],
              "detail": json.dumps({"title": "A title", "request_id": str(i)})}
             for i in range(2000)], batch_size=1000)  # fmt: skip
    store.close()


def get(port: int, path: str, headers: dict[str, str]) -> tuple[int, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        t = time.perf_counter()
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        r.read()
        return r.status, time.perf_counter() - t
    finally:
        conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--copies", type=int, default=1, help="simulated years stored (seeds 1..N)")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--target-ms", type=float, default=200.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="insan-dash-bench-") as tmp_s:
        tmp = Path(tmp_s)
        events = [e for seed in range(1, args.copies + 1)
                  for e in simulate(args.days, seed, tmp / f"sim{seed}.jsonl")]  # fmt: skip
        model = build_tiny_gguf(tmp / "tiny.gguf")
        config = family_config(model, tmp / "d" / "state", tmp / "d" / "api.sock",
                               lan={"enabled": True, "host": "127.0.0.1", "port": 0, "advertise": False})  # fmt: skip
        config["families"] = yaml.safe_load(SIM_FAMILY.read_text())["families"]
        (tmp / "d" / "state").mkdir(parents=True)
        fill(tmp / "d" / "state" / "insan-edge.db", events)
        daemon = start_daemon(tmp / "d", config)
        try:
            c = daemon.client
            token = c.request("POST", "/v1/tokens", {"app": "bench", "scopes": ["admin"]})["token"]
            while (port := c.status()["lan"]["port"]) is None:
                time.sleep(0.1)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("POST", "/login", urllib.parse.urlencode({"secret": token}),
                         {"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
            r = conn.getresponse()
            r.read()
            conn.close()
            cookie = {"Cookie": r.headers["Set-Cookie"].split(";")[0]}
            bearer = {"Authorization": f"Bearer {token}"}
            targets = [("/v1/status (baseline)", "/v1/status", bearer)] + [
                (p, p, cookie) for p in PAGES
            ]
            results = {}
            for name, path, headers in targets:
                status, _ = get(port, path, headers)  # warm-up
                assert status == 200, (path, status)
                times = sorted(get(port, path, headers)[1] * 1000 for _ in range(args.rounds))
                results[name] = (statistics.median(times), times[int(0.95 * (len(times) - 1))])
        finally:
            daemon.stop()
    base = results["/v1/status (baseline)"][0]
    print(f"{len(events):,} interactions ({args.copies} x {args.days} simulated days), "
          f"{args.rounds} requests per path, over the LAN gateway on 127.0.0.1\n")  # fmt: skip
    print(f"{'path':<24}{'median ms':>11}{'p95 ms':>9}{'x status':>10}")
    for name, (med, p95) in results.items():
        print(f"{name:<24}{med:>11.1f}{p95:>9.1f}{med / base:>10.2f}")
    slow = [n for n, (med, _) in results.items() if n in PAGES and med > args.target_ms]
    print(f"\ntarget: every page's median under {args.target_ms:g} ms: "
          + ("met" if not slow else f"MISSED by {', '.join(slow)}"))  # fmt: skip
    return 1 if slow else 0


if __name__ == "__main__":
    with closing(sys.stdout):
        sys.exit(main())
