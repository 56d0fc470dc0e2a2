"""Well-known titles and their official ratings: items whose words say nothing of their content.

"Watch 'Hereditary'" reads as harmless; the table knows it is rated R. The table ships as a
tab-separated file (``insan_edge/data/titles.tsv``, also at ``configs/titles.tsv``): one title a
line, ``title  kind  system  rating  year``, ``#`` comments. It is loaded once and matched
tolerantly: case, quotes, a leading "Watch"/"Play"/"Read", a subtitle after a colon or dash, a
trailing year in brackets, a season or episode number.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from insan_edge.errors import InsanEdgeError
from insan_edge.ratings import to_box

TITLES_FILE = Path(__file__).parent / "data" / "titles.tsv"
KINDS = ("movie", "show", "video_game", "book")
MEDIA = frozenset(
    {"movie", "show", "video", "video_game", "game", "book"}
)  # item categories looked up
SYSTEMS = ("MPAA", "TV", "ESRB", "PEGI", "BBFC", "AGE")

_VERB = re.compile(
    r"^(?:let's\s+|lets\s+)?(?:watch(?:ing)?|play(?:ing)?|read(?:ing)?|stream(?:ing)?|listen(?:ing)?"
    r"\s+to|binge|see|rewatch|start|continue|open|download|install)\s+(?:the\s+(?:movie|film|show|"
    r"series|game|book)\s+)?",
)
_KIND_WORD = re.compile(
    r"^(?:the\s+)?(?:movie|film|show|series|tv series|game|video game|book)\s*[:\-]\s*"
)
_YEAR = re.compile(r"\s*[\(\[]\s*(?:19|20)\d\d\s*[\)\]]\s*$")
_EPISODE = re.compile(
    r"\s*[,:\-–—]?\s*(?:season|series|s)\s*\d+(?:\s*[,:\-]?\s*(?:episode|ep|e)\s*\d+)?.*$|"
    r"\s*[,:\-–—]?\s*(?:episode|ep\.?|chapter|part|vol\.?|volume)\s*\d+.*$"
)
_QUOTES = str.maketrans({c: " " for c in "'\"‘’“”«»`´"})
_SPLIT = re.compile(r"\s*(?::|\s[-–—]\s|\s\|\s)\s*")


class TitleTableError(InsanEdgeError):
    code = "title_table"
    status = 500


@dataclass(frozen=True)
class KnownTitle:
    title: str
    kind: str
    system: str
    official: str  # as the system writes it: R, TV-MA, M, PEGI 18, 12A, 10+
    year: int | None
    rating: str  # on the box's scale

    def describe(self) -> str:
        year = f" ({self.year})" if self.year else ""
        by = "for ages" if self.system == "AGE" else f"{self.system}"
        return f"'{self.title}'{year} is rated {self.official} ({by})"


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    text = text.replace("&", " and ")
    return re.sub(r"\s+", " ", text).strip()


def key(text: str) -> str:
    """The form both sides are compared in: letters and digits, single spaces, no 'the'."""
    text = re.sub(r"[^a-z0-9 ]+", " ", _fold(text).translate(_QUOTES))
    text = re.sub(r"\s+", " ", text).strip()
    return text[4:] if text.startswith("the ") and len(text) > 4 else text


def candidates(title: str) -> list[str]:
    """Keys an item's title may be known under, most specific first."""
    text = _fold(title)
    quoted = re.findall(
        r"[\"“”«]([^\"“”«»]{2,120})[\"“”»]|(?<![a-z])['‘]([^'‘’]{2,120})['’](?![a-z])", text
    )
    out: list[str] = []
    for raw in [text, *(a or b for a, b in quoted)]:
        t = _VERB.sub("", raw.strip(" .!?"))
        t = _KIND_WORD.sub("", t)
        t = _YEAR.sub("", t)
        forms = [t, _EPISODE.sub("", t), _SPLIT.split(t, maxsplit=1)[0]]
        forms.append(_YEAR.sub("", _EPISODE.sub("", forms[-1])))
        out += [key(f) for f in forms]
    return [k for k in dict.fromkeys(out) if k]


class TitleTable:
    def __init__(self, rows: list[KnownTitle]) -> None:
        self.rows = rows
        self._by_key: dict[str, KnownTitle] = {}
        for row in rows:
            k = key(row.title)
            old = self._by_key.get(k)
            # Two titles with the same name (a remake, a book and its film): the stricter counts.
            if old is None or _rank(row.rating) > _rank(old.rating):
                self._by_key[k] = row

    def __len__(self) -> int:
        return len(self.rows)

    def lookup(self, title: str) -> KnownTitle | None:
        for k in candidates(title):
            hit = self._by_key.get(k)
            if hit is not None:
                return hit
        return None


def _rank(rating: str) -> int:
    from insan_edge.config.family import RATINGS

    return RATINGS.index(rating)


def parse(text: str, source: str = "titles.tsv") -> TitleTable:
    rows: list[KnownTitle] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 5:
            raise TitleTableError(
                f"{source}:{n}: expected 5 tab-separated fields, found {len(parts)}"
            )
        title, kind, system, official, year = (p.strip() for p in parts)
        rating = to_box(f"{official}" if system != "PEGI" else f"PEGI {official}")
        if system == "AGE":
            rating = to_box(f"{official.rstrip('+')}+")
        if kind not in KINDS or system not in SYSTEMS or rating is None or not title:
            raise TitleTableError(f"{source}:{n}: bad row {line!r}")
        if year and not (year.isdigit() and len(year) == 4):
            raise TitleTableError(f"{source}:{n}: the year must be four digits or empty")
        shown = f"PEGI {official}" if system == "PEGI" else official
        rows.append(KnownTitle(title, kind, system, shown, int(year) if year else None, rating))
    return TitleTable(rows)


@functools.cache
def table(path: Path = TITLES_FILE) -> TitleTable:
    """The shipped table, read once per process."""
    try:
        return parse(path.read_text("utf-8"), path.name)
    except OSError as exc:
        raise TitleTableError(f"cannot read the title table {path}: {exc}") from exc
