"""A parent's own word on titles and phrases: the allow-list and the deny-list.

Both are lists of titles or phrases in the config, per family and per member. A deny phrase
matches anywhere in an item's title or description; an allow phrase only in its title (a
description that mentions an allowed show in passing is not that show). Matching ignores case,
quotes and punctuation and takes whole words only.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from insan_edge.titles import key


@functools.lru_cache(maxsize=4096)
def _phrase(phrase: str) -> re.Pattern[str] | None:
    k = key(phrase)
    if not k:
        return None
    return re.compile(r"(?<![a-z0-9])" + re.escape(k) + r"(?![a-z0-9])")


def first_match(phrases: Sequence[str], *texts: str) -> str | None:
    """The first phrase found in any of ``texts``, as the parent wrote it."""
    keys = [key(t) for t in texts]
    for phrase in phrases:
        pattern = _phrase(phrase)
        if pattern is not None and any(pattern.search(k) for k in keys):
            return phrase
    return None
