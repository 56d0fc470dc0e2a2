"""The one place llama.cpp is used: load a GGUF once, generate under a grammar.

llama.cpp objects are not thread-safe; every call holds the engine's lock, so callers may run
them in worker threads. Grammars are checked before use: llama-cpp-python would otherwise pass
a grammar that fails to parse straight to the sampler.

LoRA adapters (GGUF LoRA files) are loaded beside the one mmap'd base and applied per request
through llama.cpp's per-context API, without reloading anything. llama-cpp-python reuses its
KV cache for a prompt that starts with the previous one's tokens; that cache holds keys and
values computed under whatever adapter was set then, so switching adapters resets it.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from insan_edge import llamacpp
from insan_edge.config.system import ModelSettings
from insan_edge.devices import Placement, serving_layers
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
class Scores:
    """Summed log-likelihood of each continuation after one prompt (``Engine.score``)."""

    logprobs: list[float]
    tokens: list[int]  # tokens of each continuation
    prompt_tokens: int
    reused_tokens: int  # prompt tokens whose KV state was already in the context
    seconds: float


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter loaded into the engine under ``key``."""

    key: str
    path: Path


@dataclass(frozen=True)
class Grammar:
    """A GBNF grammar that llama.cpp accepted for this model's vocabulary."""

    gbnf: str


_LOOSE_CHAR = r'char ::= [^"\\] |'
_JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


def _logsumexp(row: Any) -> float:
    import numpy as np

    top = float(row.max())
    return top + float(np.log(np.exp(row - top).sum()))


def schema_to_gbnf(schema: dict[str, Any]) -> str:
    """GBNF for a JSON schema whose strings cannot hold raw control characters.

    llama-cpp-python 0.3.36 writes ``char ::= [^"\\]``, which lets a model emit bytes that
    strict JSON forbids; upstream llama.cpp excludes them, and so do we.
    """
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf = str(json_schema_to_gbnf(json.dumps(schema), prop_order=list(schema.get("x-order", []))))
    return gbnf.replace(_LOOSE_CHAR, _JSON_CHAR)


def _placement(model_path: Path, settings: ModelSettings, offload: bool) -> Placement:
    """Where the model runs (devices.serving_layers on this machine), logged when not asked."""
    import psutil

    try:
        model_mb = model_path.stat().st_size / 2**20
    except OSError:
        model_mb = float("inf")  # llama.cpp reports the missing file itself
    placement = serving_layers(
        settings.n_gpu_layers,
        offload=offload,
        model_mb=model_mb,
        free_mb=psutil.virtual_memory().available / 2**20,
        block_count=lambda: llamacpp.block_count(model_path),
    )
    if placement.device == "cpu" and settings.n_gpu_layers != 0:
        log.warning(kv("model.cpu_fallback", asked=settings.n_gpu_layers, why=placement.reason))
    return placement


class Engine:
    """A quantized GGUF held in memory (mmap), serving one generation at a time."""

    def __init__(self, model_path: Path, settings: ModelSettings) -> None:
        import llama_cpp

        llamacpp.load()  # before any model is loaded (see that module)

        self.path = model_path
        self.settings = settings
        self._lock = threading.Lock()
        self._abort = threading.Event()
        self._adapters: dict[str, tuple[Adapter, Any]] = {}  # key -> (adapter, llama.cpp handle)
        self._active: str | None = None  # key of the adapter set on the context
        self._owner: tuple[str | None, str | None] | None = None  # whose KV state the context holds
        threads = settings.threads or os.cpu_count() or 1
        self.placement = _placement(model_path, settings, llama_cpp.llama_supports_gpu_offload())
        started = time.monotonic()
        try:
            self._llm = llama_cpp.Llama(
                model_path=str(model_path),
                n_ctx=settings.context_length,
                n_threads=threads,
                n_threads_batch=threads,
                n_gpu_layers=self.placement.gpu_layers,
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
        self.device = self.placement.device
        log.info(
            kv(
                "model.loaded",
                name=self.name,
                arch=self.architecture,
                ctx=self.n_ctx,
                threads=threads,
                device=self.device,
                gpu_layers=self.placement.gpu_layers,
                why=self.placement.reason,
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
        adapter: Adapter | None = None,
        owner: str | None = None,
    ) -> Generation:
        """Generate under ``grammar`` with ``adapter`` (or the bare base) applied.

        Stops at the next token once ``cancel`` or abort is set. ``owner`` (a family id) keys the
        reusable prompt state with the adapter: another owner's state is never reused.
        """
        from llama_cpp import StoppingCriteriaList
        from llama_cpp.llama_grammar import LlamaGrammar

        def stop(_tokens: Any, _logits: Any) -> bool:
            return self._abort.is_set() or (cancel is not None and cancel.is_set())

        s = self.settings
        started = time.monotonic()
        with self._lock:
            self._use_adapter(adapter)
            self._claim(owner, adapter)
            prompt_tokens, room = self._prompt_tokens(prompt)
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

    def generate_checked(
        self,
        prompt: str,
        grammar: Grammar,
        max_tokens: int,
        seed: int | None = None,
        cancel: threading.Event | None = None,
        adapter: Adapter | None = None,
        owner: str | None = None,
    ) -> Generation:
        """``generate`` with the grammar checked on the sampled token only (``engine_sampling``).

        The same settings and stopping rules; the grammar is applied to the whole vocabulary
        only at the steps where the freely sampled token does not fit it.
        """
        from insan_edge.engine_sampling import decode_checked

        s = self.settings
        started = time.monotonic()
        with self._lock:
            self._use_adapter(adapter)
            self._claim(owner, adapter)
            llm = self._llm
            toks, room = self._prompt_tokens(prompt)
            self._eval_prompt(toks)
            out, finish, resampled = decode_checked(
                llm, grammar.gbnf, s, seed if seed is not None else s.seed,
                min(max_tokens, room),
                lambda: self._abort.is_set() or (cancel is not None and cancel.is_set()),
            )  # fmt: skip
            text = llm.detokenize(out).decode("utf-8", errors="replace")
        log.debug(kv("generation.checked", tokens=len(out), resampled=resampled))
        return Generation(
            text=text,
            prompt_tokens=len(toks),
            completion_tokens=len(out),
            seconds=time.monotonic() - started,
            finish_reason=finish,
        )

    def _prompt_tokens(self, prompt: str) -> tuple[list[int], int]:
        """The prompt's tokens (BOS first) and how many may follow it in the context; a prompt
        that leaves fewer than 16 is refused. The caller holds the lock."""
        toks = self._llm.tokenize(prompt.encode("utf-8"), add_bos=True)
        room = self.n_ctx - len(toks) - 1
        if room < 16:
            raise ModelError(
                f"the prompt ({len(toks)} tokens) leaves no room in the model's context ({self.n_ctx})"
            )
        return toks, room

    def _eval_prompt(self, toks: list[int]) -> int:
        """Evaluate the prompt ``toks``, reusing the prefix of it the context already holds (the
        caller holds the lock and has claimed the context); logits for the last position only.
        Returns how many tokens were reused: the last prompt token is always evaluated again."""
        llm = self._llm
        cached = llm.input_ids[: llm.n_tokens].tolist()
        same = 0
        for a, b in zip(cached, toks, strict=False):
            if a != b:
                break
            same += 1
        same = min(same, len(toks) - 1)
        llm.n_tokens = same
        llm.eval(toks[same:])
        return same

    def _claim(self, owner: str | None, adapter: Adapter | None) -> None:
        """Make the context's KV state ``owner``'s under ``adapter``; the caller holds the lock.

        The prompt prefix kept in the context is reused only by the same (owner, adapter): a
        different one starts from an empty cache.
        """
        key = (owner, adapter.key if adapter is not None else None)
        if self._owner != key:
            self._llm.reset()  # type: ignore[no-untyped-call]
            self._owner = key

    def score(
        self,
        prompt: str,
        continuations: Sequence[str],
        adapter: Adapter | None = None,
        owner: str | None = None,
        cancel: threading.Event | None = None,
    ) -> Scores:
        """Summed log-likelihood of each continuation right after ``prompt`` (BOS first).

        The prompt is evaluated once, with logits for its last token only, reusing whatever
        prefix of it the context already holds for the same (owner, adapter); each continuation
        is then evaluated after it, alone, and removed from the cache again. A continuation is
        tokenized on its own (no BOS), as the trainer tokenizes its targets. Stops early (the
        rest scored -inf) once ``cancel`` or abort is set.
        """
        import llama_cpp
        import numpy as np

        started = time.monotonic()
        with self._lock:
            self._use_adapter(adapter)
            self._claim(owner, adapter)
            llm = self._llm
            toks = llm.tokenize(prompt.encode("utf-8"), add_bos=True)
            conts = [
                llm.tokenize(c.encode("utf-8"), add_bos=False, special=False) for c in continuations
            ]
            longest = max((len(c) for c in conts), default=0)
            if len(toks) + longest + 1 > self.n_ctx:
                raise ModelError(
                    f"the prompt ({len(toks)} tokens) and a candidate ({longest}) do not fit in the"
                    f" model's context ({self.n_ctx})"
                )
            if any(not c for c in conts):
                raise ModelError("an empty candidate cannot be scored")
            same = self._eval_prompt(toks)
            n_p, n_vocab = llm.n_tokens, llm.n_vocab()
            first = np.ctypeslib.as_array(
                llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,)
            ).astype(np.float64)
            first_lp = first - _logsumexp(first)
            out: list[float] = []
            for cont in conts:
                if self._abort.is_set() or (cancel is not None and cancel.is_set()):
                    out.append(float("-inf"))
                    continue
                total = float(first_lp[cont[0]])
                body = cont[:-1]
                if len(cont) > 1:
                    for at in range(0, len(body), llm.n_batch):
                        part = body[at : at + llm.n_batch]
                        llm._batch.set_batch(batch=part, n_past=n_p + at, logits_all=True)
                        llm._ctx.decode(llm._batch)
                        rows = np.ctypeslib.as_array(
                            llama_cpp.llama_get_logits(llm.ctx), shape=(len(part), n_vocab)
                        ).astype(np.float64)
                        for j, row in enumerate(rows):
                            total += float(row[cont[at + j + 1]] - _logsumexp(row))
                    llm._ctx.kv_cache_seq_rm(-1, n_p, -1)
                out.append(total)
        return Scores(
            logprobs=out,
            tokens=[len(c) for c in conts],
            prompt_tokens=len(toks),
            reused_tokens=same,
            seconds=time.monotonic() - started,
        )

    def load_adapter(self, key: str, path: Path) -> Adapter:
        """Load the GGUF LoRA at ``path`` as ``key``; loading the same key and path again is a no-op.

        Raises ModelError when the file is missing or llama.cpp refuses it (not a LoRA GGUF, or
        made for another base), or when ``key`` is already loaded from another file.
        """
        import llama_cpp

        path = Path(path)
        with self._lock:
            known = self._adapters.get(key)
            if known is not None:
                if known[0].path == path:
                    return known[0]
                raise ModelError(f"adapter '{key}' is already loaded from {known[0].path}")
            try:
                with path.open("rb") as fh:
                    magic = fh.read(4)
            except OSError as exc:
                raise ModelError(f"cannot read the adapter file {path}: {exc.strerror}") from exc
            if magic != b"GGUF":
                raise ModelError(f"{path} is not a GGUF file (it does not start with 'GGUF')")
            started = time.monotonic()
            handle = llama_cpp.llama_adapter_lora_init(self._llm.model, str(path).encode("utf-8"))
            if not handle:
                raise ModelError(
                    f"llama.cpp refused the adapter {path}: it is not a LoRA GGUF for this model"
                    f" ({self.architecture}, {self.name})"
                )
            adapter = Adapter(key, path)
            self._adapters[key] = (adapter, handle)
        log.info(kv("adapter.loaded", key=key, ms=f"{1000 * (time.monotonic() - started):.1f}"))
        return adapter

    def unload_adapter(self, key: str) -> None:
        """Free the adapter ``key`` (no generation can be using it: they hold the lock)."""
        import llama_cpp

        with self._lock:
            known = self._adapters.get(key)
            if known is None:
                raise ModelError(f"adapter '{key}' is not loaded")
            if self._active == key:
                self._use_adapter(None)
            del self._adapters[key]
            llama_cpp.llama_adapter_lora_free(known[1])
        log.info(kv("adapter.unloaded", key=key))

    def _use_adapter(self, adapter: Adapter | None) -> None:
        """Set ``adapter`` (or none) on the context; the caller holds the lock.

        Every path that evaluates tokens must call this first. A change of adapter resets the
        context's KV cache, which was computed under the previous one.
        """
        import llama_cpp

        key = adapter.key if adapter is not None else None
        if adapter is not None:
            known = self._adapters.get(adapter.key)
            if known is None or known[0] != adapter:
                raise ModelError(f"adapter '{adapter.key}' is not loaded (or was replaced)")
        if key == self._active:
            return
        if adapter is None:
            rc = llama_cpp.llama_set_adapters_lora(self._llm.ctx, None, 0, None)
        else:
            handles = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._adapters[adapter.key][1])
            scales = (ctypes.c_float * 1)(1.0)
            rc = llama_cpp.llama_set_adapters_lora(self._llm.ctx, handles, 1, scales)
        self._llm.reset()  # type: ignore[no-untyped-call]  # whatever happens next, the cached tokens are stale
        self._owner = None
        if rc != 0:
            self._active = None
            llama_cpp.llama_set_adapters_lora(self._llm.ctx, None, 0, None)
            raise ModelError(f"llama.cpp could not apply adapter '{key}' (error {rc})")
        self._active = key

    def abort(self) -> None:
        """Make the running generation (and any later one) stop at its next token."""
        self._abort.set()

    def close(self) -> None:
        import llama_cpp

        with self._lock:
            if self._active is not None:
                llama_cpp.llama_set_adapters_lora(self._llm.ctx, None, 0, None)
                self._active = None
            for _adapter, handle in self._adapters.values():
                llama_cpp.llama_adapter_lora_free(handle)
            self._adapters.clear()
            self._llm.close()
