"""The catalog of candidate items: the starter catalog, the parents' own, the family's history.

Rows live in the ``catalog_items`` table (store migration 6). Scope ``*`` holds the starter
catalog shipped in ``configs/catalog.json`` (``insan_edge/data``), visible to every family;
a family's scope holds its config's ``catalog:`` entries, items added with
``insan-edge catalog add``, items its members accepted or rated well (from the scrubbed
interactions) and items the model generated and safety passed. One title per scope.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib.resources import files
from typing import Any

from pydantic import ValidationError

from insan_edge.config.family import CatalogEntry, Family
from insan_edge.errors import BadRequestError, StoreError
from insan_edge.ingest_tables import utcnow
from insan_edge.logs import kv
from insan_edge.safety import estimated_rating
from insan_edge.store import Store

log = logging.getLogger("insan_edge.catalog")
SHARED = "*"
SOURCES = ("starter", "config", "cli", "interaction", "generated")


@dataclass(frozen=True)
class CatalogItem:
    id: int
    scope: str
    title: str
    description: str
    category: str
    content_rating: str
    topics: tuple[str, ...]
    min_age: int
    max_age: int
    source: str

    def text(self) -> str:
        return f"{self.title}. {self.description}"


def title_key(title: str) -> str:
    return " ".join(title.casefold().split())


def starter_entries() -> list[CatalogEntry]:
    """The starter catalog shipped with the package (validated like a parent's entries)."""
    raw = json.loads(files("insan_edge.data").joinpath("catalog.json").read_text("utf-8"))
    try:
        return [CatalogEntry.model_validate(item) for item in raw["items"]]
    except (ValidationError, KeyError, TypeError) as exc:
        raise StoreError(f"the starter catalog is invalid: {exc}") from exc


def _row(scope: str, entry: CatalogEntry, source: str, now: str) -> dict[str, Any]:
    return {
        "scope": scope,
        "title_key": title_key(entry.title),
        "title": " ".join(entry.title.split()),
        "description": " ".join(entry.description.split()),
        "category": entry.category,
        "content_rating": entry.content_rating,
        "topics": json.dumps(list(entry.topics)),
        "min_age": entry.min_age,
        "max_age": entry.max_age,
        "source": source,
        "created_at": now,
        "updated_at": now,
    }


def _item(r: dict[str, Any]) -> CatalogItem:
    return CatalogItem(
        id=int(r["id"]),
        scope=str(r["scope"]),
        title=str(r["title"]),
        description=str(r["description"] or ""),
        category=str(r["category"]),
        content_rating=str(r["content_rating"]),
        topics=tuple(json.loads(r["topics"] or "[]")),
        min_age=int(r["min_age"] or 0),
        max_age=int(r["max_age"] if r["max_age"] is not None else 99),
        source=str(r["source"]),
    )


def _upsert(store: Store, rows: Iterable[dict[str, Any]], replace: bool) -> int:
    """Insert rows; an existing (scope, title) is updated when ``replace``, else kept."""
    rows = list(rows)
    if not rows:
        return 0
    with store.transaction() as db:
        before = db.execute("SELECT total_changes()").fetchone()[0]
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        cols = list(rows[0])
        db.conn.executemany(
            f"{verb} INTO catalog_items ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
            [[r[c] for c in cols] for r in rows],
        )
        return int(db.execute("SELECT total_changes()").fetchone()[0] - before)


def sync(store: Store, families: dict[str, Family]) -> dict[str, int]:
    """Load the starter catalog and every family's config entries (on start and reload).

    Config entries replace the family's earlier config rows (a removed entry disappears); rows
    from other sources are kept.
    """
    now = utcnow()
    counts = {
        "starter": _upsert(
            store, (_row(SHARED, e, "starter", now) for e in starter_entries()), False
        )
    }
    for family_id, family in families.items():
        with store.transaction() as db:
            db.execute(
                "DELETE FROM catalog_items WHERE scope = ? AND source = 'config'", [family_id]
            )
        counts[family_id] = _upsert(
            store, (_row(family_id, e, "config", now) for e in family.catalog), True
        )
    log.info(kv("catalog.synced", **{k: str(v) for k, v in counts.items()}))
    return counts


def add(store: Store, scope: str, entry: CatalogEntry, source: str = "cli") -> CatalogItem:
    """Add (or update) ``entry`` in ``scope`` (a family id, or ``*`` for every family)."""
    if source not in SOURCES:
        raise BadRequestError(f"unknown catalog source '{source}'")
    _upsert(store, [_row(scope, entry, source, utcnow())], True)
    rows = store.read(
        "SELECT * FROM catalog_items WHERE scope = ? AND title_key = ?",
        [scope, title_key(entry.title)],
    )
    return _item(rows[0])


def items(
    store: Store, family_id: str | None = None, category: str | None = None, limit: int = 10_000
) -> list[CatalogItem]:
    """The items a family may be offered (shared and its own), or only the shared ones."""
    scopes = [SHARED] if family_id is None else [SHARED, family_id]
    sql = f"SELECT * FROM catalog_items WHERE scope IN ({', '.join('?' for _ in scopes)})"
    args: list[Any] = list(scopes)
    if category is not None:
        sql += " AND category = ?"
        args.append(category)
    sql += " ORDER BY scope = '*', id LIMIT ?"
    rows = store.read(sql, [*args, limit])
    seen: set[str] = set()
    out: list[CatalogItem] = []
    for r in rows:  # the family's own row first wins over a shared one with the same title
        if r["title_key"] not in seen:
            seen.add(r["title_key"])
            out.append(_item(r))
    return out


def absorb_interactions(store: Store, family_id: str) -> int:
    """Add what the family accepted or rated 4+ (scrubbed items) to its catalog.

    Category, description and rating come from the answer that served the item when there is
    one; otherwise the item is an activity rated by its own words (safety judges it again).
    """
    known = {i.title_key for i in _keys(store, family_id)}
    rows = store.read(
        "SELECT item, MAX(text) AS text FROM interactions WHERE family_id = ? AND item IS NOT NULL"
        " AND item != '' AND (kind = 'suggestion_accepted' OR (kind = 'rating' AND rating >= 4))"
        " GROUP BY item",
        [family_id],
    )
    served: dict[str, dict[str, Any]] = {}
    for r in store.read(
        "SELECT items FROM recommendations WHERE family_id = ? ORDER BY id DESC LIMIT 500",
        [family_id],
    ):
        for it in json.loads(r["items"] or "[]"):
            served.setdefault(title_key(str(it.get("title", ""))), it)
    now = utcnow()
    new: list[dict[str, Any]] = []
    for r in rows:
        title = " ".join(str(r["item"]).split())[:120]
        key = title_key(title)
        if key in known or len(title) < 2:
            continue
        known.add(key)
        seen = served.get(key, {})
        description = str(seen.get("description") or r["text"] or title)[:300]
        if len(description) < 3:
            description = title
        rating = estimated_rating(f"{title}. {description}", str(seen.get("content_rating", "G")))
        try:
            entry = CatalogEntry(
                title=title,
                description=description,
                category=str(seen.get("category", "activity")),
                content_rating=rating,
            )
        except ValidationError:
            continue
        new.append(_row(family_id, entry, "interaction", now))
    return _upsert(store, new, False)


@dataclass(frozen=True)
class _Key:
    title_key: str


def _keys(store: Store, family_id: str) -> list[_Key]:
    return [
        _Key(str(r["title_key"]))
        for r in store.read(
            "SELECT title_key FROM catalog_items WHERE scope IN ('*', ?)", [family_id]
        )
    ]


def recently_shown(
    store: Store, family_id: str, members: Sequence[str], hours: float, now: datetime | None = None
) -> set[str]:
    """Title keys served to any of ``members`` within ``hours`` (not offered again so soon)."""
    if hours <= 0:
        return set()
    since = ((now or datetime.now(timezone.utc)) - timedelta(hours=hours)).strftime(
        "%Y-%m-%dT%H:%M:%S"
    )
    out: set[str] = set()
    wanted = set(members)
    for r in store.read(
        "SELECT members, items FROM recommendations WHERE family_id = ? AND ts >= ?",
        [family_id, since],
    ):
        if wanted & set(json.loads(r["members"] or "[]")):
            out.update(title_key(str(i.get("title", ""))) for i in json.loads(r["items"] or "[]"))
    return out
