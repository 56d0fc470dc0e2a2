"""The catalog: starter items, the parents' own (config and CLI), the family's history."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from daemon_harness import family_config

from insan_edge import catalog
from insan_edge.cli import main
from insan_edge.config import load_config
from insan_edge.config.family import CATEGORIES, RATINGS, CatalogEntry
from insan_edge.contracts import RequestContext
from insan_edge.prompts import plan_prompt
from insan_edge.ranking import shortlist
from insan_edge.store import Store

EXAMPLE = Path(__file__).resolve().parent.parent / "configs" / "family.example.yaml"


def _config(tmp_path: Path, **family: object) -> Path:
    data = family_config(None, tmp_path / "state", tmp_path / "x.sock")
    data["families"]["testfam"].update(family)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), "utf-8")
    return path


def test_the_starter_catalog_is_large_varied_and_valid() -> None:
    items = catalog.starter_entries()
    assert len(items) >= 300
    assert len({catalog.title_key(i.title) for i in items}) == len(items)
    by_category = {c: sum(1 for i in items if i.category == c) for c in CATEGORIES}
    assert min(by_category.values()) >= 15, by_category
    assert {i.content_rating for i in items} <= set(RATINGS)
    assert all(i.topics and len(i.description) >= 20 for i in items)
    assert sum(1 for i in items if i.max_age <= 8) >= 30  # enough for small children
    shipped = json.loads((EXAMPLE.parent / "catalog.json").read_text("utf-8"))
    assert len(shipped["items"]) == len(items)  # configs/catalog.json is what the package ships


def test_sync_loads_the_starter_catalog_and_follows_the_config(tmp_path: Path) -> None:
    mine = {"title": "Grandma's button box", "description": "Sort and count the old buttons.",
            "category": "learning", "topics": ["counting"], "min_age": 3, "max_age": 9}  # fmt: skip
    config = load_config(_config(tmp_path, catalog=[mine])).config
    store = Store(tmp_path / "db.sqlite")
    try:
        store.sync_families(dict(config.families))
        catalog.sync(store, dict(config.families))
        catalog.sync(store, dict(config.families))  # again: nothing doubles
        shared = catalog.items(store)
        own = catalog.items(store, "testfam")
        assert len(shared) == len(catalog.starter_entries())
        assert len(own) == len(shared) + 1
        row = next(i for i in own if i.title == "Grandma's button box")
        assert (row.scope, row.source, row.min_age, row.max_age) == ("testfam", "config", 3, 9)
        # The entry removed from the config leaves the catalog on the next sync.
        config = load_config(_config(tmp_path)).config
        catalog.sync(store, dict(config.families))
        assert len(catalog.items(store, "testfam")) == len(shared)
    finally:
        store.close()


def test_a_bad_config_entry_is_refused_with_its_field(tmp_path: Path) -> None:
    bad = {"title": "X-ray", "description": "Look inside.", "category": "science"}
    with pytest.raises(Exception, match=r"category.*not a category"):
        load_config(_config(tmp_path, catalog=[bad]))
    with pytest.raises(ValueError, match="min_age 9 is above max_age 5"):
        CatalogEntry(title="abc", description="abc", category="book", min_age=9, max_age=5)


def test_catalog_add_and_list_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(_config(tmp_path))
    add = ["catalog", "add", "--config", cfg, "--family", "testfam", "--title", "Moon diary",
           "--description", "Draw the Moon every night for a month.", "--category", "learning",
           "--topic", "space", "--min-age", "6"]  # fmt: skip
    assert main(add) == 0
    assert "added #" in capsys.readouterr().out
    assert main(["catalog", "list", "--config", cfg, "--family", "testfam", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    moon = [r for r in rows if r["title"] == "Moon diary"]
    assert moon and moon[0]["source"] == "cli" and moon[0]["topics"] == ["space"]
    assert main(["catalog", "list", "--config", cfg, "--json", "--limit", "1000"]) == 0
    assert "Moon diary" not in {r["title"] for r in json.loads(capsys.readouterr().out)}
    bad = [*add[:-2], "--category", "nonsense"]
    assert main(bad) == 2
    assert "not a category" in capsys.readouterr().err


def test_items_the_family_accepted_join_its_catalog(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path)).config
    store = Store(tmp_path / "db.sqlite")
    try:
        store.sync_families(dict(config.families))
        catalog.sync(store, dict(config.families))
        rows = [
            {"family_id": "testfam", "member_id": "kim", "kind": "suggestion_accepted",
             "item": "Rocket bottle launch", "ts": "2026-11-01T10:00:00Z"},
            {"family_id": "testfam", "member_id": "kim", "kind": "rating", "rating": 2,
             "item": "Boring worksheet", "ts": "2026-11-01T10:00:00Z"},
            {"family_id": "testfam", "member_id": "kim", "kind": "suggestion_accepted",
             "item": "Bluey", "ts": "2026-11-01T10:00:00Z"},  # already in the catalog
        ]  # fmt: skip
        with store.transaction() as db:
            db.table("interactions").insert_all(rows)
        assert catalog.absorb_interactions(store, "testfam") == 1
        assert catalog.absorb_interactions(store, "testfam") == 0
        own = [i for i in catalog.items(store, "testfam") if i.scope == "testfam"]
        assert [(i.title, i.source, i.category) for i in own] == [
            ("Rocket bottle launch", "interaction", "activity")
        ]
    finally:
        store.close()


def test_the_shortlist_keeps_only_what_is_safe_and_suitable(tmp_path: Path) -> None:
    extra = [
        {"title": "Zombie war marathon", "description": "A bloody battle night in.",
         "category": "craft", "content_rating": "G", "topics": ["violence"]},
        {"title": "Spider hunt", "description": "Find spiders in the shed.",
         "category": "outdoor", "topics": ["spiders"]},
        {"title": "Drawing planets", "description": "Draw and colour the planets of space.",
         "category": "craft", "topics": ["space", "drawing"], "min_age": 5, "max_age": 12},
    ]  # fmt: skip
    config = load_config(_config(tmp_path, catalog=extra)).config
    family = config.families["testfam"]
    store = Store(tmp_path / "db.sqlite")
    try:
        store.sync_families(dict(config.families))
        catalog.sync(store, dict(config.families))
        pool = catalog.items(store, "testfam")
        night = datetime(2026, 6, 2, 20, 0)  # inside kim's no-screens window
        ctx = RequestContext()
        plan = plan_prompt(family, ["kim"], ctx, config.system.safety, [], night)
        short = shortlist(
            pool, family=family, targets=["kim"], plan=plan, context=ctx,
            safety=config.system.safety, at=night, meaning=None, recent={"bluey"},
            size=400, salt="t",
        )  # fmt: skip
        kept = [c[0] for c in short.candidates]
        assert kept and len(kept) < len(pool)
        for item in kept:
            assert item.min_age <= 8 <= item.max_age
            assert item.content_rating == "G"  # kim is strict: G only
            assert item.category not in {"show", "movie", "video", "video_game"}
        titles = {i.title for i in kept}
        assert "Zombie war marathon" not in titles and "Spider hunt" not in titles
        assert {d.rule for d in short.dropped} >= {"blocked_topic", "avoided_topic"}
        assert "Bluey" not in titles  # shown recently
        # The most relevant first: kim likes drawing and space.
        assert kept[0].title == "Drawing planets"
        assert "Kim's interest in" in shortlist(
            pool, family=family, targets=["kim"], plan=plan, context=ctx,
            safety=config.system.safety, at=night, meaning=None, recent=set(), size=1, salt="t",
        ).candidates[0][2][0]  # fmt: skip
    finally:
        store.close()
