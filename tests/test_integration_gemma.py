"""The embedded Gemma 3 270M behind the real daemon, with the demo family from configs/."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from insan_edge.config import parse_config
from insan_edge.safety import check_item

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def test_demo_family_gets_parseable_safety_checked_recommendations(daemon_factory, tmp_path):  # type: ignore[no-untyped-def]
    config = yaml.safe_load((ROOT / "configs" / "family.example.yaml").read_text())
    config["system"]["model"]["seed"] = 7  # repeatable on this machine
    d = daemon_factory(config, timeout=120)
    status = d.client.status()
    assert status["model"]["embedded"] and status["model"]["architecture"] == "gemma3"

    at = "2026-11-28T09:30:00"  # a Saturday morning
    request = {
        "member": "emma",
        "count": 2,
        "context": {"time_of_day": "morning", "day_of_week": "saturday", "activity": "breakfast",
                    "present": ["dad", "emma"], "environment": ["home", "weekend"], "at": at},
    }  # fmt: skip
    # Catalog mode (the default): the embedded model ranks safe catalog items for them.
    ranked = d.client.recommend("smith", request)
    assert ranked["mode"] == "catalog" and 1 <= len(ranked["items"]) <= 2, ranked
    assert all(i["source"] == "catalog" for i in ranked["items"]), ranked
    scores = [i["score"] for i in ranked["items"]]
    assert scores == sorted(scores, reverse=True) and ranked["usage"]["scored"] >= len(scores)
    assert all(i["content_rating"] == "G" for i in ranked["items"]), ranked
    # Generate mode: the model writes them under the grammar.
    answer = d.client.recommend("smith", {**request, "mode": "generate"})
    assert answer["members"] == ["emma", "dad"]
    assert answer["model"]["name"] == "Gemma 3 270m" and answer["model"]["version"] == "base"
    assert 1 <= len(answer["items"]) <= 2, answer

    family = parse_config(d.config_path.read_text(), "c.yaml").config.families["smith"]
    safety = parse_config(d.config_path.read_text(), "c.yaml").config.system.safety
    for item in answer["items"]:
        assert item["title"].strip() and item["description"].strip()
        text = " ".join(str(v) for v in item.values())
        assert not re.search(r"<(start_of|end_of|unused|eos|bos|pad|mask)", text), (
            text
        )  # no control tokens
        assert item["content_rating"] == "G"  # emma is 8 and strict
        assert not check_item(
            title=item["title"], description=item["description"], category=item["category"],
            content_rating=item["content_rating"], family=family, members=["emma", "dad"],
            settings=safety, at=datetime.fromisoformat(at),
        )  # fmt: skip

    with sqlite3.connect(d.state_dir / "insan-edge.db") as db:
        rows = db.execute("SELECT event, detail FROM audit_log").fetchall()
    decisions = [
        (e, json.loads(dt))
        for e, dt in rows
        if json.loads(dt)["request_id"] == answer["request_id"]
    ]
    served = [dt["title"] for e, dt in decisions if e == "item_served"]
    assert served == [i["title"] for i in answer["items"]]
    judged = {(dt["title"], e) for e, dt in decisions}
    assert len({t for t, e in judged if e != "item_served"}) <= answer["generated"]
    assert answer["usage"]["completion_tokens"] > 0 and answer["usage"]["rounds"] >= 1


def test_text_fields_cannot_spell_any_control_token(tmp_path):  # type: ignore[no-untyped-def]
    """Gemma's control and unused tokens ('<start_of_image>', '<unused0>') all contain a character
    that text fields forbid, so the grammar alone keeps them out of answers."""
    from insan_edge import llamacpp
    from insan_edge.modelfiles import ensure_embedded
    from insan_edge.prompts import TEXT_CHAR

    allowed = re.compile(TEXT_CHAR)
    llama_cpp = llamacpp.load()  # as the engine loads it
    llm = llama_cpp.Llama(model_path=str(ensure_embedded(tmp_path).path), n_ctx=64, verbose=False)
    vocab = llm._model.vocab
    mask = (
        llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
        | llama_cpp.LLAMA_TOKEN_ATTR_UNUSED
        | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
    )
    specials = [
        llama_cpp.llama_vocab_get_text(vocab, i).decode("utf-8", "replace")
        for i in range(llama_cpp.llama_vocab_n_tokens(vocab))
        if llama_cpp.llama_vocab_get_attr(vocab, i) & mask
    ]
    llm.close()
    assert len(specials) > 6000
    assert [t for t in specials if all(allowed.fullmatch(c) for c in t)] == []
