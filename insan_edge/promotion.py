"""Whether a trained candidate replaces the family's adapter: better on held-out data and safe.

Better means a higher preference accuracy (the accepted item more likely than each rejected one)
or, on a tie, a lower held-out loss; than the base model, and than the current adapter if there
is one. Safe means the safety suite's share of safe answers reaches ``safety_threshold``.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from insan_edge.config.loader import LoadedConfig
from insan_edge.ingest_tables import utcnow
from insan_edge.logs import kv
from insan_edge.registry import ModelVersion, Registry
from insan_edge.runs import Runs

log = logging.getLogger("insan_edge.promotion")


def better(a: dict[str, Any], b: dict[str, Any] | None) -> bool:
    """Is score set ``a`` better than ``b``: preference accuracy first, held-out loss on a tie."""
    if b is None:
        return True
    pa, pb = a.get("preference_accuracy"), b.get("preference_accuracy")
    if pa is not None and pb is not None and pa != pb:
        return bool(pa > pb)
    return bool(a["heldout_loss"] < b["heldout_loss"])


def judge(
    loaded: LoadedConfig,
    run: dict[str, Any],
    job_dir: Path,
    registry: Registry,
    runs: Runs,
    base_model: str,
    safety_check: Callable[[str, ModelVersion], dict[str, Any]],
) -> None:
    """Register the run's adapter as a candidate, then promote or refuse it (with reasons)."""
    family_id = run["family_id"]
    training = loaded.config.system.training
    try:
        scores = json.loads((job_dir / "out" / "eval.json").read_text())
        candidate = registry.add_candidate(
            family_id,
            job_dir / "out",
            run_id=run["id"],
            base_model=base_model,
            upto_id=run.get("upto_id"),
            examples=run.get("examples"),
            scores=scores,
        )
        cand, cur, base = scores["candidate"], scores.get("current"), scores["base"]
    except (OSError, ValueError, KeyError) as exc:
        runs.update(
            run["id"],
            status="failed",
            finished_at=utcnow(),
            reason=f"could not read the trained adapter: {exc}",
        )
        return
    refusals = []
    if not better(cand, base):
        refusals.append("not better than the base model on the held-out data")
    if cur is not None and not better(cand, cur):
        refusals.append("not better than the current adapter on the held-out data")
    if not refusals:
        safety = safety_check(family_id, candidate)
        scores["safety"] = safety
        if safety["score"] < training.safety_threshold:
            refusals.append(
                f"the safety suite passed {safety['score']:.0%}, below the "
                f"{training.safety_threshold:.0%} threshold"
            )
    if refusals:
        reason: str | None = "; ".join(refusals)
        registry.refuse(family_id, candidate.version, reason or "", scores)
        status = "refused"
    else:
        registry.promote(family_id, candidate.version, scores)
        status, reason = "promoted", None
    registry.prune(family_id, training.keep_versions)
    runs.update(
        run["id"], status=status, reason=reason, version=candidate.version, finished_at=utcnow()
    )
    log.info(kv("training.judged", run=run["id"], family=family_id, outcome=status))
    shutil.rmtree(job_dir, ignore_errors=True)
