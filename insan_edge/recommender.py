"""From a request to a safe answer: prompt, catalog ranking or generation (``generation``),
safety, audit, cache."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from insan_edge import catalog, ranking
from insan_edge.adapters import AdapterBook, Serving
from insan_edge.config import LoadedConfig
from insan_edge.config.family import Family
from insan_edge.contracts import (
    Item,
    ModelRef,
    RecommendationRequest,
    RecommendationResponse,
    Usage,
)
from insan_edge.engine import Engine
from insan_edge.errors import (
    BadRequestError,
    BusyError,
)
from insan_edge.generation import Counters, Generator
from insan_edge.kept import Kept
from insan_edge.logs import kv
from insan_edge.prompts import PromptPlan, plan_prompt, reference_prompt
from insan_edge.safety import Meaning, allowed_categories, check_item
from insan_edge.store import Store

log = logging.getLogger("insan_edge.recommender")
CACHE_ENTRIES = 512


class Recommender:
    """Owns the answer cache and the queue in front of the single model."""

    def __init__(
        self,
        engine: Engine,
        store: Store,
        get_config: Callable[[], LoadedConfig],
        adapters: AdapterBook | None = None,
        meaning: Callable[[], Meaning | None] = lambda: None,
    ) -> None:
        self.engine = engine
        self.meaning = meaning  # the topic model, when it runs
        self.adapters = adapters
        self.store = store
        self.get_config = get_config
        self.counters = Counters()
        self._cache: dict[str, tuple[float, RecommendationResponse]] = {}
        self._waiting = 0
        self.generator = Generator(engine, store, meaning, self.counters)
        # lift scoring: each title's score after a family's reference prompt, per adapter file
        self.reference: ranking.ReferenceKept = Kept(4096)
        self._absorbed: dict[
            str, float
        ] = {}  # family -> when its interactions last joined the catalog

    def reset(self) -> None:
        """Forget cached answers and grammars (the config changed)."""
        self._cache.clear()
        self.generator.reset()

    def load_forced_grammar(self) -> None:
        """Check the config's grammar file now, so a bad one fails at start or reload."""
        self.generator.load_forced_grammar(self.get_config().config.system.model.grammar_file)

    def _targets(self, family_id: str, request: RecommendationRequest) -> tuple[Family, list[str]]:
        wanted = ([request.member] if request.member else []) + list(request.context.present)
        family = self.get_config().config.family(family_id, wanted)
        targets = list(dict.fromkeys(wanted)) or list(family.members)
        return family, targets

    async def recommend(
        self, family_id: str, request: RecommendationRequest
    ) -> RecommendationResponse:
        loaded = self.get_config()
        settings = loaded.config.system
        if request.count > settings.recommendations.max_count:
            raise BadRequestError(f"count may be at most {settings.recommendations.max_count}")
        family, targets = self._targets(family_id, request)
        at = (
            request.context.at.astimezone().replace(tzinfo=None)
            if request.context.at and request.context.at.tzinfo
            else (request.context.at or datetime.now())
        )
        self.counters.requests += 1
        serving = self.adapters.for_family(family_id) if self.adapters else Serving(None, None)
        key = json.dumps(
            [
                loaded.digest,
                serving.adapter.key if serving.adapter else None,
                family_id,
                targets,
                request.count,
                request.mode or settings.recommendations.mode,
                request.context.model_dump(mode="json", exclude={"at"}),
                # what time restrictions allow now: an answer from inside a window is not reused outside it
                allowed_categories(family, targets, at),
            ]
        )
        cached = self._cached(key, family, targets, at)
        if cached is not None:
            self.counters.cache_hits += 1
            return cached
        if self._waiting >= settings.api.max_queue:
            self.counters.busy += 1
            raise BusyError(
                "the model is busy with other requests; try again shortly", retry_after=5
            )
        self._waiting += 1
        cancel = threading.Event()
        try:
            response = await asyncio.wait_for(
                asyncio.to_thread(
                    self._answer, loaded, family_id, family, targets, request, at, cancel, serving
                ),
                timeout=settings.api.request_timeout_seconds,
            )
        except asyncio.TimeoutError:
            raise BusyError(
                "the model took too long to answer; try again later", retry_after=30
            ) from None
        finally:
            cancel.set()  # a timed-out or abandoned generation stops at its next token
            self._waiting -= 1
        if settings.recommendations.cache_seconds > 0:
            self._remember(key, response, settings.recommendations.cache_seconds)
        return response

    def _remember(self, key: str, response: RecommendationResponse, seconds: float) -> None:
        now = time.monotonic()
        if len(self._cache) >= CACHE_ENTRIES:
            for old in [k for k, (expires, _) in self._cache.items() if expires < now]:
                del self._cache[old]
            while len(self._cache) >= CACHE_ENTRIES:  # still full: drop the oldest entries
                del self._cache[next(iter(self._cache))]
        self._cache[key] = (now + seconds, response)

    def _cached(
        self, key: str, family: Family, targets: list[str], at: datetime
    ) -> RecommendationResponse | None:
        hit = self._cache.get(key)
        if hit is None:
            return None
        expires, response = hit
        safety = self.get_config().config.system.safety
        still_safe = all(
            not check_item(
                title=i.title,
                description=i.description,
                category=i.category,
                content_rating=i.content_rating,
                family=family,
                members=targets,
                settings=safety,
                at=at,
                meaning=self.meaning(),
            )
            for i in response.items
        )
        if time.monotonic() > expires or not still_safe:
            del self._cache[key]
            return None
        return response.model_copy(
            update={"cached": True, "latency_ms": 0.0, "request_id": uuid.uuid4().hex[:16]}
        )

    def _answer(
        self,
        loaded: LoadedConfig,
        family_id: str,
        family: Family,
        targets: list[str],
        request: RecommendationRequest,
        at: datetime,
        cancel: threading.Event,
        serving: Serving,
    ) -> RecommendationResponse:
        started = time.monotonic()
        system = loaded.config.system
        rec = system.recommendations
        request_id = uuid.uuid4().hex[:16]
        recent = self.store.recent_accepted(family_id, targets, rec.recent_examples)
        plan = plan_prompt(family, targets, request.context, system.safety, recent, at)
        categories, ratings, prompt = plan.categories, plan.ratings, plan.prompt
        if not categories:
            raise BadRequestError(
                "nothing may be suggested to these members right now (every category is restricted at this time)"
            )
        mode = request.mode or rec.mode
        items: list[Item] = []
        decisions: list[dict[str, Any]] = []
        generated = dropped = 0
        usage = Usage(rounds=0, prompt_tokens=0, completion_tokens=0, generation_ms=0.0)
        if mode != "catalog":
            items, decisions, generated, dropped, usage = self.generator.run(
                prompt, request.count, categories, ratings, family_id, family, targets, system,
                at, cancel, serving, rec.generation_rounds if mode == "generate" else 1,
            )  # fmt: skip
            self.generator.keep(family, family_id, targets, items)
        if mode != "generate":
            items, more, scored, scoring_ms, refused = self._from_catalog(
                family_id, family, targets, request, plan, system, at, cancel, serving
            )
            decisions = [d for d in decisions if d["event"] != "item_served"] + more
            dropped += refused
            usage = usage.model_copy(update={"scored": scored, "scoring_ms": round(scoring_ms, 1)})
            usage.prompt_tokens = usage.prompt_tokens or self.engine.count_tokens(prompt)
        latency = (time.monotonic() - started) * 1000
        model = ModelRef(
            name=self.engine.name,
            version=serving.label,
            adapter=serving.adapter.key if serving.adapter else None,
        )
        self.store.record_answer(
            request_id=request_id,
            family_id=family_id,
            members=targets,
            context=request.context.model_dump(mode="json"),
            items=[i.model_dump() for i in items],
            model=f"{model.name}@{model.version}",
            generated=generated,
            dropped=dropped,
            cached=False,
            latency_ms=latency,
            decisions=decisions,
        )
        log.info(
            kv(
                "recommendation",
                family=family_id,
                members=",".join(targets),
                served=len(items),
                generated=generated,
                dropped=dropped,
                ms=f"{latency:.0f}",
            )
        )
        return RecommendationResponse(
            family=family_id,
            members=targets,
            items=items,
            model=model,
            generated=generated,
            dropped=dropped,
            cached=False,
            latency_ms=round(latency, 1),
            request_id=request_id,
            usage=usage.model_copy(update={"generation_ms": round(usage.generation_ms, 1)}),
            mode=mode,
        )

    def _absorb(self, family_id: str) -> None:
        """What the family accepted joins its catalog (at most once a minute per family)."""
        now = time.monotonic()
        if now - self._absorbed.get(family_id, -1e9) >= 60:
            self._absorbed[family_id] = now
            catalog.absorb_interactions(self.store, family_id)

    def _from_catalog(
        self,
        family_id: str,
        family: Family,
        targets: list[str],
        request: RecommendationRequest,
        plan: PromptPlan,
        system: Any,
        at: datetime,
        cancel: threading.Event,
        serving: Serving,
    ) -> tuple[list[Item], list[dict[str, Any]], int, float, int]:
        """The best catalog items by the family model: items, decisions, scored, ms, refused."""
        rec = system.recommendations
        self._absorb(family_id)
        pool = catalog.items(self.store, family_id)
        recent = catalog.recently_shown(self.store, family_id, targets, rec.recently_shown_hours)
        meaning = self.meaning()

        def short(skip: set[str]) -> ranking.Shortlist:
            return ranking.shortlist(
                pool, family=family, targets=targets, plan=plan, context=request.context,
                safety=system.safety, at=at, meaning=meaning, recent=skip,
                size=max(rec.catalog_candidates, request.count), salt=f"{family_id}|{at.date()}",
            )  # fmt: skip

        found = short(recent)
        if len(found.candidates) < request.count and recent:
            found = short(set())  # everything suitable was shown lately: repeat rather than fail
        reference = None
        if rec.scoring == "lift":  # no recently enjoyed titles, against the family's own prompt
            plan = plan_prompt(family, targets, request.context, system.safety, [], at)
            reference = (reference_prompt(family, system.safety), self.reference)
        ranked, seconds = ranking.rank(
            self.engine, found, plan=plan, family=family, targets=targets, count=request.count,
            adapter=serving.adapter, owner=family_id, cancel=cancel, reference=reference,
        )  # fmt: skip
        decisions: list[dict[str, Any]] = [
            {
                "event": "item_dropped",
                "rule": d.rule,
                "member": d.member,
                "detail": {"title": d.item.title[:120], "message": d.message, "source": "catalog"},
            }
            for d in found.dropped
        ]
        items: list[Item] = []
        for r in ranked:
            items.append(
                Item(
                    title=r.item.title,
                    description=r.item.description,
                    category=r.item.category,
                    # The box's estimate, as the check reports it (words, meaning, title table).
                    content_rating=found.ratings[r.item.id],
                    for_members=list(targets),
                    reason=r.reason,
                    source="catalog",
                    score=round(r.logprob, 3),
                )
            )
            decisions.append(
                {
                    "event": "item_served",
                    "detail": {
                        "title": r.item.title,
                        "category": r.item.category,
                        "content_rating": r.item.content_rating,
                        "source": "catalog",
                    },
                }
            )
        refused = len({d.item.id for d in found.dropped})
        return items, decisions, len(found.candidates), seconds * 1000, refused
