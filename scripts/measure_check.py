"""Print the check's blocked / over-blocked shares on tests/data/check_labelled.jsonl.

PYTHONPATH=. python scripts/measure_check.py [--verbose] [--guard MODEL.gguf [--certainty 0.5]]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from insan_edge.check_eval import CHILD, load, measure
from insan_edge.guard import Guard, Reader
from insan_edge.topic_model import Embedder, ensure_model
from insan_edge.topics import BUILTIN, TopicIndex, load_calibration

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "check_labelled.jsonl"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--verbose", action="store_true", help="list what each method missed")
    ap.add_argument("--guard", type=Path, help="a GGUF to add as the guard model")
    ap.add_argument("--certainty", type=float, default=0.5, help="the guard's certainty")
    args = ap.parse_args()
    rows = load(DATA)
    with tempfile.TemporaryDirectory() as tmp:
        embedder = Embedder(ensure_model(Path(tmp)).parent, device="cpu")
        cal = load_calibration()
        topics = [*BUILTIN, *CHILD.safety.blocked_topics]
        index = TopicIndex.from_calibration(embedder.embed, topics, cal)
        table = [
            ("keywords alone", measure(rows, None, False)),
            ("+ topic model", measure(rows, index, False)),
            ("+ title table", measure(rows, index, True)),
        ]
        if args.guard is not None:  # a guard model (system.safety.guard_model) on top of all three
            guard = Guard(args.guard, args.certainty)
            table.append(("+ guard model", measure(rows, Reader(index, guard), True)))
            guard.close()
    print(f"{len(rows)} items: {table[0][1]['unsafe']} unsafe, {table[0][1]['harmless']} harmless")
    print(f"{'method':<16} {'blocked':>8} {'over-blocked':>13}")
    for name, r in table:
        print(f"{name:<16} {r['blocked']:>8.1%} {r['over_blocked']:>13.1%}")
        if args.verbose:
            print("   missed:", r["missed"])
            print("   over-blocked:", r["over_blocked_items"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
