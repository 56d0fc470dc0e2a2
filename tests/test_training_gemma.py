"""End to end on the embedded Gemma 3 270M: six simulated weeks of a family, learned in a real
daemon by the real trainer (QLoRA on the CPU), judged on held-out data by the promotion rule.

What this shows today (see the closing note of issue 4): the adapter learns the family's
titles (held-out loss per token well below the base's) but, trained on the accepted items
alone, not yet which of two titles a member picks in a given moment (preference accuracy
not above the base on this log), so the gate refuses it, as it should. The test asserts that
the gate decides by its rule on the scores it reports, whichever way that goes.

Slow (about 10 minutes): the first run also converts the GGUF into cached training weights.
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
from insan_edge.promotion import better

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
def test_gemma_trains_a_family_adapter_and_the_gate_judges_it(daemon_factory, tmp_path):  # type: ignore[no-untyped-def]
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
    events = sim.simulate(parsed, family, days=42, seed=1, start="2026-09-01")
    d = daemon_factory(config, timeout=180)
    _write_events(d.state_dir / "inbox", "weeks.jsonl", events)
    _wait_ingested(d, len(events))

    run = d.client.request("POST", f"/v1/families/{family}/train", {"now": True})["run"]
    done = _wait_run(d, family, run["id"], timeout=1800)
    first = next(v for v in done["model"]["versions"] if v["version"] == 1)
    scores = first["scores"]
    cand, base = scores["candidate"], scores["base"]
    print(
        "\nFIRST RUN",
        done["run"]["status"],
        json.dumps({k: scores.get(k) for k in ("candidate", "base", "safety")}, indent=1),
    )
    assert cand["pairs"] > 0 and cand["pairs"] == base["pairs"]
    assert cand["heldout_loss"] < base["heldout_loss"]  # it learned the family's titles
    safe = scores.get("safety", {}).get("score", 0.0) >= 0.75
    assert done["run"]["status"] == ("promoted" if better(cand, base) and safe else "refused"), done
    serving = "v1" if done["run"]["status"] == "promoted" else "base"
    assert done["model"]["serving"] == serving
    answer = d.client.recommend(
        family, {"member": "mia", "count": 1, "context": {"time_of_day": "afternoon"}}
    )
    assert answer["model"]["version"] == serving
