"""A PEFT LoRA adapter as a GGUF LoRA file that llama.cpp applies over the served base.

The layout is llama.cpp's own (``convert_lora_to_gguf.py``): ``general.type=adapter``,
``adapter.type=lora``, ``adapter.lora.alpha``; for each adapted weight ``W`` (GGUF name, e.g.
``blk.3.attn_q.weight``) two tensors ``W.lora_a`` with numpy shape [r, in] and ``W.lora_b``
[out, r], exactly as PEFT stores A and B. llama.cpp scales by alpha / r, as PEFT does.

For the llama architecture the GGUF converter permutes q/k rows for llama.cpp's rope layout,
so lora_b of q_proj/k_proj is permuted the same way (then B·A lands on the base's rows);
Gemma 3 needs none. Every tensor's shape is checked against the base before anything is
written, so a mismatch is an error here rather than a refusal (or worse) in llama.cpp.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from insan_edge.training.ggufio import (
    KNOWN_ARCHITECTURES,
    ROPE_PERMUTED,
    GgufError,
    gguf_name,
    head_counts,
    read_gguf,
    rope_permute,
)

_KEY = re.compile(r"^(?:base_model\.model\.)?(model\.layers\.\d+\..+)\.lora_([AB])\.weight$")


def _adapter_config(peft_dir: Path) -> dict[str, object]:
    config = json.loads((peft_dir / "adapter_config.json").read_text())
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise GgufError(f"{peft_dir} is not a PEFT LoRA adapter")
    unsupported = [
        flag
        for flag in ("use_dora", "use_rslora", "rank_pattern", "alpha_pattern", "modules_to_save")
        if config.get(flag)
    ]
    if unsupported:
        raise GgufError(f"{peft_dir}: {', '.join(unsupported)} cannot be written as a GGUF LoRA")
    return config


def peft_to_gguf(peft_dir: Path, out_path: Path, base_gguf: Path) -> Path:
    """Write ``peft_dir``'s adapter as a GGUF LoRA for ``base_gguf`` at ``out_path`` (atomic)."""
    import gguf
    from safetensors.numpy import load_file

    peft_dir, out_path = Path(peft_dir), Path(out_path)
    config = _adapter_config(peft_dir)
    base = read_gguf(base_gguf)
    arch = base.architecture
    if arch not in KNOWN_ARCHITECTURES:
        raise GgufError(f"LoRA conversion for the {arch} architecture is not supported")
    n_head, n_kv = head_counts(base)
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, tensor in load_file(str(peft_dir / "adapter_model.safetensors")).items():
        match = _KEY.match(key)
        name = gguf_name(arch, f"{match.group(1)}.weight") if match else None
        if match is None or name is None:
            raise GgufError(f"{peft_dir}: adapter tensor {key} has no place in a {arch} GGUF")
        pairs.setdefault(name, {})[match.group(2)] = tensor.astype(np.float32)
    if not pairs:
        raise GgufError(f"{peft_dir} holds no LoRA tensors")
    tensors: list[tuple[str, np.ndarray]] = []
    for name in sorted(pairs, key=_natural):
        a, b = pairs[name].get("A"), pairs[name].get("B")
        info = base.tensors.get(name)
        if a is None or b is None or info is None:
            raise GgufError(f"{peft_dir}: {name} lacks lora_A, lora_B or a base tensor")
        out_features, in_features = info.shape
        if a.shape[1] != in_features or b.shape[0] != out_features or a.shape[0] != b.shape[1]:
            raise GgufError(
                f"{peft_dir}: {name} A{a.shape} B{b.shape} does not fit the base's {info.shape}"
            )
        if arch in ROPE_PERMUTED and ".attn_q." in name:
            b = rope_permute(b, n_head)
        elif arch in ROPE_PERMUTED and ".attn_k." in name:
            b = rope_permute(b, n_kv)
        tensors += [(f"{name}.lora_a", a), (f"{name}.lora_b", np.ascontiguousarray(b))]

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    try:
        writer = gguf.GGUFWriter(tmp, arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(str(config["lora_alpha"])))
        for tensor_name, array in tensors:
            writer.add_tensor(tensor_name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def _natural(name: str) -> tuple[object, ...]:
    return tuple(int(p) if p.isdigit() else p for p in name.split("."))
