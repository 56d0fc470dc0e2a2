"""Checkpoints: everything needed to continue a run bit for bit, and nothing of the base.

JOB_DIR/checkpoint/ holds the adapter weights, the optimizer state, the RNG states, the partial
gradient of a step stopped between micro-batches, and ``state.json`` (position, counters and
the job's fingerprint). It is written under a temporary name and renamed into place; the
previous one is moved aside first and removed after, so a crash at any moment leaves one
complete checkpoint (``checkpoint.prev`` is used only if ``checkpoint`` is missing).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from insan_edge.training.protocol import CHECKPOINT_DIR

STATE = "state.json"
ADAPTER = "adapter.safetensors"
GRADS = "grads.safetensors"
OPTIMIZER = "optimizer.pt"
RNG = "rng.pt"


@dataclass(frozen=True)
class Position:
    """Where training stands: the next micro-batch to run."""

    epoch: int
    step_in_epoch: int
    micro: int
    step: int  # optimizer steps done in all


@dataclass(frozen=True)
class Counters:
    tokens: int = 0  # target tokens trained on
    examples: int = 0  # examples trained on (an example counts once per epoch)
    step_loss: float = 0.0  # loss summed over the micro-batches of the step in progress


@dataclass(frozen=True)
class Checkpoint:
    fingerprint: str
    position: Position
    micro_batch_size: int
    counters: Counters
    adapter: dict[str, Any]  # name -> tensor
    optimizer: dict[str, Any]
    grads: dict[str, Any] | None
    rng: dict[str, Any]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(job_dir: Path, ckpt: Checkpoint) -> None:
    import torch
    from safetensors.torch import save_file

    final, prev = job_dir / CHECKPOINT_DIR, job_dir / f"{CHECKPOINT_DIR}.prev"
    tmp = job_dir / f".{CHECKPOINT_DIR}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()

    def cpu(tensors: dict[str, Any]) -> dict[str, Any]:
        return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}

    save_file(cpu(ckpt.adapter), str(tmp / ADAPTER))
    if ckpt.grads is not None:
        save_file(cpu(ckpt.grads), str(tmp / GRADS))
    torch.save(ckpt.optimizer, tmp / OPTIMIZER)
    torch.save(ckpt.rng, tmp / RNG)
    state = {
        "fingerprint": ckpt.fingerprint,
        "position": asdict(ckpt.position),
        "micro_batch_size": ckpt.micro_batch_size,
        "counters": asdict(ckpt.counters),
        "grads": ckpt.grads is not None,
    }
    (tmp / STATE).write_text(json.dumps(state, indent=1))
    for path in tmp.iterdir():
        with path.open("rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(prev, ignore_errors=True)
        os.rename(final, prev)
    os.rename(tmp, final)
    _fsync_dir(job_dir)
    shutil.rmtree(prev, ignore_errors=True)


def load_checkpoint(job_dir: Path, fingerprint: str, device: Any) -> Checkpoint | None:
    """The job's checkpoint if there is one for this very job; None otherwise."""
    import torch
    from safetensors.torch import load_file

    for stale in job_dir.glob(f".{CHECKPOINT_DIR}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    final, prev = job_dir / CHECKPOINT_DIR, job_dir / f"{CHECKPOINT_DIR}.prev"
    where = final if (final / STATE).is_file() else prev
    try:
        state = json.loads((where / STATE).read_text())
    except (OSError, ValueError):
        return None
    if state.get("fingerprint") != fingerprint:
        return None
    dev = str(device)
    return Checkpoint(
        fingerprint=fingerprint,
        position=Position(**state["position"]),
        micro_batch_size=int(state["micro_batch_size"]),
        counters=Counters(**state["counters"]),
        adapter=load_file(str(where / ADAPTER), device=dev),
        optimizer=torch.load(where / OPTIMIZER, map_location=dev, weights_only=True),
        grads=load_file(str(where / GRADS), device=dev) if state["grads"] else None,
        rng=torch.load(where / RNG, weights_only=True),
    )


def remove_checkpoint(job_dir: Path) -> None:
    for name in (CHECKPOINT_DIR, f"{CHECKPOINT_DIR}.prev"):
        shutil.rmtree(job_dir / name, ignore_errors=True)


def rng_state() -> dict[str, Any]:
    import torch

    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
