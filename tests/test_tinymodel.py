"""The tiny random GGUF model loads in llama.cpp and obeys grammars."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
from llama_cpp import Llama
from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf
from tinymodel import BOS_ID, EOS_ID, SPACE, build_tiny_gguf, tiny_vocab

from insan_edge import llamacpp

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "minItems": 2,
            "maxItems": 2,
            "items": {
                "type": "object",
                "properties": {
                    "title": {"type": "string", "maxLength": 40},
                    "content_rating": {"enum": ["G", "PG", "PG-13", "R"]},
                },
                "required": ["title", "content_rating"],
            },
        }
    },
    "required": ["items"],
}


@pytest.fixture(scope="module")
def llm(tiny_model_path: pathlib.Path) -> Iterator[Llama]:
    llamacpp.load()  # as the engine loads it: its model defaults first (see that module)
    model = Llama(model_path=str(tiny_model_path), n_ctx=512, verbose=False)
    yield model
    model.close()


def _complete(llm: Llama, prompt: str, **kwargs: Any) -> str:
    result = llm.create_completion(prompt, **kwargs)
    assert isinstance(result, dict)
    text = result["choices"][0]["text"]
    assert isinstance(text, str)
    return text


def test_same_seed_gives_identical_bytes(tmp_path: pathlib.Path) -> None:
    first = build_tiny_gguf(tmp_path / "a.gguf", seed=3).read_bytes()
    second = build_tiny_gguf(tmp_path / "b.gguf", seed=3).read_bytes()
    other = build_tiny_gguf(tmp_path / "c.gguf", seed=4).read_bytes()
    assert first == second
    assert first != other
    assert len(first) < 1_000_000


def test_vocab_and_special_tokens(llm: Llama) -> None:
    pieces, _, _ = tiny_vocab()
    assert llm.n_vocab() == len(pieces) < 600
    assert (llm.token_bos(), llm.token_eos()) == (BOS_ID, EOS_ID)
    assert llm.tokenize(b"hi", add_bos=True)[0] == BOS_ID


@pytest.mark.parametrize(
    "text",
    [
        "hello world",
        ' {"title": "The Lion King", "content_rating": "PG-13", "for_members": [1, 2]}',
        "tabs\tand\nnewlines,  double  spaces ",
        "caf\u00e9 \U0001f642 na\u00efve \u2014 \u65e5\u672c",
        "quotes ' \" \\ and digits 0123456789",
    ],
)
def test_tokenize_round_trips(llm: Llama, text: str) -> None:
    tokens = llm.tokenize(text.encode(), add_bos=False)
    assert BOS_ID not in tokens
    assert llm.detokenize(tokens).decode() == text


def test_word_pieces_are_merged(llm: Llama) -> None:
    pieces, _, _ = tiny_vocab()
    tokens = llm.tokenize(b'"title": the family', add_bos=False)
    assert [pieces[t] for t in tokens] == ['"', "title", '"', ":", SPACE + "the", SPACE + "family"]


def test_non_ascii_uses_byte_fallback(llm: Llama) -> None:
    pieces, _, _ = tiny_vocab()
    tokens = llm.tokenize("\u00e9".encode(), add_bos=False)
    assert [pieces[t] for t in tokens] == ["<0xC3>", "<0xA9>"]


def test_generates_unconstrained_text(llm: Llama) -> None:
    result = llm.create_completion("Hello", max_tokens=8, temperature=0.7, seed=1)
    assert isinstance(result, dict)
    assert result["usage"]["completion_tokens"] > 0


def _check_schema(data: Any) -> None:
    assert set(data) == {"items"}
    assert len(data["items"]) == 2
    for item in data["items"]:
        assert set(item) == {"title", "content_rating"}
        assert isinstance(item["title"], str)
        assert len(item["title"]) <= 40
        assert item["content_rating"] in {"G", "PG", "PG-13", "R"}


def _schema_completion(llm: Llama, grammar: LlamaGrammar, seed: int) -> str:
    return _complete(
        llm, "Recommend two movies as JSON:", grammar=grammar, max_tokens=400,
        temperature=0.7, seed=seed,
    )  # fmt: skip


def _strict_schema_grammar() -> LlamaGrammar:
    """The library's schema grammar, with JSON's ban on raw control characters in strings."""
    gbnf = json_schema_to_gbnf(json.dumps(SCHEMA))
    lenient_char = r'char ::= [^"\\]'
    assert lenient_char in gbnf
    return LlamaGrammar.from_string(
        gbnf.replace(lenient_char, r'char ::= [^"\\\x7F\x00-\x1F]'), verbose=False
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_library_schema_grammar_output_fits_schema(llm: Llama, seed: int) -> None:
    grammar = LlamaGrammar.from_json_schema(json.dumps(SCHEMA), verbose=False)
    # strict=False: llama-cpp-python 0.3.36 lets raw control characters into strings (below).
    _check_schema(json.loads(_schema_completion(llm, grammar, seed), strict=False))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_strict_schema_grammar_output_is_valid_json(llm: Llama, seed: int) -> None:
    _check_schema(json.loads(_schema_completion(llm, _strict_schema_grammar(), seed)))


@pytest.mark.xfail(
    strict=True,
    raises=json.JSONDecodeError,
    reason="llama-cpp-python 0.3.36's json-schema grammar has char ::= [^\"\\\\], which admits "
    "raw control characters; this random model emits them (byte tokens) and strict JSON fails",
)
def test_library_schema_grammar_output_is_strict_json(llm: Llama) -> None:
    grammar = LlamaGrammar.from_json_schema(json.dumps(SCHEMA), verbose=False)
    json.loads(_schema_completion(llm, grammar, seed=1))


@pytest.mark.parametrize(
    "forced",
    [
        '{"title": "Paddington 2", "content_rating": "PG"}',
        '{"reason": "caf\u00e9 \U0001f642 night", "for_members": ["Ana", "Bo"]}',
    ],
)
def test_exact_grammar_forces_the_output(llm: Llama, forced: str) -> None:
    literal = json.dumps(forced, ensure_ascii=False)  # GBNF string literals escape like JSON
    grammar = LlamaGrammar.from_string(f"root ::= {literal}", verbose=False)
    text = _complete(llm, "Say it:", grammar=grammar, max_tokens=200, temperature=0.7, seed=5)
    assert text == forced
