"""Build a tiny random llama-architecture GGUF model for fast serving tests.

The model is untrained (random weights), so its free text is noise; tests get meaningful output
by constraining it with a grammar. Nothing is downloaded: only numpy and the ``gguf`` package.

The vocabulary is SentencePiece-style: ``<unk>``, ``<s>``, ``</s>``, the 256 byte-fallback
tokens, ``▁`` and the printable ASCII characters, then a few common words. llama.cpp's SPM
tokenizer only merges *adjacent pairs* whose concatenation is itself a token, so a word piece is
reachable only if every prefix of it is in the vocabulary too: all prefixes are added.
Text round-trips through tokenize/detokenize, except a literal "▁" in the input, which comes
back as a space (SentencePiece's escape cannot tell the two apart).
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

import gguf
import numpy as np

SPACE = "\u2581"  # SentencePiece's visible space, "▁"
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2

# Words that follow a space in prose ("▁the") and words that follow a quote in JSON ("title").
_PROSE_WORDS = (
    "the", "a", "an", "and", "of", "to", "in", "is", "for", "with", "on", "this", "that",
    "you", "your", "family", "movie", "book", "game", "show", "music", "fun", "kids", "great",
)  # fmt: skip
_JSON_WORDS = (
    "title", "description", "category", "reason", "content_rating", "for_members", "items",
    "true", "false", "null", "PG",
)  # fmt: skip


@dataclass(frozen=True)
class TinyConfig:
    """Hyper-parameters of the tiny model (llama architecture)."""

    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 128
    n_ctx_train: int = 1024
    rms_eps: float = 1e-5
    weight_std: float = 0.02
    # The output layer's spread. At weight_std the final RMSNorm caps every logit near 1, so no
    # adapter can make a token confident; training tests use a wider output layer.
    output_std: float | None = None

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


TINY_CONFIG = TinyConfig()
TRAINABLE_CONFIG = TinyConfig(output_std=0.5)


def _with_prefixes(piece: str) -> list[str]:
    """The piece and every prefix of it that is two or more characters long."""
    return [piece[:n] for n in range(2, len(piece) + 1)]


def tiny_vocab() -> tuple[list[str], list[float], list[int]]:
    """Token pieces, scores and token types, in id order."""
    pieces = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    pieces += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256

    normal = [SPACE] + [chr(c) for c in range(0x21, 0x7F)]
    for word in _PROSE_WORDS:
        normal += _with_prefixes(SPACE + word)
    for word in _JSON_WORDS:
        normal += _with_prefixes(word)
    normal = list(dict.fromkeys(normal))  # drop repeats, keep first-seen order
    pieces += normal
    types += [gguf.TokenType.NORMAL] * len(normal)

    # SPM merges the pair whose result scores highest: prefer longer pieces.
    scores = [0.0] * (3 + 256) + [float(len(p)) for p in normal]
    return pieces, scores, [int(t) for t in types]


def _tensors(config: TinyConfig, n_vocab: int, seed: int) -> dict[str, np.ndarray]:
    """Random f32 weights, numpy shape (out_features, in_features) as GGUF expects."""
    rng = np.random.default_rng(seed)
    d, ff, kv = config.n_embd, config.n_ff, config.n_head_kv * config.head_dim

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * config.weight_std).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    out: dict[str, np.ndarray] = {"token_embd.weight": rand(n_vocab, d)}
    for i in range(config.n_layer):
        out |= {
            f"blk.{i}.attn_norm.weight": ones(d),
            f"blk.{i}.attn_q.weight": rand(d, d),
            f"blk.{i}.attn_k.weight": rand(kv, d),
            f"blk.{i}.attn_v.weight": rand(kv, d),
            f"blk.{i}.attn_output.weight": rand(d, d),
            f"blk.{i}.ffn_norm.weight": ones(d),
            f"blk.{i}.ffn_gate.weight": rand(ff, d),
            f"blk.{i}.ffn_up.weight": rand(ff, d),
            f"blk.{i}.ffn_down.weight": rand(d, ff),
        }
    out["output_norm.weight"] = ones(d)
    out["output.weight"] = rand(n_vocab, d)
    if config.output_std is not None:
        out["output.weight"] *= np.float32(config.output_std / config.weight_std)
    return out


def build_tiny_gguf(
    path: pathlib.Path, seed: int = 0, config: TinyConfig = TINY_CONFIG
) -> pathlib.Path:
    """Write a tiny random llama GGUF model to ``path``; the same seed gives the same bytes."""
    pieces, scores, types = tiny_vocab()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("insan-edge tiny test model")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_vocab_size(len(pieces))
    writer.add_context_length(config.n_ctx_train)
    writer.add_embedding_length(config.n_embd)
    writer.add_block_count(config.n_layer)
    writer.add_feed_forward_length(config.n_ff)
    writer.add_head_count(config.n_head)
    writer.add_head_count_kv(config.n_head_kv)
    writer.add_layer_norm_rms_eps(config.rms_eps)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(10000.0)

    writer.add_tokenizer_model("llama")
    writer.add_token_list(pieces)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(UNK_ID)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    # No implicit leading space, so detokenize(tokenize(text)) == text (Gemma behaves so too).
    writer.add_add_space_prefix(False)

    for name, array in _tensors(config, len(pieces), seed).items():
        writer.add_tensor(name, array)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
