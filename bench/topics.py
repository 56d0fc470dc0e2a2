"""The topic check on the CPU: onnxruntime (what the daemon runs) against sentence-transformers
running the same all-MiniLM-L6-v2 in PyTorch, in the same run.

Both sides do the whole check: embed the texts, then the best cosine to each built-in topic's
phrases. Throughput: every text of tests/data/topics.jsonl (and crisis.jsonl), in batches of
32, the embedding cache off (each text seen once). Latency: one item per call, as the
recommendation path checks a freshly generated item, over 200 items; p50 and p95.

    .venv/bin/python bench/topics.py [--threads N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from insan_edge.topic_model import Embedder, ensure_model, model_source  # noqa: E402
from insan_edge.topics import BUILTIN, TopicIndex, load_calibration  # noqa: E402


def texts() -> list[str]:
    out = []
    for name in ("topics.jsonl", "crisis.jsonl"):
        for line in (ROOT / "tests" / "data" / name).read_text("utf-8").splitlines():
            if line.strip():
                out.append(json.loads(line)["text"])
    return out


def measure(
    check: Callable[[Sequence[str]], object], items: list[str], batch: int
) -> dict[str, float]:
    check(items[:batch])  # warm-up: first-call allocations
    started = time.perf_counter()
    for i in range(0, len(items), batch):
        check(items[i : i + batch])
    throughput = len(items) / (time.perf_counter() - started)
    singles = []
    for text in items[:200]:
        t = time.perf_counter()
        check([text + " "])  # never an exact repeat of the throughput run's text
        singles.append((time.perf_counter() - t) * 1000)
    q = statistics.quantiles(singles, n=100)
    return {
        "items_per_s": round(throughput, 1),
        "p50_ms": round(q[49], 2),
        "p95_ms": round(q[94], 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for both (default: all)")
    ap.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = ap.parse_args()
    items = texts()
    calibration = load_calibration()
    with tempfile.TemporaryDirectory() as tmp:
        onnx = ensure_model(Path(tmp))
        embedder = Embedder(onnx.parent, device="cpu", threads=args.threads, cache_size=1)
        index = TopicIndex.from_calibration(
            lambda t: embedder.embed(t, batch_size=32), list(BUILTIN), calibration
        )
        ours = measure(index.flags, items, 32)

    import torch
    from sentence_transformers import SentenceTransformer

    if args.threads:
        torch.set_num_threads(args.threads)
    st = SentenceTransformer(str(model_source()), device="cpu")

    def st_embed(t: Sequence[str]) -> np.ndarray:
        return np.asarray(st.encode(list(t), batch_size=32, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False))  # fmt: skip

    baseline_index = TopicIndex.from_calibration(st_embed, list(BUILTIN), calibration)
    theirs = measure(baseline_index.flags, items, 32)
    rows = {"onnxruntime (insan-edge)": ours, "sentence-transformers (torch)": theirs}
    print(
        f"\ntopic check on the CPU, {len(items)} texts, batches of 32; latency: one item per call"
    )
    print(f"{'':<32}{'items/s':>10}{'p50 ms':>9}{'p95 ms':>9}")
    for name, r in rows.items():
        print(f"{name:<32}{r['items_per_s']:>10}{r['p50_ms']:>9}{r['p95_ms']:>9}")
    print(f"{'ratio (ours / baseline)':<32}{ours['items_per_s'] / theirs['items_per_s']:>9.2f}x"
          f"{ours['p50_ms'] / theirs['p50_ms']:>8.2f}x{ours['p95_ms'] / theirs['p95_ms']:>8.2f}x")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"texts": len(items), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
