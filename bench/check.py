"""Latency of POST /v1/families/{family}/check: 20 items a request over the Unix socket to a real
daemon (started here, topic model on, embedded model), against the same judgement called
in-process in the same run (safety.assess with the same topic model, and keywords alone).

    PYTHONPATH=. nice python bench/check.py [--requests 100]

Every request's texts are new (a number in each description), so the topic model's cache never
answers for it: the worst case. Target: p95 under 100 ms over the socket.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from serve import EXAMPLE, launch, stop
from threadpoolctl import threadpool_limits

from insan_edge.check_eval import load
from insan_edge.config import load_config
from insan_edge.meaning import config_topics
from insan_edge.safety import assess
from insan_edge.topic_model import Embedder, ensure_model
from insan_edge.topics import TopicIndex, load_calibration

ROOT = Path(__file__).resolve().parents[1]
FAMILY, MEMBER, AT = "smith", "emma", "2026-11-23T15:00:00"


def batches(n: int) -> list[list[dict[str, Any]]]:
    rows = load(ROOT / "tests" / "data" / "check_labelled.jsonl")
    pick = [r for r in rows if r.unsafe][:10] + [r for r in rows if not r.unsafe][:10]
    return [[{"title": r.title, "description": f"{r.description} (#{i})".strip(), "kind": r.kind}
             for r in pick] for i in range(n)]  # fmt: skip


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=100)
    args = ap.parse_args()
    work = batches(args.requests + 5)  # the first 5 warm the daemon up, unmeasured
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        data = yaml.safe_load(EXAMPLE.read_text("utf-8"))
        data["system"]["paths"] = {"state_dir": str(tmp / "state"), "socket": str(tmp / "api.sock")}
        data["system"]["training"]["enabled"] = False
        data["system"]["safety"] = {"topic_model": True, "topic_device": "cpu"}
        config = tmp / "config.yaml"
        config.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
        proc, client = launch(config, tmp, timeout=300)
        socket_ms: list[float] = []
        try:
            for n, items in enumerate(work):
                started = time.perf_counter()
                answer = client.request("POST", f"/v1/families/{FAMILY}/check",
                                        {"member": MEMBER, "items": items, "context": {"at": AT}})  # fmt: skip
                if n >= 5:
                    socket_ms.append((time.perf_counter() - started) * 1000)
            cached_ms: list[float] = []  # apps re-ask the same titles: the embeddings are cached
            for items in work[5:]:
                started = time.perf_counter()
                client.request("POST", f"/v1/families/{FAMILY}/check",
                               {"member": MEMBER, "items": items, "context": {"at": AT}})  # fmt: skip
                cached_ms.append((time.perf_counter() - started) * 1000)
            assert len(answer["results"]) == 20
            topics_on = client.status()["topics"]["enabled"]
        finally:
            stop(proc)
        threadpool_limits(limits=1, user_api="blas")  # as the daemon runs (daemon.run)
        loaded = load_config(config)
        family = loaded.config.families[FAMILY]
        settings = loaded.config.system.safety
        embedder = Embedder(ensure_model(tmp / "state" / "models").parent, device="cpu")
        cal = load_calibration()
        index = TopicIndex.from_calibration(embedder.embed, config_topics(loaded.config), cal)
        at = datetime.fromisoformat(AT)

        def in_process(items: list[dict[str, Any]], meaning: TopicIndex | None) -> None:
            if meaning is not None:
                meaning.flags([f"{i['title']}. {i['description']}" for i in items])
            for i in items:
                assess(title=i["title"], description=i["description"], category=i["kind"],
                       content_rating="G", family=family, members=[MEMBER], settings=settings,
                       at=at, meaning=meaning)  # fmt: skip

        rows = {}
        fresh = batches(2 * args.requests + 10)[args.requests + 5 :]  # texts the index has not seen
        for name, meaning in (("in-process, topic model", index), ("in-process, keywords", None)):
            ms = []
            for items in fresh[: args.requests]:
                started = time.perf_counter()
                in_process(items, meaning)
                ms.append((time.perf_counter() - started) * 1000)
            rows[name] = ms
    rows = {"socket, new texts": socket_ms, "socket, texts seen before": cached_ms, **rows}
    base = rows["in-process, topic model"]
    print(f"{args.requests} requests of 20 items; topic model in the daemon: {topics_on}")
    print(f"{'path':<26} {'p50 ms':>8} {'p95 ms':>8} {'items/s':>9} {'p95 ratio':>10}")
    for name, ms in rows.items():
        p50, p95 = pct(ms, 50), pct(ms, 95)
        print(f"{name:<26} {p50:>8.1f} {p95:>8.1f} {20000 / statistics.mean(ms):>9.0f} "
              f"{p95 / pct(base, 95):>9.2f}x")  # fmt: skip
    for name in ("socket, new texts", "socket, texts seen before"):
        p95 = pct(rows[name], 95)
        print(f"{name}: p95 {p95:.1f} ms {'meets' if p95 < 100 else 'misses'} the 100 ms target")
    print(json.dumps({k: [round(v, 2) for v in (pct(m, 50), pct(m, 95))] for k, m in rows.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
