"""llama.cpp behind the engine, on the tiny model: grammars, strict JSON, cut-off answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from insan_edge.config.system import ModelSettings
from insan_edge.engine import Engine, schema_to_gbnf
from insan_edge.errors import ModelError
from insan_edge.generation import parse_items
from insan_edge.prompts import output_schema, token_budget


@pytest.fixture(scope="module")
def engine(tiny_model_path: Path) -> Engine:
    e = Engine(tiny_model_path, ModelSettings(context_length=2048, threads=2))
    yield e  # type: ignore[misc]
    e.close()


def test_grammars_llama_cpp_cannot_parse_are_refused(engine: Engine) -> None:
    with pytest.raises(ModelError, match="does not parse"):
        engine.grammar("root ::= undefined-rule")
    with pytest.raises(ModelError, match="does not parse"):
        engine.grammar('root ::= "unterminated')
    assert engine.grammar('root ::= "ok"').gbnf == 'root ::= "ok"'


@pytest.mark.parametrize("seed", range(6))
def test_schema_output_is_strict_json_within_bounds(engine: Engine, seed: int) -> None:
    schema = output_schema(2, ["craft", "book"], ["G", "PG"], title_max=20, description_max=40)
    grammar = engine.grammar(schema_to_gbnf(schema))
    out = engine.generate("Ideas as JSON:\n", grammar, token_budget(2, 20, 40), seed=seed)
    data = json.loads(out.text)  # strict: no raw control characters inside strings
    assert out.finish_reason == "stop"
    assert len(data["items"]) == 2
    for item in data["items"]:
        assert set(item) == {"title", "description", "category", "content_rating", "reason"}
        assert 3 <= len(item["title"]) <= 20 and 10 <= len(item["description"]) <= 40
        assert item["category"] in {"craft", "book"} and item["content_rating"] in {"G", "PG"}


def test_prompt_that_does_not_fit_is_refused(engine: Engine) -> None:
    grammar = engine.grammar('root ::= "x"')
    with pytest.raises(ModelError, match="no room"):
        engine.generate("word " * 3000, grammar, 10)


def test_cut_off_answers_keep_their_complete_items() -> None:
    full = '{"items": [{"title": "A", "x": 1}, {"title": "B", "x": 2}, {"title": "C", "x'
    assert [i["title"] for i in parse_items(full)] == ["A", "B"]
    assert parse_items('{"items": [{"title": "A"}]}') == [{"title": "A"}]
    assert parse_items("garbage") == []
    assert parse_items('{"items": "nope"}') == []
