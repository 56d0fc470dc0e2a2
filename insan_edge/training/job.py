"""The worker's input: JOB_DIR/job.json and its dataset, read strictly (stdlib only).

Every problem is a ``BadJob`` naming the file, the line and the field; messages never quote
the dataset's text (it is a family's data).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from insan_edge.training.ggufio import PROJECTIONS
from insan_edge.training.protocol import JOB_FILE

JOB_VERSION = 1
TARGET_MODULES = tuple(module.split(".")[-1] for module in PROJECTIONS)


class BadJob(ValueError):
    """The job or its dataset cannot be used as given (exit 65)."""


@dataclass(frozen=True)
class LoraSpec:
    rank: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]


@dataclass(frozen=True)
class TrainSpec:
    learning_rate: float
    epochs: int
    batch_size: int
    micro_batch_size: int | None
    max_seq_tokens: int
    gradient_checkpointing: bool
    checkpoint_every_steps: int
    time_budget_seconds: float
    seed: int
    preference_weight: float = 0.0  # of the pairwise term; 0: the chosen titles' loss alone
    preference_beta: float = 1.0


@dataclass(frozen=True)
class Job:
    job_dir: Path
    family: str
    base_gguf: Path
    weights_dir: Path
    dataset: Path
    current_adapter: Path | None
    lora: LoraSpec
    train: TrainSpec
    memory_mb: int
    threads: int | None


@dataclass(frozen=True)
class Example:
    id: str
    split: str  # "train" | "heldout"
    prompt: str
    target: str
    negatives: tuple[str, ...]
    sampled: tuple[str, ...] = ()  # other titles, for the pairwise term only (not evaluation)

    @property
    def rivals(self) -> tuple[str, ...]:
        """The titles the pairwise term ranks the target above: passed over, then drawn."""
        return (*self.negatives, *self.sampled)


def _get(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise BadJob(f"{where}: '{key}' is missing")
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int in Python; a flag given for a number (or the reverse) is still wrong
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
        raise BadJob(f"{where}: '{key}' must be {names}")
    return value


def _number(obj: dict[str, Any], key: str, where: str, low: float, high: float) -> float:
    value = float(_get(obj, key, (int, float), where))
    if not low <= value <= high:
        raise BadJob(f"{where}: '{key}' must be between {low:g} and {high:g}")
    return value


def _optional(
    obj: dict[str, Any], key: str, where: str, low: float, high: float, default: float
) -> float:
    return _number(obj, key, where, low, high) if key in obj else default


def _count(obj: dict[str, Any], key: str, where: str, low: int = 1, high: int = 1 << 30) -> int:
    value = _get(obj, key, int, where)
    if not low <= value <= high:
        raise BadJob(f"{where}: '{key}' must be an integer from {low} to {high}")
    return int(value)


def load_job(job_dir: Path) -> Job:
    """Read and check JOB_DIR/job.json."""
    path = Path(job_dir) / JOB_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BadJob(f"{path} does not exist") from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BadJob(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise BadJob(f"{path}: the job must be a JSON object")
    w = JOB_FILE
    if raw.get("version") != JOB_VERSION:
        raise BadJob(f"{w}: 'version' must be {JOB_VERSION}")
    base = _get(raw, "base", dict, w)
    gguf = Path(_get(base, "gguf", str, f"{w} base"))
    if not gguf.is_file():
        raise BadJob(f"{w}: base.gguf {gguf} is not a file")
    lora_raw = _get(raw, "lora", dict, w)
    modules = _get(lora_raw, "target_modules", list, f"{w} lora")
    unknown = [m for m in modules if m not in TARGET_MODULES]
    if not modules or unknown:
        raise BadJob(f"{w}: lora.target_modules must be some of {', '.join(TARGET_MODULES)}")
    lora = LoraSpec(
        rank=_count(lora_raw, "rank", f"{w} lora", 1, 1024),
        alpha=_number(lora_raw, "alpha", f"{w} lora", 1e-6, 1e6),
        dropout=_number(lora_raw, "dropout", f"{w} lora", 0.0, 0.99),
        target_modules=tuple(dict.fromkeys(str(m) for m in modules)),
    )
    t = _get(raw, "train", dict, w)
    tw = f"{w} train"
    micro = _get(t, "micro_batch_size", (int, type(None)), tw)
    if micro is not None:
        micro = _count(t, "micro_batch_size", tw)
    train = TrainSpec(
        learning_rate=_number(t, "learning_rate", tw, 1e-12, 10.0),
        epochs=_count(t, "epochs", tw, 1, 10_000),
        batch_size=_count(t, "batch_size", tw, 1, 1 << 16),
        micro_batch_size=micro,
        max_seq_tokens=_count(t, "max_seq_tokens", tw, 8, 1 << 20),
        gradient_checkpointing=_get(t, "gradient_checkpointing", bool, tw),
        checkpoint_every_steps=_count(t, "checkpoint_every_steps", tw),
        time_budget_seconds=_number(t, "time_budget_seconds", tw, 0.0, 1e9),
        seed=_count(t, "seed", tw, 0, 2**63 - 1),
        preference_weight=_optional(t, "preference_weight", tw, 0.0, 1000.0, 0.0),
        preference_beta=_optional(t, "preference_beta", tw, 1e-6, 1000.0, 1.0),
    )
    dataset = Path(job_dir) / _get(raw, "dataset", str, w)
    current = _get(raw, "current_adapter", (str, type(None)), w)
    if current is not None and not (Path(current) / "adapter_config.json").is_file():
        raise BadJob(f"{w}: current_adapter {current} holds no adapter_config.json")
    threads = _get(raw, "threads", (int, type(None)), w)
    if threads is not None:
        threads = _count(raw, "threads", w, 1, 4096)
    return Job(
        job_dir=Path(job_dir),
        family=_get(raw, "family", str, w),
        base_gguf=gguf,
        weights_dir=Path(_get(base, "weights_dir", str, f"{w} base")),
        dataset=dataset,
        current_adapter=Path(current) if current is not None else None,
        lora=lora,
        train=train,
        memory_mb=_count(raw, "memory_mb", w, 64, 1 << 24),
        threads=threads,
    )


def load_dataset(path: Path) -> list[Example]:
    """Every line of the dataset, checked; at least one train line is required."""
    name = path.name
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise BadJob(f"the dataset {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise BadJob(f"the dataset {path} is not readable UTF-8 text: {exc}") from exc
    examples: list[Example] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{name} line {number}"
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise BadJob(f"{where}: not valid JSON") from exc
        if not isinstance(obj, dict):
            raise BadJob(f"{where}: not a JSON object")
        split = _get(obj, "split", str, where)
        if split not in ("train", "heldout"):
            raise BadJob(f"{where}: 'split' must be 'train' or 'heldout'")
        negatives = _get(obj, "negatives", list, where)
        if not all(isinstance(n, str) and n for n in negatives):
            raise BadJob(f"{where}: 'negatives' must be a list of non-empty strings")
        sampled = _get(obj, "sampled", list, where) if "sampled" in obj else []
        if not all(isinstance(n, str) and n for n in sampled):
            raise BadJob(f"{where}: 'sampled' must be a list of non-empty strings")
        example = Example(
            id=_get(obj, "id", str, where),
            split=split,
            prompt=_get(obj, "prompt", str, where),
            target=_get(obj, "target", str, where),
            negatives=tuple(negatives),
            sampled=tuple(sampled),
        )
        if not example.target:
            raise BadJob(f"{where}: 'target' is empty")
        if example.id in seen:
            raise BadJob(f"{where}: the id is used by an earlier line")
        seen.add(example.id)
        examples.append(example)
    if not any(e.split == "train" for e in examples):
        raise BadJob(f"the dataset {name} has no train lines")
    return examples


def fingerprint(job: Job, examples: list[Example]) -> str:
    """What a checkpoint must match to be resumed: everything that shapes the training."""
    digest = hashlib.sha256()
    train = asdict(job.train)
    # How the work is cut up and paced does not change what is learned.
    for key in ("micro_batch_size", "checkpoint_every_steps", "time_budget_seconds"):
        del train[key]
    digest.update(json.dumps([asdict(job.lora), train], sort_keys=True).encode())
    digest.update(str(job.base_gguf.stat().st_size).encode())
    digest.update(job.base_gguf.name.encode())
    pairs = job.train.preference_weight > 0
    for e in examples:
        if e.split == "train":
            negatives = list(e.rivals) if pairs else []
            digest.update(json.dumps([e.id, e.prompt, e.target, negatives]).encode())
    return digest.hexdigest()
