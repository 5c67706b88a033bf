"""The shared backend: a Redis server, for teams whose scans run on several machines.

`--cache redis://host:6379/0`. Each entry is one string key holding a line of metadata (status,
when fetched, TTL, cost), a line of JSON data and, when there is one, a line with the ok answer
it replaced, with a Redis expiry of TTL plus the retention, so the server prunes on its own.
Claiming a key for a fetch is one Lua script, atomic on the server: it reads only the metadata
line, so no payload is ever decoded there. Leases are keys with an expiry (`SET ... PX`), runs a
capped list.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from typing import Any

from scanctl.cache import mask_url
from scanctl.cache.store import (
    DEFAULT_RETENTION,
    RUNS_KEPT,
    CacheKey,
    CacheStats,
    Claim,
    Entry,
)
from scanctl.errors import CacheError

PREFIX = "scanctl:1:"

_CLAIM = """
local raw = redis.call('GET', KEYS[1])
if raw then
  local cut = string.find(raw, '\\n', 1, true)
  local meta = cjson.decode(string.sub(raw, 1, cut - 1))
  if meta.f > tonumber(ARGV[3]) and meta.f + meta.t > tonumber(ARGV[4]) then return raw end
end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
"""
_RELEASE = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return 0
"""


def _entry_key(key: CacheKey) -> str:
    return f"{PREFIX}e:{json.dumps(list(key), separators=(',', ':'))}"


def _lease_key(key: CacheKey) -> str:
    return f"{PREFIX}l:{json.dumps(list(key), separators=(',', ':'))}"


def _encode(entry: Entry) -> str:
    meta = {
        "k": list(entry.key),
        "c": entry.status,
        "e": entry.error,
        "f": entry.fetched_at,
        "t": entry.ttl,
        "x": entry.cost,
    }
    data = json.dumps(entry.data, separators=(",", ":"))
    text = json.dumps(meta, separators=(",", ":")) + "\n" + data
    if entry.previous is not None:
        text += "\n" + json.dumps(entry.previous, separators=(",", ":"))
    return text


def _meta(raw: bytes) -> tuple[dict[str, Any], bytes]:
    head, _, body = raw.partition(b"\n")
    return json.loads(head), body


def _decode(raw: bytes) -> Entry:
    meta, body = _meta(raw)
    data, _, previous = body.partition(b"\n")  # compact JSON holds no line break
    key = CacheKey(*meta["k"])
    before = json.loads(previous) if previous else None
    return Entry(
        key, meta["c"], json.loads(data), meta["e"], meta["f"], meta["t"], meta["x"], before
    )


class RedisStore:
    """The cache on a Redis server."""

    backend = "redis"

    def __init__(self, url: str, retention: float = DEFAULT_RETENTION) -> None:
        try:
            import redis
        except ImportError:
            raise CacheError(
                "a redis:// cache needs the redis client: pip install 'scanctl[redis]'"
            ) from None
        self.location = mask_url(url)
        self.retention = retention
        self._errors_cls = redis.exceptions.RedisError
        try:
            self._redis = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        except ValueError as exc:  # a malformed URL (port, db, scheme)
            raise CacheError(f"bad cache URL {self.location}: {exc}") from None
        with self._errors():
            self._redis.ping()
            self._claim = self._redis.register_script(_CLAIM)
            self._release = self._redis.register_script(_RELEASE)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except self._errors_cls as exc:
            raise CacheError(f"cache {self.location}: {exc}") from exc

    def get_many(self, keys: Sequence[CacheKey]) -> dict[CacheKey, Entry]:
        found: dict[CacheKey, Entry] = {}
        with self._errors():
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                answers = self._redis.mget([_entry_key(k) for k in chunk])
                for key, raw in zip(chunk, answers, strict=True):
                    if isinstance(raw, bytes):
                        found[key] = _decode(raw)
        return found

    def set_many(self, entries: Sequence[Entry], owner: str | None = None) -> None:
        if not entries:
            return
        with self._errors():
            pipe = self._redis.pipeline(transaction=True)
            for entry in entries:
                keep_ms = max(1, int((entry.ttl + self.retention) * 1000))
                pipe.set(_entry_key(entry.key), _encode(entry), px=keep_ms)
            pipe.execute()
            if owner is not None:
                self._release(keys=[_lease_key(e.key) for e in entries], args=[owner])

    def claim(
        self, key: CacheKey, owner: str, lease_seconds: float, newer_than: float, now: float
    ) -> Claim:
        with self._errors():
            answer = self._claim(
                keys=[_entry_key(key), _lease_key(key)],
                args=[owner, max(1, int(lease_seconds * 1000)), repr(newer_than), repr(now)],
            )
        if isinstance(answer, bytes):
            return Claim(False, _decode(answer))
        return Claim(bool(answer))

    def release(self, keys: Sequence[CacheKey], owner: str) -> None:
        if keys:
            with self._errors():
                self._release(keys=[_lease_key(k) for k in keys], args=[owner])

    def _scan_entries(self) -> Iterator[tuple[bytes, bytes]]:
        batch: list[bytes] = []
        for name in self._redis.scan_iter(match=f"{PREFIX}e:*", count=1000):
            batch.append(name)
            if len(batch) == 500:
                yield from self._fetch(batch)
                batch = []
        yield from self._fetch(batch)

    def _fetch(self, names: list[bytes]) -> Iterator[tuple[bytes, bytes]]:
        if names:
            for name, raw in zip(names, self._redis.mget(names), strict=True):
                if isinstance(raw, bytes):
                    yield name, raw

    def invalidate(
        self,
        *,
        namespace: str | None = None,
        type_name: str | None = None,
        older_than: float | None = None,
    ) -> int:
        removed = 0
        with self._errors():
            doomed = []
            for name, raw in self._scan_entries():
                meta, _ = _meta(raw)
                ns, type_, _symbol = meta["k"]
                if (
                    (namespace is None or ns == namespace)
                    and (type_name is None or type_ == type_name)
                    and (older_than is None or meta["f"] < older_than)
                ):
                    doomed.append(name)
            for start in range(0, len(doomed), 500):
                removed += self._redis.delete(*doomed[start : start + 500])
        return removed

    def prune(self, now: float, retention: float = DEFAULT_RETENTION) -> int:
        """Redis expires entries by itself (TTL plus retention): nothing to do."""
        return 0

    def stats(self, now: float) -> CacheStats:
        stats = CacheStats(self.backend, self.location, 0)
        size = 0
        with self._errors():
            for _name, raw in self._scan_entries():
                size += len(raw)
                entry = _decode(raw)
                stats.count(entry, now)
        stats.size_bytes = size
        stats.by_type = dict(sorted(stats.by_type.items()))
        return stats

    def add_run(self, run: dict[str, Any]) -> None:
        with self._errors():
            pipe = self._redis.pipeline(transaction=True)
            pipe.lpush(f"{PREFIX}runs", json.dumps(run))
            pipe.ltrim(f"{PREFIX}runs", 0, RUNS_KEPT - 1)
            pipe.execute()

    def runs(self, limit: int = RUNS_KEPT) -> list[dict[str, Any]]:
        with self._errors():
            return [json.loads(r) for r in self._redis.lrange(f"{PREFIX}runs", 0, limit - 1)]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._redis.close()
