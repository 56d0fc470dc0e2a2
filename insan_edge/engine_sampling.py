"""Grammar-constrained sampling that checks one token, not the vocabulary (used by ``engine``).

llama-cpp-python's sampler chain applies the grammar to every candidate of the 262k-token Gemma
vocabulary at every step. As llama.cpp's own sampler does, this samples without the grammar
first (penalties, top-k, top-p, temperature, distribution), tests that one token against the
grammar, and only when it is rejected applies the grammar to the full candidates and samples
again. A token is accepted into the grammar only after the grammar allowed it, so the
"empty grammar stack" abort cannot be reached; when nothing is allowed, generation stops.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable
from typing import Any


class GrammarSampler:
    """One generation's samplers over ``llm``'s vocabulary; free with ``close``."""

    def __init__(self, llm: Any, gbnf: str, settings: Any, seed: int | None) -> None:
        import llama_cpp
        import numpy as np

        self._l = llama_cpp
        self.n_vocab = int(llm.n_vocab())
        vocab = llm._model.vocab
        self.grammar = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
        if not self.grammar:
            raise ValueError("the grammar does not parse")
        self.chain = llama_cpp.llama_sampler_chain_init(
            llama_cpp.llama_sampler_chain_default_params()
        )
        add = llama_cpp.llama_sampler_chain_add
        add(
            self.chain,
            llama_cpp.llama_sampler_init_penalties(  # as llama-cpp-python calls it
                self.n_vocab, 64, settings.repeat_penalty, settings.frequency_penalty, 0.0
            ),
        )
        add(self.chain, llama_cpp.llama_sampler_init_top_k(settings.top_k))
        add(self.chain, llama_cpp.llama_sampler_init_top_p(settings.top_p, 1))
        add(self.chain, llama_cpp.llama_sampler_init_temp(settings.temperature))
        add(
            self.chain,
            llama_cpp.llama_sampler_init_dist(
                seed if seed is not None else llama_cpp.LLAMA_DEFAULT_SEED
            ),
        )
        self._buf = (llama_cpp.llama_token_data * self.n_vocab)()
        self._view = np.ctypeslib.as_array(self._buf)
        self._ids = np.arange(self.n_vocab, dtype=np.int32)
        self._one = (llama_cpp.llama_token_data * 1)()
        self.resampled = 0

    def _fill(self, logits: Any) -> Any:
        self._view["id"] = self._ids
        self._view["logit"] = logits
        self._view["p"] = 0.0
        return self._l.llama_token_data_array(
            data=ctypes.cast(self._buf, ctypes.POINTER(self._l.llama_token_data)),
            size=self.n_vocab,
            selected=-1,
            sorted=False,
        )

    def _allowed(self, token: int) -> bool:
        one_item = self._one[0]
        one_item.id, one_item.logit, one_item.p = token, 1.0, 0.0  # type: ignore[assignment]
        one = self._l.llama_token_data_array(
            data=ctypes.cast(self._one, ctypes.POINTER(self._l.llama_token_data)),
            size=1,
            selected=-1,
            sorted=False,
        )
        self._l.llama_sampler_apply(self.grammar, ctypes.byref(one))
        return not math.isinf(self._one[0].logit)

    def sample(self, logits: Any) -> int | None:
        """The next token for these logits, accepted by the grammar; None when none fits."""
        arr = self._fill(logits)
        self._l.llama_sampler_apply(self.chain, ctypes.byref(arr))
        token = int(arr.data[arr.selected].id) if arr.selected >= 0 else -1
        if token < 0 or not self._allowed(token):
            self.resampled += 1
            arr = self._fill(logits)
            self._l.llama_sampler_apply(self.grammar, ctypes.byref(arr))
            import numpy as np

            logit = self._view["logit"]  # the grammar marks refused tokens -inf, in place
            fits = np.isfinite(logit)
            if not fits.any():
                return None
            best = int(self._view["id"][int(np.argmax(np.where(fits, logit, -np.inf)))])
            self._l.llama_sampler_apply(self.chain, ctypes.byref(arr))
            token = int(arr.data[arr.selected].id) if arr.selected >= 0 else -1
            if token < 0 or not self._allowed(token):  # the chain kept a refused one
                token = best
                if not self._allowed(token):
                    return None
        self._l.llama_sampler_accept(self.grammar, token)
        self._l.llama_sampler_accept(self.chain, token)
        return token

    def close(self) -> None:
        self._l.llama_sampler_free(self.chain)
        self._l.llama_sampler_free(self.grammar)


def decode_checked(
    llm: Any, gbnf: str, settings: Any, seed: int | None, limit: int, stopped: Callable[[], bool]
) -> tuple[list[int], str, int]:
    """Up to ``limit`` tokens after the prompt ``llm`` has just evaluated: (tokens, finish
    reason, how many steps resampled under the grammar). ``stopped()`` is asked before each."""
    import llama_cpp
    import numpy as np

    sampler = GrammarSampler(llm, gbnf, settings, seed)
    out: list[int] = []
    finish = "length"
    vocab = llm._model.vocab
    try:
        while len(out) < limit:
            if stopped():
                finish = "cancelled"
                break
            logits = np.ctypeslib.as_array(
                llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(sampler.n_vocab,)
            )
            token = sampler.sample(logits)
            if token is None or llama_cpp.llama_vocab_is_eog(vocab, token):
                finish = "stop"
                break
            out.append(token)
            llm.eval([token])
    finally:
        resampled = sampler.resampled
        sampler.close()
    return out, finish, resampled
