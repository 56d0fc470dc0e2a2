"""Topics by meaning: each topic is a few phrases; a text is on a topic when its embedding is
close enough to one of them (a per-topic threshold calibrated on a labelled set).

Pure logic over an embedder (``texts -> L2-normalized rows``); the embedder itself lives in
``topic_model`` (onnxruntime). Keywords (``safety.topic_hits``) stay the second signal.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

import numpy as np

# The built-in sensitive topics, each described by phrases a parent would recognise.
BUILTIN: dict[str, tuple[str, ...]] = {
    "violence": (
        "violence, fighting and people getting hurt",
        "war, battles and soldiers dying",
        "murder, killing and brutal crime",
        "a gangster story of revenge and bloodshed",
        "a brutal fight or beating",
        "terrorism, massacres and atrocities",
        "a siege where soldiers and civilians die",
        "a serial killer thriller",
        "torture and cruelty",
        "a violent video game where you kill enemies",
    ),
    "sexual content": (
        "sexual content and explicit sex scenes",
        "an erotic story for adults",
        "nudity and pornography",
        "a steamy adult romance with explicit scenes",
        "a strip club and lap dances",
        "an adult dating show about hookups and one-night stands",
        "a racy film with explicit bedroom scenes",
    ),
    "self-harm": (
        "suicide and wanting to die",
        "self-harm: hurting or cutting yourself",
        "eating disorders and starving yourself",
        "a story about a teenager who takes her own life",
        "a dangerous challenge of choking or fasting",
        "a drama about depression and a suicide attempt",
    ),
    "drugs and alcohol": (
        "illegal drugs, getting high and drug dealing",
        "getting drunk, heavy drinking and alcohol",
        "cocaine, heroin, meth and addiction",
        "smoking weed and vaping",
        "a night of partying with beer, shots and cocktails",
        "a cartel smuggling drugs across the border",
        "a wine tasting or a brewery tour",
        "smoking cigarettes and tobacco",
    ),
    "gambling": (
        "gambling, betting and casinos",
        "poker, slot machines and roulette for money",
        "sports betting and odds",
        "lottery tickets and scratch cards",
        "loot boxes and paid spins for prizes",
        "a high-stakes card game for cash",
    ),
    "horror": (
        "a horror film that is terrifying and gruesome",
        "demons, possession and evil spirits",
        "zombies, slashers and monsters killing people",
        "a frightening haunted house with a curse",
        "a nightmare of blood-soaked jump scares",
        "an exorcism gone wrong",
    ),
    "weapons": (
        "guns, rifles and shooting",
        "weapons, knives and swords used to hurt people",
        "bombs and explosives",
        "a first-person shooter game",
        "building or buying firearms",
        "a gun shop, ammunition and target shooting with real guns",
        "a sniper and an assault rifle",
    ),
    "hate": (
        "hate speech, racism and slurs",
        "nazis, white supremacy and extremist groups",
        "bigotry and discrimination against a group of people",
        "antisemitism, homophobia and xenophobia",
        "propaganda that blames an ethnic group",
        "jokes mocking people for their race or religion",
    ),
}

# Names a parent may write for a built-in topic.
ALIASES: dict[str, str] = {
    "sex": "sexual content",
    "sexual": "sexual content",
    "nudity": "sexual content",
    "self harm": "self-harm",
    "suicide": "self-harm",
    "drugs": "drugs and alcohol",
    "alcohol": "drugs and alcohol",
    "drinking": "drugs and alcohol",
    "scary": "horror",
    "weapon": "weapons",
    "guns": "weapons",
    "betting": "gambling",
    "racism": "hate",
}
# A topic with no calibration (one a parent made up, e.g. "spiders") is matched on its own name
# at this similarity; keywords still catch its plain mentions.
DEFAULT_THRESHOLD = 0.55


def canonical(topic: str) -> str:
    key = topic.strip().lower()
    return ALIASES.get(key, key)


class Embed(Protocol):
    def __call__(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class Calibration:
    thresholds: dict[str, float]  # the meaning alone is enough
    keyword_floors: dict[str, float]  # a keyword counts only if the meaning is at least this
    model_sha256: str | None
    meta: dict[str, Any]


def load_calibration() -> Calibration:
    """The thresholds shipped with the package (``scripts/calibrate_topics.py`` writes them)."""
    data = json.loads(
        resources.files("insan_edge").joinpath("data/topic_thresholds.json").read_text("utf-8")
    )
    return Calibration(
        {k: float(v) for k, v in data["thresholds"].items()},
        {k: float(v) for k, v in data.get("keyword_floors", {}).items()},
        data.get("model_sha256"),
        data,
    )


@dataclass(frozen=True)
class Reading:
    """What the model reads in one text: ``strong`` topics are there by meaning alone;
    ``weak`` ones (a superset) are close enough to confirm a keyword match."""

    strong: dict[str, float]
    weak: dict[str, float]


class TopicIndex:
    """Topic vectors computed once (per config load); scores for batches of texts."""

    def __init__(
        self,
        embed: Embed,
        topics: Iterable[str],
        thresholds: dict[str, float],
        keyword_floors: dict[str, float] | None = None,
        extra_phrases: dict[str, Sequence[str]] | None = None,
        phrases: dict[str, Sequence[str]] | None = None,
    ) -> None:
        """``phrases`` replaces the built-in descriptions (another vocabulary: crisis signals)."""
        self.embed = embed
        names = list(dict.fromkeys(canonical(t) for t in topics))
        self.names = names
        self.thresholds = {n: thresholds.get(n, DEFAULT_THRESHOLD) for n in names}
        # An uncalibrated topic keeps its keywords unconditionally.
        self.keyword_floors = {n: (keyword_floors or {}).get(n, -1.0) for n in names}
        described = BUILTIN if phrases is None else phrases
        texts: list[str] = []
        owner: list[int] = []
        for i, name in enumerate(names):
            mine = [*described.get(name, (name,)), *(extra_phrases or {}).get(name, ())]
            texts += mine
            owner += [i] * len(mine)
        self._owner = np.array(owner, dtype=np.int64)
        self._vectors = embed(texts) if texts else np.zeros((0, 1), np.float32)
        self._lock = threading.Lock()

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), len(names)]: the best cosine of each text to each topic's phrases."""
        out = np.full((len(texts), len(self.names)), -1.0, dtype=np.float32)
        if not texts or not self.names:
            return out
        sims = self.embed(texts) @ self._vectors.T  # rows are unit vectors: cosines
        for j in range(len(self.names)):
            out[:, j] = sims[:, self._owner == j].max(axis=1)
        return out

    def flags(self, texts: Sequence[str]) -> list[Reading]:
        """Per text, the topics its meaning is on (strong), or near enough to confirm a keyword."""
        s = self.scores(texts)
        strong = np.array([self.thresholds[n] for n in self.names], dtype=np.float32)
        weak = np.array([self.keyword_floors[n] for n in self.names], dtype=np.float32)
        out = []
        for row in s:
            scores = {n: round(float(v), 4) for n, v in zip(self.names, row, strict=True)}
            out.append(
                Reading(
                    {self.names[j]: scores[self.names[j]] for j in np.flatnonzero(row >= strong)},
                    {self.names[j]: scores[self.names[j]] for j in np.flatnonzero(row >= weak)},
                )
            )
        return out
