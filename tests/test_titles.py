"""The shipped title table: its size and format, and tolerant matching of what apps send."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from insan_edge.titles import KINDS, SYSTEMS, TITLES_FILE, TitleTableError, parse, table

ROOT = Path(__file__).resolve().parents[1]


def test_the_table_has_500_titles_of_every_kind_in_a_known_format() -> None:
    rows = table().rows
    assert len(rows) >= 500
    kinds = Counter(r.kind for r in rows)
    assert set(kinds) == set(KINDS) and min(kinds.values()) >= 50, kinds
    assert {r.system for r in rows} <= set(SYSTEMS)
    assert all(r.rating in ("G", "PG", "PG-13", "R") for r in rows)
    assert (ROOT / "configs" / "titles.tsv").resolve() == TITLES_FILE.resolve()
    lines = [ln for ln in TITLES_FILE.read_text("utf-8").splitlines() if ln and ln[0] != "#"]
    assert len(lines) == len(rows)


@pytest.mark.parametrize(
    ("asked", "title", "official", "rating"),
    [
        ("Watch 'Hereditary'", "Hereditary", "R", "R"),
        ("Play Doom Eternal", "Doom Eternal", "M", "R"),
        ('watch "The Shining" (1980)', "The Shining", "R", "R"),
        ("HARRY POTTER AND THE GOBLET OF FIRE [2005]", "Harry Potter and the Goblet of Fire", "PG-13", "PG-13"),
        ("Minecraft: Bedrock Edition", "Minecraft", "E10+", "PG"),
        ("Bluey - Season 2, Episode 5", "Bluey", "TV-Y", "G"),
        ("Stranger Things S04E01", "Stranger Things", "TV-14", "PG-13"),
        ("Let’s watch “Frozen II”!", "Frozen II", "PG", "PG"),
        ("Read The Hunger Games", "The Hunger Games", "PG-13", "PG-13"),
        ("play grand theft auto v", "Grand Theft Auto V", "M", "R"),
        ("Pokémon", "Pokemon", "TV-Y7", "PG"),
    ],
)  # fmt: skip
def test_titles_are_matched_tolerantly(asked: str, title: str, official: str, rating: str) -> None:
    hit = table().lookup(asked)
    assert hit is not None, asked
    assert (hit.title, hit.official, hit.rating) == (title, official, rating)


@pytest.mark.parametrize(
    "asked",
    ["Knights and castles colouring", "Shooting-star night walk", "Battle of the bands for kids",
     "Hereditary traits in pea plants", "Frozen yoghurt bark", "Upcycled jar lanterns"],
)  # fmt: skip
def test_words_that_merely_contain_a_title_are_not_it(asked: str) -> None:
    assert table().lookup(asked) is None


def test_a_bad_row_names_its_line() -> None:
    with pytest.raises(TitleTableError, match=r"x\.tsv:2"):
        parse("Bluey\tshow\tTV\tTV-Y\t\nBroken\tmovie\tMPAA\tZZ\t1999\n", "x.tsv")
