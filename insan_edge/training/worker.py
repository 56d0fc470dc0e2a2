"""The trainer worker: ``python -m insan_edge.training.worker JOB_DIR``.

One QLoRA run for one family, in its own process (an out-of-memory kill takes this, never the
daemon). Reads JOB_DIR/job.json and its dataset, prepares the training weights if they are
missing, trains (resuming from JOB_DIR/checkpoint/ when it matches the job), evaluates on the
held-out lines and writes JOB_DIR/out/{peft/,adapter.gguf,eval.json,result.json}.

Progress: one JSON object per line on stdout (``protocol.emit``); besides the events of the
protocol, ``{"event": "stopped", "reason": "signal"|"time_budget", "step": s}`` precedes exit 75.
Exit codes: 0 done, 75 stopped with a checkpoint (run again to resume), 76 out of memory,
65 bad job or dataset, 1 anything else.

SIGUSR1, SIGTERM or SIGINT: the current micro-batch finishes, a checkpoint is written, exit 75.
SIGSTOP/SIGCONT (a pause) needs nothing: the time budget is wall-clock, so a long pause
spends it, and the step a pause falls in is left out of the throughput figures.

Imports only the standard library, torch/transformers/peft/bitsandbytes/safetensors/gguf/numpy
and ``insan_edge.training``: never serving or the API.
"""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

from insan_edge.files import write_atomic
from insan_edge.training.checkpoint import (
    Checkpoint,
    Counters,
    Position,
    load_checkpoint,
    remove_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from insan_edge.training.job import BadJob, Job, fingerprint, load_dataset, load_job
from insan_edge.training.limits import STOP_SIGNALS, unblock_stop_signals
from insan_edge.training.protocol import (
    ADAPTER_GGUF,
    EVAL_FILE,
    EXIT_BAD_JOB,
    EXIT_DONE,
    EXIT_ERROR,
    EXIT_OUT_OF_MEMORY,
    EXIT_STOPPED,
    OUT_DIR,
    PEFT_DIR,
    RESULT_FILE,
    emit,
)

_OOM_TEXT = ("can't allocate memory", "cannot allocate memory", "out of memory", "map segment")


class Stopped(Exception):
    """A stop was requested or the time budget ran out; a checkpoint has been written."""


class StopSignal:
    def __init__(self) -> None:
        self.requested = False
        self.paused = False  # set by SIGCONT: the step in progress spanned a pause

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._stop)
        signal.signal(signal.SIGCONT, self._continued)
        unblock_stop_signals()  # held since fork (trainer_preexec): any stop sent so far lands now

    def _stop(self, _sig: int, _frame: FrameType | None) -> None:
        self.requested = True

    def _continued(self, _sig: int, _frame: FrameType | None) -> None:
        self.paused = True


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is an allocation failing under the memory cap."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MemoryError) or type(seen).__name__ == "OutOfMemoryError":
            return True
        if isinstance(seen, OSError) and seen.errno == errno.ENOMEM:
            return True
        if isinstance(seen, (RuntimeError, OSError, ImportError)):
            text = str(seen).lower()
            if any(t in text for t in _OOM_TEXT) or "os error 12" in text:
                return True
        seen = seen.__cause__ or seen.__context__
    return False


def at_memory_cap(share: float = 0.9) -> bool:
    """Whether this process's private memory (VmData) is within ``share`` of its RLIMIT_DATA.

    An allocation refused at the cap does not always surface as MemoryError: inside an
    extension module's import it can come out as a bare SystemError ("error return without
    exception set"). Failing while at the cap is out of memory, whatever the exception says.
    """
    import resource

    limit = resource.getrlimit(resource.RLIMIT_DATA)[0]
    if limit == resource.RLIM_INFINITY:
        return False
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024 >= share * limit
    return False


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=1))


def _save_peft(model: Any, out: Path) -> Path:
    import shutil

    final, tmp = out / PEFT_DIR, out / f".{PEFT_DIR}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), selected_adapters=["default"])
    old = out / f".{PEFT_DIR}.old-{os.getpid()}"
    if final.exists():
        os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def train(job_dir: Path, stop: StopSignal) -> int:
    started = time.monotonic()
    job: Job = load_job(job_dir)
    examples = load_dataset(job.dataset)
    t = job.train

    from insan_edge.training.weights import Tokenizer, prepare_weights, read_info

    if stop.requested:  # asked to stop while starting: nothing to save yet
        emit("stopped", reason="signal", step=0)
        raise Stopped
    if read_info(job.weights_dir) is None:
        emit("prepare", stage="start", done=0, total=4)
        prepare_weights(
            job.base_gguf,
            job.weights_dir,
            lambda stage, done, total: emit("prepare", stage=stage, done=done, total=total),
        )
    if stop.requested:
        emit("stopped", reason="signal", step=0)
        raise Stopped

    import torch

    from insan_edge.training.data import (
        build_group,
        collate,
        epoch_order,
        micro_batches,
        step_members,
    )
    from insan_edge.training.evaluate import eval_items, evaluate_all
    from insan_edge.training.lora_gguf import peft_to_gguf
    from insan_edge.training.memory import MemoryMeter, fit_micro_batch
    from insan_edge.training.model import (
        load_model,
        pair_loss,
        pick_device,
        quiet_libraries,
        trainable,
    )
    from insan_edge.training.model import sequence_nll as nll_of

    quiet_libraries()
    threads = job.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    device = pick_device()
    meter = MemoryMeter()

    # --- data -----------------------------------------------------------------------------
    tokenizer = Tokenizer(job.weights_dir)
    pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    train_set = [e for e in examples if e.split == "train"]
    heldout = [e for e in examples if e.split == "heldout"]
    # The titles passed over (and the other titles drawn) go with the chosen one only where the
    # pairwise term uses them.
    groups = [
        build_group(
            tokenizer,
            tokenizer.prompt_ids(e.prompt),
            [e.target, *(e.rivals if t.preference_weight > 0 else ())],
            t.max_seq_tokens,
        )
        for e in train_set
    ]
    steps_per_epoch = math.ceil(len(groups) / t.batch_size)
    total_steps = t.epochs * steps_per_epoch

    # --- model, optimizer, checkpoint -----------------------------------------------------
    model, current_error = load_model(
        job.weights_dir, job.lora, device, t.gradient_checkpointing, t.seed, job.current_adapter
    )
    params = trainable(model)
    optimizer = torch.optim.AdamW(list(params.values()), lr=t.learning_rate, weight_decay=0.0)
    key = fingerprint(job, examples)
    ckpt = load_checkpoint(job_dir, key, device)
    fit: dict[str, float] = {}
    if t.micro_batch_size is not None:
        micro = min(t.micro_batch_size, t.batch_size)
    elif ckpt is not None:
        micro = ckpt.micro_batch_size  # the same cut as before: a bit-identical continuation
    else:
        micro, fit = fit_micro_batch(
            model, groups, job.memory_mb, t.batch_size, pad_id, device, meter
        )
    if ckpt is not None:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(ckpt.adapter[name])
        optimizer.load_state_dict(ckpt.optimizer)
        if ckpt.grads is not None:
            for name, p in params.items():
                p.grad = ckpt.grads[name].clone()
        set_rng_state(ckpt.rng)
        pos, counters = ckpt.position, ckpt.counters
    else:
        torch.manual_seed(t.seed)  # whatever setup drew, step 0 starts from the same state
        pos, counters = Position(0, 0, 0, 0), Counters()
    del ckpt

    def checkpoint(at: Position, with_grads: bool) -> None:
        grads = {n: p.grad for n, p in params.items() if p.grad is not None}
        save_checkpoint(
            job_dir,
            Checkpoint(
                fingerprint=key,
                position=at,
                micro_batch_size=micro,
                counters=counters,
                adapter={n: p.detach() for n, p in params.items()},
                optimizer=optimizer.state_dict(),
                grads=grads if with_grads and grads else None,
                rng=rng_state(),
            ),
        )
        emit("checkpoint", step=at.step)

    def over_budget() -> bool:
        return time.monotonic() - started >= t.time_budget_seconds

    emit(
        "start", steps=total_steps, micro_batch_size=micro, resumed_from_step=pos.step,
        examples=len(groups), pairs=sum(g.pairs for g in groups), heldout=len(heldout), device=device.type, threads=threads, **fit,
    )  # fmt: skip

    # --- training: one flat loop ----------------------------------------------------------
    model.train()
    epoch, k, m, step = pos.epoch, pos.step_in_epoch, pos.micro, pos.step
    step_time = None  # seconds per step, smoothed
    while epoch < t.epochs:
        order = epoch_order(len(groups), t.seed, epoch)
        members = step_members(order, k, t.batch_size)
        batches = micro_batches(members, groups, micro)
        step_tokens = sum(groups[i].n_target for i in members)
        step_pairs = sum(groups[i].pairs for i in members)
        seen_tokens, step_began = 0, time.monotonic()
        stop.paused = False
        while m < len(batches):
            if stop.requested or over_budget():
                checkpoint(Position(epoch, k, m, step), with_grads=m > 0)
                emit("stopped", reason="signal" if stop.requested else "time_budget", step=step)
                raise Stopped
            chunk = [groups[i] for i in batches[m]]
            batch = collate(chunk, pad_id, device)
            total, counts = nll_of(model, batch)
            chosen = list(batch.first)
            loss = total[chosen].sum() / step_tokens
            if step_pairs:
                loss = (
                    loss
                    + t.preference_weight * pair_loss(total, batch, t.preference_beta) / step_pairs
                )
            loss.backward()
            counters = Counters(
                tokens=counters.tokens + int(counts[chosen].sum()),
                examples=counters.examples + len(chunk),
                step_loss=counters.step_loss + float(loss.detach()),
            )
            seen_tokens += sum(g.width for g in chunk)
            m += 1
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step, k, m = step + 1, k + 1, 0
        done_epoch = epoch + 1
        if k == steps_per_epoch:
            epoch, k = epoch + 1, 0
        elapsed = time.monotonic() - step_began
        if not stop.paused:
            step_time = elapsed if step_time is None else 0.8 * step_time + 0.2 * elapsed
        emit(
            "progress", step=step, steps=total_steps, epoch=done_epoch,
            loss=round(counters.step_loss, 5),
            tokens_per_s=round(seen_tokens / elapsed, 1) if elapsed > 0 else None,
            eta_seconds=round((total_steps - step) * (step_time or elapsed), 1),
            rss_mb=round(meter.rss_mb()),
        )  # fmt: skip
        counters = Counters(counters.tokens, counters.examples, 0.0)
        if step % t.checkpoint_every_steps == 0 and step < total_steps:
            checkpoint(Position(epoch, k, 0, step), with_grads=False)

    # --- outputs: adapter, GGUF, evaluation -----------------------------------------------
    end = Position(t.epochs, 0, 0, step)

    def check() -> None:
        if stop.requested:
            checkpoint(end, with_grads=False)
            emit("stopped", reason="signal", step=step)
            raise Stopped

    check()
    out = job_dir / OUT_DIR
    out.mkdir(exist_ok=True)
    peft_dir = _save_peft(model, out)
    peft_to_gguf(peft_dir, out / ADAPTER_GGUF, job.base_gguf)
    check()
    items = eval_items(tokenizer, tokenizer.prompt_ids, heldout, t.max_seq_tokens)
    metrics = evaluate_all(
        model, items, pad_id, device, max(micro, 1), check,
        lambda which: emit("evaluate", model=which), current_error,
    )  # fmt: skip
    _write_json(out / EVAL_FILE, metrics)
    result = {
        "status": "done",
        "steps": step,
        "seconds": round(time.monotonic() - started, 2),
        "peak_rss_mb": round(meter.peak_mb()),
        "micro_batch_size": micro,
        "examples": len(groups),
        "tokens": counters.tokens,
    }
    _write_json(out / RESULT_FILE, result)
    remove_checkpoint(job_dir)
    emit("done", **result)
    return EXIT_DONE


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        emit(
            "error", reason="bad_job", message="usage: python -m insan_edge.training.worker JOB_DIR"
        )
        return EXIT_BAD_JOB
    stop = StopSignal()
    stop.install()
    try:
        return train(Path(args[0]).resolve(), stop)
    except Stopped:
        return EXIT_STOPPED
    except BadJob as exc:
        emit("error", reason="bad_job", message=str(exc))
        return EXIT_BAD_JOB
    except BaseException as exc:
        if is_out_of_memory(exc) or at_memory_cap():
            emit("error", reason="out_of_memory", message=f"{type(exc).__name__}: {exc}"[:500])
            return EXIT_OUT_OF_MEMORY
        traceback.print_exc(file=sys.stderr)
        emit("error", reason="error", message=f"{type(exc).__name__}: {exc}"[:500])
        return EXIT_ERROR


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is written and synced. Tearing down torch and transformers at interpreter
    # exit takes about a second here, which a stop request should not wait for.
    os._exit(code)
