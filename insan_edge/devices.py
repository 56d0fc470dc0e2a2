"""Which device each part runs on, decided from what this machine and its builds can do.

Pure decisions, fed the capabilities by the caller (so tests hand in fakes): how many layers
llama.cpp offloads (``n_gpu_layers`` from the config, or ``auto`` from free memory and the
model's size), and whether the trainer uses CUDA. Every fallback to the CPU carries a reason in
plain words, which the caller logs and status shows.

On a Jetson the GPU has no memory of its own: offloaded layers move from the page cache (the
mmap'd GGUF, reclaimable) into pinned nvmap memory, so ``auto`` offloads only what fits in the
free memory less a reserve for the KV cache, the CUDA context and the trainer's start margin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

GpuLayers = int | Literal["auto"]

# Kept free after offloading: CUDA context and compute buffers (a few hundred MB on an Orin),
# the KV cache at the default 2048 context for small models, and slack for the rest of the box.
AUTO_RESERVE_MB = 1024


@dataclass(frozen=True)
class Placement:
    """Where a part runs: ``device`` is "gpu"/"cuda" or "cpu"; ``reason`` says why in words."""

    device: str
    reason: str
    gpu_layers: int = 0  # serving only: what llama.cpp is given (-1 = all)

    def as_dict(self) -> dict[str, object]:
        return {"device": self.device, "reason": self.reason, "gpu_layers": self.gpu_layers}


def serving_layers(
    requested: GpuLayers,
    *,
    offload: bool,
    model_mb: float,
    free_mb: float,
    block_count: Callable[[], int | None],
    reserve_mb: float = AUTO_RESERVE_MB,
) -> Placement:
    """How many layers llama.cpp offloads.

    ``offload`` is ``llama_cpp.llama_supports_gpu_offload()``; ``block_count`` reads the model's
    layer count (only called when part of the model fits).
    """
    if requested == 0:
        return Placement("cpu", "n_gpu_layers is 0 in the config")
    if not offload:
        return Placement("cpu", "this llama.cpp build cannot offload to a GPU (CPU-only build)")
    if requested != "auto":
        asked = "all layers" if requested == -1 else f"{requested} layers"
        return Placement("gpu", f"{asked} from the config", requested)
    room = free_mb - reserve_mb
    if room >= model_mb:
        why = f"all layers: the {model_mb:.0f} MB model fits in {free_mb:.0f} MB free"
        return Placement("gpu", why + f" less a {reserve_mb:.0f} MB reserve", -1)
    blocks = block_count() if room > 0 else None
    if not blocks or room <= 0:
        short = f"{free_mb:.0f} MB free is not more than the {reserve_mb:.0f} MB reserve"
        return Placement("cpu", f"auto: {short}" if room <= 0 else "auto: layer count unknown")
    fit = int(blocks * room / model_mb)
    if fit < 1:
        return Placement("cpu", f"auto: not one of {blocks} layers fits in {room:.0f} MB")
    why = f"{fit} of {blocks} layers: {room:.0f} MB free beyond the reserve"
    return Placement("gpu", f"auto: {why} for a {model_mb:.0f} MB model", fit)


def training_device(cuda: bool, probe_error: str | None = None) -> Placement:
    """CUDA when torch has it and a tensor could be made there, else the CPU, with why."""
    if not cuda:
        return Placement("cpu", "torch has no CUDA device (torch.cuda.is_available() is False)")
    if probe_error:
        return Placement("cpu", f"CUDA is listed but a tensor could not be made: {probe_error}")
    return Placement("cuda", "torch has CUDA")
