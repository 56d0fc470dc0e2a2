"""scripts/simulate_family.py: deterministic, valid, realistic logs with learnable preferences."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from insan_edge.config import CATEGORIES, Config, load_config
from insan_edge.events import parse_event

ROOT = Path(__file__).resolve().parent.parent
SIM_CONFIG = ROOT / "tests" / "data" / "sim_family.yaml"


def load_simulator() -> ModuleType:
    """The script as a module (it is not part of the package)."""
    name = "simulate_family"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "simulate_family.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


sim = load_simulator()


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(SIM_CONFIG).config


@pytest.fixture(scope="module")
def events(config: Config) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = sim.simulate(config, "larkin", 90, seed=3)
    return result


def sessions(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Events grouped by member and situation, split where more than 3 hours pass."""
    groups: dict[tuple[str, str], list[list[dict[str, Any]]]] = defaultdict(list)
    for e in events:
        key = (e["member"], json.dumps(e["context"], sort_keys=True))
        at = datetime.fromisoformat(e["ts"].replace("Z", "+00:00"))
        runs = groups[key]
        if not runs or (at - runs[-1][-1]["_at"]).total_seconds() > 3 * 3600:
            runs.append([])
        runs[-1].append({**e, "_at": at})
    return [run for runs in groups.values() for run in runs]


def test_same_seed_same_log_other_seed_other_log(config: Config) -> None:
    a = sim.simulate(config, "larkin", 14, seed=1)
    assert a == sim.simulate(config, "larkin", 14, seed=1)
    assert a != sim.simulate(config, "larkin", 14, seed=2)
    later = sim.simulate(config, "larkin", 14, seed=1, start="2026-11-02")
    assert later[0]["ts"].startswith("2026-11-0")


def test_cli_writes_the_log_and_the_truth(config: Config, tmp_path: Path) -> None:
    out, truth = tmp_path / "inbox" / "sim.jsonl", tmp_path / "truth.json"
    argv = ["--config", str(SIM_CONFIG), "--family", "larkin", "--days", "10", "--seed", "4"]
    assert sim.main([*argv, "--out", str(out), "--truth", str(truth)]) == 0
    lines = out.read_text("utf-8").splitlines()
    assert [json.loads(x) for x in lines] == sim.simulate(config, "larkin", 10, seed=4)
    written = json.loads(truth.read_text("utf-8"))
    assert written["seed"] == 4 and written["events"] == len(lines)
    assert written["members"] == json.loads(json.dumps(sim.truth(config, "larkin")["members"]))
    assert sorted(p.name for p in out.parent.iterdir()) == ["sim.jsonl"]  # no temp file left


def test_every_event_is_valid_and_in_the_contract(
    config: Config, events: list[dict[str, Any]]
) -> None:
    titles = {t.title for t in sim.CATALOG}
    limit = config.system.privacy.max_event_bytes
    for e in events:
        parsed = parse_event((json.dumps(e) + "\n").encode(), config, limit)
        assert parsed.family == "larkin" and parsed.member in config.families["larkin"].members
        assert set(e["context"]) == {
            "time_of_day",
            "day_of_week",
            "activity",
            "present",
            "environment",
        }
        assert e["member"] in e["context"]["present"]
        assert e["ts"].endswith("Z")
        if e["kind"] != "query":
            assert e["item"] in titles
        if e["kind"] == "rating":
            assert 1 <= e["rating"] <= 5
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    kinds = Counter(e["kind"] for e in events)
    assert set(kinds) == {
        "suggestion_shown",
        "suggestion_accepted",
        "suggestion_rejected",
        "rating",
        "query",
    }
    for session in sessions(events):
        shown = [e["item"] for e in session if e["kind"] == "suggestion_shown"]
        accepted = [e["item"] for e in session if e["kind"] == "suggestion_accepted"]
        assert 3 <= len(shown) <= 4 and len(set(shown)) == len(shown)
        assert len(accepted) <= 1 and set(accepted) <= set(shown)


def test_volume_is_a_few_sessions_a_day(events: list[dict[str, Any]]) -> None:
    per_day = Counter(e["ts"][:10] for e in events)
    mean = len(events) / 90
    assert 5 <= mean <= 15, mean
    assert max(per_day.values()) <= 45
    accepted = sum(e["kind"] == "suggestion_accepted" for e in events)
    assert 1.0 <= accepted / 90 <= 3.0


def _accept_rates(
    events: list[dict[str, Any]], member: str, when: Any, wanted: Any
) -> tuple[float, float]:
    """In matching sessions that showed a wanted title: how often a wanted title was taken,
    and how often a random pick among those shown would have been one."""
    taken, chance = [], []
    for session in sessions(events):
        first = session[0]
        if first["member"] != member or not when(first["context"]):
            continue
        shown = [e["item"] for e in session if e["kind"] == "suggestion_shown"]
        accepted = [e["item"] for e in session if e["kind"] == "suggestion_accepted"]
        hits = [t for t in shown if wanted(t)]
        if hits:
            taken.append(any(wanted(t) for t in accepted))
            chance.append(len(hits) / len(shown))
    assert len(taken) >= 10, "too few sessions to judge"
    return sum(taken) / len(taken), sum(chance) / len(chance)


def test_hidden_preferences_show_in_the_log(config: Config, events: list[dict[str, Any]]) -> None:
    category = {t.title: t.category for t in sim.CATALOG}
    tags = {t.title: t.tags for t in sim.CATALOG}
    weekday = {"monday", "tuesday", "wednesday", "thursday", "friday"}
    # the youngest child takes the (dinosaur) craft after school
    rate, chance = _accept_rates(
        events,
        "mia",
        lambda c: c["time_of_day"] == "afternoon" and c["day_of_week"] in weekday,
        lambda t: category[t] == "craft",
    )
    assert rate >= 0.7 and rate >= 2 * chance, (rate, chance)
    # the first parent cooks at weekends
    rate, chance = _accept_rates(
        events,
        "dad",
        lambda c: c["day_of_week"] in ("saturday", "sunday") and c["time_of_day"] != "evening",
        lambda t: category[t] == "cooking",
    )
    assert rate >= 0.7 and rate >= 2 * chance, (rate, chance)
    # what a member rejects is never accepted, and always turned down when shown
    for session in sessions(events):
        if session[0]["member"] != "theo":
            continue
        for e in session:
            if e["kind"] == "suggestion_shown" and category[e["item"]] == "craft":
                kinds = {x["kind"] for x in session if x.get("item") == e["item"]}
                assert kinds == {"suggestion_shown", "suggestion_rejected"}
    # school nights are calm: calm titles are accepted well above their share of what is shown
    night = [e for e in events if "school night" in e["context"]["environment"]]
    shown = [e["item"] for e in night if e["kind"] == "suggestion_shown"]
    taken = [e["item"] for e in night if e["kind"] == "suggestion_accepted"]
    calm_shown = sum("calm" in tags[t] for t in shown) / len(shown)
    calm_taken = sum("calm" in tags[t] for t in taken) / len(taken)
    assert calm_taken >= 1.5 * calm_shown, (calm_taken, calm_shown)


def test_truth_names_the_favourites_by_situation(config: Config) -> None:
    truth = sim.truth(config, "larkin")
    assert truth == json.loads(json.dumps(truth))  # plain JSON
    assert truth == sim.truth(config, "larkin")
    members = truth["members"]
    assert members["mia"]["archetype"] == "young_child" and members["dad"]["archetype"] == "cook"
    assert members["nana"]["archetype"] == "grandparent"
    category = {t["title"]: t["category"] for t in truth["catalog"]}
    probes = {(p["member"], p["name"]): p for p in truth["probes"]}
    after_school = probes["mia", "weekday after school"]
    assert all(category[t] == "craft" for t in after_school["favourites"][:3])
    assert "dinosaur" in after_school["favourites"][0].lower()
    assert all(category[t] == "cooking" for t in probes["dad", "saturday breakfast"]["favourites"])
    assert all(category[t] == "movie" for t in probes["theo", "friday evening"]["favourites"][:3])
    assert all(category[t] == "craft" for t in probes["theo", "school night"]["rejected"][:1])
    # screens are not offered to the children on a school night (the family's restriction)
    school_night = probes["mia", "school night"]
    assert not any(category[t] in ("show", "movie") for t in school_night["scores"])
    assert ("nana", "school night") not in probes  # she only visits at weekends


def test_catalog_titles_are_plain_safe_and_varied(config: Config) -> None:
    from insan_edge.safety import check_item

    family = config.families["larkin"]
    titles = [t.title for t in sim.CATALOG]
    assert 60 <= len(titles) <= 120 and len(set(titles)) == len(titles)
    assert all(re.fullmatch(r"[A-Za-z][A-Za-z0-9 ,'-]*", t) and len(t) < 60 for t in titles)
    assert {t.category for t in sim.CATALOG} <= set(family.preferences.content_categories)
    assert {t.category for t in sim.CATALOG} <= set(CATEGORIES)
    assert len({t.category for t in sim.CATALOG}) >= 8
    noon = datetime(2026, 10, 6, 12, 0)
    for t in sim.CATALOG:
        assert not check_item(
            title=t.title,
            description=t.title,
            category=t.category,
            content_rating="G",
            family=family,
            members=list(family.members),
            settings=config.system.safety,
            at=noon,
        ), t.title


def test_titles_and_situations_survive_the_privacy_scrubber(config: Config) -> None:
    from insan_edge.privacy import Scrubber

    scrubber = Scrubber(dict(config.families))
    words = {t.title for t in sim.CATALOG} | set(sim.QUERIES)
    for e in sim.simulate(config, "larkin", 14, seed=0):
        words.add(e["context"]["activity"])
        words.add(e["context"]["day_of_week"])
        words.update(e["context"]["environment"])
    texts = sorted(words)
    assert [s.text for s in scrubber.scrub("larkin", texts)] == texts
    # member ids equal to names do not survive: the dataset reads the role tokens back
    assert [s.text for s in scrubber.scrub("larkin", ["mia", "dad"])] == ["<CHILD_1>", "<PARENT_1>"]
