"""Hit rate in the top 3 of a simulated family's held-out accepted items (issue 8's quality test).

Held-out sessions come from a later stretch of the simulator than the one the daemon learned
from. In each, the member accepted one title; it is put among ``pool - 1`` others the app could
have shown then (the simulator's catalog, the family's safety rules and the categories allowed
at that time, drawn with a fixed seed), and each ranker orders the pool:

- ``model``: ``ranking.rank`` on the served engine, with or without the family's adapter: the
  summed log-likelihood of each title after the serving prompt (what catalog mode does);
- ``popularity``: how often the family accepted each title in the learned stretch;
- ``random``: the expected hit rate of a random order, ``3 / pool`` (exact, not sampled).

The prompt is ``plan_prompt`` for the session's members, situation and local time, with the
members' recently enjoyed titles from the daemon's own store (``Store.recent_accepted``), as the
daemon builds it.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from insan_edge import ranking
from insan_edge.catalog import CatalogItem
from insan_edge.config import Config
from insan_edge.contracts import RequestContext
from insan_edge.engine import Adapter, Engine
from insan_edge.prompts import plan_prompt, reference_prompt

TOP = 3


@dataclass(frozen=True)
class Session:
    member: str
    context: dict[str, Any]
    ts: str  # UTC, as the event carries it
    accepted: str
    pool: tuple[str, ...]  # the accepted title among the others, in a fixed shuffled order


def _local(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone().replace(tzinfo=None)


def sessions(
    sim: Any, config: Config, family_id: str, events: Sequence[dict[str, Any]], pool: int, seed: int
) -> list[Session]:
    """One per accepted event: its situation and a pool of ``pool`` titles holding the accepted."""
    prefs = sim.Preferences(config, family_id)
    rng = random.Random(f"rank-quality:{seed}")
    out: list[Session] = []
    for e in events:
        if e["kind"] != "suggestion_accepted":
            continue
        c = e["context"]
        situation = sim.Situation(
            e["member"], tuple(c["present"]), c["time_of_day"], c["activity"],
            tuple(c["environment"]), _local(e["ts"]),
        )  # fmt: skip
        others = [t.title for t in prefs.allowed(situation) if t.title != e["item"]]
        if len(others) < pool - 1:
            continue
        titles = [e["item"], *rng.sample(others, pool - 1)]
        rng.shuffle(titles)
        out.append(Session(e["member"], c, e["ts"], e["item"], tuple(titles)))
    return out


def _item(n: int, title: str) -> CatalogItem:
    return CatalogItem(n, "*", title, title, "activity", "G", (), 0, 99, "starter")


def model_hits(
    engine: Engine,
    adapter: Adapter | None,
    config: Config,
    family_id: str,
    recent: Callable[[Sequence[str], int], list[str]],
    held: Sequence[Session],
    scoring: str = "likelihood",
) -> float:
    """Share of sessions whose accepted title the model ranks in the top 3 of its pool;
    ``recent(members, limit)`` is what the store says they enjoyed lately. ``scoring`` as
    ``system.recommendations.scoring`` (lift: no recent titles, minus the reference prompt)."""
    family = config.families[family_id]
    limit = config.system.recommendations.recent_examples if scoring == "likelihood" else 0
    reference = None
    if scoring == "lift":
        reference = (reference_prompt(family, config.system.safety), ranking.ReferenceKept(4096))
    hits = 0
    for s in held:
        members = list(dict.fromkeys([s.member, *s.context["present"]]))
        plan = plan_prompt(
            family, members, RequestContext(**s.context), config.system.safety,
            recent(members, limit) if limit else [], _local(s.ts),
        )  # fmt: skip
        short = ranking.Shortlist([(_item(i, t), 0, []) for i, t in enumerate(s.pool)], [], 0)
        top, _ = ranking.rank(
            engine, short, plan=plan, family=family, targets=members, count=TOP,
            adapter=adapter, owner=family_id, reference=reference,
        )  # fmt: skip
        hits += s.accepted in {r.item.title for r in top}
    return hits / len(held)


def popularity_hits(learned: Sequence[dict[str, Any]], held: Sequence[Session]) -> float:
    """Titles ordered by how often the family accepted them (ties in a fixed hashed order)."""
    counts = Counter(e["item"] for e in learned if e["kind"] == "suggestion_accepted")
    hits = 0
    for s in held:
        order = sorted(
            s.pool, key=lambda t: (-counts[t], hashlib.sha256(f"{s.ts}|{t}".encode()).digest())
        )
        hits += s.accepted in order[:TOP]
    return hits / len(held)


def random_hits(held: Sequence[Session]) -> float:
    return sum(TOP / len(s.pool) for s in held) / len(held)
