"""Bounded in-process caches of loaded models: base models, and full models with an adapter plugged in.

Loading SmolLM2 takes ~2 s and plugging in an adapter copies and merges its blocks (the rest is
shared with the base, see plug_in), so repeated requests reuse them. Both are LRU with a fixed size
(settings), guarded by a lock per key so that concurrent first requests build a model once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

import torch

from model_owner_server.base_models import LoadedBase, load_base_model

V = TypeVar("V")


class LRUCache(Generic[V]):
    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, V] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self.hits = 0
        self.misses = 0
        self.on_discard: list[Callable[[str], None]] = []  # others that keep a key's derived state forget it too

    def get_or_build(self, key: str, build: Callable[[], V]) -> V:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._items:  # built by a concurrent request while we waited
                    self.hits += 1
                    return self._items[key]
            value = build()
            with self._lock:
                self.misses += 1
                self._items[key] = value
                self._items.move_to_end(key)
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
                self._key_locks.pop(key, None)
            return value

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._items

    def discard(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)
        for forget in self.on_discard:
            forget(key)


class BaseModelCache:
    """Loaded base models by name (the registry's `load_base_model`, cached), in the service's dtype."""

    def __init__(self, size: int, dtype: torch.dtype = torch.float32) -> None:
        self._cache: LRUCache[LoadedBase] = LRUCache(size)
        self.dtype = dtype

    def get(self, name: str) -> LoadedBase:
        return self._cache.get_or_build(name, lambda: load_base_model(name, self.dtype))
