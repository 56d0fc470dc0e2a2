"""The daemon's overhead over llama-cpp-python called directly (see bench/README.md).

Sends N recommendation requests to the real daemon over its Unix socket, stops it, then replays
each request on ``llama_cpp.Llama`` with the prompt, grammar, sampling settings and seed the
daemon used and ``max_tokens`` set to the daemon's completion tokens.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from insan_edge.client import ClientError, LocalClient
from insan_edge.config import LoadedConfig, load_config
from insan_edge.contracts import RequestContext
from insan_edge.engine import schema_to_gbnf
from insan_edge.prompts import build_prompt, output_schema, token_budget
from insan_edge.recommender import parse_items
from insan_edge.safety import allowed_categories, member_rating_limit, ratings_within

EXAMPLE = Path(__file__).resolve().parent.parent / "configs" / "family.example.yaml"
FAMILY, MEMBER, SEED = "smith", "emma", 42
AT = "2025-06-02T08:00:00"  # a Monday morning: no time restriction applies
ACTIVITIES = ["breakfast", "a rainy day at home", "the walk to school", "a car ride", "baking"]
ACTIVITIES += ["gardening", "a visit to grandma", "tidying up", "a picnic", "a sick day"]


@dataclass
class Run:
    ms: float
    prompt_tokens: int
    completion_tokens: int
    titles: list[str]
    generation_ms: float  # the daemon's usage.generation_ms (Engine.generate); direct: = ms

    @property
    def tokens(self) -> tuple[int, int]:
        return self.prompt_tokens, self.completion_tokens


def contexts(n: int) -> list[dict[str, Any]]:
    """A distinct context per request (the activity varies), all on a Monday morning."""
    acts = [ACTIVITIES[i % len(ACTIVITIES)] + f" {i // len(ACTIVITIES) or ''}" for i in range(n)]
    return [{"day_of_week": "monday", "time_of_day": "morning", "activity": a.strip(), "at": AT}
            for a in acts]  # fmt: skip


def write_config(tmp: Path) -> Path:
    data = yaml.safe_load(EXAMPLE.read_text("utf-8"))
    system = data["system"]
    system["paths"] = {"state_dir": str(tmp / "state"), "socket": str(tmp / "api.sock")}
    system["model"].update(path=None, seed=SEED)
    system["recommendations"].update(cache_seconds=0, generation_rounds=1)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    return path


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL: a daemon busy generating may not stop at once."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        print("  the daemon did not stop within 30 s of SIGTERM; killing it", flush=True)
        proc.kill()
        proc.wait()


def launch(
    config: Path, tmp: Path, timeout: float = 120, client_timeout: float = 300
) -> tuple[subprocess.Popen[bytes], LocalClient]:
    """The real daemon on ``config`` (state and socket under ``tmp``, log in tmp/daemon.log),
    once it answers /v1/health; raises ClientError if it exits or is not up in ``timeout``."""
    sock, log_path = tmp / "api.sock", tmp / "daemon.log"
    argv = [sys.executable, "-m", "insan_edge.cli", "run", "--config", str(config)]
    argv += ["--state-dir", str(tmp / "state"), "--socket", str(sock)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    client = LocalClient(sock, timeout=client_timeout)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise ClientError("the daemon did not start")
        with contextlib.suppress(ClientError):
            client.health()
            return proc, client
        time.sleep(0.1)


def via_daemon(
    config: Path, tmp: Path, ctxs: list[dict[str, Any]], count: int
) -> tuple[list[Run], dict[str, Any]]:
    """Client-side latency of each request over the socket, and /v1/status at the end."""
    log_path = tmp / "daemon.log"
    runs: list[Run] = []
    try:
        proc, client = launch(config, tmp)
    except ClientError as exc:
        tail = log_path.read_text("utf-8", "replace")[-4000:]
        sys.exit(f"{exc}\n--- daemon log (tail) ---\n{tail}")
    try:
        for ctx in ctxs:
            started = time.perf_counter()
            answer = client.recommend(FAMILY, {"member": MEMBER, "count": count, "context": ctx})
            ms = (time.perf_counter() - started) * 1000
            usage = answer["usage"]
            titles = [i["title"] for i in answer["items"]]
            tokens = (usage["prompt_tokens"], usage["completion_tokens"])
            runs.append(Run(ms, *tokens, titles, usage["generation_ms"]))
            print(f"  daemon {len(runs)}/{len(ctxs)}: {ms:.0f} ms, {usage}", flush=True)
        return runs, client.status()
    except ClientError as exc:
        tail = log_path.read_text("utf-8", "replace")[-4000:]
        sys.exit(f"daemon request {len(runs) + 1} failed: {exc}\n--- daemon log (tail) ---\n{tail}")
    finally:
        stop(proc)


def mirror(llm: Any, loaded: LoadedConfig, raw: dict[str, Any], count: int) -> tuple[str, str]:
    """The prompt and GBNF ``Recommender._answer`` builds for this request (round 0)."""
    system, rec = loaded.config.system, loaded.config.system.recommendations
    family, targets = loaded.config.families[FAMILY], [MEMBER]
    ctx = RequestContext.model_validate(raw)
    at = ctx.at or datetime.now()  # naive, so the daemon uses it as it is
    limits = {m: member_rating_limit(family.members[m], family, system.safety) for m in targets}
    categories = allowed_categories(family, targets, at)
    ratings = ratings_within(limits.values())
    prompt = build_prompt(family, targets, ctx, limits, [], categories)  # fresh store: no recent
    room = llm.n_ctx() - len(llm.tokenize(prompt.encode("utf-8"), add_bos=True)) - 1
    tmax, dmax = rec.title_max_chars, rec.description_max_chars
    batch = max(1, min(count, room // token_budget(1, tmax, dmax)))
    schema = output_schema(batch, categories, ratings, tmax, dmax)
    return prompt, schema_to_gbnf(schema)


def direct(loaded: LoadedConfig, model: Path, ctxs: list[dict[str, Any]], count: int,
           daemon: list[Run]) -> list[Run]:  # fmt: skip
    """The same generations on llama_cpp.Llama, with Engine's settings and calls."""
    import llama_cpp
    from llama_cpp.llama_grammar import LlamaGrammar

    s = loaded.config.system.model
    threads = s.threads or os.cpu_count() or 1
    llm = llama_cpp.Llama(
        model_path=str(model), n_ctx=s.context_length, n_threads=threads,
        n_threads_batch=threads, n_gpu_layers=0 if s.n_gpu_layers == "auto" else s.n_gpu_layers,
        seed=s.seed if s.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED,
        use_mmap=True, verbose=False,
    )  # fmt: skip
    runs = []
    for raw, d in zip(ctxs, daemon, strict=True):
        prompt, gbnf = mirror(llm, loaded, raw, count)
        started = time.perf_counter()  # timed as Engine.generate: tokenize, grammar, generate
        tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=True)
        out: Any = llm.create_completion(
            tokens, max_tokens=max(1, d.completion_tokens), temperature=s.temperature,
            top_p=s.top_p, top_k=s.top_k, repeat_penalty=s.repeat_penalty,
            frequency_penalty=s.frequency_penalty, seed=s.seed,  # round 0: seed + 0
            grammar=LlamaGrammar.from_string(gbnf, verbose=False),
        )  # fmt: skip
        ms = (time.perf_counter() - started) * 1000
        items = parse_items(out["choices"][0]["text"])
        titles = [" ".join(str(i.get("title", "")).split()) for i in items]
        usage = out["usage"]
        runs.append(Run(ms, usage["prompt_tokens"], usage["completion_tokens"], titles, ms))
        print(f"  direct {len(runs)}/{len(ctxs)}: {ms:.0f} ms, {usage}", flush=True)
    llm.close()
    return runs


def summary(runs: list[Run]) -> dict[str, float]:
    """Median, p95 (interpolated), mean completion tokens, tokens per second of latency."""
    ms = [r.ms for r in runs]
    tokens = sum(r.completion_tokens for r in runs)
    return {
        "median_ms": statistics.median(ms),
        "p95_ms": statistics.quantiles(ms, n=20, method="inclusive")[18] if len(ms) > 1 else ms[0],
        "mean_completion_tokens": tokens / len(runs),
        "tokens_per_s": tokens / (sum(ms) / 1000),
    }


def report(d_runs: list[Run], x_runs: list[Run], status: dict[str, Any]) -> dict[str, Any]:
    print("\n  #  daemon ms  (outside generate)  direct ms  prompt tok d/x  completion tok d/x"
          "  same items")  # fmt: skip
    for i, (d, x) in enumerate(zip(d_runs, x_runs, strict=True), 1):
        same = "yes" if set(d.titles) <= set(x.titles) else "NO"
        print(f"{i:3}  {d.ms:9.0f}  {d.ms - d.generation_ms:18.1f}  {x.ms:9.0f}"
              f"  {d.prompt_tokens:6}/{x.prompt_tokens:<6}"
              f"  {d.completion_tokens:9}/{x.completion_tokens:<8}  {same:>10}"
              + ("" if d.tokens == x.tokens else "  MISMATCH"))  # fmt: skip
    ds, xs = summary(d_runs), summary(x_runs)
    ratio = {k: ds[k] / xs[k] for k in ("median_ms", "p95_ms")}
    print(f"\n{'':28}{'median ms':>10}{'p95 ms':>10}{'mean compl tok':>16}{'tok/s':>8}")
    for label, s in (("daemon (client, socket)", ds), ("direct llama-cpp-python", xs)):
        print(f"{label:28}{s['median_ms']:10.0f}{s['p95_ms']:10.0f}"
              f"{s['mean_completion_tokens']:16.1f}{s['tokens_per_s']:8.1f}")  # fmt: skip
    print(f"{'ratio daemon/direct':28}{ratio['median_ms']:10.3f}{ratio['p95_ms']:10.3f}")
    outside = statistics.median(d.ms - d.generation_ms for d in d_runs)
    print(f"daemon time outside Engine.generate (client latency - usage.generation_ms): "
          f"median {outside:.1f} ms")  # fmt: skip
    mem, model = status["memory"], status["model"]
    print(f"\ndaemon RSS (from /v1/status): {mem['rss_mb']:.0f} MB; model {model['name']}, "
          f"{model['threads']} threads, context {model['context_length']}")  # fmt: skip
    mismatches = sum(d.tokens != x.tokens for d, x in zip(d_runs, x_runs, strict=True))
    print(f"token counts: {len(d_runs) - mismatches}/{len(d_runs)} requests match the daemon's")
    return {"daemon": ds, "direct": xs, "ratio": ratio, "daemon_rss_mb": mem["rss_mb"],
            "daemon_outside_generate_median_ms": outside,
            "token_mismatches": mismatches, "runs": {"daemon": [asdict(r) for r in d_runs],
                                                     "direct": [asdict(r) for r in x_runs]}}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--requests", type=int, default=8, help="requests (default 8)")
    ap.add_argument("--count", type=int, default=3, help="items per request (default 3)")
    ap.add_argument("--quick", action="store_true", help="3 requests of 2 items")
    ap.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = ap.parse_args()
    n, count = (3, 2) if args.quick else (args.requests, args.count)
    ctxs = contexts(n)
    with tempfile.TemporaryDirectory(prefix="insan-bench-") as name:
        tmp = Path(name)
        config = write_config(tmp)
        print(f"daemon: {n} requests for {FAMILY}/{MEMBER}, count {count}, seed {SEED}", flush=True)
        d_runs, status = via_daemon(config, tmp, ctxs, count)
        print("direct llama-cpp-python (daemon stopped):", flush=True)
        x_runs = direct(load_config(config), Path(status["model"]["file"]), ctxs, count, d_runs)
    result = report(d_runs, x_runs, status)
    if args.json:
        result.update(requests=n, count=count, seed=SEED)
        args.json.write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
