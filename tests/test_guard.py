"""The guard model: ratings read from the likelihood of each answer, on a real llama.cpp model
(the tiny random one), through the safety judgement and through a real daemon's check."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from daemon_harness import family_config, start_daemon

from insan_edge.config.family import RATINGS, Family
from insan_edge.config.system import SafetySettings
from insan_edge.errors import ConfigError
from insan_edge.guard import Guard, Reader, rating_at
from insan_edge.safety import assess

TITLE, DESCRIPTION = "Colouring book", "Colour in the farm animals"
HARMLESS = f"{TITLE}. {DESCRIPTION}"  # the text the judgement reads
CHILD = Family.model_validate(
    {"members": {"kim": {"name": "Kim", "age": 8, "role": "child", "safety_level": "moderate"}}}
)  # PG for kim


def test_the_rating_is_the_lowest_the_guard_is_sure_enough_the_item_stays_within() -> None:
    p = [0.1, 0.2, 0.3, 0.4]  # cumulative 0.1, 0.3, 0.6, 1.0
    assert rating_at(p, 0.05) == ("G", 1.0)
    assert rating_at(p, 0.3) == ("PG", 0.9)
    assert rating_at(p, 0.5) == ("PG-13", 0.7)
    assert rating_at(p, 0.95) == ("R", 0.4)
    assert rating_at([1.0, 0.0, 0.0, 0.0], 0.95) == ("G", 1.0)


@pytest.fixture(scope="module")
def guard(tiny_model_path: Path) -> Iterator[Guard]:
    g = Guard(tiny_model_path, certainty=0.5, threads=1)
    yield g
    g.close()


def test_the_guard_reads_four_likelihoods_and_keeps_its_readings(guard: Guard) -> None:
    p = guard.probabilities(HARMLESS)
    assert len(p) == len(RATINGS) and sum(p) == pytest.approx(1.0)
    assert all(0.0 <= x <= 1.0 for x in p)
    assert guard.probabilities(HARMLESS) == pytest.approx(p)  # the same text, the same reading
    other = guard.probabilities("Zombie slasher marathon. Gore all night.")
    assert other != pytest.approx(p)  # the item's words reach the model
    before = guard.misses
    first = guard.rate([HARMLESS, HARMLESS])
    assert first[0] == first[1] == rating_at(p, 0.5)
    assert guard.misses == before + 1  # one evaluation for the repeated text
    hits = guard.hits
    assert guard.rate([HARMLESS]) == first[:1] and guard.hits == hits + 1


def test_the_judgement_takes_the_guards_rating_and_says_so(tiny_model_path: Path) -> None:
    # The untrained model spreads its mass over the answers: at 0.95 the item goes to R unless
    # the guard gives R under 5%, at 0.05 it stays G unless it gives G under 5%.
    strict, lax = Guard(tiny_model_path, 0.95, threads=1), Guard(tiny_model_path, 0.05, threads=1)
    try:
        p = strict.probabilities(HARMLESS)
        assert p[-1] > 0.05 and p[0] > 0.05, f"the tiny model's answers: {p}"
        at = datetime(2026, 11, 23, 15, 0)
        settings = SafetySettings(topic_model=False)
        verdicts = {}
        for name, g in (("strict", strict), ("lax", lax), ("none", None)):
            found = assess(
                title=TITLE, description=DESCRIPTION, category="craft",
                content_rating="G", family=CHILD, members=["kim"], settings=settings, at=at,
                meaning=Reader(None, g) if g is not None else None,
            )  # fmt: skip
            verdicts[name] = found
        assert verdicts["strict"].rating == "R" and not verdicts["strict"].allowed
        (reason,) = verdicts["strict"].violations
        assert reason.rule == "content_rating"
        assert "guard model" in reason.message and "kim's limit is PG" in reason.message
        assert verdicts["lax"].rating == "G" and verdicts["lax"].allowed
        assert verdicts["none"].rating == "G" and verdicts["none"].allowed
        # Without a topic model the reader still lets keywords stand on their own.
        war = assess(
            title="War documentary", description="", category="show", content_rating="G",
            family=CHILD, members=["kim"], settings=settings, at=at, meaning=Reader(None, lax),
        )  # fmt: skip
        assert war.rating == "PG-13" and not war.allowed
    finally:
        strict.close()
        lax.close()


def test_a_missing_guard_file_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no guard model file"):
        SafetySettings(guard_model=tmp_path / "nope.gguf")
    from insan_edge.config import load_config

    config = tmp_path / "c.yaml"
    config.write_text(
        "system:\n  safety:\n    guard_model: /nonexistent/guard.gguf\nfamilies: {}\n", "utf-8"
    )
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert "c.yaml:3: system.safety.guard_model: " in str(info.value)
    assert "no guard model file at /nonexistent/guard.gguf" in str(info.value)


def test_a_daemon_with_a_guard_checks_with_it(tmp_path: Path, tiny_model_path: Path) -> None:
    cfg = family_config(tiny_model_path, tmp_path / "state", tmp_path / "api.sock")
    cfg["system"]["safety"] = {"topic_model": False, "guard_model": str(tiny_model_path),
                               "guard_certainty": 0.95}  # fmt: skip
    cfg["families"]["testfam"]["members"]["kim"]["safety_level"] = "moderate"
    d = start_daemon(tmp_path, cfg)
    try:
        body = {"member": "kim", "items": [{"title": TITLE, "description": DESCRIPTION}],
                "context": {"at": "2026-11-23T15:00:00"}}  # fmt: skip
        answer = d.client.request("POST", "/v1/families/testfam/check", body)
        (result,) = answer["results"]
        assert not result["allowed"] and result["rating"] == "R"
        assert any("guard model" in r["message"] for r in result["reasons"]), result
        guard = d.client.status()["topics"]["guard"]
        assert guard["model"] == tiny_model_path.name and guard["error"] is None
        assert guard["cache_misses"] == 1
        # A parent removes the guard: the reload drops it, and the same item passes again.
        del cfg["system"]["safety"]["guard_model"]
        d.write_config(cfg)
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while d.client.status()["topics"]["guard"]["model"] is not None:
            assert time.monotonic() < deadline, d.log()
            time.sleep(0.2)
        again = d.client.request("POST", "/v1/families/testfam/check", body)
        assert again["results"][0]["allowed"] and again["results"][0]["rating"] == "G"
    finally:
        assert d.stop() == 0, d.log()
