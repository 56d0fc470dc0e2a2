"""The one place llama.cpp is used: load a GGUF once, generate under a grammar.

llama.cpp objects are not thread-safe; every call holds the engine's lock, so callers may run
them in worker threads. Grammars are checked before use: llama-cpp-python would otherwise pass
a grammar that fails to parse straight to the sampler.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from insan_edge.config.system import ModelSettings
from insan_edge.errors import ModelError
from insan_edge.logs import kv

log = logging.getLogger("insan_edge.engine")


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    finish_reason: str


@dataclass(frozen=True)
class Grammar:
    """A GBNF grammar that llama.cpp accepted for this model's vocabulary."""

    gbnf: str


_LOOSE_CHAR = r'char ::= [^"\\] |'
_JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


def schema_to_gbnf(schema: dict[str, Any]) -> str:
    """GBNF for a JSON schema whose strings cannot hold raw control characters.

    llama-cpp-python 0.3.36 writes ``char ::= [^"\\]``, which lets a model emit bytes that
    strict JSON forbids; upstream llama.cpp excludes them, and so do we.
    """
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf = str(json_schema_to_gbnf(json.dumps(schema), prop_order=list(schema.get("x-order", []))))
    return gbnf.replace(_LOOSE_CHAR, _JSON_CHAR)


class Engine:
    """A quantized GGUF held in memory (mmap), serving one generation at a time."""

    def __init__(self, model_path: Path, settings: ModelSettings) -> None:
        import llama_cpp

        self.path = model_path
        self.settings = settings
        self._lock = threading.Lock()
        self._abort = threading.Event()
        threads = settings.threads or os.cpu_count() or 1
        started = time.monotonic()
        try:
            self._llm = llama_cpp.Llama(
                model_path=str(model_path),
                n_ctx=settings.context_length,
                n_threads=threads,
                n_threads_batch=threads,
                n_gpu_layers=settings.n_gpu_layers,
                seed=settings.seed if settings.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED,
                use_mmap=True,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelError(f"llama.cpp could not load {model_path}: {exc}") from exc
        self.load_seconds = time.monotonic() - started
        meta = self._llm.metadata
        self.architecture = meta.get("general.architecture", "unknown")
        self.name = meta.get("general.name") or model_path.stem
        self.n_ctx = self._llm.n_ctx()
        self.threads = threads
        self.device = (
            "gpu"
            if settings.n_gpu_layers != 0 and llama_cpp.llama_supports_gpu_offload()
            else "cpu"
        )
        log.info(
            kv(
                "model.loaded",
                name=self.name,
                arch=self.architecture,
                ctx=self.n_ctx,
                threads=threads,
                device=self.device,
                seconds=f"{self.load_seconds:.2f}",
            )
        )

    def count_tokens(self, text: str) -> int:
        with self._lock:
            return len(self._llm.tokenize(text.encode("utf-8"), add_bos=True))

    def grammar(self, gbnf: str) -> Grammar:
        """Check that llama.cpp can build ``gbnf`` for this model; raise ModelError if not."""
        import llama_cpp

        with self._lock:
            vocab = self._llm._model.vocab
            sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
            if not sampler:
                raise ModelError("the grammar does not parse (llama.cpp rejected it)")
            llama_cpp.llama_sampler_free(
                ctypes.c_void_p(sampler) if isinstance(sampler, int) else sampler
            )
        return Grammar(gbnf)

    def generate(
        self,
        prompt: str,
        grammar: Grammar,
        max_tokens: int,
        seed: int | None = None,
        cancel: threading.Event | None = None,
    ) -> Generation:
        """Generate under ``grammar``; stops at the next token once ``cancel`` or abort is set."""
        from llama_cpp import StoppingCriteriaList
        from llama_cpp.llama_grammar import LlamaGrammar

        def stop(_tokens: Any, _logits: Any) -> bool:
            return self._abort.is_set() or (cancel is not None and cancel.is_set())

        s = self.settings
        started = time.monotonic()
        with self._lock:
            prompt_tokens = self._llm.tokenize(prompt.encode("utf-8"), add_bos=True)
            room = self.n_ctx - len(prompt_tokens) - 1
            if room < 16:
                raise ModelError(
                    f"the prompt ({len(prompt_tokens)} tokens) leaves no room in the model's context ({self.n_ctx})"
                )
            result: Any = self._llm.create_completion(
                prompt_tokens,
                max_tokens=min(max_tokens, room),
                temperature=s.temperature,
                top_p=s.top_p,
                top_k=s.top_k,
                repeat_penalty=s.repeat_penalty,
                frequency_penalty=s.frequency_penalty,
                seed=seed if seed is not None else s.seed,
                grammar=LlamaGrammar.from_string(grammar.gbnf, verbose=False),
                stopping_criteria=StoppingCriteriaList([stop]),
            )
        choice = result["choices"][0]
        usage = result["usage"]
        return Generation(
            text=choice["text"],
            prompt_tokens=int(usage["prompt_tokens"]),
            completion_tokens=int(usage["completion_tokens"]),
            seconds=time.monotonic() - started,
            finish_reason="cancelled"
            if stop(None, None)
            else str(choice.get("finish_reason") or "stop"),
        )

    def abort(self) -> None:
        """Make the running generation (and any later one) stop at its next token."""
        self._abort.set()

    def close(self) -> None:
        with self._lock:
            self._llm.close()
