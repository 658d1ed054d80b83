"""Recently verified API keys, so that most requests authenticate without a database round trip
and without a thread hop (the p99 of the metadata endpoints under 32 clients, `bench http`).

Entries are keyed by the key's sha256 (the key itself is not kept) and expire after
`SCALEOT_AUTH_CACHE_S` seconds. Only accepted keys are cached: a wrong key always reaches the
database. Revoking through this process's API clears the cache at once; a revocation made elsewhere
(another API process) takes effect here within the TTL. An entry's TTL counts from the moment its
database check began (`checked_at`), so no entry outlives a revocation committed after that moment by
more than the TTL: `scaleot-server keys revoke` waits that long before it returns, and from then on
every API process refuses the key, whichever host it runs on.
"""

from __future__ import annotations

import threading
import time
from typing import Generic, TypeVar

P = TypeVar("P")


class KeyCache(Generic[P]):
    def __init__(self, ttl_s: float, max_entries: int = 4096) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, P]] = {}
        self._lock = threading.Lock()  # written from the thread pool, read on the event loop

    def get(self, digest: str) -> P | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            with self._lock:
                self._entries.pop(digest, None)
            return None
        return entry[1]

    def put(self, digest: str, principal: P, checked_at: float | None = None) -> None:
        """Remember an accepted key until `checked_at` (time.monotonic() when its database read began;
        default now) plus the TTL."""
        if self.ttl_s <= 0:
            return
        start = time.monotonic() if checked_at is None else checked_at
        with self._lock:
            if len(self._entries) >= self.max_entries:  # many distinct keys: start over rather than grow
                self._entries.clear()
            self._entries[digest] = (start + self.ttl_s, principal)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
