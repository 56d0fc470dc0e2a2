"""Crisis signals: judged on the labelled messages, and end to end in a real daemon (an alert,
its audit record, the parents' hook, acknowledgement; the text never stored raw)."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path

import pytest
from daemon_harness import family_config

from insan_edge.crisis import SIGNALS, crisis_index, keyword_signals
from insan_edge.topic_eval import load_crisis, report, split
from insan_edge.topic_model import Embedder, ensure_model

DATA = Path(__file__).parent / "data" / "crisis.jsonl"


def test_signals_on_the_held_out_messages(tmp_path: Path) -> None:
    embedder = Embedder(ensure_model(tmp_path).parent, device="cpu")
    index = crisis_index(embedder.embed)
    _, held = split(load_crisis(DATA))
    result = report(held, index.scores([r.text for r in held]), index.thresholds,
                    index.keyword_floors, list(SIGNALS), lambda t, s: s in keyword_signals(t))  # fmt: skip
    # Measured on the held-out half (precision/recall): self-harm keywords 1.00/0.12, with the
    # model 0.86/0.72; abuse keywords 0.33/0.06, with the model 0.56/0.78. A missed signal costs
    # more than a parent reading a false alert, so recall is what the fit favours.
    floors = {"self-harm": (0.8, 0.67), "abuse": (0.5, 0.72)}
    for signal in SIGNALS:
        r = result[signal]
        print(signal, "keywords", r["keywords"], "with the model", r["keywords+model"])
        precision, recall = floors[signal]
        assert r["keywords+model"]["recall"] >= recall, (signal, r)
        assert r["keywords+model"]["precision"] >= precision, (signal, r)
        assert r["keywords+model"]["recall"] > r["keywords"]["recall"] + 0.5, (signal, r)


EVENT = {"family": "testfam", "kind": "query", "ts": "2026-11-30T16:00:00Z"}


def test_a_childs_message_raises_an_alert_for_the_parents(
    daemon_factory, tiny_model_path, tmp_path
):  # type: ignore[no-untyped-def]
    out = tmp_path / "hook.json"
    hook = [sys.executable, "-c",
            "import json, os, sys; json.dump({k: v for k, v in os.environ.items() "
            "if k.startswith('INSAN_EDGE_ALERT')}, open(sys.argv[1], 'w'))", str(out)]  # fmt: skip
    cfg = family_config(tiny_model_path, tmp_path / "s", tmp_path / "x.sock",
                        safety={"topic_model": True}, privacy={"crisis_hook": hook})  # fmt: skip
    d = daemon_factory(cfg)
    said = "everyone would be better off if i just disappeared forever"
    events = [
        {**EVENT, "member": "kim", "text": said},
        {**EVENT, "member": "kim", "text": "this homework is killing me lol"},
        {
            **EVENT,
            "member": "pat",
            "text": said,
            "ts": "2026-11-30T16:01:00Z",
        },  # an adult: no alert
    ]
    stored = d.client.request("POST", "/v1/interactions", {"events": events})
    assert stored["stored"] == 3
    status = d.client.status()["alerts"]
    assert status["open"] == 1, status
    latest = status["latest"]
    assert latest["member_id"] == "kim" and latest["signal"] == "self-harm"
    deadline = time.monotonic() + 30
    while not out.exists():
        assert time.monotonic() < deadline, d.log()
        time.sleep(0.1)
    env = json.loads(out.read_text())
    assert env["INSAN_EDGE_ALERT_MEMBER"] == "kim" and env["INSAN_EDGE_ALERT_SIGNAL"] == "self-harm"
    assert said not in json.dumps(env)  # the hook learns who and what kind, never the words
    with sqlite3.connect(d.state_dir / "insan-edge.db") as db:
        audit = db.execute(
            "SELECT event, rule, member_id, detail FROM audit_log WHERE event = 'crisis_alert'"
        ).fetchall()
        alerts = db.execute("SELECT * FROM alerts").fetchall()
    assert [(a[0], a[1], a[2]) for a in audit] == [("crisis_alert", "self-harm", "kim")]
    assert said not in json.dumps(alerts) and said not in audit[0][3]
    assert "crisis.alert" in d.log() and said not in d.log()

    listed = d.client.request("GET", "/v1/alerts")["alerts"]
    assert [a["id"] for a in listed] == [latest["id"]]
    done = d.client.request("POST", f"/v1/alerts/{latest['id']}/acknowledge")
    assert done["acknowledged_at"]
    assert d.client.status()["alerts"]["open"] == 0
    with pytest.raises(Exception) as missing:
        d.client.request("POST", "/v1/alerts/9999/acknowledge")
    assert getattr(missing.value, "status", None) == 404
