"""Events per second of insan-edge's Scrubber against a plain Presidio loop, in one run.

    .venv/bin/python bench/scrub.py              # corpus x3 (about 15 s on 2 cores)
    .venv/bin/python bench/scrub.py --repeat 5

Texts: tests/data/pii_corpus.jsonl (217 invented household messages), repeated; family:
tests/data/pii_family.yaml. Rows:

- ``scrubber``: ``Scrubber.scrub`` in batches of 64 (spaCy ``nlp.pipe``, NER only).
- ``scrubber, 1 per call``: the same, one text per ``scrub`` call (no batching).
- ``scrubber, full spaCy``: the same batches with every spaCy component running (tagger,
  parser, lemmatizer...): what disabling them saves, and that recall does not change.
- ``plain presidio``: ``AnalyzerEngine().analyze`` + ``AnonymizerEngine().anonymize`` per text,
  default recognizers, the same spaCy model loaded by path through ``NlpEngineProvider``.
  It knows nothing of the family (no deny-list), which is part of what it is measured on.

Recall: a labelled value is recalled when it no longer appears (whole word) in the output.
Each engine is warmed up on a few texts before it is timed.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import spacy
import tldextract
from presidio_analyzer import AnalyzerEngine
from presidio_analyzer.nlp_engine import NlpEngineProvider
from presidio_anonymizer import AnonymizerEngine

from insan_edge.config.loader import load_config
from insan_edge.privacy import Scrubber, _quiet_tldextract, bundled_model_path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "pii_corpus.jsonl"
FAMILY = ROOT / "tests" / "data" / "pii_family.yaml"
BATCH = 64


def recall(rows: list[dict[str, Any]], outputs: list[str]) -> float:
    labelled = recalled = 0
    for row, out in zip(rows, outputs, strict=True):
        for label in row["pii"]:
            labelled += 1
            if not re.search(rf"(?<!\w){re.escape(label['value'])}(?!\w)", out):
                recalled += 1
    return recalled / labelled


def timed(run: Callable[[list[str]], list[str]], texts: list[str]) -> tuple[float, list[str]]:
    run(texts[:8])  # warm-up
    start = time.perf_counter()
    out = run(texts)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="times the corpus is repeated")
    args = parser.parse_args()
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    texts = [row["text"] for row in rows] * args.repeat
    families = dict(load_config(FAMILY).config.families)
    model = bundled_model_path()

    scrubber = Scrubber(families)

    def ours(batch: int) -> Callable[[list[str]], list[str]]:
        def run(items: list[str]) -> list[str]:
            out: list[str] = []
            for i in range(0, len(items), batch):
                out += [s.text for s in scrubber.scrub("testfam", items[i : i + batch])]
            return out

        return run

    # The plain loop's email recognizer would try to download the public suffix list on first
    # use (and print a traceback, offline); give it the same offline snapshot, so timing is fair.
    tldextract.extract = _quiet_tldextract()  # type: ignore[assignment]
    provider = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "en", "model_name": str(model)}],
        }
    )
    analyzer = AnalyzerEngine(nlp_engine=provider.create_engine())
    anonymizer = AnonymizerEngine()  # type: ignore[no-untyped-call]

    def plain(items: list[str]) -> list[str]:
        return [
            anonymizer.anonymize(t, analyzer.analyze(t, language="en")).text  # type: ignore[arg-type]
            for t in items
        ]

    results: list[tuple[str, float, float]] = []
    for name, run in (("scrubber", ours(BATCH)), ("scrubber, 1 per call", ours(1))):
        seconds, out = timed(run, texts)
        results.append((name, len(texts) / seconds, recall(rows, out[: len(rows)])))
    ner_only = scrubber._nlp
    scrubber._nlp = spacy.load(model)  # every component enabled, for comparison only
    seconds, out = timed(ours(BATCH), texts)
    results.append(("scrubber, full spaCy", len(texts) / seconds, recall(rows, out[: len(rows)])))
    scrubber._nlp = ner_only
    seconds, out = timed(plain, texts)
    results.append(("plain presidio", len(texts) / seconds, recall(rows, out[: len(rows)])))

    base = results[-1][1]
    print(f"{len(texts)} texts ({len(rows)} x {args.repeat}), spaCy model {model.name}")
    print(f"{'engine':<22} {'events/s':>9} {'vs plain':>9} {'recall':>7}")
    for name, rate, rec in results:
        print(f"{name:<22} {rate:>9.1f} {rate / base:>8.2f}x {rec:>7.3f}")


if __name__ == "__main__":
    main()
