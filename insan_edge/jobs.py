"""A trainer job on disk: the family's dataset and ``job.json``, in the worker's format.

``<state>/training/runs/<run id>/`` holds ``job.json``, ``dataset.jsonl``, the worker's
``checkpoint/`` and ``out/``; the registry takes ``out/`` when the run is judged.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from insan_edge.config.loader import LoadedConfig
from insan_edge.dataset import build_dataset
from insan_edge.files import write_atomic
from insan_edge.registry import Registry
from insan_edge.store import Store


@dataclass(frozen=True)
class Job:
    job_dir: Path | None  # None: nothing to learn yet (``reason`` says why)
    row: dict[str, Any]  # what the run's row learns: since/upto ids and example count
    reason: str | None = None


def weights_dir(model_path: Path, state_dir: Path) -> Path:
    """Where the trainer caches the base's dequantized weights and converted tokenizer."""
    size = model_path.stat().st_size
    return state_dir / "cache" / "training-weights" / f"{model_path.stem}-{size}"


def write_job(
    loaded: LoadedConfig,
    run: dict[str, Any],
    store: Store,
    registry: Registry,
    model_path: Path,
    state_dir: Path,
    since: int | None,
) -> Job:
    """Write the job for ``run``, or say why there is nothing to learn yet."""
    family_id = run["family_id"]
    system = loaded.config.system
    training = system.training
    data = build_dataset(store, loaded.config, family_id, since_id=since, settings=training)
    if not data.train or not data.heldout:
        # The run still counts these interactions as seen: the family is due again only
        # after ``retraining_threshold`` more, not on every tick.
        reason = (
            "not enough accepted suggestions to learn from "
            f"({len(data.train)} to train on, {len(data.heldout)} held out)"
        )
        return Job(None, {"since_id": since, "upto_id": data.upto_interaction_id}, reason)
    job_dir = state_dir / "training" / "runs" / str(run["id"])
    if job_dir.exists():
        shutil.rmtree(job_dir)
    job_dir.mkdir(parents=True)
    data.write_jsonl(job_dir / "dataset.jsonl")
    active = registry.active(family_id)
    job = {
        "version": 1,
        "family": family_id,
        "base": {"gguf": str(model_path), "weights_dir": str(weights_dir(model_path, state_dir))},
        "dataset": "dataset.jsonl",
        "current_adapter": str(active.peft) if active and active.peft.is_dir() else None,
        "lora": training.lora.model_dump(mode="json"),
        "train": {
            "learning_rate": training.learning_rate,
            "epochs": training.epochs,
            "batch_size": training.batch_size,
            "micro_batch_size": run.get("micro_batch_size") or training.micro_batch_size,
            "max_seq_tokens": training.max_seq_tokens,
            "gradient_checkpointing": training.gradient_checkpointing,
            "checkpoint_every_steps": training.checkpoint_every_steps,
            "time_budget_seconds": training.max_run_minutes * 60,
            "seed": training.seed,
            "preference_weight": training.preference_weight,
            "preference_beta": training.preference_beta,
        },
        "memory_mb": training.max_training_memory_mb,
        "threads": system.model.threads,
    }
    write_json(job_dir / "job.json", job)
    row = {
        "job_dir": str(job_dir),
        "since_id": since,
        "upto_id": data.upto_interaction_id,
        "examples": len(data.train),
    }
    return Job(job_dir, row)


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=2))
