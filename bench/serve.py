"""The daemon's overhead over llama-cpp-python called directly (see bench/README.md).

Sends N recommendation requests to the real daemon over its Unix socket in each mode
(``--modes``, default ``catalog,generate``), stops it, then replays each generate request on
``llama_cpp.Llama`` with the prompt, grammar, sampling settings and seed the daemon used and
``max_tokens`` set to the daemon's completion tokens, and the same generation without the
grammar (constrained against unconstrained tokens/s). Catalog requests are compared with
llama-cpp-python scoring the same number of candidates the plain way (``logits_all=True``, each
candidate evaluated after the cached prompt, full-vocabulary log-softmax in numpy).
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

from insan_edge.catalog import starter_entries
from insan_edge.client import ClientError, LocalClient
from insan_edge.config import LoadedConfig, load_config
from insan_edge.contracts import RequestContext
from insan_edge.engine import schema_to_gbnf
from insan_edge.generation import parse_items
from insan_edge.prompts import build_prompt, output_schema, token_budget
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
    generation_ms: float  # the daemon's usage.generation_ms (+ scoring_ms); direct: = ms
    scored: int = 0  # catalog candidates scored

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
    config: Path, tmp: Path, ctxs: list[dict[str, Any]], count: int, modes: list[str]
) -> tuple[dict[str, list[Run]], dict[str, Any]]:
    """Client-side latency of each request over the socket per mode, and /v1/status at the end."""
    log_path = tmp / "daemon.log"
    runs: dict[str, list[Run]] = {m: [] for m in modes}
    try:
        proc, client = launch(config, tmp)
    except ClientError as exc:
        tail = log_path.read_text("utf-8", "replace")[-4000:]
        sys.exit(f"{exc}\n--- daemon log (tail) ---\n{tail}")
    try:
        for mode in modes:
            for ctx in ctxs:
                body = {"member": MEMBER, "count": count, "context": ctx, "mode": mode}
                started = time.perf_counter()
                answer = client.recommend(FAMILY, body)
                ms = (time.perf_counter() - started) * 1000
                usage = answer["usage"]
                titles = [i["title"] for i in answer["items"]]
                tokens = (usage["prompt_tokens"], usage["completion_tokens"])
                busy = usage["generation_ms"] + usage.get("scoring_ms", 0.0)
                runs[mode].append(Run(ms, *tokens, titles, busy, usage.get("scored", 0)))
                print(f"  daemon {mode} {len(runs[mode])}/{len(ctxs)}: {ms:.0f} ms, {usage}",
                      flush=True)  # fmt: skip
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


def decode_rate(llm: Any, tokens: list[int], n: int, s: Any, gbnf: str | None) -> tuple[int, float]:
    """(tokens, seconds) of one generation after its prompt: prompt evaluation left out."""
    import llama_cpp
    from llama_cpp.llama_grammar import LlamaGrammar

    llm.reset()
    llama_cpp.llama_perf_context_reset(llm.ctx)
    started = time.perf_counter()
    out: Any = llm.create_completion(
        tokens, max_tokens=n, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
        repeat_penalty=s.repeat_penalty, frequency_penalty=s.frequency_penalty, seed=s.seed,
        grammar=LlamaGrammar.from_string(gbnf, verbose=False) if gbnf else None,
    )  # fmt: skip
    wall = time.perf_counter() - started
    prompt_s = llama_cpp.llama_perf_context(llm.ctx).t_p_eval_ms / 1000
    return int(out["usage"]["completion_tokens"]), max(wall - prompt_s, 1e-9)


def decode_rate_checked(
    llm: Any, tokens: list[int], n: int, s: Any, gbnf: str
) -> tuple[int, float]:
    """(tokens, seconds) of the engine's checked grammar sampling (``engine_sampling``), the
    same loop ``Engine.generate_checked`` runs, after its prompt."""
    import llama_cpp
    import numpy as np

    from insan_edge.engine_sampling import GrammarSampler

    llm.reset()
    llm.eval(tokens)
    sampler = GrammarSampler(llm, gbnf, s, s.seed)
    started, made = time.perf_counter(), 0
    try:
        while made < n:
            logits = np.ctypeslib.as_array(
                llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(sampler.n_vocab,)
            )
            token = sampler.sample(logits)
            if token is None or llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
                break
            made += 1
            llm.eval([token])
    finally:
        sampler.close()
    return made, max(time.perf_counter() - started, 1e-9)


def direct_catalog(loaded: LoadedConfig, model: Path, ctxs: list[dict[str, Any]],
                   daemon: list[Run]) -> list[Run]:  # fmt: skip
    """As many starter-catalog candidates as the daemon scored, on llama_cpp.Llama the plain
    way: logits for every position, each candidate after the (prefix-cached) prompt."""
    import numpy as np

    from insan_edge import llamacpp
    from insan_edge.catalog import CatalogItem
    from insan_edge.prompts import ANSWER_PREFIX, plan_prompt, title_target
    from insan_edge.ranking import shortlist

    s, system = loaded.config.system.model, loaded.config.system
    family = loaded.config.families[FAMILY]
    threads = s.threads or os.cpu_count() or 1
    llama_cpp = llamacpp.load()  # the engine's load: same buffers
    llm = llama_cpp.Llama(
        model_path=str(model), n_ctx=s.context_length, n_threads=threads,
        n_threads_batch=threads, n_gpu_layers=s.n_gpu_layers, logits_all=True,
        use_mmap=True, verbose=False,
    )  # fmt: skip
    pool = [CatalogItem(i, "*", e.title, e.description, e.category, e.content_rating,
                        tuple(e.topics), e.min_age, e.max_age, "starter")
            for i, e in enumerate(starter_entries())]  # fmt: skip
    runs = []
    for raw, d in zip(ctxs, daemon, strict=True):
        ctx = RequestContext.model_validate(raw)
        at = ctx.at or datetime.now()
        plan = plan_prompt(family, [MEMBER], ctx, system.safety, [], at)
        short = shortlist(pool, family=family, targets=[MEMBER], plan=plan, context=ctx,
                          safety=system.safety, at=at, meaning=None, recent=set(),
                          size=max(d.scored, 1), salt=str(raw))  # fmt: skip
        started = time.perf_counter()
        prompt = llm.tokenize((plan.prompt + ANSWER_PREFIX).encode("utf-8"), add_bos=True)
        llm.eval(prompt)  # after the first request, llama-cpp-python reuses the common prefix
        n_p, best = llm.n_tokens, []
        for item, _rel, _hits in short.candidates:
            cont = llm.tokenize(title_target(item.title).encode(), add_bos=False, special=False)
            llm.n_tokens = n_p
            llm.eval(cont)
            rows = np.asarray(llm.scores[n_p - 1 : n_p + len(cont) - 1], dtype=np.float64)
            top = rows.max(axis=1, keepdims=True)
            logz = top[:, 0] + np.log(np.exp(rows - top).sum(axis=1))
            best.append((float(sum(rows[j, t] - logz[j] for j, t in enumerate(cont))), item.title))
        llm.n_tokens = n_p
        ms = (time.perf_counter() - started) * 1000
        titles = [t for _lp, t in sorted(best, reverse=True)[: len(d.titles)]]
        runs.append(Run(ms, len(prompt), 0, titles, ms, len(short.candidates)))
        print(
            f"  direct catalog {len(runs)}/{len(ctxs)}: {ms:.0f} ms, {len(best)} scored", flush=True
        )
    llm.close()
    return runs


def direct(loaded: LoadedConfig, model: Path, ctxs: list[dict[str, Any]], count: int,
           daemon: list[Run], rates: dict[str, list[tuple[int, float]]]) -> list[Run]:  # fmt: skip
    """The same generations on llama_cpp.Llama, with Engine's settings and calls."""
    from llama_cpp.llama_grammar import LlamaGrammar

    from insan_edge import llamacpp

    llama_cpp = llamacpp.load()  # the engine's load: same buffers

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
        for label, grammar in (("library grammar", gbnf), ("unconstrained", None)):
            rates.setdefault(label, []).append(
                decode_rate(llm, tokens, max(1, d.completion_tokens), s, grammar)
            )
        rates.setdefault("checked grammar", []).append(
            decode_rate_checked(llm, tokens, max(1, d.completion_tokens), s, gbnf)
        )
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


def catalog_report(d_runs: list[Run], x_runs: list[Run]) -> dict[str, Any]:
    ds, xs = summary(d_runs), summary(x_runs)
    print(f"\ncatalog mode ({d_runs[0].scored} candidates scored per request)")
    print(f"{'':34}{'median ms':>10}{'p95 ms':>10}")
    for label, v in (("daemon (client, socket)", ds), ("llama-cpp-python logits_all", xs)):
        print(f"{label:34}{v['median_ms']:10.0f}{v['p95_ms']:10.0f}")
    ratio = {k: ds[k] / xs[k] for k in ("median_ms", "p95_ms")}
    print(f"{'ratio daemon/direct':34}{ratio['median_ms']:10.3f}{ratio['p95_ms']:10.3f}")
    verdict = "met" if ds["median_ms"] < 2000 else "NOT met"
    print(f"target catalog p50 < 2000 ms: {verdict} ({ds['median_ms']:.0f} ms)")
    return {"daemon": ds, "direct": xs, "ratio": ratio}


def rate_report(rates: dict[str, list[tuple[int, float]]]) -> dict[str, float]:
    tps = {k: sum(n for n, _ in v) / sum(t for _, t in v) for k, v in rates.items()}
    free = tps["unconstrained"]
    print("\ndecode tokens/s after the prompt (same prompts and max_tokens):")
    for label, v in tps.items():
        print(f"  {label:18}{v:8.1f}  x{v / free:.2f} of unconstrained")
    ratio = tps["checked grammar"] / free
    print(f"target checked grammar >= 0.8x unconstrained: {'met' if ratio >= 0.8 else 'NOT met'}")
    return {**tps, "ratio": ratio}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--requests", type=int, default=8, help="requests per mode (default 8)")
    ap.add_argument("--count", type=int, default=3, help="items per request (default 3)")
    ap.add_argument("--modes", default="catalog,generate", help="catalog,generate (default)")
    ap.add_argument("--quick", action="store_true", help="3 requests of 2 items")
    ap.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = ap.parse_args()
    n, count = (3, 2) if args.quick else (args.requests, args.count)
    modes = [m for m in args.modes.split(",") if m]
    ctxs = contexts(n)
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="insan-bench-") as name:
        tmp = Path(name)
        config = write_config(tmp)
        print(f"daemon: {n} requests per mode {modes} for {FAMILY}/{MEMBER}, count {count}, "
              f"seed {SEED}", flush=True)  # fmt: skip
        d_runs, status = via_daemon(config, tmp, ctxs, count, modes)
        loaded, model = load_config(config), Path(status["model"]["file"])
        if "catalog" in modes:
            print("direct llama-cpp-python, catalog scoring (daemon stopped):", flush=True)
            x_cat = direct_catalog(loaded, model, ctxs, d_runs["catalog"])
        if "generate" in modes:
            print("direct llama-cpp-python, generation (daemon stopped):", flush=True)
            rates: dict[str, list[tuple[int, float]]] = {}
            x_runs = direct(loaded, model, ctxs, count, d_runs["generate"], rates)
    if "generate" in modes:
        print("\ngenerate mode")
        result["generate"] = report(d_runs["generate"], x_runs, status)
        result["decode_tokens_per_s"] = rate_report(rates)
    if "catalog" in modes:
        result["catalog"] = catalog_report(d_runs["catalog"], x_cat)
    if args.json:
        result.update(requests=n, count=count, seed=SEED)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n", "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
