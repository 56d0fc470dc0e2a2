"""Trainer jobs on the tiny model, written the way the daemon writes them (``jobs.write_job``).

The worker is the real one (``trainer_command``, in its own process); only the dataset is
small and made up: short prompts the tiny vocabulary can spell, and one habit to learn.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from insan_edge.training.limits import trainer_command, trainer_env, trainer_preexec

TARGET = "a great book for kids"  # what the family always accepts
OTHER = "the music show"  # what it rejects
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def examples(n_train: int = 12, n_heldout: int = 4) -> list[dict[str, Any]]:
    out = []
    for i in range(n_train + n_heldout):
        out.append(
            {
                "id": f"e{i}",
                "split": "train" if i < n_train else "heldout",
                "prompt": f"the family movie {i % 4}: ",
                "target": TARGET,
                "negatives": [OTHER],
            }
        )
    return out


def write_job(
    job_dir: Path,
    base_gguf: Path,
    weights_dir: Path,
    *,
    epochs: int = 3,
    micro_batch_size: int | None = 2,
    checkpoint_every_steps: int = 2,
    memory_mb: int = 1536,
    rows: list[dict[str, Any]] | None = None,
    current_adapter: Path | None = None,
) -> Path:
    job_dir.mkdir(parents=True, exist_ok=True)
    lines = rows if rows is not None else examples()
    (job_dir / "dataset.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    job = {
        "version": 1,
        "family": "testfam",
        "base": {"gguf": str(base_gguf), "weights_dir": str(weights_dir)},
        "dataset": "dataset.jsonl",
        "current_adapter": str(current_adapter) if current_adapter else None,
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": ALL_PROJECTIONS},
        "train": {
            "learning_rate": 0.01,
            "epochs": epochs,
            "batch_size": 4,
            "micro_batch_size": micro_batch_size,
            "max_seq_tokens": 64,
            "gradient_checkpointing": True,
            "checkpoint_every_steps": checkpoint_every_steps,
            "time_budget_seconds": 600,
            "seed": 0,
            "preference_weight": 1.0,
            "preference_beta": 0.5,
        },
        "memory_mb": memory_mb,
        "threads": 1,
    }
    (job_dir / "job.json").write_text(json.dumps(job, indent=1))
    return job_dir


def start_worker(job_dir: Path, memory_mb: int = 1536) -> subprocess.Popen[str]:
    """The worker as the daemon starts it: its own session, under the memory cap."""
    return subprocess.Popen(
        trainer_command(job_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: trainer_preexec(memory_mb),
        env=trainer_env(),
    )


def events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
