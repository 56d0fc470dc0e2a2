"""Constrained generation for a request: rounds under the JSON grammar, each item parsed,
vetted by the same safety check as every other path, and kept as a catalog candidate.

``Generator`` owns the compiled grammars (per count, categories, ratings and lengths) and the
config's forced grammar file; ``parse_items`` reads items from a complete or cut-off answer.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from insan_edge import catalog
from insan_edge.adapters import Serving
from insan_edge.config.family import CatalogEntry, Family
from insan_edge.config.system import SystemSettings
from insan_edge.contracts import Item, Usage
from insan_edge.engine import Engine, Grammar, schema_to_gbnf
from insan_edge.errors import ModelError
from insan_edge.logs import kv
from insan_edge.prompts import output_schema, token_budget
from insan_edge.safety import Meaning, assess
from insan_edge.store import Store

log = logging.getLogger("insan_edge.generation")
_SPACE = re.compile(r"\s+")
QUALITY_RULES = ("malformed", "duplicate")


@dataclass
class Counters:
    requests: int = 0
    cache_hits: int = 0
    generations: int = 0
    generated_tokens: int = 0
    generation_seconds: float = 0.0
    unparseable: int = 0
    busy: int = 0


def _clean(text: object) -> str:
    return _SPACE.sub(" ", str(text)).strip()


def parse_items(text: str) -> list[dict[str, Any]]:
    """Items from the model's JSON; from a cut-off answer, every item that was complete."""
    try:
        data = json.loads(text)
        items = data.get("items") if isinstance(data, dict) else None
        return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []
    except json.JSONDecodeError:
        pass
    start = text.find("[")
    out: list[dict[str, Any]] = []
    decoder = json.JSONDecoder()
    pos = start + 1 if start >= 0 else len(text)
    while pos < len(text):
        nxt = text.find("{", pos)
        if nxt < 0:
            break
        try:
            obj, pos = decoder.raw_decode(text, nxt)
        except json.JSONDecodeError:
            break
        if isinstance(obj, dict):
            out.append(obj)
    return out


class Generator:
    """Generation rounds on the one engine; the grammars it compiled, kept until ``reset``."""

    def __init__(
        self,
        engine: Engine,
        store: Store,
        meaning: Callable[[], Meaning | None],
        counters: Counters,
    ) -> None:
        self.engine = engine
        self.store = store
        self.meaning = meaning
        self.counters = counters
        self._grammars: dict[str, Grammar] = {}
        self._forced: Grammar | None = None

    def reset(self) -> None:
        """Forget compiled grammars and the forced one (the config changed)."""
        self._grammars.clear()
        self._forced = None

    def load_forced_grammar(self, path: Path | None) -> None:
        """Check the config's grammar file now, so a bad one fails at start or reload."""
        if path is None:
            self._forced = None
            return
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelError(f"cannot read system.model.grammar_file {path}: {exc}") from exc
        self._forced = self.engine.grammar(text)

    def grammar(
        self,
        count: int,
        categories: list[str],
        ratings: list[str],
        title_max: int,
        description_max: int,
    ) -> Grammar:
        if self._forced is not None:
            return self._forced
        key = f"{count}|{','.join(categories)}|{','.join(ratings)}|{title_max}|{description_max}"
        if key not in self._grammars:
            schema = output_schema(count, categories, ratings, title_max, description_max)
            self._grammars[key] = self.engine.grammar(schema_to_gbnf(schema))
        return self._grammars[key]

    def keep(self, family: Family, family_id: str, targets: list[str], items: list[Item]) -> None:
        """Generated items that passed safety become the family's catalog candidates."""
        ages = [family.members[m].age for m in targets]
        for item in items:
            try:
                entry = CatalogEntry(
                    title=item.title[:120],
                    description=item.description[:300],
                    category=item.category,
                    content_rating=item.content_rating,
                    min_age=min(ages, default=0),
                )
            except ValidationError:
                continue
            catalog.add(self.store, family_id, entry, source="generated")

    def run(
        self,
        prompt: str,
        count: int,
        categories: list[str],
        ratings: list[str],
        family_id: str,
        family: Family,
        targets: list[str],
        system: SystemSettings,
        at: datetime,
        cancel: threading.Event,
        serving: Serving,
        rounds: int,
    ) -> tuple[list[Item], list[dict[str, Any]], int, int, Usage]:
        """Constrained generation rounds until ``count`` items passed safety (or ``rounds``)."""
        rec = system.recommendations
        per_item = token_budget(1, rec.title_max_chars, rec.description_max_chars)
        items: list[Item] = []
        decisions: list[dict[str, Any]] = []
        seen: set[str] = set()
        generated = dropped = 0
        usage = Usage(rounds=0, prompt_tokens=0, completion_tokens=0, generation_ms=0.0)
        room = self.engine.n_ctx - self.engine.count_tokens(prompt) - 1
        for round_no in range(rounds):
            need = count - len(items)
            if need <= 0 or cancel.is_set():
                break
            batch = max(1, min(need, room // per_item))
            grammar = self.grammar(
                batch, categories, ratings, rec.title_max_chars, rec.description_max_chars
            )
            seed = None if system.model.seed is None else system.model.seed + round_no
            run = (
                self.engine.generate_checked
                if system.model.grammar_sampling == "checked"
                else self.engine.generate
            )
            out = run(
                prompt,
                grammar,
                token_budget(batch, rec.title_max_chars, rec.description_max_chars),
                seed=seed,
                cancel=cancel,
                adapter=serving.adapter,
                owner=family_id,
            )
            usage.rounds += 1
            usage.prompt_tokens = out.prompt_tokens
            usage.completion_tokens += out.completion_tokens
            usage.generation_ms += out.seconds * 1000
            self.counters.generations += 1
            self.counters.generated_tokens += out.completion_tokens
            self.counters.generation_seconds += out.seconds
            raw = parse_items(out.text)
            if not raw:
                self.counters.unparseable += 1
                log.warning(
                    kv(
                        "generation.unparseable",
                        family=family_id,
                        finish=out.finish_reason,
                        tokens=out.completion_tokens,
                    )
                )
            meaning = self.meaning()
            if (
                meaning is not None and raw
            ):  # one batch for the topic model; _vet then hits its cache
                meaning.flags(
                    [
                        f"{_clean(c.get('title', ''))}. {_clean(c.get('description', ''))}"
                        for c in raw
                    ]
                )
            for candidate in raw:
                generated += 1
                item, why = self.vet(candidate, family, targets, system, at, seen)
                if item is None:
                    # Duplicates and incomplete items are discarded; only rule breaks count as drops.
                    safety_drop = why[0][0] not in QUALITY_RULES
                    dropped += safety_drop
                    for rule, member, message in why:
                        decisions.append(
                            {
                                "event": "item_dropped" if safety_drop else "item_discarded",
                                "rule": rule,
                                "member": member,
                                "detail": {
                                    "title": _clean(candidate.get("title", ""))[:120],
                                    "message": message,
                                },
                            }
                        )
                    continue
                if len(items) < count:
                    items.append(item)
                    decisions.append(
                        {
                            "event": "item_served",
                            "detail": {
                                "title": item.title,
                                "category": item.category,
                                "content_rating": item.content_rating,
                            },
                        }
                    )
        return items, decisions, generated, dropped, usage

    def vet(
        self,
        candidate: dict[str, Any],
        family: Family,
        targets: list[str],
        system: SystemSettings,
        at: datetime,
        seen: set[str],
    ) -> tuple[Item | None, list[tuple[str, str | None, str]]]:
        """The item if it may be served, else the rules it broke (rule, member, message)."""
        title = _clean(candidate.get("title", ""))
        description = _clean(candidate.get("description", ""))
        category = _clean(candidate.get("category", ""))
        rating = _clean(candidate.get("content_rating", ""))
        if len(title) < 3 or len(description) < 3 or not category:
            return None, [("malformed", None, "the model wrote an incomplete item")]
        if title.casefold() in seen:
            return None, [("duplicate", None, "the same title was already suggested")]
        found = assess(
            title=title, description=description, category=category, content_rating=rating,
            family=family, members=targets, settings=system.safety, at=at, meaning=self.meaning(),
        )  # fmt: skip
        if not found.allowed:
            return None, [(v.rule, v.member, v.message) for v in found.violations if v.blocks]
        seen.add(title.casefold())
        return Item(
            title=title,
            description=description,
            category=category,
            content_rating=found.rating,  # the box's estimate: never lower than the model wrote
            for_members=list(targets),
            reason=_clean(candidate.get("reason", "")),
        ), []
