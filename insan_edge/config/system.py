"""System settings: paths, model, recommendations, privacy, safety and API limits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

from insan_edge.config.base import ConfigModel
from insan_edge.config.dashboard import DashboardSettings
from insan_edge.config.family import Rating
from insan_edge.config.lan import LanSettings
from insan_edge.config.training import GovernorSettings, TrainingSettings

PRESETS: tuple[str, ...] = ("jetson", "development", "child-safe", "production")


class Paths(ConfigModel):
    state_dir: Path = Field(
        default=Path("/var/lib/insan-edge"),
        title="State directory",
        description="Database, models and adapters live here.",
    )
    inbox: Path | None = Field(
        default=None,
        title="Inbox directory",
        description="Apps append JSON-lines event files here; empty means 'inbox' inside the state directory.",
    )
    socket: Path = Field(
        default=Path("/run/insan-edge/api.sock"),
        title="API socket",
        description="Unix socket the local API listens on (mode 0660).",
    )


class PrivacySettings(ConfigModel):
    spacy_model: str | None = Field(
        default=None,
        title="spaCy model",
        description="An installed spaCy pipeline (name or path) for finding names and places; empty means the bundled en_core_web_sm.",
    )
    retention_days: int = Field(
        default=365,
        ge=1,
        le=36500,
        title="Retention (days)",
        description="Interactions older than this are deleted daily.",
    )
    max_event_bytes: int = Field(
        default=16384,
        ge=512,
        le=1024 * 1024,
        title="Largest event",
        description="A longer event line is quarantined unread.",
    )
    crisis_hook: list[str] | None = Field(
        default=None,
        min_length=1,
        title="Crisis alert command",
        description="A command run when a child's message signals self-harm or abuse, e.g. [/usr/local/bin/notify-parents]; it gets the alert in INSAN_EDGE_ALERT_* variables, never the text.",
    )


class ModelSettings(ConfigModel):
    path: Path | None = Field(
        default=None,
        title="Model file",
        description="A GGUF to serve; empty means the embedded Gemma 3 270M (Q4_K_M).",
    )
    context_length: int = Field(
        default=2048,
        ge=256,
        le=131072,
        title="Context length",
        description="Tokens of prompt plus output the model sees.",
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        title="Threads",
        description="CPU threads for llama.cpp; empty means all cores.",
    )
    n_gpu_layers: Annotated[int, Field(ge=-1)] | Literal["auto"] = Field(
        default=0,
        title="GPU layers",
        description="Layers offloaded to the GPU; -1 for all, 0 for CPU only, auto for as many as fit in free memory (CPU when llama.cpp cannot offload).",
    )
    temperature: float = Field(
        default=0.7,
        ge=0.0,
        le=2.0,
        title="Temperature",
        description="Sampling temperature; lower is more predictable.",
    )
    top_p: float = Field(
        default=0.9, gt=0.0, le=1.0, title="Top-p", description="Nucleus sampling cut-off."
    )
    top_k: int = Field(
        default=40,
        ge=0,
        title="Top-k",
        description="Sample among this many likeliest tokens (0 = all).",
    )
    repeat_penalty: float = Field(
        default=1.15,
        ge=1.0,
        le=2.0,
        title="Repeat penalty",
        description="Discourages the loops small models fall into.",
    )
    frequency_penalty: float = Field(
        default=0.3,
        ge=0.0,
        le=2.0,
        title="Frequency penalty",
        description="Penalises tokens by how often they already appeared.",
    )
    seed: int | None = Field(
        default=None,
        title="Seed",
        description="Fixed sampling seed for reproducible output; empty means random.",
    )
    grammar_file: Path | None = Field(
        default=None,
        title="Grammar file",
        description="Advanced: a GBNF grammar replacing the built-in JSON-schema grammar. Its output must still be the recommendations JSON.",
    )
    grammar_sampling: Literal["checked", "library"] = Field(
        default="checked",
        title="Grammar sampling",
        description="checked: sample freely and apply the grammar to the whole vocabulary only when the sampled token does not fit (fast); library: llama-cpp-python's own grammar sampling (slow with a large vocabulary).",
    )


class RecommendationSettings(ConfigModel):
    max_count: int = Field(
        default=10,
        ge=1,
        le=50,
        title="Max count",
        description="Most items one request may ask for.",
    )
    cache_seconds: float = Field(
        default=300,
        ge=0,
        title="Cache time",
        description="Seconds an answer for the same family, members and context is reused; 0 disables.",
    )
    generation_rounds: int = Field(
        default=3,
        ge=1,
        le=10,
        title="Generation rounds",
        description="Further generations tried to replace items safety dropped.",
    )
    recent_examples: int = Field(
        default=5,
        ge=0,
        le=20,
        title="Recent examples",
        description="Recently accepted items put in the prompt as examples.",
    )
    title_max_chars: int = Field(
        default=60,
        ge=10,
        le=200,
        title="Title length",
        description="Longest title the model may write.",
    )
    description_max_chars: int = Field(
        default=160,
        ge=20,
        le=600,
        title="Description length",
        description="Longest description the model may write.",
    )
    mode: Literal["catalog", "generate", "mixed"] = Field(
        default="catalog",
        title="Mode",
        description="Where suggestions come from: catalog (ranked by the family model), generate (written by the model) or mixed (both, ranked together). A request may override it.",
    )
    catalog_candidates: int = Field(
        default=16,
        ge=1,
        le=200,
        title="Catalog candidates",
        description="Catalog items scored by the model per request, after the safety and relevance filters.",
    )
    scoring: Literal["likelihood", "lift"] = Field(
        default="likelihood",
        title="Catalog scoring",
        description="How the family model scores a catalog item: likelihood (the log-likelihood of its title after the request's prompt) or lift (that log-likelihood, with no recently enjoyed titles in the prompt, minus the title's log-likelihood after the family's prompt with no situation: how much this moment raises it).",
    )
    recently_shown_hours: float = Field(
        default=24,
        ge=0,
        title="Recently shown",
        description="Catalog items served to these members within this many hours are not offered again.",
    )


class SafetySettings(ConfigModel):
    rating_cap: Rating = Field(
        default="R",
        title="Rating cap",
        description="No family may allow more than this, whatever its own setting.",
    )
    children_strict: bool = Field(
        default=False,
        title="Children always strict",
        description="Treat every child as safety level 'strict'.",
    )
    topic_model: bool = Field(
        default=True,
        title="Topics by meaning",
        description="Also match blocked and avoided topics by meaning (a small sentence model), not only by keywords.",
    )
    title_table: bool = Field(
        default=True,
        title="Known titles",
        description="Rate items by the shipped table of well-known films, series, games and books (configs/titles.tsv), whatever their words say.",
    )
    topic_device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        title="Topic model device",
        description="Where the topic model runs: auto uses the GPU when onnxruntime has CUDA, else the CPU.",
    )
    guard_model: Path | None = Field(
        default=None,
        title="Guard model",
        description="A GGUF language model placed on the box that also rates every item (G, PG, PG-13 or R, read from the likelihood of each answer, never from free text); it can raise an item's rating, never lower it. Empty: no guard. Costs one model evaluation per new item.",
    )
    guard_certainty: float = Field(
        default=0.5,
        ge=0.05,
        le=0.95,
        title="Guard certainty",
        description="An item passes a rating only if the guard is at least this sure it goes no further (0.5: the guard's median guess; higher is stricter).",
    )

    @field_validator("guard_model")
    @classmethod
    def _guard_exists(cls, path: Path | None) -> Path | None:
        if path is not None and not path.expanduser().is_file():
            raise ValueError(f"no guard model file at {path}")
        return path.expanduser() if path is not None else None


class ApiSettings(ConfigModel):
    max_body_bytes: int = Field(
        default=65536,
        ge=1024,
        le=16 * 1024 * 1024,
        title="Max request body",
        description="Larger requests are refused with 413.",
    )
    max_queue: int = Field(
        default=8,
        ge=1,
        le=1000,
        title="Max queued generations",
        description="Requests waiting for the model beyond this get 503 with Retry-After.",
    )
    request_timeout_seconds: float = Field(
        default=120,
        gt=0,
        title="Request timeout",
        description="A generation taking longer is abandoned with 503.",
    )


class SystemSettings(ConfigModel):
    preset: Literal["jetson", "development", "child-safe", "production"] | None = Field(
        default=None,
        title="Preset",
        description="Starting values for everything below; empty means picked from the hardware.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", title="Log level", description="How much the daemon logs."
    )
    paths: Paths = Field(
        default_factory=Paths, title="Paths", description="Where state and the socket live."
    )
    model: ModelSettings = Field(
        default_factory=ModelSettings,
        title="Model",
        description="The served model and how it samples.",
    )
    recommendations: RecommendationSettings = Field(
        default_factory=RecommendationSettings,
        title="Recommendations",
        description="Answer size, caching and retries.",
    )
    training: TrainingSettings = Field(
        default_factory=TrainingSettings,
        title="Training",
        description="When and how per-family adapters are trained.",
    )
    governor: GovernorSettings = Field(
        default_factory=GovernorSettings,
        title="Governor",
        description="When the box is too busy, hot or short of memory to train.",
    )
    safety: SafetySettings = Field(
        default_factory=SafetySettings, title="Safety", description="Box-wide safety limits."
    )
    privacy: PrivacySettings = Field(
        default_factory=PrivacySettings,
        title="Privacy",
        description="Personal-data scrubbing and retention.",
    )
    api: ApiSettings = Field(
        default_factory=ApiSettings, title="API", description="Limits of the local API."
    )
    lan: LanSettings = Field(
        default_factory=LanSettings,
        title="LAN",
        description="Access for apps on the home network: gateway, tokens' limits, TLS, mDNS.",
    )
    dashboard: DashboardSettings = Field(
        default_factory=DashboardSettings,
        title="Dashboard",
        description="The parents' web pages: where they are served, sessions and login limits.",
    )
