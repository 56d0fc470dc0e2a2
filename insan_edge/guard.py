"""The guard model: a GGUF a parent placed on the box, asked how an item should be rated.

Scored by likelihood, never by free text: after one prompt per item the model's log-likelihood
of each answer (" G", " PG", " PG-13", " R", each ending the line) is read, normalized over the
four, and the item's guard rating is the lowest rating the guard is at least ``certainty`` sure
the item does not go beyond (0.5: its median guess; higher is stricter). The rating joins what
the words and the topic model say (``safety.estimated_rating``): it can raise a rating, never
lower it. Readings are kept per text (an LRU), so a title checked again costs nothing.

``Reader`` is what the safety judgement calls as its ``Meaning``: the topic index's reading of
each text (when the topic model runs) with the guard's rating attached.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from insan_edge.config.family import RATINGS
from insan_edge.config.system import ModelSettings
from insan_edge.engine import Engine
from insan_edge.errors import ModelError
from insan_edge.kept import Kept
from insan_edge.logs import kv
from insan_edge.topics import Reading, TopicIndex

log = logging.getLogger("insan_edge.guard")
PROMPT = (
    "Rate the content below for a family, as a film board would.\n"
    "G: fine for all ages. PG: some material may not suit young children. "
    "PG-13: some material may be inappropriate for children under 13. "
    "R: adults only; violence, horror, sex, drugs or gambling.\n"
    "Content: {text}\n"
    "Rating:"
)
ANSWERS = tuple(f" {r}\n" for r in RATINGS)
MAX_TEXT_CHARS = 600  # an item's title and description; the prompt must fit the guard's context
KEPT = 4096


def rating_at(probabilities: Sequence[float], certainty: float) -> tuple[str, float]:
    """The lowest rating whose cumulative probability reaches ``certainty``, and how sure the
    guard is that the item is at least that (one minus the mass below it)."""
    below = 0.0
    for rating, p in zip(RATINGS, probabilities, strict=True):
        if below + p >= certainty - 1e-12:
            return rating, round(1.0 - below, 4)
        below += p
    return RATINGS[-1], round(probabilities[-1], 4)  # only by rounding: the four sum to 1


class Guard:
    """The parent's guard model, loaded once; thread-safe (the engine serializes its context,
    ``Kept`` its readings)."""

    def __init__(self, path: Path, certainty: float, threads: int | None = None) -> None:
        self.path = path
        self.certainty = certainty
        settings = ModelSettings(path=path, context_length=1024, threads=threads)
        self.engine = Engine(path, settings)
        self._kept: Kept[str, tuple[str, float]] = Kept(KEPT)

    def probabilities(self, text: str) -> list[float]:
        """P(G), P(PG), P(PG-13), P(R) for ``text``, from the answers' likelihoods."""
        prompt = PROMPT.format(text=" ".join(text.split())[:MAX_TEXT_CHARS])
        logprobs = self.engine.score(prompt, ANSWERS, owner="guard").logprobs
        top = max(logprobs)
        weights = [math.exp(lp - top) for lp in logprobs]
        total = sum(weights)
        return [w / total for w in weights]

    def rate(self, texts: Sequence[str]) -> list[tuple[str, float] | None]:
        """Per text, the guard's rating and how sure it is the item is at least that; None where
        the guard failed on it (logged: the other signals still judge the item)."""
        out: dict[str, tuple[str, float] | None] = dict(self._kept.found(texts))
        started, fresh = time.monotonic(), 0
        for t in dict.fromkeys(texts):
            if t not in out:
                try:
                    rated = rating_at(self.probabilities(t), self.certainty)
                except ModelError as exc:
                    log.warning(kv("guard.failed", error=exc.message))
                    out[t] = None
                    continue
                out[t] = rated
                fresh += 1
                self._kept.keep({t: rated})
        if fresh:
            log.debug(
                kv("guard.rated", items=fresh, ms=f"{(time.monotonic() - started) * 1000:.0f}")
            )
        return [out[t] for t in texts]

    @property
    def hits(self) -> int:
        return self._kept.hits

    @property
    def misses(self) -> int:
        return self._kept.misses

    def status(self) -> dict[str, object]:
        return {"model": self.path.name, "certainty": self.certainty, "cache_hits": self.hits,
                "cache_misses": self.misses}  # fmt: skip

    def close(self) -> None:
        self.engine.close()


class Reader:
    """The safety judgement's ``Meaning``: the topic model's reading, plus the guard's rating."""

    def __init__(self, index: TopicIndex | None, guard: Guard) -> None:
        self.index = index
        self.guard = guard

    def flags(self, texts: Sequence[str]) -> list[Reading]:
        if self.index is not None:
            readings = self.index.flags(texts)
        else:  # no topic model: keywords stand on their own (``topics_read`` False)
            readings = [Reading({}, {}, topics_read=False) for _ in texts]
        rated = self.guard.rate(texts)
        return [replace(r, guard=g) for r, g in zip(readings, rated, strict=True)]
