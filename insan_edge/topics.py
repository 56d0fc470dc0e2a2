"""Topics by meaning: each topic is a few phrases and, for the built-in topics, labelled
examples; a text is on a topic when its embedding is close enough to the phrases and to the
examples on that topic rather than to those off it (a per-topic threshold calibrated on a
labelled set).

Pure logic over an embedder (``texts -> L2-normalized rows``); the embedder itself lives in
``topic_model`` (onnxruntime). Keywords (``safety.topic_hits``) stay the second signal.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

import numpy as np

from insan_edge.kept import Kept

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
READINGS_KEPT = 4096  # texts whose reading an index keeps (about 2 KB each)


def canonical(topic: str) -> str:
    key = topic.strip().lower()
    return ALIASES.get(key, key)


class Embed(Protocol):
    def __call__(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class Examples:
    """Labelled texts a topic is also judged by (nearest neighbours): a text close to the ``k``
    nearest examples on a topic and far from the ``k`` nearest off it reads as on that topic.
    The score is ``phrase_weight * best phrase + mean top-k on - negative_weight * mean top-k
    off``; the weights are chosen by cross-validation inside the fitting half."""

    texts: tuple[str, ...]
    topics: tuple[frozenset[str], ...]
    k: int = 5
    phrase_weight: float = 0.5
    negative_weight: float = 1.0

    def to_json(self) -> dict[str, Any]:
        return {"k": self.k, "phrase_weight": self.phrase_weight,
                "negative_weight": self.negative_weight,
                "items": [{"text": t, "topics": sorted(o)} for t, o in zip(self.texts, self.topics, strict=True)]}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Examples:
        items = data["items"]
        return cls(tuple(str(i["text"]) for i in items), tuple(frozenset(i["topics"]) for i in items),
                   int(data["k"]), float(data["phrase_weight"]), float(data["negative_weight"]))  # fmt: skip


@dataclass(frozen=True)
class Calibration:
    thresholds: dict[str, float]  # the meaning alone is enough
    keyword_floors: dict[str, float]  # a keyword counts only if the meaning is at least this
    model_sha256: str | None
    meta: dict[str, Any]
    examples: Examples | None = None


def _data(name: str) -> Any:
    return json.loads(resources.files("insan_edge").joinpath(f"data/{name}").read_text("utf-8"))


def load_calibration() -> Calibration:
    """The thresholds and examples shipped with the package (``scripts/calibrate_topics.py``)."""
    data = _data("topic_thresholds.json")
    examples = Examples.from_json(_data("topic_examples.json")) if data.get("examples") else None
    return Calibration(
        {k: float(v) for k, v in data["thresholds"].items()},
        {k: float(v) for k, v in data.get("keyword_floors", {}).items()},
        data.get("model_sha256"),
        data,
        examples,
    )


@dataclass(frozen=True)
class Reading:
    """What the model reads in one text: ``strong`` topics are there by meaning alone;
    ``weak`` ones (a superset) are close enough to confirm a keyword match."""

    strong: dict[str, float]
    weak: dict[str, float]
    topics_read: bool = True  # False: no topic model ran; keyword matches stand unconfirmed
    guard: tuple[str, float] | None = None  # the guard model's rating, and how sure it is of it


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
        examples: Examples | None = None,
    ) -> None:
        """``phrases`` replaces the built-in descriptions (another vocabulary: crisis signals);
        ``examples`` adds labelled neighbours for the topics that have at least ``k`` of them."""
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
        self.examples = examples
        self._on = np.zeros((0, len(names)), dtype=bool)
        if examples is not None and examples.texts:
            self._example_vectors = embed(list(examples.texts))
            self._on = np.array([[n in t for n in names] for t in examples.topics], dtype=bool)
            self._example_row = {t: i for i, t in enumerate(examples.texts)}
        # A text's reading, once made: a check batches its texts through the model first, and
        # each judgement then asks for its own again (an index lives for one config load).
        self._readings: Kept[str, Reading] = Kept(READINGS_KEPT)

    @classmethod
    def from_calibration(
        cls,
        embed: Embed,
        topics: Iterable[str],
        calibration: Calibration,
        extra_phrases: dict[str, Sequence[str]] | None = None,
    ) -> TopicIndex:
        return cls(embed, topics, calibration.thresholds, calibration.keyword_floors,
                   extra_phrases, examples=calibration.examples)  # fmt: skip

    def scores(self, texts: Sequence[str], leave_out_same: bool = False) -> np.ndarray:
        """[len(texts), len(names)]: each text's score on each topic (the best cosine to its
        phrases, plus the neighbour terms where it has examples). ``leave_out_same`` ignores an
        example whose text is the text scored (fitting thresholds on the examples themselves)."""
        out = np.full((len(texts), len(self.names)), -1.0, dtype=np.float32)
        if not texts or not self.names:
            return out
        vectors = self.embed(texts)
        sims = vectors @ self._vectors.T  # rows are unit vectors: cosines
        for j in range(len(self.names)):
            out[:, j] = sims[:, self._owner == j].max(axis=1)
        ex = self.examples
        if ex is None or not self._on.size:
            return out
        near = vectors @ self._example_vectors.T
        if leave_out_same:
            for i, text in enumerate(texts):
                if (row := self._example_row.get(text)) is not None:
                    near[i, row] = -1.0
        for j in range(len(self.names)):
            on = self._on[:, j]
            if on.sum() < ex.k or (~on).sum() < ex.k:
                continue  # too few examples to judge by: the phrases alone
            top_on = np.sort(near[:, on], axis=1)[:, -ex.k :].mean(axis=1)
            top_off = np.sort(near[:, ~on], axis=1)[:, -ex.k :].mean(axis=1)
            out[:, j] = ex.phrase_weight * out[:, j] + top_on - ex.negative_weight * top_off
        return out

    def flags(self, texts: Sequence[str]) -> list[Reading]:
        """Per text, the topics its meaning is on (strong), or near enough to confirm a keyword.
        Readings are kept (the last ``READINGS_KEPT`` texts): treat them as read-only."""
        known = self._readings.found(texts)
        todo = [t for t in dict.fromkeys(texts) if t not in known]
        if todo:
            s = self.scores(todo)
            strong = np.array([self.thresholds[n] for n in self.names], dtype=np.float32)
            weak = np.array([self.keyword_floors[n] for n in self.names], dtype=np.float32)
            made: dict[str, Reading] = {}
            for text, row in zip(todo, s, strict=True):
                scores = {n: round(float(v), 4) for n, v in zip(self.names, row, strict=True)}
                made[text] = Reading(
                    {self.names[j]: scores[self.names[j]] for j in np.flatnonzero(row >= strong)},
                    {self.names[j]: scores[self.names[j]] for j in np.flatnonzero(row >= weak)},
                )
            self._readings.keep(made)
            known.update(made)
        return [known[t] for t in texts]
