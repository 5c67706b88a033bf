"""The default backend: one SQLite file in the user cache dir, shared by every local process.

Eight cron jobs may open it at once, so:
- WAL journal: readers never wait for the writer, and a process killed mid-write leaves the
  last committed state (the WAL is replayed or ignored on the next open);
- every write is a short `BEGIN IMMEDIATE` transaction (it takes the write lock up front, so two
  writers never deadlock upgrading a read lock), and a busy timeout makes a writer wait its turn
  instead of failing with "database is locked";
- reads take many keys per query, writes many entries per transaction;
- the schema version is `PRAGMA user_version`, and older files are migrated step by step;
- a file that is not a SQLite database, or is damaged, is renamed aside (`*.corrupt-<time>`)
  with a warning and a new cache is built (a cache is only ever worth a slower run, never a
  crash); a healthy database of another program is refused and left alone; read-only commands
  (`stats`) only report damage. Opening takes a lock beside the file, so two processes that
  find it damaged never set aside each other's new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from scanctl.cache.store import (
    DEFAULT_RETENTION,
    RUNS_KEPT,
    CacheKey,
    CacheStats,
    Claim,
    Entry,
    TypeCounts,
)
from scanctl.errors import CacheError

SCHEMA_VERSION = 3
BUSY_TIMEOUT = 30.0
CHUNK = 500  # keys per read query (well under SQLite's bound-parameter limit)

# Step N brings a file from version N-1 to N. Never edit a released step: add one.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE entries (
            ns TEXT NOT NULL, type TEXT NOT NULL, symbol TEXT NOT NULL,
            status INTEGER NOT NULL, data TEXT, error TEXT,
            fetched_at REAL NOT NULL, ttl REAL NOT NULL,
            PRIMARY KEY (ns, type, symbol)) WITHOUT ROWID""",
        """CREATE TABLE leases (
            ns TEXT NOT NULL, type TEXT NOT NULL, symbol TEXT NOT NULL,
            owner TEXT NOT NULL, until REAL NOT NULL,
            PRIMARY KEY (ns, type, symbol)) WITHOUT ROWID""",
        "CREATE TABLE runs (id INTEGER PRIMARY KEY, at REAL NOT NULL, run TEXT NOT NULL)",
    ),
    # 2: what a fetch cost (for early refresh), and an indexed expiry for pruning.
    2: (
        "ALTER TABLE entries ADD COLUMN cost REAL NOT NULL DEFAULT 0",
        "ALTER TABLE entries ADD COLUMN expires_at REAL",
        "UPDATE entries SET expires_at = fetched_at + ttl",
        "CREATE INDEX entries_expiry ON entries (expires_at)",
    ),
    # 3: the ok answer an entry replaced (`scan --changes`).
    3: ("ALTER TABLE entries ADD COLUMN previous TEXT",),
}
# SQLite's result codes for "this is not a (healthy) database".
_DAMAGED = {sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT}


_ENTRY_COLUMNS = "status, data, error, fetched_at, ttl, cost, previous"


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _entry(key: CacheKey, columns: Sequence[Any]) -> Entry:
    """An entry from the `_ENTRY_COLUMNS` of its row."""
    status, data, error, fetched_at, ttl, cost, previous = columns
    value = json.loads(data) if data is not None else None
    before = json.loads(previous) if previous is not None else None
    return Entry(key, status, value, error, fetched_at, ttl, cost, before)


def enable_wal(db: sqlite3.Connection, patience: float) -> str:
    """Switch `db` to the WAL journal; return the journal mode it ended in ("wal" unless the
    file system cannot). Switching needs a moment of exclusive access, and a file being
    created by several processes at once can answer "locked" without waiting for the busy
    timeout: try again for up to `patience` seconds. (The pacing store opens its file so too.)"""
    deadline = time.monotonic() + patience
    while True:
        try:
            return str(db.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()
        except sqlite3.OperationalError as exc:
            if _is_damage(exc) or time.monotonic() > deadline or "lock" not in str(exc):
                raise
            time.sleep(0.01)


def _is_damage(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) in _DAMAGED


class _NotOurs(Exception):
    """A healthy SQLite file that holds some other program's tables."""


class SqliteStore:
    """The cache in one SQLite file."""

    backend = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = BUSY_TIMEOUT,
        warn: Callable[[str], None] | None = None,
        repair: bool = True,
    ) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self.busy_timeout = busy_timeout
        self._warn = warn or (lambda message: None)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(
                f"cannot create the cache directory {self.path.parent}: {exc}"
            ) from exc
        with self._opening():
            self._db = self._open_or_repair(repair)

    @contextlib.contextmanager
    def _opening(self) -> Iterator[None]:
        """One process at a time opens (and perhaps repairs) the file: two processes that both
        found it damaged must not set aside each other's new one."""
        import fcntl

        try:
            fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise CacheError(f"cannot open the cache {self.path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _open_or_repair(self, repair: bool) -> sqlite3.Connection:
        try:
            return self._open()
        except _NotOurs as exc:
            raise CacheError(
                f"cache {self.path} is {exc}; not touching it (pick another file with --cache)"
            ) from None
        except sqlite3.DatabaseError as exc:
            if not _is_damage(exc):
                raise CacheError(f"cannot open the cache {self.path}: {exc}") from exc
            if not repair:
                raise CacheError(
                    f"cache {self.path} is damaged ({exc}); the next scan sets it aside"
                ) from None
            aside = self._set_aside()
            self._warn(
                f"cache {self.path} was unreadable ({exc}); "
                f"moved it to {aside} and started a new one"
            )
            try:
                return self._open()
            except sqlite3.DatabaseError as again:
                raise CacheError(f"cannot open the cache {self.path}: {again}") from again

    # -- opening -------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            self._setup(db)
        except BaseException:
            db.close()
            raise
        return db

    def _setup(self, db: sqlite3.Connection) -> None:
        mode = enable_wal(db, self.busy_timeout)
        if mode != "wal":
            self._warn(
                f"cache {self.path}: WAL journal not available ({mode}); "
                "concurrent runs will wait more"
            )
        db.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable against process crashes
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise CacheError(
                f"cache {self.path} was written by a newer scanctl (schema {version}, "
                f"this one knows {SCHEMA_VERSION}); use --cache to pick another file"
            )
        with self._write(db):
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if tables:
                    raise _NotOurs("a SQLite database of another program")
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[step]:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version={step}")

    def _set_aside(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{os.getpid()}")
        os.replace(self.path, aside)
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
        return aside

    # -- plumbing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _write(self, db: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """One short write transaction, the write lock taken up front."""
        db = db or self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back already (disk full): keep the real error, not ours.
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise CacheError(f"cache {self.path}: {exc}") from exc

    # -- the interface -------------------------------------------------------------------------

    def get_many(self, keys: Sequence[CacheKey]) -> dict[CacheKey, Entry]:
        groups: dict[tuple[str, str], list[str]] = {}
        for key in keys:
            groups.setdefault((key.namespace, key.type), []).append(key.symbol)
        found: dict[CacheKey, Entry] = {}
        with self._errors():
            for (ns, type_name), symbols in groups.items():
                for start in range(0, len(symbols), CHUNK):
                    chunk = symbols[start : start + CHUNK]
                    marks = ",".join("?" * len(chunk))
                    rows = self._db.execute(
                        f"SELECT symbol, {_ENTRY_COLUMNS} FROM entries "
                        f"WHERE ns = ? AND type = ? AND symbol IN ({marks})",
                        (ns, type_name, *chunk),
                    )
                    for symbol, *columns in rows:
                        key = CacheKey(ns, type_name, symbol)
                        found[key] = _entry(key, columns)
        return found

    def set_many(self, entries: Sequence[Entry], owner: str | None = None) -> None:
        if not entries:
            return
        rows = [
            (
                *e.key,
                e.status,
                _json(e.data),
                e.error,
                e.fetched_at,
                e.ttl,
                e.cost,
                e.expires_at,
                _json(e.previous),
            )
            for e in entries
        ]
        with self._errors(), self._write() as db:
            db.executemany(
                "INSERT INTO entries (ns, type, symbol, status, data, error, fetched_at, ttl, "
                "cost, expires_at, previous) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (ns, type, symbol) DO UPDATE SET status = excluded.status, "
                "data = excluded.data, error = excluded.error, fetched_at = excluded.fetched_at, "
                "ttl = excluded.ttl, cost = excluded.cost, expires_at = excluded.expires_at, "
                "previous = excluded.previous",
                rows,
            )
            if owner is not None:
                db.executemany(
                    "DELETE FROM leases WHERE ns = ? AND type = ? AND symbol = ? AND owner = ?",
                    [(*e.key, owner) for e in entries],
                )

    def claim(
        self, key: CacheKey, owner: str, lease_seconds: float, newer_than: float, now: float
    ) -> Claim:
        with self._errors(), self._write() as db:
            row = db.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM entries "
                "WHERE ns = ? AND type = ? AND symbol = ? AND fetched_at > ? AND expires_at > ?",
                (*key, newer_than, now),
            ).fetchone()
            if row is not None:
                return Claim(False, _entry(key, row))
            holder = db.execute(
                "SELECT owner, until FROM leases WHERE ns = ? AND type = ? AND symbol = ?", key
            ).fetchone()
            if holder is not None and holder[0] != owner and holder[1] > now:
                return Claim(False)
            db.execute(
                "INSERT INTO leases (ns, type, symbol, owner, until) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (ns, type, symbol) DO UPDATE SET owner = excluded.owner, "
                "until = excluded.until",
                (*key, owner, now + lease_seconds),
            )
            return Claim(True)

    def release(self, keys: Sequence[CacheKey], owner: str) -> None:
        if not keys:
            return
        with self._errors(), self._write() as db:
            db.executemany(
                "DELETE FROM leases WHERE ns = ? AND type = ? AND symbol = ? AND owner = ?",
                [(*key, owner) for key in keys],
            )

    def invalidate(
        self,
        *,
        namespace: str | None = None,
        type_name: str | None = None,
        older_than: float | None = None,
    ) -> int:
        where, params = ["1"], []
        for clause, value in (
            ("ns = ?", namespace),
            ("type = ?", type_name),
            ("fetched_at < ?", older_than),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        with self._errors(), self._write() as db:
            cursor = db.execute(f"DELETE FROM entries WHERE {' AND '.join(where)}", params)
            return cursor.rowcount

    def prune(self, now: float, retention: float = DEFAULT_RETENTION) -> int:
        with self._errors(), self._write() as db:
            db.execute("DELETE FROM leases WHERE until < ?", (now,))
            cursor = db.execute("DELETE FROM entries WHERE expires_at < ?", (now - retention,))
            return cursor.rowcount

    def stats(self, now: float) -> CacheStats:
        size = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                size += os.path.getsize(f"{self.path}{suffix}")
        stats = CacheStats(self.backend, self.location, size)
        with self._errors():
            rows = self._db.execute(
                "SELECT type, SUM(expires_at > ?), SUM(expires_at <= ?), "
                "SUM(status NOT BETWEEN 200 AND 299) FROM entries GROUP BY type ORDER BY type",
                (now, now),
            )
            for type_name, fresh, expired, negative in rows:
                stats.by_type[type_name] = TypeCounts(fresh, expired, negative)
        return stats

    def add_run(self, run: dict[str, Any]) -> None:
        with self._errors(), self._write() as db:
            db.execute("INSERT INTO runs (at, run) VALUES (?, ?)", (time.time(), json.dumps(run)))
            db.execute("DELETE FROM runs WHERE id <= (SELECT max(id) FROM runs) - ?", (RUNS_KEPT,))

    def runs(self, limit: int = RUNS_KEPT) -> list[dict[str, Any]]:
        with self._errors():
            rows = self._db.execute("SELECT run FROM runs ORDER BY id DESC LIMIT ?", (limit,))
            return [json.loads(run) for (run,) in rows]

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
