"""End to end on the embedded Gemma 3 270M: a simulated family's habits, learned in a real
daemon by the real trainer (QLoRA on the CPU), judged on held-out data and promoted; then a
worse candidate (a learning rate far too high) refused.

Slow (minutes): the first run also converts the GGUF into cached training weights.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from insan_edge.config import parse_config

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration
_spec = importlib.util.spec_from_file_location(
    "simulate_family", ROOT / "scripts" / "simulate_family.py"
)
assert _spec and _spec.loader
sim = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sim)


def _write_events(inbox: Path, name: str, events: list[dict[str, Any]]) -> None:
    inbox.mkdir(parents=True, exist_ok=True)
    tmp = inbox / f".{name}.tmp"
    tmp.write_text("".join(json.dumps(e) + "\n" for e in events))
    tmp.rename(inbox / name)


def _wait_ingested(d: Any, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ingest = d.client.status()["ingest"]
        if ingest["interactions"] + ingest["quarantined"] >= n:
            return
        time.sleep(0.5)
    raise AssertionError(f"ingest stalled: {d.client.status()['ingest']}")


def _wait_run(d: Any, family: str, run_id: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = d.client.request("GET", f"/v1/families/{family}/model")
        run = next((r for r in model["runs"] if r["id"] == run_id), None)
        if run and run["status"] in ("promoted", "refused", "failed"):
            return {"run": run, "model": model}
        time.sleep(2)
    raise AssertionError(f"run {run_id} did not finish in {timeout} s:\n{d.log()[-4000:]}")


@pytest.mark.timeout(3600)
def test_gemma_learns_a_family_and_refuses_a_worse_candidate(daemon_factory, tmp_path):  # type: ignore[no-untyped-def]
    config = yaml.safe_load((ROOT / "tests" / "data" / "sim_family.yaml").read_text())
    config["system"]["model"] = {"seed": 7}
    config["system"]["training"] = {
        **config["system"].get("training", {}),
        "enabled": True,
        "idle_window": {"start": "00:00", "end": "00:00"},  # always open
        "quiet_period_seconds": 0,
        "min_interactions_for_training": 100000,
        "retraining_threshold": 100000,  # only the runs asked for: each sees all the data
        "epochs": 2,
        "batch_size": 4,
        "learning_rate": 0.001,
        "safety_suite_size": 4,
        "safety_threshold": 0.75,
    }
    family = "larkin"
    parsed = parse_config(yaml.safe_dump(config), "sim.yaml").config
    first = sim.simulate(parsed, family, days=42, seed=1, start="2026-09-01")
    d = daemon_factory(config, timeout=180)
    inbox = d.state_dir / "inbox"
    _write_events(inbox, "week1.jsonl", first)
    _wait_ingested(d, len(first))

    run = d.client.request("POST", f"/v1/families/{family}/train", {"now": True})["run"]
    done = _wait_run(d, family, run["id"], timeout=1800)
    assert done["run"]["status"] == "promoted", (done, d.log()[-4000:])
    active = done["model"]["active"]
    scores = active["scores"]
    print(
        "\nFIRST RUN", json.dumps({k: scores[k] for k in ("candidate", "base", "safety")}, indent=1)
    )
    assert scores["candidate"]["preference_accuracy"] > scores["base"]["preference_accuracy"]
    assert scores["safety"]["score"] >= 0.75

    answer = d.client.recommend(
        family, {"member": "mia", "count": 1, "context": {"time_of_day": "afternoon"}}
    )
    assert answer["model"]["version"] == "v1" and answer["model"]["adapter"]

    # A bad setting (a learning rate 500x too high) trains a worse adapter: refused.
    digest = d.client.status()["config"]["digest"]
    config["system"]["training"]["learning_rate"] = 0.5
    d.write_config(config)
    deadline = time.monotonic() + 30
    while d.client.status()["config"]["digest"] == digest:
        assert time.monotonic() < deadline, "the config was not reloaded"
        time.sleep(0.5)
    more = sim.simulate(parsed, family, days=10, seed=2, start="2026-10-13")
    _write_events(inbox, "week3.jsonl", more)
    _wait_ingested(d, len(first) + len(more))
    run2 = d.client.request("POST", f"/v1/families/{family}/train", {"now": True})["run"]
    done2 = _wait_run(d, family, run2["id"], timeout=1800)
    refused = next(v for v in done2["model"]["versions"] if v["version"] == 2)
    print(
        "SECOND RUN",
        json.dumps(
            {k: refused["scores"].get(k) for k in ("candidate", "current", "base")}, indent=1
        ),
    )
    assert done2["run"]["status"] == "refused", done2
    assert "current adapter" in done2["run"]["reason"]
    assert done2["model"]["serving"] == "v1"
