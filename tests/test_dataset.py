"""insan_edge.dataset: a family's training set from the store, as serving would prompt it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_simulator import SIM_CONFIG, sim

from insan_edge.config import Config, load_config, parse_config
from insan_edge.contracts import RequestContext
from insan_edge.dataset import Dataset, build_dataset, count_interactions, role_token_members
from insan_edge.events import parse_event
from insan_edge.intake import scrub_events
from insan_edge.prompts import ANSWER_PREFIX, plan_prompt, title_target
from insan_edge.store import Store

FAMILY = "larkin"
KEY = b"test key"
CONTEXT = {
    "time_of_day": "afternoon",
    "day_of_week": "tuesday",
    "activity": "afternoon snack",
    "present": ["mia", "dad"],
    "environment": ["home", "school day"],
}


@dataclass(frozen=True)
class _Same:
    text: str
    entities: dict[str, int] = field(default_factory=dict)


class PassThrough:
    """A scrubber that changes nothing (the simulator's titles hold no personal data)."""

    def scrub(self, family_id: str, texts: list[str]) -> list[_Same]:
        return [_Same(t) for t in texts]


def ingest(
    store: Store, config: Config, events: Sequence[dict[str, Any]], scrubber: Any = None
) -> int:
    parsed = [parse_event(e, config, 16384) for e in events]
    rows = scrub_events(scrubber or PassThrough(), FAMILY, parsed, "inbox", KEY)
    return store.add_interactions(rows)


def event(kind: str, item: str | None, minutes: float = 0, **extra: Any) -> dict[str, Any]:
    """An event on Tuesday 2026-10-06 from 16:00 UTC, by mia unless told."""
    at = datetime(2026, 10, 6, 16, 0, tzinfo=timezone.utc) + timedelta(minutes=minutes)
    out = {"family": FAMILY, "member": "mia", "kind": kind, "item": item, "context": CONTEXT}
    return {**out, "ts": at.strftime("%Y-%m-%dT%H:%M:%SZ"), **extra}


def local(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone().replace(tzinfo=None)


def rows_by_id(store: Store) -> dict[int, dict[str, Any]]:
    return {r["id"]: dict(r) for r in store.db.query("SELECT * FROM interactions")}


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(SIM_CONFIG).config


@pytest.fixture(scope="module")
def log(config: Config) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = sim.simulate(config, FAMILY, 60, seed=11)
    return events


@pytest.fixture
def store(tmp_path: Path, config: Config) -> Iterator[Store]:
    s = Store(tmp_path / "state" / "insan-edge.db")
    s.sync_families(dict(config.families))
    yield s
    s.close()


def test_the_prompt_is_the_serving_prompt_checked_by_hand(store: Store, config: Config) -> None:
    events = [
        event("suggestion_accepted", "Origami frog", -24 * 60, member="dad"),
        event("suggestion_shown", "Paper plate dinosaur masks"),
        event("suggestion_shown", "Chess practice for beginners"),
        event("suggestion_rejected", "Chess practice for beginners", 0.5),
        event("suggestion_accepted", "Paper plate dinosaur masks", 1),
    ]
    ingest(store, config, events)
    data = build_dataset(store, config, FAMILY)
    example = next(e for e in (*data.train, *data.heldout) if e.member == "mia")
    family = config.families[FAMILY]
    recent = store.recent_accepted(FAMILY, ["mia", "dad"], 5, before=events[-1]["ts"])
    assert recent == ["Origami frog"]
    plan = plan_prompt(
        family,
        ["mia", "dad"],
        RequestContext.model_validate(CONTEXT),
        config.system.safety,
        recent,
        local(events[-1]["ts"]),
    )
    assert example.prompt == plan.prompt + ANSWER_PREFIX
    lines = example.prompt.splitlines()
    assert lines[3:6] == [
        "The ideas are for:",
        "- Mia (7, child; likes dinosaurs, drawing, animals; enjoys topics nature, science; "
        "learns best visual; beginner level; rated G at most)",
        "- Dad (44, parent; likes cooking, cycling, board games; learns best by doing; "
        "intermediate level; rated PG-13 at most)",
    ]
    assert "Situation: tuesday, afternoon, during afternoon snack, home, school day." in lines
    assert "Recently enjoyed: Origami frog." in lines
    assert example.prompt.endswith('Ideas as JSON:\n{"items": [{"title": "')
    assert example.target == 'Paper plate dinosaur masks"'
    assert example.negatives == ('Chess practice for beginners"',)
    assert not example.replay and data.upto_interaction_id == 5 and data.new_examples >= 1


def test_every_example_matches_serving_over_a_simulated_log(
    store: Store, config: Config, log: list[dict[str, Any]]
) -> None:
    ingest(store, config, log)
    data = build_dataset(store, config, FAMILY, max_heldout=10_000)
    rows = rows_by_id(store)
    family = config.families[FAMILY]
    examples = (*data.train, *data.heldout)
    accepted = {i for i, r in rows.items() if r["kind"] == "suggestion_accepted"}
    # one example per acceptance; the rating that follows in the same session is no second one
    assert {e.interaction_id for e in examples} == accepted
    assert data.skipped.get("same_session_repeat", 0) > 0
    for e in examples:
        row = rows[e.interaction_id]
        context = json.loads(row["context"])
        members = list(dict.fromkeys([row["member_id"], *context["present"]]))
        recent = store.recent_accepted(FAMILY, members, 5, before=row["ts"])
        plan = plan_prompt(
            family,
            members,
            RequestContext.model_validate(context),
            config.system.safety,
            recent,
            local(row["ts"]),
        )
        assert e.prompt == plan.prompt + ANSWER_PREFIX
        assert e.target == title_target(row["item"]) and e.member == row["member_id"]
        assert e.id == row["event_hash"][:32]
        assert title_target(row["item"]) not in e.negatives
        assert all(n.endswith('"') for n in e.negatives)
    assert sum(bool(e.negatives) for e in examples) > len(examples) / 2


def test_negatives_are_the_members_rejections_in_that_session(store: Store, config: Config) -> None:
    elsewhere = {**CONTEXT, "activity": "homework"}
    events = [
        event("suggestion_rejected", "Too early", -150),  # more than 2 hours before
        event("suggestion_rejected", "Board game", -20),
        event("suggestion_rejected", 'Say "cheese" photo game', -10),
        event("suggestion_rejected", "Someone else's no", -5, member="dad"),
        event("suggestion_rejected", "Other situation", -3, context=elsewhere),
        event("suggestion_rejected", "Dinosaur masks", -2),  # turned down, then taken
        event("suggestion_accepted", "Dinosaur masks"),
        event("rating", "Disappointing craft", 30, rating=2),
        event("rating", "Fine craft", 31, rating=3),
        event("rating", "Dinosaur masks", 60, rating=5),  # the same session: no second example
        event("suggestion_rejected", "Board game", 90),  # the same title twice: once
        event("suggestion_rejected", "Too late", 125),
    ]
    ingest(store, config, events)
    data = build_dataset(store, config, FAMILY)
    (example,) = (*data.train, *data.heldout)
    assert example.target == 'Dinosaur masks"'
    assert example.negatives == (
        'Board game"',
        "Say 'cheese' photo game\"",
        'Disappointing craft"',
    )
    assert data.skipped == {"same_session_repeat": 1}
    # a good rating on another day is an example of its own
    ingest(store, config, [event("rating", "Dinosaur masks", 24 * 60, rating=4)])
    assert (
        len(build_dataset(store, config, FAMILY).heldout)
        + len(build_dataset(store, config, FAMILY).train)
        == 2
    )


def test_scrubbed_rows_give_the_same_examples(
    config: Config, tmp_path: Path, log: list[dict[str, Any]]
) -> None:
    from insan_edge.privacy import Scrubber, role_tokens

    family = config.families[FAMILY]
    assert role_token_members(family) == {v: k for k, v in role_tokens(family).items()}
    week = [e for e in log if e["ts"] < "2026-10-08"]
    built: list[Dataset] = []
    for name, scrubber in (("plain", None), ("scrubbed", Scrubber(dict(config.families)))):
        store = Store(tmp_path / name / "db")
        store.sync_families(dict(config.families))
        ingest(store, config, week, scrubber)
        built.append(build_dataset(store, config, FAMILY))
        contexts = [json.loads(r["context"]) for r in rows_by_id(store).values()]
        store.close()
    # member ids equal to names are stored as role tokens; the dataset reads them back
    assert all(p.startswith("<") for c in contexts for p in c["present"])
    plain, scrubbed = built
    assert scrubbed.train == plain.train and scrubbed.heldout == plain.heldout
    assert len(plain.train) + len(plain.heldout) >= 5


def test_the_split_is_fixed_as_data_arrives(
    store: Store, config: Config, log: list[dict[str, Any]]
) -> None:
    half = len(log) // 2
    ingest(store, config, log[:half])
    before = build_dataset(store, config, FAMILY, max_heldout=10_000)
    ingest(store, config, log[half:])
    after = build_dataset(store, config, FAMILY, max_heldout=10_000)
    split = {e.id: e.split for e in (*after.train, *after.heldout)}
    assert len(split) == len(after.train) + len(after.heldout)  # no example on both sides
    assert all(split[e.id] == e.split for e in (*before.train, *before.heldout))
    assert 0.1 <= len(after.heldout) / len(split) <= 0.3
    assert after == build_dataset(store, config, FAMILY, max_heldout=10_000)
    reseeded = config.system.training.model_copy(update={"seed": 99})
    other = build_dataset(store, config, FAMILY, settings=reseeded, max_heldout=10_000)
    assert {e.id for e in other.heldout} != {e.id for e in after.heldout}


def test_heldout_keeps_the_most_recent_and_never_trains_the_rest(
    store: Store, config: Config, log: list[dict[str, Any]]
) -> None:
    ingest(store, config, log)
    everything = build_dataset(store, config, FAMILY, max_heldout=10_000)
    capped = build_dataset(store, config, FAMILY, max_heldout=5)
    assert capped.heldout == everything.heldout[-5:]
    assert capped.train == everything.train
    assert capped.skipped["heldout_beyond_cap"] == len(everything.heldout) - 5


def test_since_id_gives_new_examples_plus_replay(
    store: Store, config: Config, log: list[dict[str, Any]]
) -> None:
    ingest(store, config, log)
    full = build_dataset(store, config, FAMILY)
    assert full.new_examples == len(full.train) and not any(e.replay for e in full.train)
    top = max(rows_by_id(store))
    assert full.upto_interaction_id == top
    since = top * 3 // 4
    data = build_dataset(store, config, FAMILY, since_id=since)
    new = [e for e in data.train if not e.replay]
    replay = [e for e in data.train if e.replay]
    assert {e.id for e in new} == {e.id for e in full.train if e.interaction_id > since}
    assert data.new_examples == len(new) > 0
    older = {e.id for e in full.train if e.interaction_id <= since}
    assert {e.id for e in replay} <= older
    assert len(replay) == min(len(older), round(0.5 * len(new)))
    assert all(e.split == "train" for e in data.train)
    assert data.heldout == full.heldout and data.upto_interaction_id == top
    assert data == build_dataset(store, config, FAMILY, since_id=since)
    none = config.system.training.model_copy(update={"replay_fraction": 0.0})
    unreplayed = build_dataset(store, config, FAMILY, since_id=since, settings=none)
    assert not any(e.replay for e in unreplayed.train)
    beyond = build_dataset(store, config, FAMILY, since_id=top + 10)
    assert beyond.train == () and beyond.new_examples == 0
    assert beyond.upto_interaction_id == top + 10
    assert count_interactions(store, FAMILY) == len(log)
    assert count_interactions(store, FAMILY, since) == top - since
    assert count_interactions(store, FAMILY, top) == 0
    assert count_interactions(store, "nobody") == 0


def test_members_no_longer_in_the_config_are_left_out(
    store: Store, config: Config, log: list[dict[str, Any]]
) -> None:
    ingest(store, config, log)
    row = {"family_id": FAMILY, "member_id": "ghost", "kind": "suggestion_accepted"}
    store.add_interactions([{**row, "item": "Kite", "ts": "2026-10-02T10:00:00Z"}])
    assert build_dataset(store, config, FAMILY).skipped["unknown_member"] == 1
    raw = yaml.safe_load(SIM_CONFIG.read_text())
    del raw["families"][FAMILY]["members"]["theo"]
    raw["families"][FAMILY]["safety"]["time_restrictions"][0]["members"] = ["mia"]
    without = parse_config(yaml.safe_dump(raw)).config
    data = build_dataset(store, without, FAMILY)
    examples = (*data.train, *data.heldout)
    theirs = sum(r["member_id"] == "theo" for r in rows_by_id(store).values())
    assert theirs > 0 and examples
    assert not any(e.member == "theo" or "- Theo (" in e.prompt for e in examples)
    assert data.skipped["unknown_member"] > 1


def test_malformed_contexts_are_read_as_far_as_they_go(store: Store, config: Config) -> None:
    weird = {
        "time_of_day": "teatime",
        "day_of_week": "Saturday",
        "activity": "",
        "present": ["nobody", 5, "<CHILD_1>", "dad"],
        "environment": ["home", "", 7, "x" * 100],
        "extra": {"nested": True},
    }
    base = {"family_id": FAMILY, "member_id": "dad", "kind": "suggestion_accepted"}
    store.add_interactions([
        {**base, "item": "Kite flying", "context": "not json", "ts": "2026-10-03T09:00:00Z"},
        {**base, "item": "Bread rolls", "context": "[1, 2]", "ts": "2026-10-03T12:00:00Z"},
        {**base, "item": "Pancakes", "context": json.dumps(weird), "ts": "2026-10-03T15:00:00Z"},
        {**base, "item": "Waffles", "context": None, "ts": "2026-10-03T18:00:00Z"},
        {**base, "item": "Stew", "context": None, "ts": "yesterday"},
    ])  # fmt: skip
    data = build_dataset(store, config, FAMILY, max_heldout=100)
    examples = {e.target: e for e in (*data.train, *data.heldout)}
    assert set(examples) == {'Kite flying"', 'Bread rolls"', 'Pancakes"', 'Waffles"'}
    prompt = examples['Pancakes"'].prompt
    assert "Situation: saturday, home." in prompt
    assert "- Dad (" in prompt and "- Mia (" in prompt and "- Theo (" not in prompt
    assert "Situation" not in examples['Waffles"'].prompt
    assert data.skipped["context_values_dropped"] == 9
    assert data.skipped["unreadable_time"] == 1


def test_empty_and_unsafe_targets_are_not_taught(store: Store, config: Config) -> None:
    solo = {**CONTEXT, "present": ["dad"]}
    ingest(
        store,
        config,
        [
            event("suggestion_accepted", "<PERSON>", 0),
            event("suggestion_accepted", "[redacted]", 10),
            event("suggestion_accepted", "<PERSON> and <LOCATION>", 20),
            event("suggestion_accepted", "Sunday roast with <GRANDPARENT_1>", 30),
            event(
                "suggestion_accepted", "Haunted house ghost tour", 200, member="dad", context=solo
            ),
            event("suggestion_accepted", "Spider web hunt", 400),  # mia avoids spiders
            event("suggestion_accepted", "Spider web hunt", 600, member="dad", context=solo),
        ],
    )
    data = build_dataset(store, config, FAMILY)
    assert [e.target for e in (*data.train, *data.heldout)] == ['Spider web hunt"']
    # nothing serving could write: placeholders only, or left in the title
    assert data.skipped == {"empty_item": 2, "unservable_item": 2, "unsafe_target": 2}


def test_write_jsonl_is_the_workers_format(
    store: Store, config: Config, log: list[dict[str, Any]], tmp_path: Path
) -> None:
    ingest(store, config, log)
    data = build_dataset(store, config, FAMILY, since_id=200)
    path = tmp_path / "job" / "dataset.jsonl"
    path.parent.mkdir()
    path.write_text("old\n")
    assert data.write_jsonl(path) == len(data.train) + len(data.heldout)
    lines = [json.loads(x) for x in path.read_text("utf-8").splitlines()]
    assert all(
        sorted(x) == ["id", "negatives", "prompt", "sampled", "split", "target"] for x in lines
    )
    splits = [x["split"] for x in lines]
    assert splits == ["train"] * len(data.train) + ["heldout"] * len(data.heldout)
    first = data.train[0]
    assert lines[0] == {
        "id": first.id,
        "split": "train",
        "prompt": first.prompt,
        "target": first.target,
        "negatives": list(first.negatives),
        "sampled": list(first.sampled),
    }
    assert [p.name for p in path.parent.iterdir()] == ["dataset.jsonl"]


def test_sampled_titles_are_others_the_family_met_never_what_the_member_took_or_may_not_see(
    store: Store, config: Config
) -> None:
    solo = {**CONTEXT, "present": ["dad"]}
    week = 7 * 24 * 60
    titles = [f"Craft number {n}" for n in range(12)]
    ingest(
        store,
        config,
        [
            *(
                event("suggestion_rejected", t, 2 * week + n, member="dad", context=solo)
                for n, t in enumerate(titles)
            ),
            event("suggestion_accepted", "Spider web hunt", 3 * week, member="dad", context=solo),
            event("suggestion_accepted", "Board game", 4 * week),  # mia, the same situation
            *(event("suggestion_accepted", "Dinosaur masks", n * week) for n in (0, 5, 6, 7)),
        ],
    )
    settings = config.system.training.model_copy(
        update={"heldout_fraction": 0.01, "sampled_negatives": 6}
    )
    data = build_dataset(store, config, FAMILY, settings=settings)
    mia = [e for e in data.train if e.member == "mia"]
    assert len(mia) == 5 and not data.heldout
    for e in mia:
        assert len(e.sampled) == settings.sampled_negatives == 6
        assert set(e.sampled) <= {title_target(t) for t in titles}  # met, allowed, not taken
        assert e.target not in e.sampled and not set(e.sampled) & set(e.negatives)
    # drawn per example, always the same way
    assert len({e.sampled for e in mia}) > 1
    assert build_dataset(store, config, FAMILY, settings=settings).train == data.train
    dad = next(e for e in data.train if e.member == "dad")
    # what mia took is no answer of dad's; the spider hunt mia avoids is his own target
    assert set(dad.sampled) <= {title_target(t) for t in [*titles, "Board game", "Dinosaur masks"]}
    none = settings.model_copy(update={"sampled_negatives": 0})
    assert all(not e.sampled for e in build_dataset(store, config, FAMILY, settings=none).train)


def test_five_thousand_interactions_build_quickly(store: Store, config: Config) -> None:
    events = sim.simulate(config, FAMILY, 430, seed=5)
    ingest(store, config, events)
    assert count_interactions(store, FAMILY) >= 4500
    started = time.perf_counter()
    data = build_dataset(store, config, FAMILY)
    seconds = time.perf_counter() - started
    assert len(data.train) > 400
    assert seconds < 3, f"building took {seconds:.2f} s"
