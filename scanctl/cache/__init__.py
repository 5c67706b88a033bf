"""The persistent cache: one interface (`CacheStore`), three backends, and the scan's use of it.

- `memory`: an LRU in this process (`--cache memory`), also the layer in front of the others;
- `sqlite`: the default, one file in the user cache dir (`--cache PATH`, `SCANCTL_CACHE`);
- `redis`: `--cache redis://host:port/db`, shared between machines.

`open_store` picks the backend from the spec; `CacheFront` is what a scan does with it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from scanctl.cache.store import CacheKey, CacheStore, Entry

if TYPE_CHECKING:
    from scanctl.config import EndpointType

CACHE_ENV = "SCANCTL_CACHE"
FILE_NAME = "cache.sqlite3"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

__all__ = ["CACHE_ENV", "CacheKey", "CacheStore", "Entry", "default_location", "open_store"]


def namespace_for(profile: str, base_url: str, endpoint: EndpointType) -> str:
    """Whose answers an entry holds: the profile, the upstream, and the endpoint's shape.

    The shape (path, method, params, payload field) is hashed in, so editing a type's
    definition never serves answers fetched under the old one.
    """
    shape = [endpoint.path, endpoint.method, sorted(endpoint.params.items()), endpoint.payload]
    digest = hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:8]
    return f"{profile} {base_url} {digest}"


def mask_url(url: str) -> str:
    """A cache URL as shown to people: a password (in the user part or as ?password=) masked."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    if not parts.scheme or parts.scheme == "file" or "://" not in url:
        return url
    netloc = parts.netloc
    if parts.password is not None:
        user = parts.username or ""
        netloc = f"{user}:***@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        masked = [(k, "***" if k.lower() == "password" else v) for k, v in pairs]
        query = urlencode(masked, safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def default_location() -> str:
    """`SCANCTL_CACHE`, else a SQLite file in the user cache dir."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return configured
    from platformdirs import user_cache_dir

    return str(Path(user_cache_dir("scanctl", appauthor=False)) / FILE_NAME)


def open_store(
    spec: str | None = None, warn: Callable[[str], None] | None = None, *, repair: bool = True
) -> CacheStore:
    """The store a spec names: `memory`, a redis:// URL, or a SQLite file (or its directory).

    With `repair` (scans), a damaged SQLite file is set aside and rebuilt; without (`stats`),
    damage is only reported."""
    spec = spec or default_location()
    if spec in ("memory", "memory:"):
        from scanctl.cache.memory_store import MemoryStore

        return MemoryStore()
    from scanctl.cache.memory_store import LayeredStore

    if spec.startswith(REDIS_SCHEMES):
        from scanctl.cache.redis_store import RedisStore

        return LayeredStore(RedisStore(spec))
    from scanctl.cache.sqlite_store import SqliteStore

    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / FILE_NAME
    return LayeredStore(SqliteStore(path, warn=warn, repair=repair))
