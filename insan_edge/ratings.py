"""Official content ratings (MPAA, US TV, ESRB, PEGI, BBFC, an age) on the box's scale.

The box judges on one scale, G < PG < PG-13 < R (``config.family.RATINGS``). Apps and the title
table speak in the rating systems of the world; this maps each to that scale, the stricter way
where two systems disagree in spirit (PEGI 16 is R: above a 13-year-old's PG-13).
"""

from __future__ import annotations

import re

from insan_edge.config.family import RATINGS

# (system, official rating) -> the box's rating. Keys are upper-case, spaces removed.
_OFFICIAL: dict[str, tuple[str, str]] = {
    # MPAA (films)
    "G": ("MPAA", "G"), "PG": ("MPAA", "PG"), "PG-13": ("MPAA", "PG-13"), "PG13": ("MPAA", "PG-13"),
    "R": ("MPAA", "R"), "NC-17": ("MPAA", "R"), "NC17": ("MPAA", "R"),
    # US TV parental guidelines
    "TV-Y": ("TV", "G"), "TV-Y7": ("TV", "PG"), "TV-Y7-FV": ("TV", "PG"), "TV-G": ("TV", "G"),
    "TV-PG": ("TV", "PG"), "TV-14": ("TV", "PG-13"), "TV-MA": ("TV", "R"),
    # ESRB (games)
    "EC": ("ESRB", "G"), "E": ("ESRB", "G"), "E10+": ("ESRB", "PG"), "T": ("ESRB", "PG-13"),
    "M": ("ESRB", "R"), "AO": ("ESRB", "R"),
    # PEGI (games, Europe)
    "PEGI3": ("PEGI", "G"), "PEGI7": ("PEGI", "PG"), "PEGI12": ("PEGI", "PG-13"),
    "PEGI16": ("PEGI", "R"), "PEGI18": ("PEGI", "R"),
    # BBFC (films, UK)
    "U": ("BBFC", "G"), "12A": ("BBFC", "PG-13"), "12": ("BBFC", "PG-13"),
    "15": ("BBFC", "R"), "18": ("BBFC", "R"),
}  # fmt: skip
_AGE = re.compile(r"^(?:AGE|AGES)?(\d{1,2})\+?$")
KNOWN_HELP = (
    "G, PG, PG-13, R, NC-17, TV-Y, TV-Y7, TV-G, TV-PG, TV-14, TV-MA, EC, E, E10+, T, M, AO, "
    "PEGI 3/7/12/16/18, U, 12A, 15, 18 or an age such as 10+"
)


def age_rating(age: int) -> str:
    """The box's rating for content meant for ``age`` and over."""
    if age < 7:
        return "G"
    if age < 13:
        return "PG"
    if age < 16:
        return "PG-13"
    return "R"


def to_box(text: str) -> str | None:
    """The box's rating for an official one (any system above), None if unknown."""
    key = re.sub(r"\s+", "", text.strip().upper()).replace("_", "-")
    if key in _OFFICIAL:
        return _OFFICIAL[key][1]
    m = _AGE.match(key)
    return age_rating(int(m.group(1))) if m else None


def box_rating(text: str) -> str:
    """Like ``to_box``, but a bad rating raises ValueError naming what is understood."""
    rating = to_box(text)
    if rating is None:
        raise ValueError(f"unknown content rating {text!r}: use {KNOWN_HELP}")
    assert rating in RATINGS
    return rating
