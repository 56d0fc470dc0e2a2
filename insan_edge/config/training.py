"""Training and governor settings: when a family's adapter is trained, how, and what stops it."""

from __future__ import annotations

import re
from datetime import time

from pydantic import Field, field_validator

from insan_edge.config.base import ConfigModel

_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")

TARGET_MODULES: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)


def _clock(value: str) -> time:
    match = _CLOCK.match(value)
    if match is None:
        raise ValueError(f"'{value}' is not a 24-hour time like '01:30'")
    return time(int(match.group(1)), int(match.group(2)))


class IdleWindow(ConfigModel):
    start: str = Field(
        default="01:00",
        title="Start",
        description="Local time (HH:MM) training may start; the window may cross midnight.",
    )
    end: str = Field(
        default="06:00",
        title="End",
        description="Local time (HH:MM) no new run starts after; equal to start means all day.",
    )

    @field_validator("start", "end")
    @classmethod
    def _is_clock(cls, value: str) -> str:
        _clock(value)
        return value

    def contains(self, at: time) -> bool:
        start, end = _clock(self.start), _clock(self.end)
        at = at.replace(second=0, microsecond=0, tzinfo=None)
        if start == end:
            return True
        if start < end:
            return start <= at < end
        return at >= start or at < end


class LoraSettings(ConfigModel):
    rank: int = Field(default=8, ge=1, le=256, title="Rank", description="LoRA rank r.")
    alpha: float = Field(
        default=16, gt=0, le=1024, title="Alpha", description="LoRA scale numerator (alpha / r)."
    )
    dropout: float = Field(
        default=0.05, ge=0.0, lt=1.0, title="Dropout", description="Dropout on the LoRA input."
    )
    target_modules: tuple[str, ...] = Field(
        default=TARGET_MODULES,
        min_length=1,
        title="Target modules",
        description="Projections that get an adapter: attention (q/k/v/o_proj) and MLP (gate/up/down_proj).",
    )

    @field_validator("target_modules")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [m for m in value if m not in TARGET_MODULES]
        if unknown:
            raise ValueError(
                f"unknown target module(s) {', '.join(unknown)}; choose from {', '.join(TARGET_MODULES)}"
            )
        return tuple(dict.fromkeys(value))


class TrainingSettings(ConfigModel):
    enabled: bool = Field(
        default=True, title="Enabled", description="Fine-tune a per-family adapter in idle windows."
    )
    min_interactions_for_training: int = Field(
        default=50,
        ge=1,
        title="Interactions for a first model",
        description="Scrubbed interactions a family needs before its first adapter.",
    )
    retraining_threshold: int = Field(
        default=20,
        ge=1,
        title="Retraining threshold",
        description="New interactions that make a family due for an update.",
    )
    max_training_memory_mb: int = Field(
        default=1536,
        ge=256,
        title="Training memory cap (MB)",
        description="Hard memory limit of the trainer process.",
    )
    safety_threshold: float = Field(
        default=0.95,
        ge=0.0,
        le=1.0,
        title="Safety threshold",
        description="Share of the safety suite a new adapter must pass to be promoted.",
    )
    fallback_to_general_model: bool = Field(
        default=True,
        title="Fall back to general model",
        description="Serve the base model while a family has no adapter.",
    )
    batch_size: int = Field(
        default=4,
        ge=1,
        le=256,
        title="Batch size",
        description="Examples per optimiser step (micro-batches are accumulated).",
    )
    micro_batch_size: int | None = Field(
        default=None,
        ge=1,
        le=256,
        title="Micro-batch size",
        description="Examples per forward pass; empty means fitted to the memory cap.",
    )
    epochs: int = Field(
        default=2, ge=1, le=50, title="Epochs", description="Passes over the family's data per run."
    )
    learning_rate: float = Field(
        default=2e-4, gt=0, le=1.0, title="Learning rate", description="Adapter learning rate."
    )
    preference_weight: float = Field(
        default=1.0,
        ge=0.0,
        le=100.0,
        title="Preference weight",
        description="Weight of the pairwise term that ranks the chosen title above the ones passed over in the same moment; 0 learns from the chosen titles alone.",
    )
    preference_beta: float = Field(
        default=0.5,
        gt=0.0,
        le=100.0,
        title="Preference sharpness",
        description="Scale of the log-likelihood gap in the pairwise term (beta): higher pushes harder on pairs already ranked right.",
    )
    sampled_negatives: int = Field(
        default=0,
        ge=0,
        le=32,
        title="Other titles per example",
        description="Titles the family met at other times, drawn per example for the pairwise term to rank the chosen one above, as serving ranks it among catalog candidates; 0 (the default) uses only the titles passed over in the same moment: on the embedded model, 6 lowered held-out preference accuracy (0.52 against 0.60) and hit@3 (0.22 against 0.26).",
    )
    max_seq_tokens: int = Field(
        default=512,
        ge=32,
        le=8192,
        title="Longest example (tokens)",
        description="Prompt plus target; longer prompts are cut from the front.",
    )
    gradient_checkpointing: bool = Field(
        default=True,
        title="Gradient checkpointing",
        description="Recompute activations in the backward pass: less memory, a little slower.",
    )
    lora: LoraSettings = Field(
        default_factory=LoraSettings, title="LoRA", description="Shape of the adapter."
    )
    idle_window: IdleWindow = Field(
        default_factory=IdleWindow,
        title="Idle window",
        description="When (local time) training may start.",
    )
    quiet_period_seconds: float = Field(
        default=300,
        ge=0,
        title="Quiet period",
        description="Seconds with no API request before training starts or resumes.",
    )
    pause_grace_seconds: float = Field(
        default=300,
        ge=0,
        title="Pause grace",
        description="A paused run that cannot resume within this is checkpointed and stopped, freeing its memory.",
    )
    checkpoint_every_steps: int = Field(
        default=10,
        ge=1,
        title="Checkpoint interval",
        description="Optimiser steps between checkpoints.",
    )
    max_run_minutes: float = Field(
        default=120,
        gt=0,
        title="Time budget (minutes)",
        description="A run checkpoints and stops after this long; the next window continues it.",
    )
    heldout_fraction: float = Field(
        default=0.2,
        gt=0.0,
        lt=0.9,
        title="Held-out share",
        description="Share of examples kept out of training to judge a new adapter.",
    )
    replay_fraction: float = Field(
        default=0.5,
        ge=0.0,
        le=4.0,
        title="Replay share",
        description="Older, already-learned examples mixed in per new one, so the adapter does not forget.",
    )
    oom_retries: int = Field(
        default=2,
        ge=0,
        le=8,
        title="Out-of-memory retries",
        description="Retries with half the micro-batch after the trainer hits its memory cap.",
    )
    keep_versions: int = Field(
        default=5,
        ge=1,
        le=100,
        title="Versions kept",
        description="Adapter versions kept per family for rollback; older ones are pruned.",
    )
    safety_suite_size: int = Field(
        default=8,
        ge=1,
        le=200,
        title="Safety suite size",
        description="Situations the new adapter answers for the strictest member before promotion.",
    )
    seed: int = Field(
        default=0, title="Seed", description="Seed for data order, split and adapter init."
    )


class GovernorSettings(ConfigModel):
    memory_reserve_mb: int = Field(
        default=512,
        ge=0,
        title="Memory reserve (MB)",
        description="Free memory, beyond the training cap, needed to start a run.",
    )
    stop_below_free_mb: int = Field(
        default=256,
        ge=0,
        title="Stop below (MB)",
        description="A run is stopped when available memory falls below this.",
    )
    max_cpu_percent: float = Field(
        default=60,
        gt=0,
        le=100,
        title="CPU busy limit",
        description="Other processes' CPU use (percent of all cores) above which a run pauses.",
    )
    pause_temperature_c: float = Field(
        default=80,
        gt=0,
        le=150,
        title="Pause temperature",
        description="Hottest sensor (°C) above which a run pauses.",
    )
    stop_temperature_c: float = Field(
        default=90,
        gt=0,
        le=150,
        title="Stop temperature",
        description="Hottest sensor (°C) above which a run stops.",
    )
    min_power_watts: float | None = Field(
        default=10,
        gt=0,
        title="Lowest power mode (W)",
        description="On a Jetson, a power mode under this many watts (the Orin Nano's 7W) pauses training; MAXN always allows it; empty disables the rule.",
    )
    max_gpu_percent: float = Field(
        default=50,
        gt=0,
        le=100,
        title="GPU busy limit",
        description="On a Jetson, GPU load (percent) above which a run waits to start.",
    )
    sample_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        title="Sample interval",
        description="Seconds between resource samples.",
    )
