"""Memory: what the worker uses, its peak, and a micro-batch size that fits the cap.

The micro-batch rule (when the job leaves ``micro_batch_size`` null) is measured, not guessed:
after the model is loaded, a forward and backward pass runs on the widest training example
(its packed row: prompt and titles) alone, twice (the first faults in the file-backed
weights), and the rise of the peak resident set (and of CUDA memory, on a GPU) over the
resident set before it is that example's activation cost. Then

    micro = floor((0.9 * cap - resident - 3 * adapter bytes) / cost), clamped to [1, batch]

where ``3 * adapter bytes`` reserves the gradient and AdamW's two moments, which do not exist
yet, and the 10% keeps room for allocator slack. Activations grow linearly with the number of
examples in a micro-batch, and every other example's row is at most as wide as the probed one,
so the estimate errs on the safe side. The peak is read from Linux's VmHWM, reset for the probe
through /proc/self/clear_refs; where that cannot be reset the rule answers 1.
"""

from __future__ import annotations

import re
import resource
from pathlib import Path
from typing import Any

from insan_edge.training.data import Group, collate
from insan_edge.training.model import sequence_nll

_MB = 1024 * 1024


def _status(key: str) -> float | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else None


class MemoryMeter:
    """Resident memory now and at its peak over the whole run, probe resets included."""

    def __init__(self) -> None:
        self._earlier_peak = 0.0

    @staticmethod
    def rss_mb() -> float:
        value = _status("VmRSS")
        return value if value is not None else MemoryMeter._maxrss_mb()

    @staticmethod
    def _maxrss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def _hwm_mb(self) -> float:
        value = _status("VmHWM")
        return value if value is not None else self._maxrss_mb()

    def peak_mb(self) -> float:
        return max(self._earlier_peak, self._hwm_mb())

    def reset_peak(self) -> bool:
        """Start a new peak measurement; False where the kernel does not allow it."""
        self._earlier_peak = self.peak_mb()
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def window_peak_mb(self) -> float:
        """The peak since the last ``reset_peak``."""
        return self._hwm_mb()


def fit_micro_batch(
    model: Any, groups: list[Group], cap_mb: int, batch_size: int, pad_id: int, device: Any,
    meter: MemoryMeter,
) -> tuple[int, dict[str, float]]:  # fmt: skip
    """The micro-batch size for ``cap_mb`` (see the module docstring) and the numbers behind it."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    adapter_mb = sum(p.numel() * p.element_size() for p in params) / _MB
    widest = max(groups, key=lambda g: g.width)
    cuda = device.type == "cuda"
    model.train()

    def one_pass() -> None:
        total, _ = sequence_nll(model, collate([widest], pad_id, device))
        total.sum().backward()
        model.zero_grad(set_to_none=True)

    # A first pass faults in the file-backed weights (the 262k-row embedding is read through
    # the output layer: 335 MB for Gemma 3 270M), which is no cost of the example's.
    one_pass()
    before = meter.rss_mb()
    if not meter.reset_peak():
        return 1, {"resident_mb": before, "example_mb": float("nan")}
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        gpu_before = torch.cuda.memory_allocated(device) / _MB
    one_pass()
    cost = meter.window_peak_mb() - before
    if cuda:
        cost += torch.cuda.max_memory_allocated(device) / _MB - gpu_before
    cost = max(cost, 1.0)
    budget = 0.9 * cap_mb - before - 3 * adapter_mb
    micro = max(1, min(batch_size, int(budget // cost)))
    return micro, {"resident_mb": round(before, 1), "example_mb": round(cost, 1)}
