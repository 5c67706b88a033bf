"""The in-memory backend: a size-bounded LRU, alone (`--cache memory`) or in front of a store.

Alone it lives as long as the process (tests, one-off runs). In front of SQLite or Redis
(`LayeredStore`) it answers repeated reads of the same keys without a round trip; anything
that decides between processes (leases, freshness of a key another process may have just
refreshed) goes to the shared store.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from scanctl.cache.store import (
    DEFAULT_RETENTION,
    RUNS_KEPT,
    CacheKey,
    CacheStats,
    CacheStore,
    Claim,
    Entry,
)

DEFAULT_MAX_ENTRIES = 10_000


class MemoryStore:
    """An LRU of entries plus leases and runs, all in this process."""

    backend = "memory"

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.location = "memory"
        self.max_entries = max_entries
        self._entries: OrderedDict[CacheKey, Entry] = OrderedDict()
        self._leases: dict[CacheKey, tuple[str, float]] = {}
        self._runs: list[dict[str, Any]] = []

    def get_many(self, keys: Sequence[CacheKey]) -> dict[CacheKey, Entry]:
        found = {}
        for key in keys:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                found[key] = entry
        return found

    def set_many(self, entries: Sequence[Entry], owner: str | None = None) -> None:
        for entry in entries:
            self._entries[entry.key] = entry
            self._entries.move_to_end(entry.key)
            if owner is not None and self._leases.get(entry.key, ("",))[0] == owner:
                del self._leases[entry.key]
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def claim(
        self, key: CacheKey, owner: str, lease_seconds: float, newer_than: float, now: float
    ) -> Claim:
        entry = self._entries.get(key)
        if entry is not None and entry.fresh(now) and entry.fetched_at > newer_than:
            return Claim(False, entry)
        holder = self._leases.get(key)
        if holder is not None and holder[0] != owner and holder[1] > now:
            return Claim(False)
        self._leases[key] = (owner, now + lease_seconds)
        return Claim(True)

    def release(self, keys: Sequence[CacheKey], owner: str) -> None:
        for key in keys:
            if self._leases.get(key, ("",))[0] == owner:
                del self._leases[key]

    def invalidate(
        self,
        *,
        namespace: str | None = None,
        type_name: str | None = None,
        older_than: float | None = None,
    ) -> int:
        doomed = [
            key
            for key, entry in self._entries.items()
            if (namespace is None or key.namespace == namespace)
            and (type_name is None or key.type == type_name)
            and (older_than is None or entry.fetched_at < older_than)
        ]
        for key in doomed:
            del self._entries[key]
        return len(doomed)

    def prune(self, now: float, retention: float = DEFAULT_RETENTION) -> int:
        doomed = [k for k, e in self._entries.items() if e.expires_at < now - retention]
        for key in doomed:
            del self._entries[key]
        return len(doomed)

    def stats(self, now: float) -> CacheStats:
        stats = CacheStats(self.backend, self.location, None)
        for entry in self._entries.values():
            stats.count(entry, now)
        return stats

    def add_run(self, run: dict[str, Any]) -> None:
        self._runs.insert(0, dict(run))
        del self._runs[RUNS_KEPT:]

    def runs(self, limit: int = RUNS_KEPT) -> list[dict[str, Any]]:
        return [dict(r) for r in self._runs[:limit]]

    def close(self) -> None:
        pass


class LayeredStore:
    """A memory LRU in front of a shared store: reads fill it, writes go to both.

    Only fresh memory entries are answered from memory; anything expired there is read from the
    shared store, where another process may have refreshed it. Leases, invalidation, stats and
    runs belong to the shared store.
    """

    def __init__(
        self,
        shared: CacheStore,
        memory: MemoryStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.shared = shared
        self.memory = memory or MemoryStore()
        self.backend = shared.backend
        self.location = shared.location
        self._now = clock

    def get_many(self, keys: Sequence[CacheKey]) -> dict[CacheKey, Entry]:
        now = self._now()
        found = {k: e for k, e in self.memory.get_many(keys).items() if e.fresh(now)}
        missing = [k for k in keys if k not in found]
        if missing:
            loaded = self.shared.get_many(missing)
            self.memory.set_many(list(loaded.values()))
            found.update(loaded)
        return found

    def set_many(self, entries: Sequence[Entry], owner: str | None = None) -> None:
        self.shared.set_many(entries, owner)
        self.memory.set_many(entries)

    def claim(
        self, key: CacheKey, owner: str, lease_seconds: float, newer_than: float, now: float
    ) -> Claim:
        claim = self.shared.claim(key, owner, lease_seconds, newer_than, now)
        if claim.entry is not None:
            self.memory.set_many([claim.entry])
        return claim

    def release(self, keys: Sequence[CacheKey], owner: str) -> None:
        self.shared.release(keys, owner)

    def invalidate(
        self,
        *,
        namespace: str | None = None,
        type_name: str | None = None,
        older_than: float | None = None,
    ) -> int:
        self.memory.invalidate(namespace=namespace, type_name=type_name, older_than=older_than)
        return self.shared.invalidate(
            namespace=namespace, type_name=type_name, older_than=older_than
        )

    def prune(self, now: float, retention: float = DEFAULT_RETENTION) -> int:
        self.memory.prune(now, retention)
        return self.shared.prune(now, retention)

    def stats(self, now: float) -> CacheStats:
        return self.shared.stats(now)

    def add_run(self, run: dict[str, Any]) -> None:
        self.shared.add_run(run)

    def runs(self, limit: int = RUNS_KEPT) -> list[dict[str, Any]]:
        return self.shared.runs(limit)

    def close(self) -> None:
        self.shared.close()
