"""llama-cpp-python, imported in one place, with the one workaround this box needs.

llama.cpp's CPU backend may keep quantized weights in an "extra" buffer type: AMX tiles on an
Intel CPU with AMX, repacked layouts elsewhere. With a LoRA adapter applied, a model whose
weights sit in the AMX buffer crashes the whole process on the next decode (a segfault, measured
with llama-cpp-python 0.3.36 on a Xeon with AMX-INT8: every adapter tensor logs "cannot use buft
'AMX', fallback to CPU" and ``llama_decode`` then faults). Per-family adapters are the point of
this daemon, so where the library was built with AMX every model is loaded with the extra buffer
types off (``use_extra_bufts = false``, llama.cpp's ``--no-repack``); elsewhere (the Jetson, AVX2
machines) nothing changes. Everything that loads a GGUF goes through :func:`load`.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

from insan_edge.logs import kv

log = logging.getLogger(__name__)

_lock = threading.Lock()
_module: ModuleType | None = None


def builds_amx(system_info: str) -> bool:
    """Whether llama.cpp's system line says its CPU backend uses AMX."""
    return "AMX_INT8 = 1" in system_info


def load() -> ModuleType:
    """The ``llama_cpp`` package, its model defaults made safe for adapters on this CPU."""
    global _module
    with _lock:
        if _module is not None:
            return _module
        import llama_cpp

        info = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
        if builds_amx(info):
            low = llama_cpp.llama_cpp  # the ctypes layer; Llama() reads its defaults from here
            defaults = low.llama_model_default_params

            def plain_buffers() -> Any:
                params = defaults()
                params.use_extra_bufts = False
                return params

            low.llama_model_default_params = plain_buffers
            log.info(kv("llama.extra_buffers_off", why="amx_with_lora_segfaults"))
        _module = llama_cpp
        return llama_cpp


def block_count(model_path: Path) -> int | None:
    """The GGUF's layer count, read with the vocabulary only (no weights loaded)."""
    llama_cpp = load()  # before any model is loaded
    try:
        probe = llama_cpp.Llama(model_path=str(model_path), vocab_only=True, verbose=False)
    except (ValueError, RuntimeError, OSError):
        return None
    meta = probe.metadata
    probe.close()
    count = meta.get(f"{meta.get('general.architecture', '')}.block_count")
    return int(count) if count and str(count).isdigit() else None
