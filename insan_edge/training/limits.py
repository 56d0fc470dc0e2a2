"""The trainer's hard memory cap and how to start it (stdlib only: usable in ``preexec_fn``).

``apply_memory_cap(mb)`` sets RLIMIT_DATA, not RLIMIT_AS. Measured here (x86-64, 2 cores,
torch 2.13 CPU, transformers 5.24, bitsandbytes 0.50, Gemma 3 270M):

* RLIMIT_DATA counts private writable memory (heap, anonymous maps, thread stacks), which
  is what the trainer's tensors live in. File-backed read-only maps (shared libraries,
  safetensors while loading) and reserved-but-inaccessible address space are not counted,
  so the limit tracks real use. After importing torch, transformers, peft and bitsandbytes
  VmData is 384 MB against a 402 MB resident set; a QLoRA run of Gemma 3 270M that peaks
  at <PEAK_RSS> MB resident peaks at <PEAK_DATA> MB VmData. When an allocation would cross
  the limit, malloc/mmap fail cleanly: torch raises ``RuntimeError: DefaultCPUAllocator:
  can't allocate memory`` and Python ``MemoryError``, which the worker reports as
  ``out_of_memory`` (exit 76).
* RLIMIT_AS counts every reserved byte of address space. On this CPU build the import alone
  reserves 870 MB (VmSize) for 402 MB resident, and each extra thread's glibc arena reserves
  64 MB more; with CUDA (the Jetson), the driver reserves tens of GB of address space at
  start, so any RLIMIT_AS a board could honour kills CUDA initialisation. It measures
  reservations, not memory.

RLIMIT_DATA does not see GPU memory (on a Jetson that is the same RAM): the service's
cgroup limit (systemd ``MemoryMax``) stays the backstop there.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def apply_memory_cap(mb: int) -> None:
    """Limit this process (and what it execs) to ``mb`` MiB of private writable memory.

    Call it in the child, e.g. ``subprocess.Popen(cmd, preexec_fn=lambda: apply_memory_cap(mb))``.
    """
    if mb <= 0:
        raise ValueError("the memory cap must be positive")
    limit = mb * 1024 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def trainer_command(job_dir: Path) -> list[str]:
    """The command line that runs the trainer worker on ``job_dir``."""
    return [sys.executable, "-m", "insan_edge.training.worker", str(job_dir)]
