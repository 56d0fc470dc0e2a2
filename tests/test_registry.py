"""The model registry and the promotion rule, on a real store and real files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from insan_edge.config import Config
from insan_edge.config.loader import LoadedConfig
from insan_edge.errors import NotFoundError
from insan_edge.promotion import better, judge
from insan_edge.registry import Registry
from insan_edge.runs import Runs
from insan_edge.store import Store


def _family() -> dict[str, Any]:
    return {"members": {"pat": {"name": "Pat", "age": 40, "role": "parent"}}}


@pytest.fixture
def env(tmp_path: Path) -> tuple[Store, Registry, Runs]:
    store = Store(tmp_path / "db.sqlite")
    config = Config.model_validate({"families": {"fam": _family(), "other": _family()}})
    store.sync_families(dict(config.families))
    return store, Registry(store, tmp_path / "adapters"), Runs(store)


def _out(tmp: Path, name: str, payload: bytes = b"GGUF adapter bytes") -> Path:
    out = tmp / name
    (out / "peft").mkdir(parents=True)
    (out / "adapter.gguf").write_bytes(payload)
    (out / "peft" / "adapter_config.json").write_text("{}")
    return out


SCORES = {
    "candidate": {"preference_accuracy": 0.8, "heldout_loss": 1.0},
    "current": None,
    "base": {"preference_accuracy": 0.5, "heldout_loss": 2.0},
}


def test_versions_promote_rollback_prune_delete(
    env: tuple[Store, Registry, Runs], tmp_path: Path
) -> None:
    _, reg, _ = env
    assert reg.active("fam") is None
    v1 = reg.add_candidate(
        "fam",
        _out(tmp_path, "o1", b"one"),
        run_id=None,
        base_model="m",
        upto_id=10,
        examples=5,
        scores=SCORES,
    )
    assert (v1.version, v1.status, v1.preference_accuracy) == (1, "candidate", 0.8)
    assert v1.gguf.read_bytes() == b"one" and v1.path.name == "v0001"
    reg.promote("fam", 1, SCORES)
    assert reg.active("fam") is not None and reg.active("fam").version == 1  # type: ignore[union-attr]
    assert os.readlink(tmp_path / "adapters" / "fam" / "active") == "v0001"
    v2 = reg.add_candidate(
        "fam",
        _out(tmp_path, "o2", b"two"),
        run_id=None,
        base_model="m",
        upto_id=20,
        examples=9,
        scores=SCORES,
    )
    reg.promote("fam", v2.version, SCORES)
    assert [(v.version, v.status) for v in reg.versions("fam")] == [(2, "active"), (1, "retired")]
    assert os.readlink(tmp_path / "adapters" / "fam" / "active") == "v0002"
    assert v1.key != v2.key  # caches keyed by version and content

    back = reg.rollback("fam")
    assert back is not None and back.version == 1 and back.active
    assert reg.get("fam", 2).status == "rolled_back"
    assert reg.rollback("fam") is None  # back to the base model
    assert reg.active("fam") is None and not (tmp_path / "adapters" / "fam" / "active").exists()
    with pytest.raises(NotFoundError):
        reg.rollback("fam")

    for n in range(3, 7):
        reg.add_candidate(
            "fam",
            _out(tmp_path, f"o{n}", bytes([n])),
            run_id=None,
            base_model="m",
            upto_id=n,
            examples=1,
            scores=SCORES,
        )
    reg.promote("fam", 6, SCORES)
    pruned = reg.prune("fam", keep=3)
    assert pruned == [3, 2, 1]
    assert not (tmp_path / "adapters" / "fam" / "v0001").exists()
    assert [v.version for v in reg.versions("fam")] == [6, 5, 4]

    assert reg.versions("other") == []
    assert reg.delete("fam") == 3
    assert reg.active("fam") is None and reg.versions("fam") == []
    assert not (tmp_path / "adapters" / "fam").exists()


def test_check_files_sees_missing_and_changed(
    env: tuple[Store, Registry, Runs], tmp_path: Path
) -> None:
    _, reg, _ = env
    v = reg.add_candidate(
        "fam",
        _out(tmp_path, "o", b"abc"),
        run_id=None,
        base_model="m",
        upto_id=1,
        examples=1,
        scores=SCORES,
    )
    assert reg.check_files(v) == []
    v.gguf.write_bytes(b"tampered")
    assert "changed" in reg.check_files(v)[0]
    v.gguf.unlink()
    assert "missing" in reg.check_files(v)[0]


def test_candidate_without_adapter_is_an_error(
    env: tuple[Store, Registry, Runs], tmp_path: Path
) -> None:
    _, reg, _ = env
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(Exception, match=r"adapter\.gguf"):
        reg.add_candidate(
            "fam", empty, run_id=None, base_model="m", upto_id=1, examples=1, scores=SCORES
        )
    assert reg.versions("fam") == []


def test_better_compares_preference_then_loss() -> None:
    a = {"preference_accuracy": 0.7, "heldout_loss": 3.0}
    assert better(a, None)
    assert better(a, {"preference_accuracy": 0.6, "heldout_loss": 1.0})
    assert not better(a, {"preference_accuracy": 0.8, "heldout_loss": 9.0})
    assert better(a, {"preference_accuracy": 0.7, "heldout_loss": 3.5})
    assert not better(
        {"preference_accuracy": None, "heldout_loss": 2.0},
        {"preference_accuracy": None, "heldout_loss": 1.0},
    )


def _loaded(threshold: float = 0.95) -> LoadedConfig:
    config = Config.model_validate(
        {
            "system": {"training": {"safety_threshold": threshold, "keep_versions": 2}},
            "families": {"fam": _family()},
        }
    )
    return LoadedConfig(
        config=config,
        path=Path("c.yaml"),
        preset="development",
        preset_reason="test",
        digest="0" * 12,
    )


def _job(tmp: Path, scores: dict[str, Any], name: str) -> Path:
    job = tmp / name
    out = _out(job, "out", name.encode())
    (out / "eval.json").write_text(json.dumps(scores))
    return job


@pytest.mark.parametrize(
    ("candidate", "safety", "outcome", "why"),
    [
        ({"preference_accuracy": 0.9, "heldout_loss": 0.5}, 1.0, "promoted", None),
        ({"preference_accuracy": 0.4, "heldout_loss": 0.5}, 1.0, "refused", "base model"),
        (
            {"preference_accuracy": 0.9, "heldout_loss": 0.5},
            0.5,
            "refused",
            "safety suite passed 50%",
        ),
    ],
)
def test_judge_promotes_only_better_and_safe(
    env: tuple[Store, Registry, Runs],
    tmp_path: Path,
    candidate: dict[str, Any],
    safety: float,
    outcome: str,
    why: str | None,
) -> None:
    _, reg, runs = env
    run = runs.create("fam", requested_by="test", now=True)
    scores = {
        "candidate": candidate,
        "current": None,
        "base": {"preference_accuracy": 0.5, "heldout_loss": 1.0},
    }
    suite_calls = []

    def suite(family: str, version: Any) -> dict[str, Any]:
        suite_calls.append(version.version)
        return {"score": safety, "passed": int(safety * 10), "total": 10}

    job = _job(tmp_path, scores, "job")
    judge(_loaded(), run, job, reg, runs, "base.gguf", suite)
    row = runs.get(run["id"])
    assert row["status"] == outcome
    assert (reg.active("fam") is not None) == (outcome == "promoted")
    if why:
        assert why in row["reason"] and why in reg.get("fam", 1).reason  # type: ignore[operator]
    assert not job.exists()  # the run's files moved into the registry
    assert suite_calls == ([] if why == "base model" else [1])  # no suite for a worse model


def test_judge_refuses_a_candidate_worse_than_the_current(
    env: tuple[Store, Registry, Runs], tmp_path: Path
) -> None:
    _, reg, runs = env
    good = {"preference_accuracy": 0.9, "heldout_loss": 0.5}
    base = {"preference_accuracy": 0.5, "heldout_loss": 1.0}
    first = runs.create("fam", requested_by="test", now=True)
    judge(
        _loaded(),
        first,
        _job(tmp_path, {"candidate": good, "current": None, "base": base}, "a"),
        reg,
        runs,
        "m",
        lambda f, v: {"score": 1.0},
    )
    worse = {"preference_accuracy": 0.7, "heldout_loss": 0.8}
    second = runs.create("fam", requested_by="test", now=True)
    judge(
        _loaded(),
        second,
        _job(tmp_path, {"candidate": worse, "current": good, "base": base}, "b"),
        reg,
        runs,
        "m",
        lambda f, v: {"score": 1.0},
    )
    assert runs.get(second["id"])["status"] == "refused"
    assert "current adapter" in runs.get(second["id"])["reason"]
    assert reg.active("fam").version == 1  # type: ignore[union-attr]
