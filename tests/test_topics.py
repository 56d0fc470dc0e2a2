"""Topics by meaning on the real model (all-MiniLM-L6-v2 on onnxruntime), judged on the
labelled set: the shipped thresholds, precision and recall per topic, and the safety rules."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from insan_edge.config import parse_config
from insan_edge.config.system import SafetySettings
from insan_edge.safety import check_item, estimated_rating
from insan_edge.topic_eval import load_labelled, report, split
from insan_edge.topic_model import Embedder, ensure_model
from insan_edge.topics import BUILTIN, TopicIndex, load_calibration

DATA = Path(__file__).parent / "data" / "topics.jsonl"
# Floors on the held-out half (odd lines), keywords plus the model. Measured at calibration
# (see insan_edge/data/topic_thresholds.json); set a little below, so noise cannot fail them
# but a real regression does.
# Measured (keywords+model, phrases and the fitting half as labelled examples, held-out):
# precision / recall
#   violence 0.72/0.69, sexual content 0.86/0.79, self-harm 0.59/0.76, drugs and alcohol 0.75/0.83,
#   gambling 0.86/0.80, horror 0.75/0.87, weapons 0.78/0.85, hate 0.88/0.86
# (on the 642 held-out lines of the 1284-line set; the first 328 of them, the old held-out half,
# went from F1 0.805 to 0.824 when the fitting half grew from 328 to 642 lines)
# (phrases alone, before the examples: all topics 0.71/0.61, violence 0.56/0.46)
# Keywords alone: recall 0.17 to 0.35 per topic. The model's output is deterministic; the floors
# sit 0.05 under the measurement.
MEASURED = {
    "violence": (0.72, 0.69), "sexual content": (0.86, 0.79), "self-harm": (0.59, 0.76),
    "drugs and alcohol": (0.75, 0.83), "gambling": (0.86, 0.80), "horror": (0.75, 0.87),
    "weapons": (0.78, 0.85), "hate": (0.88, 0.86),
}  # fmt: skip
PRECISION_FLOOR = {t: p - 0.05 for t, (p, _) in MEASURED.items()}
RECALL_FLOOR = {t: r - 0.05 for t, (_, r) in MEASURED.items()}
OLD_HELD = 328  # held-out lines of the set before it grew from 656 to 1284 lines


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedder]:
    onnx = ensure_model(tmp_path_factory.mktemp("topics"))
    yield Embedder(onnx.parent, device="cpu")


@pytest.fixture(scope="module")
def index(embedder: Embedder) -> TopicIndex:
    calibration = load_calibration()
    return TopicIndex.from_calibration(embedder.embed, list(BUILTIN), calibration)


def test_the_labelled_set_is_big_and_varied_enough() -> None:
    rows = load_labelled(DATA)
    assert len(rows) >= 300
    for topic in BUILTIN:
        assert sum(topic in r.topics for r in rows) >= 30, topic
    assert sum(r.hard and not r.topics for r in rows) >= 50
    assert len({r.text for r in rows}) == len(rows)


def test_precision_and_recall_per_topic_hold_their_floors(index: TopicIndex) -> None:
    _, held = split(load_labelled(DATA))
    result = report(
        held, index.scores([r.text for r in held]), index.thresholds, index.keyword_floors
    )
    lines = []
    for topic in BUILTIN:
        r = result[topic]
        kw, both = r["keywords"], r["keywords+model"]
        lines.append(f"{topic:<18} keywords P {kw['precision']:.2f} R {kw['recall']:.2f} | "
                     f"+model P {both['precision']:.2f} R {both['recall']:.2f} (n={r['positives']})")  # fmt: skip
    print("\n".join(lines))
    for topic in BUILTIN:
        both = result[topic]["keywords+model"]
        assert both["recall"] >= RECALL_FLOOR[topic], (topic, result[topic])
        assert both["precision"] >= PRECISION_FLOOR[topic], (topic, result[topic])
        assert both["recall"] >= result[topic]["keywords"]["recall"] + 0.2, (topic, result[topic])
    everything = result["_all"]
    assert everything["keywords+model"]["recall"] > everything["keywords"]["recall"] + 0.3
    assert everything["keywords+model"]["precision"] >= everything["keywords"]["precision"] - 0.02
    assert everything["keywords+model"]["f1"] >= 0.75  # measured 0.776 (phrases alone: 0.66)
    # Hard negatives (harmless, with risky words): 33 of 211 flagged by keywords, 34 with the model.
    assert everything["hard_negatives_flagged"] <= 37
    # The first 328 held-out lines are the held-out half of the 656-line set the floors above
    # once came from (lines were only appended): on them, the model must not fall back.
    old = report(
        held[:OLD_HELD], index.scores([r.text for r in held[:OLD_HELD]]), index.thresholds,
        index.keyword_floors,
    )["_all"]["keywords+model"]  # fmt: skip
    assert old["f1"] >= 0.80, old  # measured 0.824 (0.805 fitted on 328 lines)


def test_the_shipped_examples_are_the_fitting_half_only() -> None:
    """The labelled examples the index compares against are the even lines: none of the odd
    lines that judge it (else the held-out numbers would be the examples finding themselves)."""
    examples = load_calibration().examples
    assert examples is not None
    fit, held = split(load_labelled(DATA))
    assert list(examples.texts) == [r.text for r in fit]
    assert list(examples.topics) == [r.topics for r in fit]
    assert not set(examples.texts) & {r.text for r in held}


def test_an_example_scored_without_itself_scores_lower(index: TopicIndex) -> None:
    examples = index.examples
    assert examples is not None
    j = index.names.index("violence")
    text = next(
        t for t, on in zip(examples.texts, examples.topics, strict=True) if "violence" in on
    )
    with_itself = index.scores([text])[0, j]
    without = index.scores([text], leave_out_same=True)[0, j]
    assert without < with_itself


def test_the_shipped_thresholds_belong_to_this_model(tmp_path: Path) -> None:
    calibration = load_calibration()
    assert set(calibration.thresholds) == set(BUILTIN)
    onnx = ensure_model(tmp_path)
    import json

    assert json.loads(onnx.with_suffix(".json").read_text())["sha256"] == calibration.model_sha256


FAMILY_YAML = """
families:
  fam:
    members:
      kid: {name: Kid, age: 9, role: child}
      mum: {name: Mum, age: 40, role: parent}
    safety:
      max_content_rating: R
      blocked_topics: [violence]
"""


def _check(index: TopicIndex, title: str, description: str, rating: str = "G") -> list[str]:
    config = parse_config(FAMILY_YAML, "test.yaml").config
    family = config.families["fam"]
    found = check_item(title=title, description=description, category="movie",
                       content_rating=rating, family=family, members=["kid"],
                       settings=SafetySettings(), at=datetime(2026, 6, 6, 10), meaning=index)  # fmt: skip
    return [v.message for v in found]


def test_meaning_catches_what_keywords_miss_and_spares_near_misses(index: TopicIndex) -> None:
    caught = _check(index, "The Long Winter", "soldiers starving through the siege of Leningrad")
    assert any("blocked topic for the family: violence (by meaning" in m for m in caught), caught
    assert _check(index, "Violet's birthday", "party games, balloons and a chocolate cake") == []
    assert _check(index, "Shooting stars", "stay up late to watch the meteor shower") == []
    # The rating the item claims is not trusted above what its meaning says.
    text = "A gangster saga: a family of mobsters settles scores in 1930s Chicago"
    [reading] = index.flags([text])
    assert estimated_rating(text, "G", reading) != "G"
    assert estimated_rating(text, "G") == "G"  # the words alone would have let it through
