"""Training weights: the served GGUF base, dequantized once into a Hugging Face directory.

``prepare_weights(gguf, dir)`` reads the GGUF through transformers (``gguf_file=``), which
dequantizes every tensor, and writes ``model.safetensors`` (bf16), ``config.json`` and the
tokenizer converted from the GGUF (slow for Gemma 3, so it is cached with the weights). The
directory is assembled under a temporary name beside its target and renamed into place, so an
interrupted preparation leaves nothing half-written and two racing processes both end with a
complete directory.

transformers will not ``save_pretrained`` a model loaded from a GGUF; the weights are saved
straight from its state dict instead (tied output weights once), which is what a plain model
built from the config would save.

The tokenizer is kept as a ``tokenizers`` JSON file and used as-is (``load_tokenizer``): the
worker tokenizes a prompt and its continuation separately and adds BOS itself, exactly as
llama.cpp does for the served model. transformers' GGUF conversion of a sentencepiece
vocabulary always prepends a space ("▁") to the text; llama.cpp does so only when the GGUF
says ``tokenizer.ggml.add_space_prefix``, so that is corrected here.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from insan_edge.training.ggufio import (
    KNOWN_ARCHITECTURES,
    NORM_PLUS_ONE,
    ROPE_PERMUTED,
    GgufError,
    GgufFile,
    TensorInfo,
    dequantized_rows,
    gguf_name,
    head_counts,
    read_gguf,
    rope_unpermute,
)

FORMAT = 1
META_FILE = "insan-weights.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"

Progress = Callable[[str, int, int], None]
_STAGES = ("config", "weights", "tokenizer", "save")


@dataclass(frozen=True)
class WeightsInfo:
    """What the worker needs to know about a prepared directory, beyond config.json."""

    architecture: str
    bos_token_id: int | None
    eos_token_id: int | None
    add_bos: bool


def read_info(weights_dir: Path) -> WeightsInfo | None:
    """The directory's metadata, or None if it is missing, incomplete or of another format."""
    try:
        meta = json.loads((weights_dir / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return None
    if not all((weights_dir / name).is_file() for name in (WEIGHTS_FILE, TOKENIZER_FILE)):
        return None
    return WeightsInfo(
        architecture=str(meta["architecture"]),
        bos_token_id=meta.get("bos_token_id"),
        eos_token_id=meta.get("eos_token_id"),
        add_bos=bool(meta.get("add_bos")),
    )


def _fix_prefix_space(backend: Any, fields: dict[str, Any]) -> None:
    """Make a sentencepiece tokenizer prepend "▁" only when the GGUF says llama.cpp does."""
    from tokenizers import decoders, pre_tokenizers

    if fields.get("tokenizer.ggml.model") != "llama":
        return
    if not isinstance(backend.pre_tokenizer, pre_tokenizers.Metaspace):
        return  # Gemma's builder uses a normalizer and never adds a prefix space
    prefix = bool(fields.get("tokenizer.ggml.add_space_prefix", True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="\u2581", prepend_scheme="first" if prefix else "never", split=False
    )
    steps = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    if prefix:
        steps.append(decoders.Strip(content=" ", left=1))
    backend.decoder = decoders.Sequence(steps)


def _expected_shapes(config: Any) -> dict[str, tuple[int, ...]]:
    """Every weight the Hugging Face model has (a tied output layer once), without memory."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    return {
        key: tuple(t.shape)
        for key, t in model.state_dict().items()
        if not (tied and key == "lm_head.weight")
    }


def _stream_weights(source: GgufFile, config: Any, out: Path) -> None:
    """Dequantize tensor by tensor, in row chunks, straight into a bf16 safetensors file.

    The same numbers transformers' own GGUF loading gives (q/k rows back in Hugging Face order
    for llama, Gemma's norms without their +1), at a fraction of its peak memory.
    """
    import torch

    arch = source.architecture
    shapes = _expected_shapes(config)
    plan: dict[str, TensorInfo] = {}
    for key, shape in sorted(shapes.items()):
        name = gguf_name(arch, key)
        info = source.tensors.get(name) if name else None
        if info is None or info.shape != shape:
            found = info.shape if info else "nothing"
            raise GgufError(f"{source.path}: {key} {shape} maps to {name}, which holds {found}")
        plan[key] = info
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for key, info in plan.items():
        size = 2 * int(math.prod(info.shape))
        header[key] = {
            "dtype": "BF16",
            "shape": list(info.shape),
            "data_offsets": [offset, size + offset],
        }
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    n_head, n_kv = head_counts(source)

    def bf16_bytes(values: np.ndarray) -> bytes:
        return bytes(torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().data)

    with out.open("wb") as fh:
        fh.write(struct.pack("<Q", len(blob)) + blob)
        for key, info in plan.items():
            permute = arch in ROPE_PERMUTED and key.endswith(("q_proj.weight", "k_proj.weight"))
            plus_one = arch in NORM_PLUS_ONE and key.endswith("norm.weight")
            chunks = dequantized_rows(source, info)
            if permute:
                whole = np.concatenate(list(chunks))
                heads = n_head if key.endswith("q_proj.weight") else n_kv
                chunks = iter([rope_unpermute(whole, heads)])
            for chunk in chunks:
                fh.write(bf16_bytes(chunk - 1.0 if plus_one else chunk))
        fh.flush()
        os.fsync(fh.fileno())


def _transformers_weights(where: str, name: str, out: Path) -> None:
    """Any architecture transformers reads, dequantized all at once (several times the file)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, GgufConfig

    model = AutoModelForCausalLM.from_pretrained(
        where,
        gguf_file=name,
        quantization_config=GgufConfig(gguf_file=name, dequantize=True),
        dtype=torch.bfloat16,
    )
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    state = {
        key: t.detach().to(torch.bfloat16).contiguous()
        for key, t in model.state_dict().items()
        if not (tied and key == "lm_head.weight")
    }
    del model
    save_file(state, str(out), metadata={"format": "pt"})


def prepare_weights(gguf_path: Path, weights_dir: Path, progress: Progress | None = None) -> Path:
    """Dequantize ``gguf_path`` into ``weights_dir`` (bf16 safetensors + config + tokenizer).

    Does nothing when the directory is already complete. ``progress(stage, done, total)`` is
    called as each of the stages config, weights, tokenizer and save begins, and at the end.
    """
    import torch
    from transformers import AutoConfig, AutoTokenizer

    gguf_path, weights_dir = Path(gguf_path).resolve(), Path(weights_dir)
    if read_info(weights_dir) is not None:
        return weights_dir

    def report(stage: str) -> None:
        if progress is not None:
            done = _STAGES.index(stage) if stage in _STAGES else len(_STAGES)
            progress(stage, done, len(_STAGES))

    weights_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = weights_dir.with_name(f".{weights_dir.name}.tmp-{os.getpid()}-{time.monotonic_ns()}")
    tmp.mkdir()
    try:
        report("config")
        source = read_gguf(gguf_path)
        fields = source.fields
        where, name = str(gguf_path.parent), gguf_path.name
        config = AutoConfig.from_pretrained(where, gguf_file=name)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.dtype = torch.bfloat16
        report("weights")
        if source.architecture in KNOWN_ARCHITECTURES:
            _stream_weights(source, config, tmp / WEIGHTS_FILE)
        else:
            _transformers_weights(where, name, tmp / WEIGHTS_FILE)
        report("tokenizer")
        backend = AutoTokenizer.from_pretrained(where, gguf_file=name).backend_tokenizer
        _fix_prefix_space(backend, fields)
        report("save")
        config.save_pretrained(tmp)
        backend.save(str(tmp / TOKENIZER_FILE))
        meta = {
            "format": FORMAT,
            "source": gguf_path.name,
            "architecture": source.architecture,
            "bos_token_id": fields.get("tokenizer.ggml.bos_token_id"),
            "eos_token_id": fields.get("tokenizer.ggml.eos_token_id"),
            "add_bos": bool(fields.get("tokenizer.ggml.add_bos_token", True)),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        try:
            os.rename(tmp, weights_dir)
        except OSError:
            if read_info(weights_dir) is None:
                raise  # not a sibling that won the race: a real failure
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report("done")
    return weights_dir


class Tokenizer:
    """The prepared tokenizer, used the way llama.cpp tokenizes for the served model."""

    def __init__(self, weights_dir: Path) -> None:
        from tokenizers import Tokenizer as Backend

        info = read_info(weights_dir)
        if info is None:
            raise FileNotFoundError(f"{weights_dir} holds no prepared training weights")
        self._backend = Backend.from_file(str(weights_dir / TOKENIZER_FILE))
        self.bos_token_id = info.bos_token_id
        self.eos_token_id = info.eos_token_id
        self.add_bos = info.add_bos and info.bos_token_id is not None

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` alone: no BOS, no special tokens."""
        return list(self._backend.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> str:
        return str(self._backend.decode(ids, skip_special_tokens=False))

    def prompt_ids(self, prompt: str) -> list[int]:
        """``prompt`` as the start of a sequence: BOS first when the model adds one."""
        head = [self.bos_token_id] if self.add_bos and self.bos_token_id is not None else []
        return head + self.encode(prompt)
