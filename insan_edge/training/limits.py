"""The trainer's hard memory cap and how to start it (stdlib only: usable in ``preexec_fn``).

``apply_memory_cap(mb)`` sets RLIMIT_DATA, not RLIMIT_AS. Measured here (x86-64, 2 cores,
torch 2.13 CPU, transformers 5.24, bitsandbytes 0.50, Gemma 3 270M):

* RLIMIT_DATA counts private writable memory (heap, anonymous maps, thread stacks), which
  is what the trainer's tensors live in. File-backed read-only maps (shared libraries,
  safetensors while loading) and reserved-but-inaccessible address space are not counted,
  so the limit tracks real use. After importing torch, transformers, peft and bitsandbytes
  VmData is 384 MB against a 402 MB resident set. After loading Gemma 3 270M in nf4 it is
  1000 MB (512 MB of it the bf16 weights file, mapped copy-on-write), and a whole QLoRA run
  (micro-batch 4, bench/train.py) stays under the 1536 MB cap with a resident peak of 1343 MB
  (a plain transformers + peft loop on the same data: 6343 MB). When an allocation would cross
  the limit, malloc/mmap fail cleanly: torch raises ``RuntimeError: DefaultCPUAllocator:
  can't allocate memory`` and Python ``MemoryError``, which the worker reports as
  ``out_of_memory`` (exit 76).
* RLIMIT_AS counts every reserved byte of address space. On this CPU build the import alone
  reserves 870 MB (VmSize) for 402 MB resident, and each extra thread's glibc arena reserves
  64 MB more; with CUDA (the Jetson), the driver reserves tens of GB of address space at
  start, so any RLIMIT_AS a board could honour kills CUDA initialisation. It measures
  reservations, not memory.

RLIMIT_DATA does not see GPU memory (on a Jetson that is the same RAM): the service's
cgroup limit (systemd ``MemoryMax``, which covers the daemon and its trainer together) stays the
backstop there. So that the kernel's OOM killer, at that limit, picks the trainer and never the
daemon, the trainer also raises its own ``oom_score_adj`` (which any process may do); the unit's
``OOMPolicy=continue`` keeps the service running after the kill, and the scheduler retries the
run with a smaller micro-batch.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
from pathlib import Path

MMAP_THRESHOLD = 64 * 1024  # bytes: larger allocations get their own mapping (trainer_env)
OOM_SCORE_ADJ = 500  # of -1000..1000: the trainer goes first when the box runs out of memory


def apply_memory_cap(mb: int) -> None:
    """Limit this process (and what it execs) to ``mb`` MiB of private writable memory, and
    make it the OOM killer's first choice.

    Call it in the child, e.g. ``subprocess.Popen(cmd, preexec_fn=lambda: apply_memory_cap(mb))``.
    """
    if mb <= 0:
        raise ValueError("the memory cap must be positive")
    limit = mb * 1024 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    try:
        with open("/proc/self/oom_score_adj", "w") as fh:
            fh.write(str(OOM_SCORE_ADJ))
    except OSError:
        pass  # no /proc (not Linux): the rlimit alone


# What asks the trainer to checkpoint and exit. They are blocked from fork until the worker has
# its handlers (``unblock_stop_signals``): one sent while Python starts would kill it outright,
# leaving no checkpoint and a run that looks failed.
STOP_SIGNALS = frozenset({signal.SIGUSR1, signal.SIGTERM, signal.SIGINT})


def trainer_preexec(mb: int) -> None:
    """What runs in the trainer's child before exec: the memory cap, stop signals held."""
    apply_memory_cap(mb)
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def unblock_stop_signals() -> None:
    """In the worker, once its handlers are installed: a stop sent earlier arrives now."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def trainer_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the trainer runs in: ``base`` (default: this process's) plus two fixes.

    ``MALLOC_MMAP_THRESHOLD_``: glibc raises its mmap threshold each time a large block is
    freed, so after the first few the loader's temporary copies (bf16 weights on their way to
    nf4) come from the heap, and their freed space stays with the process. Measured here on
    Gemma 3 270M: after loading, 384 MB anonymous in some runs and 760 MB in others, the same
    parameters in both. A fixed threshold keeps every large block in its own mapping, returned
    when freed: 384 MB in every run. ``TOKENIZERS_PARALLELISM=false``: no tokenizer threads.
    """
    env = dict(os.environ if base is None else base)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD))
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def trainer_command(job_dir: Path) -> list[str]:
    """The command line that runs the trainer worker on ``job_dir``."""
    return [sys.executable, "-m", "insan_edge.training.worker", str(job_dir)]
