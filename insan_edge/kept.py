"""A bounded, thread-safe LRU map with hit and miss counts: what the topic model's embeddings,
the topic index's readings and the guard's ratings keep per text."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Kept(Generic[K, V]):
    def __init__(self, size: int) -> None:
        self.size = max(0, size)  # 0 keeps nothing
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def found(self, keys: Iterable[K]) -> dict[K, V]:
        """The kept values of ``keys``, each now the most recent; every distinct key counts once
        as a hit or a miss."""
        out: dict[K, V] = {}
        with self._lock:
            for key in dict.fromkeys(keys):
                if key in self._items:
                    self._items.move_to_end(key)
                    out[key] = self._items[key]
                    self.hits += 1
                else:
                    self.misses += 1
        return out

    def keep(self, items: Mapping[K, V]) -> None:
        """Keep ``items`` as the most recent, dropping the least recent beyond ``size``."""
        with self._lock:
            for key, value in items.items():
                self._items[key] = value
                self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
