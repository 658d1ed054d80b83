"""The bounded LRU that holds plugged full models: built once under concurrency, evicts the oldest."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from model_owner_server.model_cache import LRUCache


def test_concurrent_first_requests_build_once_and_size_is_bounded() -> None:
    cache: LRUCache[str] = LRUCache(2)
    builds: list[str] = []
    lock = threading.Lock()

    def build(key: str) -> str:
        time.sleep(0.05)  # a slow plug-in: concurrent callers must wait for it, not build again
        with lock:
            builds.append(key)
        return f"model-{key}"

    with ThreadPoolExecutor(8) as pool:
        values = list(pool.map(lambda _: cache.get_or_build("a", lambda: build("a")), range(8)))
    assert values == ["model-a"] * 8 and builds == ["a"]
    cache.get_or_build("b", lambda: build("b"))
    cache.get_or_build("a", lambda: build("a"))  # touch a: b is now the oldest
    cache.get_or_build("c", lambda: build("c"))
    assert "a" in cache and "c" in cache and "b" not in cache
    assert builds == ["a", "b", "c"] and cache.hits == 8 and cache.misses == 3
