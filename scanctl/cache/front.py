"""How a scan uses the cache: serve what is fresh, fetch the rest once, keep what came back.

The engine asks three things of this front, at three points of a symbol's life:
- `screen`: symbols stream past in chunks, one bulk read per chunk; a fresh entry becomes a
  record at once (`cached: true`, no request); the rest go on to be fetched. A fresh entry near
  its expiry is sometimes sent on anyway (XFetch), so a popular list is refreshed a little early
  by one run rather than by every run at the moment it expires.
- `claim`: before the first request for a symbol, take its lease (single flight). If another
  process (or another scan in this one) is fetching it, the symbol waits, without holding a
  worker, and is answered from the entry that flight stores.
- `settle`: a final record stores a success (and a 404 as a short-lived negative entry); a
  failure releases the lease and may be answered from the cache instead: from an entry that
  is still fresh (an early refresh that failed), or with `--stale-if-error S` from one expired
  less than S seconds ago, marked `stale: true`.

Writes are batched (a short transaction every quarter second or so). A cache that fails
mid-run (disk full, Redis gone) is dropped with one warning: the scan goes on without it.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import random
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from scanctl.cache.store import CacheKey, CacheStore, Entry, xfetch_due
from scanctl.changes import NOTHING_TO_COMPARE, compare
from scanctl.errors import CacheError
from scanctl.records import ScanRecord
from scanctl.settings import NEGATIVE_TTL, TIMEOUT

CHUNK = 256  # symbols per bulk read
FLUSH_EVERY = 0.25  # seconds between batched writes
FLUSH_SIZE = 256  # or this many pending writes
NOT_FOUND = 404
NEVER = 1e300  # "fetched after this": no entry is, so a claim only renews the lease


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """What a run may do with the cache (from --refresh, --ttl, --stale-if-error...)."""

    ttl: float
    refresh: bool = False  # fetch everything, store the answers
    negative_ttl: float = NEGATIVE_TTL.built_in  # how long a 404 is remembered; 0: not at all
    stale_if_error: float | None = None
    # warm-cache: refresh what has less than this share of its TTL left (None: XFetch only)
    refresh_ahead: float | None = None
    lease_seconds: float = TIMEOUT.built_in + 10.0  # a request's timeout, and some
    changes: bool = False  # mark each record changed or not against the answer before it


@dataclass(slots=True)
class CacheCounts:
    """What the cache did in one run (the run log keeps these for `scanctl stats`)."""

    hits: int = 0  # answered from the cache, no request
    misses: int = 0  # went to the upstream
    refreshed_early: int = 0  # fresh, but sent on by XFetch / refresh-ahead
    stale_served: int = 0
    waited: int = 0  # answered by another flight after waiting for its lease


class CacheFront:
    """One scan's view of the cache: one namespace and type, one policy."""

    def __init__(
        self,
        store: CacheStore,
        namespace: str,
        type_name: str,
        policy: CachePolicy,
        *,
        wall: Callable[[], float],
        rng: random.Random | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.namespace = namespace
        self.type_name = type_name
        self.policy = policy
        self.wall = wall
        self.rng = rng or random.Random()
        self.warn = warn or (lambda message: None)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.counts = CacheCounts()
        self.started = wall()
        self.broken = False
        # For symbols sent on although an entry exists, that entry: a claim tells a newer entry
        # (someone else's flight) from the one we chose to refresh by its fetch time, and the
        # answer that comes back replaces it (its data becomes the new entry's `previous`).
        self._known: dict[str, Entry] = {}
        self._writes: list[Entry] = []
        self._releases: list[CacheKey] = []
        self._held: set[str] = set()  # symbols whose lease we hold and have not settled
        self._last_flush = self.started

    def key(self, symbol: str) -> CacheKey:
        return CacheKey(self.namespace, self.type_name, symbol)

    # -- before the request --------------------------------------------------------------------

    def screen(
        self, stream: Iterator[tuple[int, str]], emit: Callable[[ScanRecord], object]
    ) -> Iterator[tuple[int, str]]:
        """Pass on the symbols that need a request; answer the others with `emit`."""
        while True:
            chunk = list(itertools.islice(stream, CHUNK))
            if not chunk:
                return
            if self.broken:
                self.counts.misses += len(chunk)
                yield from chunk
                continue
            # --refresh serves nothing from the cache, but still reads it: every answer fetched
            # keeps the one it replaces.
            found = self._read([self.key(symbol) for _, symbol in chunk])
            now = self.wall()
            for index, symbol in chunk:
                entry = self._as_policy_says(found.get(self.key(symbol)))
                if entry is not None and entry.fresh(now) and not self.policy.refresh:
                    if not self._due(entry, now):
                        self.counts.hits += 1
                        emit(self._record(index, entry))
                        continue
                    self.counts.refreshed_early += 1
                if entry is not None:
                    self._known[symbol] = entry
                self.counts.misses += 1
                yield index, symbol

    def _as_policy_says(self, entry: Entry | None) -> Entry | None:
        """The entry with this run's TTL: `--ttl 60` makes a 300 s-old answer stale now."""
        if entry is None:
            return None
        ttl = self.policy.ttl if entry.ok else self.policy.negative_ttl
        return entry if entry.ttl == ttl else dataclasses.replace(entry, ttl=ttl)

    def _due(self, entry: Entry, now: float) -> bool:
        ahead = self.policy.refresh_ahead
        if ahead is not None and entry.expires_at - now < ahead * entry.ttl:
            return True
        return xfetch_due(entry, now, 1.0 - self.rng.random())

    def claim(self, index: int, symbol: str) -> ScanRecord | bool:
        """True: fetch it (the lease is ours). False: another flight has it, ask again soon.
        A record: that flight has finished, and this is its answer."""
        if self.broken:
            return True
        known = self._known.get(symbol)
        known_at = known.fetched_at if known is not None else 0.0
        newer_than = self.started if self.policy.refresh else known_at
        try:
            claim = self.store.claim(
                self.key(symbol), self.owner, self.policy.lease_seconds, newer_than, self.wall()
            )
        except CacheError as exc:
            self._break(exc)
            return True
        if claim.entry is not None:
            self._known.pop(symbol, None)
            self.counts.misses -= 1
            self.counts.hits += 1
            self.counts.waited += 1
            return self._record(index, claim.entry)
        if claim.granted:
            self._held.add(symbol)
        return claim.granted

    def renew(self, symbol: str) -> None:
        """Extend our lease before another try (a retry or a throttled symbol can outlast it)."""
        if self.broken or symbol not in self._held:
            return
        try:
            key, now = self.key(symbol), self.wall()
            self.store.claim(key, self.owner, self.policy.lease_seconds, NEVER, now)
        except CacheError as exc:
            self._break(exc)

    # -- after the answer ----------------------------------------------------------------------

    def settle(self, record: ScanRecord) -> ScanRecord:
        """Store what a final record says; a failure may be answered from the cache instead."""
        if record.cached or self.broken:
            return record
        self._held.discard(record.symbol)
        replaced = self._known.pop(record.symbol, None)
        before = replaced.last_answer if replaced is not None else None
        key = self.key(record.symbol)
        now = self.wall()
        cost = record.elapsed_ms / 1000.0
        if record.ok:
            status, ttl = record.status or 200, self.policy.ttl
            self._writes.append(Entry(key, status, record.data, None, now, ttl, cost, before))
            if self.policy.changes:
                record = dataclasses.replace(record, change=compare(before, record.data))
        elif record.status == NOT_FOUND and self.policy.negative_ttl > 0:
            ttl = self.policy.negative_ttl
            self._writes.append(Entry(key, NOT_FOUND, None, record.error, now, ttl, cost, before))
        else:
            self._releases.append(key)
            record = self._fallback(record, key, now)
        self.flush_if_due()
        if self.policy.changes and record.change is None:
            record = dataclasses.replace(record, change=NOTHING_TO_COMPARE)
        return record

    def _fallback(self, record: ScanRecord, key: CacheKey, now: float) -> ScanRecord:
        entry = self._as_policy_says(self._read([key]).get(key))
        if entry is None or not entry.ok:
            return record
        if entry.fresh(now) and not self.policy.refresh:
            self.counts.hits += 1  # an early refresh failed: the entry is still good
            return self._record(record.index, entry, attempts=record.attempts)
        window = self.policy.stale_if_error
        if window is not None and now - entry.expires_at <= window:
            self.counts.stale_served += 1
            return self._record(record.index, entry, attempts=record.attempts, stale=True)
        return record

    def flush_if_due(self) -> None:
        pending = len(self._writes) + len(self._releases)
        if pending >= FLUSH_SIZE or (pending and self.wall() - self._last_flush >= FLUSH_EVERY):
            self.flush()

    def flush(self) -> None:
        """Write the batched entries and release their leases (one short transaction each)."""
        self._last_flush = self.wall()
        writes, releases = self._writes, self._releases
        self._writes, self._releases = [], []
        if self.broken:
            return
        try:
            self.store.set_many(writes, self.owner)
            self.store.release(releases, self.owner)
        except CacheError as exc:
            self._break(exc)

    def close(self) -> None:
        """Flush, and give back the leases of symbols never finished (an interrupted run), so
        other processes need not wait for them to run out."""
        self._releases.extend(self.key(symbol) for symbol in self._held)
        self._held.clear()
        self.flush()

    # -- helpers -------------------------------------------------------------------------------

    def _read(self, keys: list[CacheKey]) -> dict[CacheKey, Entry]:
        try:
            return self.store.get_many(keys)
        except CacheError as exc:
            self._break(exc)
            return {}

    def _break(self, exc: CacheError) -> None:
        if not self.broken:
            self.broken = True
            self.warn(f"{exc}; going on without the cache")

    def _record(
        self, index: int, entry: Entry, *, attempts: int = 0, stale: bool = False
    ) -> ScanRecord:
        ok = entry.ok
        change = None
        if self.policy.changes:
            change = compare(entry.previous, entry.data) if ok else NOTHING_TO_COMPARE
        return ScanRecord(
            symbol=entry.key.symbol,
            type=entry.key.type,
            ok=ok,
            status=entry.status,
            data=entry.data if ok else None,
            error=None if ok else entry.error,
            attempts=attempts,
            elapsed_ms=0.0,
            cached=True,
            stale=stale,
            index=index,
            error_kind=None if ok else f"HTTP {entry.status}",
            change=change,
        )
