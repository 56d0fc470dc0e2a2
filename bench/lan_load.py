"""Load on the LAN gateway from a second process, against the Unix socket as baseline.

Starts the real daemon (the example config's families, the LAN gateway on 127.0.0.1 only, no
mDNS), then runs N concurrent clients for a fixed time, first over the Unix socket (no token:
the baseline), then over the gateway (each client with its own app token). The mix per client:
6 in 10 recommendation requests (members, counts and activities varied, so some hit the cache),
3 in 10 ingested events, 1 in 10 health checks. Prints requests per second, p50/p95 latency,
503s (the documented generation cap) and any other 5xx, per path, the gateway/socket ratios,
and the daemon's RSS over the run. Exit status 1 if any 5xx other than 503 was seen, or a 503
came without Retry-After.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import yaml

EXAMPLE = Path(__file__).resolve().parent.parent / "configs" / "family.example.yaml"
FAMILY = "smith"
ACTIVITIES = ["breakfast", "a rainy day", "homework", "a car ride", "baking", "bedtime"]


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)  # seconds, answered requests (< 500)
    statuses: Counter[int] = field(default_factory=Counter)
    busy_without_retry_after: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # transport failures

    def summary(self, seconds: float) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float:  # nearest rank, in ms
            return (
                round(lat[min(len(lat) - 1, round(p / 100 * (len(lat) - 1)))] * 1000, 1)
                if lat
                else 0.0
            )

        total = sum(self.statuses.values())
        return {
            "requests": total,
            "per_second": round(total / seconds, 1),
            "p50_ms": pct(50),
            "p95_ms": pct(95),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "busy_503": self.statuses.get(503, 0),
            "other_5xx": sum(n for st, n in self.statuses.items() if st >= 500 and st != 503),
            "busy_without_retry_after": self.busy_without_retry_after,
            "transport_errors": dict(self.errors),
        }


def write_config(tmp: Path, model: Path | None) -> Path:
    data = yaml.safe_load(EXAMPLE.read_text("utf-8"))
    system = data["system"]
    system["paths"] = {"state_dir": str(tmp / "state"), "socket": str(tmp / "api.sock")}
    system["model"].update(path=str(model) if model else None, context_length=1024)
    system["training"]["enabled"] = False
    # The limiter is not under test here: what the gateway costs, and whether it holds, is.
    system["lan"] = {"enabled": True, "host": "127.0.0.1", "port": 0, "advertise": False,
                     "requests_per_minute": 100000, "burst": 10000}  # fmt: skip
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    return path


def members() -> list[str]:
    data = yaml.safe_load(EXAMPLE.read_text("utf-8"))
    return list(data["families"][FAMILY]["members"])


async def client_loop(
    session: aiohttp.ClientSession, base: str, headers: dict[str, str], until: float,
    tally: Tally, rng: random.Random, who: list[str],
) -> None:  # fmt: skip
    while time.monotonic() < until:
        pick = rng.random()
        if pick < 0.6:
            body: Any = {"member": rng.choice(who), "count": rng.randint(1, 3),
                         "context": {"activity": rng.choice(ACTIVITIES), "at": "2026-06-06T10:00:00"}}  # fmt: skip
            method, path = "POST", f"/v1/families/{FAMILY}/recommendations"
        elif pick < 0.9:
            body = {"family": FAMILY, "member": rng.choice(who), "kind": "suggestion_accepted",
                    "item": rng.choice(ACTIVITIES), "ts": "2026-06-06T10:00:00Z"}  # fmt: skip
            method, path = "POST", "/v1/interactions"
        else:
            body, method, path = None, "GET", "/v1/health"
        started = time.perf_counter()
        try:
            async with session.request(method, base + path, json=body, headers=headers) as r:
                await r.read()
                status, retry_after = r.status, r.headers.get("Retry-After")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            tally.errors[type(exc).__name__] += 1
            continue
        tally.statuses[status] += 1
        if status < 500:
            tally.latencies.append(time.perf_counter() - started)
        if status == 503:
            if not retry_after:
                tally.busy_without_retry_after += 1
            await asyncio.sleep(min(float(retry_after or 1), 2.0))


async def load(base: str, unix: Path | None, tokens: list[str | None], seconds: float) -> Tally:
    tally, who = Tally(), members()
    connector = aiohttp.UnixConnector(str(unix)) if unix else aiohttp.TCPConnector()
    until = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=180)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(
            client_loop(session, base, {"Authorization": f"Bearer {t}"} if t else {}, until,
                        tally, random.Random(i), who)
            for i, t in enumerate(tokens)
        ))  # fmt: skip
    return tally


class RssWatch(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.samples: list[tuple[str, float]] = []
        self.phase = "start"
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            try:
                self.samples.append((self.phase, self.proc.memory_info().rss / 2**20))
            except psutil.Error:
                return

    def of(self, phase: str) -> list[float]:
        return [mb for p, mb in self.samples if p == phase]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--model", type=Path, help="a GGUF to serve (default: the embedded Gemma)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    ap.add_argument("--seconds", type=float, default=30, help="per path (default 30)")
    ap.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from serve import launch, stop  # the same daemon start and stop as bench/serve.py

    with tempfile.TemporaryDirectory(prefix="insan-lan-load-") as tmpdir:
        tmp = Path(tmpdir)
        proc, client = launch(write_config(tmp, args.model), tmp, timeout=300)
        watch = RssWatch(proc.pid)
        try:
            deadline = time.monotonic() + 60
            while (port := client.status()["lan"]["port"]) is None and time.monotonic() < deadline:
                time.sleep(0.1)
            tokens: list[str | None] = [
                client.request("POST", "/v1/tokens", {"app": f"load-{i}", "scopes": [f"recommend:{FAMILY}", f"ingest:{FAMILY}"]})["token"]
                for i in range(args.clients)
            ]  # fmt: skip
            # Warm-up: the first answers load the prompt cache and allocate the model's buffers.
            asyncio.run(load("http://localhost", tmp / "api.sock", [None] * 2, 5))
            watch.start()
            watch.phase = "socket"
            sock = asyncio.run(load("http://localhost", tmp / "api.sock",
                                    [None] * args.clients, args.seconds))  # fmt: skip
            watch.phase = "gateway"
            lan = asyncio.run(load(f"http://127.0.0.1:{port}", None, tokens, args.seconds))
            watch.phase = "end"
            time.sleep(1.0)
            status = client.status()
        finally:
            watch.done.set()
            stop(proc)
        if proc.returncode not in (0, -signal.SIGKILL):
            print(f"the daemon exited with {proc.returncode}", file=sys.stderr)
    rows = {"socket": sock.summary(args.seconds), "gateway": lan.summary(args.seconds)}
    rss = {p: watch.of(p) for p in ("socket", "gateway", "end")}
    memory = {
        "first_mb": round(rss["socket"][0], 1) if rss["socket"] else None,
        "last_mb": round((rss["end"] or rss["gateway"])[-1], 1),
        "max_mb": round(max(mb for v in rss.values() for mb in v), 1),
        "gateway_first_mb": round(rss["gateway"][0], 1) if rss["gateway"] else None,
        "gateway_last_mb": round(rss["gateway"][-1], 1) if rss["gateway"] else None,
    }
    s, g = rows["socket"], rows["gateway"]

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b else "-"

    print(
        f"\n{args.clients} clients, {args.seconds:.0f} s per path, model {status['model']['name']}"
    )
    print(
        f"{'path':<9}{'requests':>9}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'503':>6}{'other 5xx':>10}"
    )
    for name, r in rows.items():
        print(f"{name:<9}{r['requests']:>9}{r['per_second']:>8}{r['p50_ms']:>9}{r['p95_ms']:>9}"
              f"{r['busy_503']:>6}{r['other_5xx']:>10}")  # fmt: skip
    print(f"{'gw/sock':<9}{'':>9}{ratio(g['per_second'], s['per_second']):>8}"
          f"{ratio(g['p50_ms'], s['p50_ms']):>9}{ratio(g['p95_ms'], s['p95_ms']):>9}")  # fmt: skip
    print(f"daemon RSS: {memory['first_mb']} MB at the start, {memory['last_mb']} MB at the end, "
          f"{memory['max_mb']} MB at most")  # fmt: skip
    result = {"clients": args.clients, "seconds": args.seconds, "paths": rows, "memory": memory}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    bad = any(r["other_5xx"] or r["busy_without_retry_after"] for r in rows.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
