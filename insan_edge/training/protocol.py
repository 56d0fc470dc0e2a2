"""What the trainer worker and its caller agree on: exit codes, file names, progress lines.

Stdlib only, so the daemon can import it without loading torch.
"""

from __future__ import annotations

import json
import signal
import sys
from typing import Any

EXIT_DONE = 0
EXIT_ERROR = 1
EXIT_BAD_JOB = 65  # sysexits' EX_DATAERR
EXIT_STOPPED = 75  # EX_TEMPFAIL: a checkpoint was written, run again to resume
EXIT_OUT_OF_MEMORY = 76

# How else a trainer dies of memory: the kernel's OOM killer (the unit's MemoryMax) sends
# SIGKILL; a native allocation refused at the RLIMIT_DATA cap, where C++ code does not catch
# std::bad_alloc or C code does not check malloc, ends the process by SIGABRT or SIGSEGV
# before Python can raise MemoryError.
MEMORY_SIGNALS = (signal.SIGKILL, signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS)

JOB_FILE = "job.json"
CHECKPOINT_DIR = "checkpoint"
OUT_DIR = "out"
PEFT_DIR = "peft"
ADAPTER_GGUF = "adapter.gguf"
EVAL_FILE = "eval.json"
RESULT_FILE = "result.json"


def died_of_memory(code: int) -> bool:
    """Whether a trainer's exit status (``Popen.returncode``) means it ran out of memory.

    Only meaningful for a trainer nobody was stopping: a stop may also end in SIGKILL.
    """
    return code == EXIT_OUT_OF_MEMORY or -code in MEMORY_SIGNALS


def exit_description(code: int) -> str:
    """A trainer's exit status in words: "exit 76" or "killed by SIGABRT"."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


def emit(event: str, /, **fields: Any) -> None:
    """Write one progress event as a JSON line to stdout and flush it."""
    out = sys.stdout
    out.write(json.dumps({"event": event, **fields}, separators=(",", ":")) + "\n")
    out.flush()


def parse_event(line: str) -> dict[str, Any] | None:
    """One progress line as a dict, or None for a line that is not an event."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("event"), str) else None
