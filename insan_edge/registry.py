"""The model registry: where training leaves adapters and serving finds them.

Files live under ``<state>/adapters/<family>/v<NNNN>/`` (``adapter.gguf`` for llama.cpp,
``peft/`` for the next run's comparison, ``eval.json``); rows in ``model_versions`` say which
version is active, with its scores. A version directory appears by one atomic rename, a
promotion is one transaction plus an atomic rename of the ``active`` link; serving reads the
database. Training and serving never import each other: they meet here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from insan_edge.errors import NotFoundError, StoreError
from insan_edge.ingest_tables import utcnow
from insan_edge.logs import kv
from insan_edge.store import Store

log = logging.getLogger("insan_edge.registry")

# A version's life: candidate -> active -> retired (a newer one was promoted) or rolled_back;
# candidate -> refused; any -> pruned (files removed beyond keep_versions) or deleted.
LIVE = ("candidate", "active", "retired", "refused", "rolled_back")


@dataclass(frozen=True)
class ModelVersion:
    family_id: str
    version: int
    status: str
    created_at: str
    path: Path
    promoted_at: str | None = None
    run_id: int | None = None
    sha256: str | None = None
    base_model: str | None = None
    upto_id: int | None = None
    examples: int | None = None
    preference_accuracy: float | None = None
    heldout_loss: float | None = None
    safety_score: float | None = None
    scores: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    needs_retraining: bool = False

    @property
    def active(self) -> bool:
        return self.status == "active"

    @property
    def gguf(self) -> Path:
        return self.path / "adapter.gguf"

    @property
    def peft(self) -> Path:
        return self.path / "peft"

    @property
    def key(self) -> str:
        """Names this exact adapter file (caches key on it): family, version and content."""
        return f"{self.family_id}/v{self.version}/{(self.sha256 or '')[:12]}"

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path)
        out["active"] = self.active
        return out


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _row(row: dict[str, Any]) -> ModelVersion:
    return ModelVersion(
        family_id=row["family_id"],
        version=int(row["version"]),
        status=row["status"],
        created_at=row["created_at"],
        path=Path(row["path"]),
        promoted_at=row["promoted_at"],
        run_id=row["run_id"],
        sha256=row["sha256"],
        base_model=row["base_model"],
        upto_id=row["upto_id"],
        examples=row["examples"],
        preference_accuracy=row["preference_accuracy"],
        heldout_loss=row["heldout_loss"],
        safety_score=row["safety_score"],
        scores=json.loads(row["scores"] or "{}"),
        reason=row["reason"],
        needs_retraining=bool(row["needs_retraining"]),
    )


class Registry:
    def __init__(self, store: Store, root: Path) -> None:
        self.store = store
        self.root = root

    # reading ------------------------------------------------------------------------------

    def versions(
        self, family_id: str | None = None, *, live_only: bool = True
    ) -> list[ModelVersion]:
        where, args = [], []
        if family_id is not None:
            where.append("family_id = ?")
            args.append(family_id)
        if live_only:
            where.append(f"status IN ({','.join('?' for _ in LIVE)})")
            args.extend(LIVE)
        sql = "SELECT * FROM model_versions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY family_id, version DESC"
        return [_row(r) for r in self.store.read(sql, args)]

    def active(self, family_id: str) -> ModelVersion | None:
        rows = self.store.read(
            "SELECT * FROM model_versions WHERE family_id = ? AND status = 'active'", [family_id]
        )
        return _row(rows[0]) if rows else None

    def get(self, family_id: str, version: int) -> ModelVersion:
        rows = self.store.read(
            "SELECT * FROM model_versions WHERE family_id = ? AND version = ?", [family_id, version]
        )
        if not rows:
            raise NotFoundError(f"family '{family_id}' has no model version {version}")
        return _row(rows[0])

    # writing ------------------------------------------------------------------------------

    def add_candidate(
        self,
        family_id: str,
        out_dir: Path,
        *,
        run_id: int | None,
        base_model: str,
        upto_id: int | None,
        examples: int | None,
        scores: dict[str, Any],
    ) -> ModelVersion:
        """Move a finished run's ``out_dir`` (adapter.gguf, peft/) in as the next version."""
        gguf = out_dir / "adapter.gguf"
        if not gguf.is_file():
            raise StoreError(f"the trainer left no adapter.gguf in {out_dir}")
        family_dir = self.root / family_id
        family_dir.mkdir(parents=True, exist_ok=True)
        incoming = family_dir / f".incoming-{uuid.uuid4().hex[:8]}"
        shutil.copytree(out_dir, incoming)
        sha = file_sha256(incoming / "adapter.gguf")
        candidate = scores.get("candidate") or {}
        with self.store.transaction() as db:
            last = db.execute(
                "SELECT COALESCE(MAX(version), 0) FROM model_versions WHERE family_id = ?",
                [family_id],
            ).fetchone()[0]
            version = int(last) + 1
            final = family_dir / f"v{version:04d}"
            os.replace(incoming, final)
            db.table("model_versions").insert(
                {
                    "family_id": family_id,
                    "version": version,
                    "status": "candidate",
                    "created_at": utcnow(),
                    "run_id": run_id,
                    "path": str(final),
                    "sha256": sha,
                    "base_model": base_model,
                    "upto_id": upto_id,
                    "examples": examples,
                    "preference_accuracy": candidate.get("preference_accuracy"),
                    "heldout_loss": candidate.get("heldout_loss"),
                    "scores": json.dumps(scores),
                    "needs_retraining": 0,
                }
            )
        log.info(kv("model.candidate", family=family_id, version=version))
        return self.get(family_id, version)

    def _set(self, family_id: str, version: int, **values: Any) -> None:
        with self.store.transaction() as db:
            db.table("model_versions").update((family_id, version), values)

    def refuse(
        self, family_id: str, version: int, reason: str, scores: dict[str, Any]
    ) -> ModelVersion:
        self._set(
            family_id,
            version,
            status="refused",
            reason=reason,
            scores=json.dumps(scores),
            safety_score=(scores.get("safety") or {}).get("score"),
        )
        log.info(kv("model.refused", family=family_id, version=version, reason=reason))
        return self.get(family_id, version)

    def promote(self, family_id: str, version: int, scores: dict[str, Any]) -> ModelVersion:
        """Make ``version`` the family's active adapter (the previous one is retired)."""
        now = utcnow()
        with self.store.transaction() as db:
            db.execute(
                "UPDATE model_versions SET status = 'retired' WHERE family_id = ? AND status = 'active'",
                [family_id],
            )
            db.table("model_versions").update(
                (family_id, version),
                {
                    "status": "active",
                    "promoted_at": now,
                    "reason": None,
                    "scores": json.dumps(scores),
                    "safety_score": (scores.get("safety") or {}).get("score"),
                },
            )
        self._link(family_id, version)
        log.info(kv("model.promoted", family=family_id, version=version))
        return self.get(family_id, version)

    def rollback(self, family_id: str) -> ModelVersion | None:
        """Retire the active version for the one before it; None means back to the base model."""
        current = self.active(family_id)
        if current is None:
            raise NotFoundError(f"family '{family_id}' has no active model to roll back")
        with self.store.transaction() as db:
            rows = list(
                db.query(
                    "SELECT version FROM model_versions WHERE family_id = ? AND status = 'retired' "
                    "AND version < ? ORDER BY version DESC LIMIT 1",
                    [family_id, current.version],
                )
            )
            db.table("model_versions").update(
                (family_id, current.version), {"status": "rolled_back"}
            )
            previous = int(rows[0]["version"]) if rows else None
            if previous is not None:
                db.table("model_versions").update(
                    (family_id, previous), {"status": "active", "promoted_at": utcnow()}
                )
        self._link(family_id, previous)
        log.info(kv("model.rollback", family=family_id, to=previous or "base"))
        return None if previous is None else self.get(family_id, previous)

    def delete(self, family_id: str) -> int:
        """Remove every adapter of the family (files and the active mark); serving uses the base."""
        versions = self.versions(family_id)
        with self.store.transaction() as db:
            db.execute(
                f"UPDATE model_versions SET status = 'deleted' WHERE family_id = ? AND status IN ({','.join('?' for _ in LIVE)})",
                [family_id, *LIVE],
            )
        shutil.rmtree(self.root / family_id, ignore_errors=True)
        log.info(kv("model.deleted", family=family_id, versions=len(versions)))
        return len(versions)

    def prune(self, family_id: str, keep: int) -> list[int]:
        """Remove the files of versions beyond the newest ``keep`` (never the active one)."""
        versions = self.versions(family_id)
        doomed = [v for v in versions[keep:] if not v.active]
        for v in doomed:
            shutil.rmtree(v.path, ignore_errors=True)
            self._set(family_id, v.version, status="pruned")
        if doomed:
            log.info(kv("model.pruned", family=family_id, versions=[v.version for v in doomed]))
        return [v.version for v in doomed]

    def check_files(self, version: ModelVersion) -> list[str]:
        """Problems with a version's files (missing, changed since it was registered)."""
        if not version.gguf.is_file():
            return [f"{version.gguf} is missing"]
        if version.sha256 and file_sha256(version.gguf) != version.sha256:
            return [f"{version.gguf} changed since it was registered (sha256 differs)"]
        return []

    def _link(self, family_id: str, version: int | None) -> None:
        """Point ``adapters/<family>/active`` at the version directory (atomic rename)."""
        family_dir = self.root / family_id
        link = family_dir / "active"
        if version is None:
            link.unlink(missing_ok=True)
            return
        family_dir.mkdir(parents=True, exist_ok=True)
        tmp = family_dir / f".active-{uuid.uuid4().hex[:8]}"
        tmp.symlink_to(f"v{version:04d}")
        os.replace(tmp, link)
