"""The bounded LRU map the embeddings, topic readings and guard ratings share."""

from __future__ import annotations

from insan_edge.kept import Kept


def test_it_counts_distinct_keys_refreshes_what_it_finds_and_drops_the_least_recent() -> None:
    kept: Kept[str, int] = Kept(2)
    assert kept.found(["a", "a", "b"]) == {} and (kept.hits, kept.misses) == (0, 2)
    kept.keep({"a": 1, "b": 2})
    assert kept.found(["a"]) == {"a": 1}  # "a" is now the most recent
    kept.keep({"c": 3})
    assert len(kept) == 2 and kept.found(["a", "b", "c"]) == {"a": 1, "c": 3}
    assert (kept.hits, kept.misses) == (3, 3)


def test_size_zero_keeps_nothing() -> None:
    kept: Kept[str, int] = Kept(0)
    kept.keep({"a": 1})
    assert len(kept) == 0 and kept.found(["a"]) == {}
