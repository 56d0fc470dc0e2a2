"""Serving latency while a training run is live, against the same requests on an idle daemon.

    .venv/bin/python bench/serve_training.py              # 4 requests of 2 items each way
    .venv/bin/python bench/serve_training.py --requests 6 --json /tmp/serve-training.json

One real daemon (the embedded Gemma, ``configs/family.example.yaml`` with seed 42, no answer
cache, one generation round), a simulated two weeks of the Smith family in its inbox. First the
requests are sent with no trainer (``idle``); then a run is asked for with ``--now`` and, once
the trainer is stepping, the same requests are sent again (``training``): each one pauses the
trainer (SIGSTOP) before it is answered, and the trainer continues in between. Same prompts,
seeds and token counts both ways, so the ratio is what the live run costs a request. The
trainer's state is sampled during every request. The state dir is kept (``--state-dir``) so the
dequantized training weights are prepared only once.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

from insan_edge.client import LocalClient
from insan_edge.config import parse_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import FAMILY, MEMBER, SEED, contexts, launch, stop
from serve import write_config as serve_config

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("sim", ROOT / "scripts" / "simulate_family.py")
assert _spec and _spec.loader
sim = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sim)


def write_config(state: Path) -> Path:
    """bench/serve.py's config (embedded model, seed, no cache, one round), training on."""
    path = serve_config(state)
    data = yaml.safe_load(path.read_text("utf-8"))
    data["system"]["training"].update(
        enabled=True,
        idle_window={"start": "00:00", "end": "00:00"},
        quiet_period_seconds=0,
        min_interactions_for_training=100000,  # only the run asked for
        pause_grace_seconds=3600,  # paused, never stopped, for the whole benchmark
        epochs=50,  # longer than the benchmark
    )
    path.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    return path


def trainer(daemon: psutil.Process) -> psutil.Process | None:
    for child in daemon.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "insan_edge.training.worker" in " ".join(child.cmdline()):
                return child
    return None


def _sample(watch: psutil.Process | None, states: list[str], done: threading.Event) -> None:
    """The trainer's process state every 50 ms until ``done``."""
    while not done.is_set() and watch is not None:
        with contextlib.suppress(psutil.Error):
            states.append(watch.status())
        time.sleep(0.05)


def send(client: LocalClient, ctxs: list[dict[str, Any]], count: int, label: str,
         watch: psutil.Process | None) -> list[dict[str, Any]]:  # fmt: skip
    out = []
    for i, ctx in enumerate(ctxs, 1):
        states: list[str] = []
        done = threading.Event()

        sampler = threading.Thread(target=_sample, args=(watch, states, done))
        sampler.start()
        started = time.perf_counter()
        answer = client.recommend(FAMILY, {"member": MEMBER, "count": count, "context": ctx})
        ms = (time.perf_counter() - started) * 1000
        done.set()
        sampler.join()
        usage = answer["usage"]
        paused = states.count(psutil.STATUS_STOPPED) / len(states) if states else None
        out.append({"ms": ms, "completion_tokens": usage["completion_tokens"],
                    "prompt_tokens": usage["prompt_tokens"], "trainer_paused_share": paused})  # fmt: skip
        share = "" if paused is None else f", trainer paused in {paused:.0%} of samples"
        print(f"  {label} {i}/{len(ctxs)}: {ms:.0f} ms, {usage['completion_tokens']} tokens{share}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--count", type=int, default=2)
    ap.add_argument("--state-dir", type=Path, default=Path("/tmp/insan-bench-serve"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    state = args.state_dir
    state.mkdir(parents=True, exist_ok=True)
    config = write_config(state)
    parsed = parse_config(config.read_text(), str(config)).config
    events = sim.simulate(parsed, FAMILY, days=14, seed=1, start="2026-10-01")
    proc, client = launch(config, state, timeout=180, client_timeout=600)
    ctxs = contexts(args.requests)
    try:
        client.request("POST", "/v1/interactions", {"events": events})
        # One unmeasured request first, so both rounds start from the same llama.cpp KV cache
        # (the previous round's last prompt): prefix reuse changes the sampled tokens.
        send(client, ctxs[-1:], args.count, "warm-up", None)
        print(f"idle daemon: {len(ctxs)} requests of {args.count} items, seed {SEED}", flush=True)
        idle = send(client, ctxs, args.count, "idle", None)
        run = client.request("POST", f"/v1/families/{FAMILY}/train", {"now": True})["run"]
        print(f"training run {run['id']} asked for; waiting for the trainer to step", flush=True)
        deadline = time.monotonic() + 1800
        while True:
            runs = client.request("GET", f"/v1/families/{FAMILY}/model")["runs"]
            row = next(r for r in runs if r["id"] == run["id"])
            if row["status"] == "running" and (row["step"] or 0) >= 1:
                break
            if row["status"] in ("failed", "refused", "promoted") or time.monotonic() > deadline:
                sys.exit(f"the run did not get going: {row}")
            time.sleep(2)
        worker = trainer(psutil.Process(proc.pid))
        step_before = row["step"]
        busy = send(client, ctxs, args.count, "training", worker)
        runs = client.request("GET", f"/v1/families/{FAMILY}/model")["runs"]
        row = next(r for r in runs if r["id"] == run["id"])
        rss = client.status()["memory"]["rss_mb"]
    finally:
        stop(proc)

    print(f"\n{'':30}{'median ms':>10}{'p95 ms':>10}{'mean tok':>10}")
    result: dict[str, Any] = {}
    for label, rows in (("idle daemon", idle), ("trainer live, paused", busy)):
        ms = [r["ms"] for r in rows]
        p95 = statistics.quantiles(ms, n=20, method="inclusive")[18] if len(ms) > 1 else ms[0]
        tok = statistics.mean(r["completion_tokens"] for r in rows)
        result[label] = {"median_ms": statistics.median(ms), "p95_ms": p95, "rows": rows}
        print(f"{label:30}{statistics.median(ms):10.0f}{p95:10.0f}{tok:10.1f}")
    a, b = result["idle daemon"], result["trainer live, paused"]
    ratio = {k: b[k] / a[k] for k in ("median_ms", "p95_ms")}
    print(f"{'ratio training/idle':30}{ratio['median_ms']:10.3f}{ratio['p95_ms']:10.3f}")
    same = all(x["completion_tokens"] == y["completion_tokens"] for x, y in zip(idle, busy, strict=True))  # fmt: skip
    shares = [r["trainer_paused_share"] for r in busy if r["trainer_paused_share"] is not None]
    print(f"same token counts both ways: {'yes' if same else 'NO'}; trainer paused in "
          f"{min(shares, default=0):.0%}-{max(shares, default=0):.0%} of samples during requests; "
          f"it went from step {step_before} to {row['step']} between them; daemon RSS {rss:.0f} MB")  # fmt: skip
    if args.json:
        result.update(ratio=ratio, same_tokens=same, requests=len(ctxs), count=args.count)
        args.json.write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
