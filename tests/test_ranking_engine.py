"""Scoring catalog candidates on the tiny model: the trainer's quantity, one prompt evaluation,
and caches that never carry one family's (adapter's) state into another's."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
from tinymodel import TINY_CONFIG

from insan_edge import llamacpp
from insan_edge.config.system import ModelSettings
from insan_edge.engine import Adapter, Engine

PROMPT = 'the family game is fun for the kids\nIdeas as JSON:\n{"items": [{"title": "'
TITLES = ['movie night"', 'book of the kids"', 'a great show"', 'fun music"', 'the game"']


def random_lora(path: Path, seed: int, rank: int = 4) -> Path:
    """A random LoRA GGUF for the tiny model (q and v projections of every layer)."""
    rng = np.random.default_rng(seed)
    c = TINY_CONFIG
    kv = c.n_head_kv * c.head_dim
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(rank))
    for i in range(c.n_layer):
        for name, out in (("attn_q", c.n_embd), ("attn_v", kv)):
            a = (rng.standard_normal((rank, c.n_embd)) * 0.5).astype(np.float32)
            b = (rng.standard_normal((out, rank)) * 0.5).astype(np.float32)
            writer.add_tensor(f"blk.{i}.{name}.weight.lora_a", a)
            writer.add_tensor(f"blk.{i}.{name}.weight.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def loras(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("loras")
    return random_lora(d / "a.gguf", 1), random_lora(d / "b.gguf", 2)


def _engine(model: Path) -> Engine:
    return Engine(model, ModelSettings(context_length=512, threads=2))


def _reference(model: Path, prompt: str, titles: list[str]) -> list[float]:
    """Each title scored from scratch with logits for every position (the slow, plain way)."""
    llama_cpp = llamacpp.load()  # as the engine loads it
    llm = llama_cpp.Llama(model_path=str(model), n_ctx=512, logits_all=True, verbose=False)
    out = []
    try:
        for t in titles:
            llm.reset()
            p = llm.tokenize(prompt.encode(), add_bos=True)
            c = llm.tokenize(t.encode(), add_bos=False, special=False)
            llm.eval(p + c)
            rows = np.array(llm.scores[len(p) - 1 : len(p) + len(c) - 1], dtype=np.float64)
            top = rows.max(axis=1, keepdims=True)
            logz = (top + np.log(np.exp(rows - top).sum(axis=1, keepdims=True)))[:, 0]
            out.append(float(sum(rows[j, tok] - logz[j] for j, tok in enumerate(c))))
    finally:
        llm.close()
    return out


def test_scores_are_the_summed_log_likelihood_and_the_prompt_is_evaluated_once(
    tiny_model_path: Path,
) -> None:
    engine = _engine(tiny_model_path)
    try:
        first = engine.score(PROMPT, TITLES)
        assert first.reused_tokens == 0 and first.tokens == [
            len(engine._llm.tokenize(t.encode(), add_bos=False)) for t in TITLES
        ]
        np.testing.assert_allclose(
            first.logprobs, _reference(tiny_model_path, PROMPT, TITLES), atol=1e-3
        )
        again = engine.score(PROMPT, list(reversed(TITLES)))  # the prompt's KV state is reused
        assert again.reused_tokens == again.prompt_tokens - 1
        np.testing.assert_allclose(again.logprobs, list(reversed(first.logprobs)), atol=1e-6)
        # A longer prompt that starts with the cached one reuses that prefix too.
        longer = engine.score(PROMPT + "x", TITLES[:1])
        assert longer.reused_tokens >= first.prompt_tokens - 1
    finally:
        engine.close()


def test_two_families_served_alternately_get_what_each_gets_alone(
    tiny_model_path: Path, loras: tuple[Path, Path]
) -> None:
    def serve(order: list[str]) -> dict[str, list[list[float]]]:
        engine = _engine(tiny_model_path)
        adapters: dict[str, Adapter | None] = {
            "fam-a": engine.load_adapter("fam-a@v1", loras[0]),
            "fam-b": engine.load_adapter("fam-b@v1", loras[1]),
            "fam-c": None,  # no adapter yet: the base model
        }
        got: dict[str, list[list[float]]] = {f: [] for f in adapters}
        try:
            for family in order:
                got[family].append(
                    engine.score(PROMPT, TITLES, adapter=adapters[family], owner=family).logprobs
                )
        finally:
            engine.close()
        return got

    alone = {f: serve([f, f])[f] for f in ("fam-a", "fam-b", "fam-c")}
    mixed = serve(["fam-a", "fam-b", "fam-a", "fam-c", "fam-b", "fam-c", "fam-a"])
    for family, runs in mixed.items():
        for run in runs:
            np.testing.assert_allclose(run, alone[family][0], atol=1e-6)
    # The adapters matter (else the test could not fail): each family ranks by its own model.
    assert np.abs(np.subtract(alone["fam-a"][0], alone["fam-b"][0])).max() > 1e-3
    assert np.abs(np.subtract(alone["fam-a"][0], alone["fam-c"][0])).max() > 1e-3


def test_a_candidate_that_does_not_fit_is_refused(tiny_model_path: Path) -> None:
    from insan_edge.errors import ModelError

    engine = _engine(tiny_model_path)
    try:
        with pytest.raises(ModelError, match="do not fit"):
            engine.score(PROMPT, ["word " * 600])
        with pytest.raises(ModelError, match="empty candidate"):
            engine.score(PROMPT, [""])
        assert len(engine.score(PROMPT, TITLES[:2]).logprobs) == 2  # still serving
    finally:
        engine.close()


def test_checked_grammar_sampling_always_writes_what_the_grammar_allows(
    tiny_model_path: Path,
) -> None:
    import json
    import threading

    from insan_edge.engine import schema_to_gbnf
    from insan_edge.prompts import output_schema, token_budget

    engine = Engine(tiny_model_path, ModelSettings(context_length=2048, threads=2))
    try:
        schema = output_schema(2, ["craft", "book"], ["G", "PG"], title_max=20, description_max=40)
        grammar = engine.grammar(schema_to_gbnf(schema))
        for seed in range(4):
            out = engine.generate_checked(
                "Ideas as JSON:\n", grammar, token_budget(2, 20, 40), seed=seed
            )
            items = json.loads(out.text)["items"]  # strict JSON, never cut short
            assert out.finish_reason == "stop" and len(items) == 2
            # (titles are checked by code point in the grammar; the tiny model's byte tokens can
            # write invalid UTF-8 leads the grammar's char class admits, so no length check here)
            assert all(i["title"] and i["category"] in {"craft", "book"} for i in items)
        # A grammar the random model would never pick a token of: every step is resampled.
        forced = engine.grammar('root ::= "zq{]zq" [0-9] "!"')
        out = engine.generate_checked("hello", forced, 50, seed=1)
        assert (
            out.text.startswith("zq{]zq") and out.text.endswith("!") and out.finish_reason == "stop"
        )
        # Cut at max_tokens: what was written so far, no abort.
        cut = engine.generate_checked("Ideas as JSON:\n", grammar, 5, seed=1)
        assert cut.finish_reason == "length" and cut.completion_tokens == 5
        stop = threading.Event()
        stop.set()
        assert engine.generate_checked("x", grammar, 50, cancel=stop).finish_reason == "cancelled"
    finally:
        engine.close()


def test_lift_scores_are_the_prompt_minus_the_reference_kept_per_adapter(
    tiny_model_path: Path, loras: tuple[Path, Path]
) -> None:
    """``rank`` with a reference (lift scoring): each item's score is its log-likelihood after
    the request's prompt minus that after the reference prompt, under the same adapter; the
    reference scores are computed once per (adapter, prompt, title) and never shared between
    adapters."""
    from insan_edge import ranking
    from insan_edge.catalog import CatalogItem
    from insan_edge.config.family import Family
    from insan_edge.kept import Kept
    from insan_edge.prompts import ANSWER_PREFIX, PromptPlan

    family = Family.model_validate({"members": {"kim": {"name": "Kim", "age": 9, "role": "child"}}})
    titles = [t.removesuffix('"') for t in TITLES]
    items = [CatalogItem(i, "*", t, t, "activity", "G", (), 0, 99, "starter") for i, t in enumerate(titles)]  # fmt: skip
    short = ranking.Shortlist([(item, 0, []) for item in items], [], len(items))
    prompt = PROMPT.removesuffix(ANSWER_PREFIX)
    reference = "the family\nIdeas as JSON:\n"
    plan = PromptPlan(prompt, {"kim": "G"}, ["activity"], ["G"])
    engine = _engine(tiny_model_path)
    kept: ranking.ReferenceKept = Kept(100)
    try:
        a = engine.load_adapter("fam-a@v1", loras[0])
        b = engine.load_adapter("fam-b@v1", loras[1])
        for adapter in (a, b, None):
            owner = adapter.key if adapter else "base"
            ranked, _ = ranking.rank(
                engine, short, plan=plan, family=family, targets=["kim"], count=len(items),
                adapter=adapter, owner=owner, reference=(reference, kept),
            )  # fmt: skip
            direct = engine.score(PROMPT, TITLES, adapter=adapter, owner=owner).logprobs
            ref = engine.score(reference + ANSWER_PREFIX, TITLES, adapter=adapter).logprobs
            want = {t: d - r for t, d, r in zip(titles, direct, ref, strict=True)}
            assert [r.item.title for r in ranked] == sorted(titles, key=lambda t: -want[t])
            np.testing.assert_allclose([r.logprob for r in ranked], sorted(want.values(), reverse=True), atol=1e-4)  # fmt: skip
            # The lift differs from the plain likelihood (else the test could not fail).
            assert max(abs(want[t] - d) for t, d in zip(titles, direct, strict=True)) > 1e-3
        assert kept.misses == 3 * len(titles) and kept.hits == 0  # one reference per adapter
        again, _ = ranking.rank(
            engine, short, plan=plan, family=family, targets=["kim"], count=2, adapter=a,
            owner="fam-a", reference=(reference, kept),
        )  # fmt: skip
        assert kept.hits == len(titles)  # the reference was kept, not scored again
        assert len(again) == 2
    finally:
        engine.close()
