"""What every cache backend stores and promises: entries, leases for single flight, run history.

A backend is a plain synchronous object (`CacheStore`). SQLite answers in microseconds and Redis
in well under a millisecond on a LAN, and the scan calls the store a few times per symbol at
most (one bulk read per chunk, one lease, one batched write), so the event loop is not worth a
thread hop per call.

Keys are (namespace, type, symbol): the namespace is the profile and base URL, so two upstreams
(or two profiles of one) never share entries. An entry keeps the answer, when it was fetched,
its TTL, what fetching it cost (for early refresh), and the ok answer it replaced (for
`scan --changes`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

# Entries expired longer than this are pruned: long enough for any sensible --stale-if-error.
DEFAULT_RETENTION = 7 * 24 * 3600.0
# How many runs the store remembers for `scanctl stats`.
RUNS_KEPT = 500


class CacheKey(NamedTuple):
    """Which answer: the upstream (profile and base URL), the scan type, the symbol."""

    namespace: str
    type: str
    symbol: str


@dataclass(frozen=True, slots=True)
class Entry:
    """One cached answer. A 2xx `status` holds `data`; any other status is a negative entry."""

    key: CacheKey
    status: int
    data: Any
    error: str | None
    fetched_at: float  # wall clock, epoch seconds: entries outlive the process
    ttl: float
    cost: float = 0.0  # seconds the fetch took (XFetch's delta)
    # The ok answer this entry replaced (None: none), so `scan --changes` can say what changed.
    previous: Any = None

    @property
    def expires_at(self) -> float:
        return self.fetched_at + self.ttl

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def last_answer(self) -> Any:
        """The latest ok answer this entry knows: its own, or (a negative entry) the one before."""
        return self.data if self.ok else self.previous

    def fresh(self, now: float) -> bool:
        return now < self.expires_at


class Claim(NamedTuple):
    """The answer to "may I fetch this key?": yes (lease held), or the entry someone just stored."""

    granted: bool
    entry: Entry | None = None  # set when another flight stored a fresh entry meanwhile


@dataclass(slots=True)
class TypeCounts:
    """Entries of one type by freshness."""

    fresh: int = 0
    expired: int = 0
    negative: int = 0

    @property
    def total(self) -> int:
        return self.fresh + self.expired


@dataclass(slots=True)
class CacheStats:
    """What `scanctl stats` shows about the store itself."""

    backend: str
    location: str
    size_bytes: int | None
    by_type: dict[str, TypeCounts] = field(default_factory=dict)

    def count(self, entry: Entry, now: float) -> None:
        """Add one entry to its type's freshness counts (stores that cannot count in a query)."""
        counts = self.by_type.setdefault(entry.key.type, TypeCounts())
        if entry.fresh(now):
            counts.fresh += 1
        else:
            counts.expired += 1
        if not entry.ok:
            counts.negative += 1


class CacheStore(Protocol):
    """The interface every backend implements (memory, sqlite, redis)."""

    backend: str
    location: str

    def get_many(self, keys: Sequence[CacheKey]) -> dict[CacheKey, Entry]:
        """The stored entries among `keys`, fresh or not (the caller judges freshness)."""
        ...

    def set_many(self, entries: Sequence[Entry], owner: str | None = None) -> None:
        """Store entries; release `owner`'s leases on their keys in the same step."""
        ...

    def claim(
        self, key: CacheKey, owner: str, lease_seconds: float, newer_than: float, now: float
    ) -> Claim:
        """Atomically: a fresh entry fetched after `newer_than`, else a lease for `owner`, else
        refusal (someone else holds the lease). Claiming a lease one holds renews it."""
        ...

    def release(self, keys: Sequence[CacheKey], owner: str) -> None:
        """Give up `owner`'s leases on `keys` (a fetch that failed stores nothing)."""
        ...

    def invalidate(
        self,
        *,
        namespace: str | None = None,
        type_name: str | None = None,
        older_than: float | None = None,
    ) -> int:
        """Delete entries (all, of one namespace/type, or fetched before `older_than`)."""
        ...

    def prune(self, now: float, retention: float = DEFAULT_RETENTION) -> int:
        """Delete entries expired more than `retention` seconds ago; return how many."""
        ...

    def stats(self, now: float) -> CacheStats: ...

    def add_run(self, run: dict[str, Any]) -> None:
        """Remember one run's figures (the newest RUNS_KEPT are kept)."""
        ...

    def runs(self, limit: int = RUNS_KEPT) -> list[dict[str, Any]]:
        """The runs remembered, newest first."""
        ...

    def close(self) -> None: ...


def xfetch_due(entry: Entry, now: float, draw: float, beta: float = 1.0) -> bool:
    """True when a fresh entry should be refreshed early (XFetch, Vattani et al. 2015).

    Each reader refreshes with a probability that rises as expiry nears, scaled by what a fetch
    costs, so a popular key is refreshed once, a little early, rather than stampeded at expiry.
    `draw` is uniform in (0, 1]. The cost is floored at one second: a scan's real "recompute
    time" includes its queue behind the rate limit, not only the request's own latency.
    """
    delta = max(entry.cost, 1.0)
    return now - delta * beta * math.log(max(draw, 1e-12)) >= entry.expires_at
