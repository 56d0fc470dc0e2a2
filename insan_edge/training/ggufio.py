"""Reading GGUF model files lean, and naming their tensors the Hugging Face way.

``gguf.GGUFReader`` parses every metadata array into Python objects up front: for Gemma 3's
262k-token vocabulary that is 10 s and 700 MB before a single weight is read. This reader keeps
string arrays as counts unless asked for, and reads tensor rows with ``pread`` in chunks, so
dequantizing a model never maps the file (no file pages held in the resident set) and never
holds more than one tensor in float32.

The name table covers the architectures whose layout is known here (llama, Gemma 3); the
training-weights preparation and the LoRA converter share it.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

_MAGIC = b"GGUF"
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q"}
_SCALAR |= {11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?"}
_NUMPY |= {10: "<u8", 11: "<i8", 12: "<f8"}


class GgufError(ValueError):
    """The file is not a GGUF this code can read."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order: (rows, ..., ne[0])
    ggml_type: int
    offset: int  # absolute, in bytes
    nbytes: int


@dataclass(frozen=True)
class GgufFile:
    path: Path
    fields: dict[str, Any]  # string arrays not asked for are kept as their length
    tensors: dict[str, TensorInfo]

    @property
    def architecture(self) -> str:
        return str(self.fields.get("general.architecture", "unknown"))


class _Cursor:
    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        data = self.fh.read(size)
        if len(data) != size:
            raise GgufError("the file ends inside its header")
        return struct.unpack(fmt, data)[0]

    def string(self) -> str:
        n = self.take("<Q")
        return self.fh.read(n).decode("utf-8", errors="replace")

    def value(self, kind: int, keep_strings: bool) -> Any:
        if kind in _SCALAR:
            return self.take(_SCALAR[kind])
        if kind == _STRING:
            return self.string()
        if kind != _ARRAY:
            raise GgufError(f"unknown metadata value type {kind}")
        item, count = self.take("<I"), self.take("<Q")
        if item in _NUMPY:
            dtype = np.dtype(_NUMPY[item])
            return np.frombuffer(self.fh.read(dtype.itemsize * count), dtype=dtype).tolist()
        if item == _STRING and not keep_strings:
            for _ in range(count):
                self.fh.seek(self.take("<Q"), os.SEEK_CUR)
            return count
        return [self.value(item, keep_strings) for _ in range(count)]


def read_gguf(path: Path, string_arrays: tuple[str, ...] = ()) -> GgufFile:
    """Metadata and tensor table of ``path``; string arrays only for the keys named."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    with Path(path).open("rb") as fh:
        cur = _Cursor(fh)
        if fh.read(4) != _MAGIC:
            raise GgufError(f"{path} is not a GGUF file")
        version = cur.take("<I")
        if version not in (2, 3):
            raise GgufError(f"{path} is GGUF version {version}; 2 and 3 are supported")
        n_tensors, n_fields = cur.take("<Q"), cur.take("<Q")
        fields: dict[str, Any] = {}
        for _ in range(n_fields):
            key = cur.string()
            fields[key] = cur.value(cur.take("<I"), keep_strings=key in string_arrays)
        table = []
        for _ in range(n_tensors):
            name = cur.string()
            dims = [cur.take("<Q") for _ in range(cur.take("<I"))]
            table.append((name, tuple(reversed(dims)), cur.take("<I"), cur.take("<Q")))
        align = int(fields.get("general.alignment", 32))
        start = -(-fh.tell() // align) * align
    tensors: dict[str, TensorInfo] = {}
    for name, shape, kind, offset in table:
        try:
            block, size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
        except (ValueError, KeyError) as exc:
            raise GgufError(f"{path}: tensor {name} has unknown ggml type {kind}") from exc
        nbytes = int(np.prod(shape)) // block * size
        tensors[name] = TensorInfo(name, shape, kind, start + offset, nbytes)
    return GgufFile(Path(path), fields, tensors)


def dequantized_rows(
    gguf: GgufFile, info: TensorInfo, chunk_bytes: int = 16 << 20
) -> Iterator[np.ndarray]:
    """The tensor as float32 blocks of whole rows, each dequantized from one ``pread``."""
    from gguf.constants import GGMLQuantizationType
    from gguf.quants import dequantize

    rows = int(np.prod(info.shape[:-1])) if len(info.shape) > 1 else 1
    row_bytes = info.nbytes // rows
    step = max(1, chunk_bytes // max(row_bytes, 1))
    kind = GGMLQuantizationType(info.ggml_type)
    fd = os.open(gguf.path, os.O_RDONLY)
    try:
        for first in range(0, rows, step):
            n = min(step, rows - first)
            raw = bytearray(os.pread(fd, n * row_bytes, info.offset + first * row_bytes))
            if len(raw) != n * row_bytes:
                raise GgufError(f"{gguf.path} ends inside tensor {info.name}")
            block = np.frombuffer(raw, dtype=np.uint8).reshape(n, row_bytes)
            yield np.asarray(dequantize(block, kind), dtype=np.float32).reshape(n, info.shape[-1])
    finally:
        os.close(fd)


# --- names -------------------------------------------------------------------------------------

# The projections LoRA adapts, by their Hugging Face module name.
PROJECTIONS = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_LAYER_NORMS = {
    "llama": {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"},
    "gemma3": {
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "post_attention_norm",
        "pre_feedforward_layernorm": "ffn_norm",
        "post_feedforward_layernorm": "post_ffw_norm",
        "self_attn.q_norm": "attn_q_norm",
        "self_attn.k_norm": "attn_k_norm",
    },
}
# Architectures whose GGUF converter permutes q/k rows for llama.cpp's rope layout.
ROPE_PERMUTED = frozenset({"llama"})
# Architectures whose RMSNorm weights are stored as (1 + w) in the GGUF.
NORM_PLUS_ONE = frozenset({"gemma3"})
KNOWN_ARCHITECTURES = frozenset(_LAYER_NORMS)
_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)\.weight$")


def gguf_name(architecture: str, hf_name: str) -> str | None:
    """The GGUF tensor name of a Hugging Face weight, or None when it has none here."""
    top = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    if hf_name in top:
        return top[hf_name]
    match = _LAYER.match(hf_name)
    if match is None:
        return None
    layer, module = match.groups()
    short = PROJECTIONS.get(module) or _LAYER_NORMS.get(architecture, {}).get(module)
    return f"blk.{layer}.{short}.weight" if short else None


def rope_permute(rows: np.ndarray, n_head: int) -> np.ndarray:
    """HF -> GGUF row order of a q/k projection (llama.cpp's convert_hf_to_gguf ``permute``).

    Works on anything whose first axis is the projection's output (weights, LoRA B).
    """
    shape = rows.shape
    return (
        rows.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)
    )


def rope_unpermute(rows: np.ndarray, n_head: int) -> np.ndarray:
    """GGUF -> HF row order; the inverse of ``rope_permute``."""
    shape = rows.shape
    return (
        rows.reshape(n_head, shape[0] // n_head // 2, 2, *shape[1:]).swapaxes(1, 2).reshape(shape)
    )


def head_counts(gguf: GgufFile) -> tuple[int, int]:
    """(attention heads, key/value heads) from the file's metadata."""
    arch = gguf.architecture
    n_head = gguf.fields.get(f"{arch}.attention.head_count")
    n_kv = gguf.fields.get(f"{arch}.attention.head_count_kv", n_head)
    if not isinstance(n_head, int) or not isinstance(n_kv, int):
        raise GgufError(f"{gguf.path} does not give one head count for all layers")
    return n_head, n_kv
