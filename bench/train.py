"""Peak memory and step time of insan-edge's trainer against a plain QLoRA loop, in one run.

    .venv/bin/python bench/train.py                 # 10 optimizer steps of 4 examples each
    .venv/bin/python bench/train.py --quick         # 3 steps
    .venv/bin/python bench/train.py --steps 20 --examples 40 --json /tmp/train.json

Model: the embedded Gemma 3 270M, dequantized once by ``prepare_weights`` into a cached bf16
directory (state under /tmp/insan-bench unless ``--state-dir``). Data: serving prompts for the
example family (``plan_prompt`` + ``ANSWER_PREFIX``) continued by ``title_target(title)``, the
same examples, in the same order, for every row. Rows:

- ``trainer``: ``python -m insan_edge.training.worker JOB_DIR`` started as the daemon starts it
  (``trainer_command``, ``preexec_fn=trainer_preexec(memory_mb)``), one epoch over exactly
  steps x batch_size training rows, so it makes ``--steps`` optimizer steps; the chosen
  titles' loss alone (``preference_weight: 0``), the same objective as the plain loop.
- ``trainer+pairs``: the same with the daemon's default objective, which adds the pairwise
  term over each row's two titles passed over (``preference_weight: 1``, packed rows): what
  the extra work costs.
- ``plain loop``: ``bench/train_baseline.py`` in its own process, with no cap: transformers +
  bitsandbytes nf4 + peft, ``prepare_model_for_kbit_training``, full-logits loss with the prompt
  masked to -100, AdamW; the same LoRA shape, compute dtype, micro-batch and accumulation.

Memory is the RSS of the process tree polled every 50 ms (psutil) and the kernel's high-water
mark of the process (``ru_maxrss`` from ``wait4``), which catches peaks between two polls.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

from insan_edge.config import load_config
from insan_edge.contracts import RequestContext
from insan_edge.modelfiles import ensure_embedded
from insan_edge.prompts import ANSWER_PREFIX, plan_prompt, title_target

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "configs" / "family.example.yaml"
BASELINE = Path(__file__).resolve().parent / "train_baseline.py"
FAMILY = "smith"
MEMORY_MB = 1536
BATCH = 4
HELDOUT = 2  # a couple of held-out rows, so the job looks like the daemon's
POLL_S = 0.05
LORA = {
    "rank": 8,
    "alpha": 16,
    "dropout": 0.05,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
# Plain activity titles, as a parent or a household app would log them when accepted.
TITLES = [
    "Pancake breakfast together", "Bake banana bread", "Backyard dinosaur fossil dig",
    "Nature scavenger hunt", "Family board game night", "Paper plate animal masks",
    "Bike ride along the river path", "Stargazing in the back garden", "Grow crystals in a jar",
    "Kick a football in the park", "Read aloud adventure chapter book", "Homemade pizza night",
    "Leaf rubbing nature collage", "Jigsaw puzzle of the solar system", "Pine cone bird feeder",
    "Indoor obstacle course", "Baking soda volcano experiment", "Plant sunflower seeds",
    "Charades with animal sounds", "Fruit kebabs with yogurt dip", "Woodland hike with a picnic",
    "Origami animal zoo", "Chess practice for beginners", "Make a rain gauge for the garden",
    "Camp out in the living room", "Bird watching walk with binoculars", "Word chain game",
    "Sock puppet theatre", "Simple coding with a robot kit", "Tend the vegetable patch",
    "Watercolour sunset painting", "Cardboard marble run", "Dominoes tournament",
    "Pond dipping for tadpoles", "Fresh pasta from scratch", "Yoga for kids with animal poses",
    "Kite flying on the hill", "Field guide to garden birds", "Magnet fishing science game",
    "Make a family time capsule", "Paper bridge building challenge", "Puddle jumping in rain boots",
]  # fmt: skip
GROUPS = [["emma"], ["leo"], ["dad", "emma"], ["mom", "leo"], ["emma", "leo"], ["mom"],
          ["dad", "mom", "emma", "leo"], ["dad", "leo"]]  # fmt: skip
# (day, part of the day, activity, environment): situations a household app asks about.
SITUATIONS = [
    ("saturday", "morning", "breakfast", ["home", "weekend"]),
    ("monday", "morning", "the walk to school", ["outside"]),
    ("wednesday", "afternoon", "a rainy day at home", ["home", "rainy"]),
    ("sunday", "afternoon", "a picnic", ["outside", "sunny", "weekend"]),
    ("friday", "evening", "dinner", ["home"]),
    ("saturday", "afternoon", "gardening", ["outside", "weekend"]),
    ("tuesday", "afternoon", "after school", ["home"]),
    ("sunday", "morning", "a visit to grandma", ["weekend"]),
    ("thursday", "evening", "tidying up", ["home"]),
    ("friday", "afternoon", "a car ride", []),
    ("saturday", "evening", "baking", ["home", "weekend"]),
    ("wednesday", "morning", "a sick day", ["home"]),
    ("sunday", "evening", None, ["home", "weekend"]),
]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
HOURS = {"morning": 9, "afternoon": 15, "evening": 18, "night": 21}
MONDAY = datetime(2026, 11, 23)


class BenchError(Exception):
    """A run that failed or could not start; the message says why."""


# --- data ---------------------------------------------------------------------------------


def build_examples(n: int) -> list[dict[str, Any]]:
    """``n`` distinct (prompt, target) pairs as the serving path would prompt for them."""
    family = load_config(EXAMPLE).config.family(FAMILY)
    safety = load_config(EXAMPLE).config.system.safety
    rows = []
    for i in range(n):
        members = GROUPS[i % len(GROUPS)]
        day, tod, activity, environment = SITUATIONS[i % len(SITUATIONS)]
        at = MONDAY + timedelta(days=DAYS.index(day), hours=HOURS[tod])
        ctx = RequestContext(
            day_of_week=day,  # type: ignore[arg-type]
            time_of_day=tod,  # type: ignore[arg-type]
            activity=activity,
            present=members,
            environment=environment,
            at=at,
        )
        recent = [TITLES[(i + k) % len(TITLES)] for k in range(1, 1 + i % 4)]  # 0-3 recent
        plan = plan_prompt(family, members, ctx, safety, recent, at)
        title = TITLES[i % len(TITLES)] if i < len(TITLES) else f"{TITLES[i % len(TITLES)]} {i}"
        negatives = [TITLES[(i + 7) % len(TITLES)], TITLES[(i + 13) % len(TITLES)]]
        rows.append(
            {
                "id": f"bench-{i}",
                "prompt": plan.prompt + ANSWER_PREFIX,
                "target": title_target(title),
                "negatives": [title_target(t) for t in negatives],
            }
        )
    return rows


def split(pool: list[dict[str, Any]], train: int) -> list[dict[str, Any]]:
    """``train`` training rows cycling through the pool, then HELDOUT rows of their own."""
    rows = [dict(r, split="train") for r in itertools.islice(itertools.cycle(pool), train)]
    extra = build_examples(len(pool) + HELDOUT)[len(pool) :]
    for i, r in enumerate(rows):
        r["id"] = f"{r['id']}-{i}"
    return rows + [dict(r, split="heldout") for r in extra]


# --- process runs -------------------------------------------------------------------------


@dataclass
class Run:
    name: str
    returncode: int | None = None
    seconds: float = 0.0
    polled_peak_mb: float = 0.0
    kernel_peak_mb: float | None = None
    reported_peak_mb: float | None = None
    cap_mb: int | None = None
    load_s: float | None = None
    step_s: list[float] = field(default_factory=list)
    tokens_per_step: float | None = None
    reported_tokens_per_s: float | None = None
    micro_batch_size: int | None = None
    fit: dict[str, Any] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def median_step_s(self) -> float | None:
        return statistics.median(self.step_s) if self.step_s else None

    @property
    def tokens_per_s(self) -> float | None:
        med = self.median_step_s
        return self.tokens_per_step / med if med and self.tokens_per_step else None


def tree_rss_mb(proc: psutil.Process) -> float:
    """RSS of a process and all its descendants, in MiB (0 once it has gone)."""
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total / 2**20


def stop_tree(pid: int) -> None:
    """End a process we started and whatever it started: SIGTERM, then SIGKILL after 10 s."""
    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.Error:
        return
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()


def supervise(
    run: Run,
    argv: list[str],
    log_path: Path,
    on_event: Callable[[float, dict[str, Any]], None],
    timeout: float,
    preexec: Callable[[], None] | None = None,
    env: dict[str, str] | None = None,
) -> None:
    """Run ``argv``, feed each stdout JSON event (with its arrival time) to ``on_event``,
    poll the tree's RSS every 50 ms and keep the kernel's peak RSS from ``wait4``."""
    started = time.perf_counter()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=log, preexec_fn=preexec, env=env,
            cwd=ROOT, start_new_session=True,
        )  # fmt: skip
    assert proc.stdout is not None
    stdout = proc.stdout

    def read() -> None:
        for raw in stdout:
            line = raw.decode("utf-8", "replace").strip()
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if isinstance(event, dict) and "event" in event:
                on_event(time.perf_counter() - started, event)
            elif line:
                with log_path.open("a", encoding="utf-8") as fh:
                    fh.write(f"[stdout] {line}\n")

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ps = psutil.Process(proc.pid)
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                run.kernel_peak_mb = usage.ru_maxrss / 1024  # KiB on Linux
                break
            run.polled_peak_mb = max(run.polled_peak_mb, tree_rss_mb(ps))
            if time.perf_counter() - started > timeout:
                run.error = f"still running after {timeout:.0f} s; stopped"
                stop_tree(proc.pid)
            time.sleep(POLL_S)
    finally:
        if proc.returncode is None:  # interrupted: leave nothing running behind
            stop_tree(proc.pid)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(proc.pid, 0)
            proc.returncode = -signal.SIGKILL
        reader.join(5)
        stdout.close()
    run.returncode = proc.returncode
    run.seconds = time.perf_counter() - started


def log_tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text("utf-8", "replace")[-chars:]
    except OSError:
        return ""


def quiet_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(TRANSFORMERS_VERBOSITY="error", HF_HUB_DISABLE_PROGRESS_BARS="1")
    env.update(TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    return env


# --- the two sides ------------------------------------------------------------------------


def run_trainer(
    job_dir: Path,
    gguf: Path,
    weights: Path,
    rows: list[dict[str, Any]],
    steps: int,
    seed: int,
    timeout: float,
    preference_weight: float = 0.0,
) -> tuple[Run, dict[str, Any]]:
    from insan_edge.training.limits import trainer_command, trainer_env, trainer_preexec

    if job_dir.exists():
        shutil.rmtree(job_dir)
    job_dir.mkdir(parents=True)
    with (job_dir / "dataset.jsonl").open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    job = {
        "version": 1, "family": "bench",
        "base": {"gguf": str(gguf), "weights_dir": str(weights)},
        "dataset": "dataset.jsonl", "current_adapter": None, "lora": LORA,
        "train": {"learning_rate": 0.0002, "epochs": 1, "batch_size": BATCH,
                  "micro_batch_size": None, "max_seq_tokens": 512, "gradient_checkpointing": True,
                  "checkpoint_every_steps": 10, "time_budget_seconds": 7200, "seed": seed,
                  "preference_weight": preference_weight, "preference_beta": 0.5},
        "memory_mb": MEMORY_MB, "threads": None,
    }  # fmt: skip
    (job_dir / "job.json").write_text(json.dumps(job, indent=1), "utf-8")
    name = "trainer+pairs" if preference_weight else "trainer"
    run = Run(name, cap_mb=MEMORY_MB)
    events: list[tuple[float, dict[str, Any]]] = []

    def on_event(t: float, event: dict[str, Any]) -> None:
        events.append((t, event))
        if event["event"] == "progress":
            print(f"  {name} step {event.get('step')}/{event.get('steps')} at {t:6.1f} s: "
                  f"loss {event.get('loss')}, rss {event.get('rss_mb')} MB", flush=True)  # fmt: skip
        elif event["event"] != "progress":
            print(f"  {name} {event['event']} at {t:.1f} s: "
                  + json.dumps({k: v for k, v in event.items() if k != "event"})[:200], flush=True)  # fmt: skip

    argv = trainer_command(job_dir)
    print(f"{name}: {' '.join(map(str, argv))} (cap {MEMORY_MB} MB)", flush=True)
    supervise(
        run, [str(a) for a in argv], job_dir / "stderr.log", on_event, timeout,
        preexec=lambda: trainer_preexec(MEMORY_MB), env=trainer_env(quiet_env()),
    )  # fmt: skip
    progress = [(t, e) for t, e in events if e["event"] == "progress"]
    began = next(((t, e) for t, e in events if e["event"] == "start"), None)
    if began is not None:
        # Load time: until the worker says it starts training (it has loaded the model, and
        # made one probe pass to pick the micro-batch); a step: the gap to its progress event.
        run.load_s, start = began
        run.micro_batch_size = start.get("micro_batch_size")
        run.fit = {k: start[k] for k in ("resident_mb", "example_mb") if k in start}
        times = [run.load_s] + [t for t, _ in progress]
        run.step_s = [b - a for a, b in itertools.pairwise(times)]
    rates = [e["tokens_per_s"] for _, e in progress if e.get("tokens_per_s")]
    run.reported_tokens_per_s = statistics.median(rates) if rates else None
    run.losses = [float(e["loss"]) for _, e in progress if e.get("loss") is not None]
    result: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        result = json.loads((job_dir / "out" / "result.json").read_text("utf-8"))
    run.reported_peak_mb = result.get("peak_rss_mb")
    if run.returncode != 0 and run.error is None:
        meaning = {75: "stopped", 76: "out of memory under the cap"}.get(run.returncode or 0, "")
        run.error = f"exit {run.returncode} {meaning}".strip()
    if run.error is None and len(progress) != steps:
        run.error = f"{len(progress)} progress events for {steps} steps"
    return run, result


def run_plain(
    spec_path: Path,
    weights: Path,
    examples: list[dict[str, list[int]]],
    steps: int,
    micro: int,
    dtype: str,
    prepare_kbit: bool,
    pad: int,
    seed: int,
    timeout: float,
) -> Run:
    spec = {
        "weights_dir": str(weights), "examples": examples, "steps": steps, "batch_size": BATCH,
        "micro_batch_size": micro, "pad_token_id": pad, "lora": LORA, "learning_rate": 0.0002,
        "compute_dtype": dtype, "prepare_kbit": prepare_kbit, "gradient_checkpointing": True,
        "seed": seed, "threads": None,
    }  # fmt: skip
    spec_path.write_text(json.dumps(spec), "utf-8")
    run = Run("plain loop", micro_batch_size=micro)
    done: dict[str, Any] = {}

    def on_event(t: float, event: dict[str, Any]) -> None:
        if event["event"] == "loaded":
            run.load_s = t
            print(f"  plain loaded at {t:.1f} s, rss {event['rss_mb']:.0f} MB", flush=True)
        elif event["event"] == "step":
            run.step_s.append(event["seconds"])
            run.losses.append(event["loss"])
            print(f"  plain step {event['step']}/{steps} at {t:6.1f} s: loss "
                  f"{event['loss']:.4f}, {event['seconds']:.2f} s, rss {event['rss_mb']:.0f} MB",
                  flush=True)  # fmt: skip
        elif event["event"] == "done":
            done.update(event)

    argv = [sys.executable, str(BASELINE), str(spec_path)]
    print(f"plain loop: {' '.join(argv)} (no cap, micro-batch {micro})", flush=True)
    supervise(run, argv, spec_path.with_suffix(".log"), on_event, timeout, env=quiet_env())
    run.reported_peak_mb = done.get("peak_rss_mb")
    if run.returncode != 0 and run.error is None:
        run.error = f"exit {run.returncode}"
    if run.error is None and len(run.step_s) != steps:
        run.error = f"{len(run.step_s)} steps of {steps}"
    return run


# --- report -------------------------------------------------------------------------------


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(runs: list[Run], base: Run | None) -> None:
    head = (f"{'run':<12}{'peak RSS MB':>12}{'max RSS MB':>11}{'cap MB':>8}{'load s':>8}"
            f"{'micro':>6}{'s/step':>8}{'tokens/s':>9}{'RSS vs plain':>13}{'time vs plain':>14}")  # fmt: skip
    print("\n" + head)
    for r in runs:
        peak = max(r.polled_peak_mb, r.kernel_peak_mb or 0.0)
        bpeak = max(base.polled_peak_mb, base.kernel_peak_mb or 0.0) if base else None
        ratio_rss = peak / bpeak if bpeak else None
        bstep = base.median_step_s if base else None
        ratio_t = r.median_step_s / bstep if r.median_step_s and bstep else None
        print(f"{r.name:<12}{r.polled_peak_mb:>12.0f}{fmt(r.kernel_peak_mb, '.0f'):>11}"
              f"{fmt(r.cap_mb, 'd'):>8}{fmt(r.load_s, '.1f'):>8}"
              f"{fmt(r.micro_batch_size, 'd'):>6}{fmt(r.median_step_s, '.2f'):>8}"
              f"{fmt(r.tokens_per_s, '.0f'):>9}{fmt(ratio_rss, '.2f'):>13}"
              f"{fmt(ratio_t, '.2f'):>14}"
              + (f"   FAILED: {r.error}" if r.error else ""))  # fmt: skip
    print()
    for r in runs:
        losses = ", ".join(f"{x:.3f}" for x in r.losses)
        extra = (
            f"; worker's own peak_rss_mb {r.reported_peak_mb}"
            if r.name.startswith("trainer")
            else ""
        )
        if r.fit:
            extra += f"; micro-batch fit from {r.fit}"
        if r.reported_tokens_per_s is not None:
            extra += f"; worker's own median tokens_per_s {r.reported_tokens_per_s:.0f}"
        print(f"{r.name}: {len(r.losses)} steps, "
              f"{r.seconds:.1f} s wall in all{extra}; losses [{losses}]")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--steps", type=int, help="optimizer steps, batch 4 (default 10; quick 3)")
    ap.add_argument("--examples", type=int, help="distinct training examples (default 40)")
    ap.add_argument("--quick", action="store_true", help="3 steps over 12 examples")
    ap.add_argument("--only", choices=["trainer", "pairs", "plain"], help="run one row only")
    ap.add_argument("--plain-micro-batch", type=int, help="default: the trainer's micro-batch")
    ap.add_argument("--no-prepare-kbit", action="store_true",
                    help="plain loop without prepare_model_for_kbit_training")  # fmt: skip
    ap.add_argument("--compute-dtype", default="bfloat16", help="plain loop's nf4 compute dtype")
    ap.add_argument("--state-dir", type=Path, default=Path("/tmp/insan-bench"))
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per run (default 1800)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = ap.parse_args()
    steps = args.steps or (3 if args.quick else 10)
    n_examples = args.examples or (12 if args.quick else 40)
    if steps < 2 or n_examples < 1:
        ap.error("--steps must be at least 2 (the trainer's step time is the gap between steps)")

    from insan_edge.training.weights import Tokenizer, prepare_weights

    state: Path = args.state_dir
    state.mkdir(parents=True, exist_ok=True)
    gguf = ensure_embedded(state / "models").path
    weights = state / "weights"
    if not (weights / "model.safetensors").exists():
        print(f"preparing training weights in {weights} (once; minutes)", flush=True)
    prepare_weights(gguf, weights)
    tok = Tokenizer(weights)
    pad = json.loads((weights / "config.json").read_text()).get("pad_token_id") or 0

    pool = build_examples(n_examples)
    rows = split(pool, steps * BATCH)
    train = [r for r in rows if r["split"] == "train"]
    ids = [
        {"prompt": tok.prompt_ids(r["prompt"]), "target": tok.encode(r["target"])} for r in train
    ]
    try:  # the order the worker trains in (seeded permutation), so every row sees the same batches
        from insan_edge.training.data import epoch_order

        ids = [ids[i] for i in epoch_order(len(ids), args.seed, 0)]
    except ImportError:
        pass
    lengths = [len(x["prompt"]) + len(x["target"]) for x in ids]
    per_step = sum(lengths) / steps
    print(f"{len(train)} training rows ({len(pool)} distinct, {steps} steps x batch {BATCH}), "
          f"{len(rows) - len(train)} held out; tokens per row {min(lengths)}-{max(lengths)} "
          f"(mean {statistics.mean(lengths):.0f}, target "
          f"{statistics.mean(len(x['target']) for x in ids):.1f}); {per_step:.0f} tokens/step",
          flush=True)  # fmt: skip

    runs: list[Run] = []
    trainer: Run | None = None
    plain: Run | None = None
    try:
        for weight in (0.0, 1.0):
            if args.only not in (None, "pairs" if weight else "trainer"):
                continue
            try:
                row, _ = run_trainer(
                    state / "job", gguf, weights, rows, steps, args.seed, args.timeout, weight
                )
            except ImportError as exc:
                raise BenchError(
                    f"the trainer is not importable ({exc}); try --only plain"
                ) from exc
            row.tokens_per_step = per_step
            runs.append(row)
            trainer = trainer or row
            if row.error:
                print(f"{row.name} failed: {row.error}\n--- stderr (tail) ---\n"
                      f"{log_tail(state / 'job' / 'stderr.log')}", flush=True)  # fmt: skip
        if args.only in (None, "plain"):
            micro = args.plain_micro_batch or (trainer and trainer.micro_batch_size) or BATCH
            (state / "plain").mkdir(exist_ok=True)
            plain = run_plain(
                state / "plain" / "spec.json", weights, ids, steps, micro, args.compute_dtype, not args.no_prepare_kbit, pad,
                args.seed, args.timeout,
            )  # fmt: skip
            plain.tokens_per_step = per_step
            runs.append(plain)
            if plain.error:
                print(f"plain loop failed: {plain.error}\n--- stderr (tail) ---\n"
                      f"{log_tail(state / 'plain' / 'spec.log')}", flush=True)  # fmt: skip
    except KeyboardInterrupt:
        print("interrupted; the runs' processes were stopped", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    print(f"\nGemma 3 270M ({gguf.name} dequantized to bf16 safetensors), LoRA r={LORA['rank']} "
          f"alpha={LORA['alpha']} on {'/'.join(m.split('_')[0] for m in LORA['target_modules'])},"
          f" batch {BATCH}, {steps} optimizer steps, same {len(train)} rows for all; "
          f"{os.cpu_count()} cores (shared)")  # fmt: skip
    report(runs, plain if plain and not plain.error else None)
    print(
        "\npeak RSS MB: the process tree's RSS polled every 50 ms; max RSS MB: the kernel's "
        "ru_maxrss for the process (wait4), which also catches peaks between polls.\n"
        "cap MB: the limit the trainer runs under (apply_memory_cap, as the daemon sets it); the "
        "plain loop has none.\nload s: from process start to the first training step (imports, "
        "model load, quantization, LoRA set-up; the trainer's includes tokenizing the data).\n"
        "s/step: median seconds per optimizer step (batch 4) (trainer: gaps between its progress "
        "events; plain: timed around the step).\ntokens/s: tokens of the batch (prompt + "
        "target, no padding) per median step. Ratios are row / plain loop (peak = the larger "
        "of the two RSS columns)."
    )  # fmt: skip
    if args.json:
        payload = {"steps": steps, "examples": n_examples, "tokens_per_step": per_step}
        payload["runs"] = [asdict(r) | {"median_step_s": r.median_step_s} for r in runs]
        args.json.write_text(json.dumps(payload, indent=2) + "\n", "utf-8")
    return 1 if any(r.error for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
