"""Where the send schedule lives when several processes share one upstream's budget.

An upstream's limit belongs to an API key or an address, not to a process: four cron jobs that
each pace themselves at the limit send four times it, and four that each find their own share
never take the capacity one of them frees. So the schedule (GCRA's theoretical arrival time,
the same algorithm as `pacing.GcraMeter`) and the rate in force live in a store every process
reserves its sends from:

- `LocalPacingStore`: in this process only (threads, tests; the reference the others match);
- `SqlitePacingStore`: a file in the state directory, shared by the user's processes on one
  machine (WAL, one short `BEGIN IMMEDIATE` transaction per reservation);
- `RedisPacingStore` (`pacestore_redis`): one Redis for many machines, computed in a Lua script
  from Redis's own clock.

Every process is a *member* of its upstream's scope, with a row that expires `MEMBER_TTL`
seconds after its last word: a process killed with -9 drops out within about a second, and the
count of live members is what the display shows.

The rate in force is the scope's, in requests/s for all processes together, and one member
decides it: the *leader*, the live member that joined first (`sharedpace`: the leader's
estimator runs as a lone process's does, on its own answers; the others follow). Every member
reports a *view* of the rate for all: the leader its own, the others the one they follow, so
when the leader leaves or dies the rate stays (the mean of the others' views) until the next
leader, the oldest of them, takes over from it. A leader that has no rate yet and is still in
slow start says so (`discovering`): the others wait for it rather than each overshoot the limit
with a slow start of its own.

A scope can also be *held*: nothing is sent until an instant (`hold`), when one process got a 418
ban; the upstream bans the key or the address, not the process, so every process sharing the scope
waits it out. The instant is the store's (Redis's `TIME`; the machine's wall clock for SQLite),
every reservation answers how far off it is, and the slots it hands out start after it.

A 429's `Retry-After` closes the scope's *gate* the same way (`close_gate`), as the gate of the
member it was told to: the others wait until it opens, while that member's own `RetryAfterGate`
goes on deciding for it, so a reservation says how long the gate has left only to the others
(`Grant.gate`).

A reservation takes `count` slots at once (`Grant`): at thousands of requests a second one
transaction per request would cost more than the request. Times cross the store as "seconds from
now", never as a clock reading: a store's clock is its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from scanctl.cache.sqlite_store import enable_wal
from scanctl.errors import ScanctlError

# Seconds a member's row outlives its last reservation or heartbeat (heartbeats come every 0.5 s).
MEMBER_TTL = 1.2
# A schedule further ahead than this (s) is from another boot or a broken clock: start afresh.
MAX_AHEAD = 3600.0
FILE_NAME = "pacing.sqlite3"
BUSY_TIMEOUT = 5.0
# Header names whose values identify the caller to the upstream (and so scope its limit).
_CREDENTIAL_WORDS = ("auth", "key", "token", "secret", "cookie", "session")


class PacingStoreError(ScanctlError):
    """The pacing store cannot be reached or used: the run paces itself instead."""


@dataclass(frozen=True, slots=True)
class Grant:
    """The answer to a reservation: `count` slots, the first `wait` seconds from now and the
    rest `interval` apart (count 0: a heartbeat, nothing reserved), at `rate` (the rate in
    force: the leader's view, else the mean of the live members' views; None when none has
    one), among `processes` live members; `hold`: seconds until the scope's hold ends (0: not
    held); `gate`: until its gate opens, when another member closed it (0: open, or this
    member's own); `leads`: this member is the leader; `discovering`: the leader is in slow
    start, with no rate yet; `refused`, `admitted`: how many 429s and admitted answers the
    members that follow have reported (the leader's estimator takes them as its own: it sees
    only its share of the answers)."""

    wait: float
    interval: float
    count: int
    rate: float | None
    processes: int
    hold: float = 0.0
    gate: float = 0.0
    leads: bool = True
    discovering: bool = False
    refused: int = 0  # 429s the scope's members have reported (`reserve`'s `refused`), ever
    admitted: int = 0  # admitted answers they have reported (`reserve`'s `admitted`), ever


@dataclass(frozen=True, slots=True)
class ScopeState:
    """What `scanctl stats` shows of one shared upstream."""

    scope: str
    processes: int
    rate: float | None
    ahead: float  # seconds the schedule runs ahead of now (0: idle)
    learned: dict[str, Any] = field(default_factory=dict)


class PacingStore(Protocol):
    """One shared schedule per scope; see the module docstring."""

    kind: str  # "local", "sqlite" or "redis"
    location: str  # where, for messages (a password never shows)

    def reserve(
        self,
        scope: str,
        member: str,
        count: int,
        view: float | None,
        discovering: bool = False,
        refused: int = 0,
        admitted: int = 0,
    ) -> Grant:
        """Say this member is alive, what it takes the rate for all to be (`view`; None: no
        view yet), whether it is in slow start with no rate (`discovering`) and how many 429s
        and admitted answers it had since it last said (`refused`, `admitted`), and reserve
        `count` slots of the scope's schedule at the rate in force (none while there is none)."""
        ...

    def hold(self, scope: str, seconds: float) -> None:
        """Send nothing in this scope for `seconds` from now, by the store's clock (extending a
        hold, never shortening it): a ban is the upstream's word to all."""
        ...

    def close_gate(self, scope: str, member: str, seconds: float) -> None:
        """A `Retry-After` told to `member`: the scope's gate stays closed `seconds` from now by
        the store's clock (extending it, never shortening it; the gate becomes `member`'s)."""
        ...

    def leave(self, scope: str, member: str) -> None:
        """This member is done: it is not counted as live any more."""
        ...

    def learned(self, key: str) -> dict[str, Any] | None:
        """What the last run against `key` (scope and type) learned, as `remember` kept it."""
        ...

    def remember(self, key: str, pace: dict[str, Any]) -> None: ...

    def states(self) -> list[ScopeState]:
        """Every scope with a schedule, live members or a learned rate (`scanctl stats`)."""
        ...

    def close(self) -> None: ...


def scope_key(base_url: str, headers: Mapping[str, str], *, endpoint: str | None = None) -> str:
    """The scope of a limit: the base URL and a SHA-256 of the credentials sent to it (the
    headers that carry a key, a token, a cookie), so two keys get two budgets and no key is
    ever written anywhere; and `endpoint`, the scan type, for an upstream that limits each
    route apart (a profile's `[rate_limit] scope = "endpoint"`), so each type gets its own.
    A learned rate's key ("scope type") still splits at its last space: the scope's own
    "type:" comes before it."""
    secret = sorted(
        (name.lower(), value)
        for name, value in headers.items()
        if any(word in name.lower() for word in _CREDENTIAL_WORDS)
    )
    digest = hashlib.sha256(json.dumps(secret).encode()).hexdigest()[:16]
    scope = f"{base_url.rstrip('/')} key:{digest}"
    return scope if endpoint is None else f"{scope} type:{endpoint}"


def member_id() -> str:
    """This process, unique across machines and restarts."""
    return f"{os.uname().nodename}:{os.getpid()}:{os.urandom(4).hex()}"


@dataclass(frozen=True, slots=True)
class Member:
    """One live process in a scope, as the store keeps it."""

    name: str
    joined: float  # by the store's clock: the oldest live member leads
    view: float | None
    discovering: bool = False


@dataclass(slots=True)
class _Scope:
    tat: float = 0.0
    opens: float = 0.0  # the end of the hold
    gate: tuple[float, str] = (0.0, "")  # when the gate opens, and whose it is
    members: dict[str, tuple[Member, float]] = field(default_factory=dict)  # and its expiry
    refused: int = 0
    admitted: int = 0


def _gate_wait(until: float, closed_by: str, member: str, now: float) -> float:
    """Seconds until the scope's gate opens, for `member` (0 when the gate is its own)."""
    return 0.0 if closed_by == member else max(0.0, until - now)


def _mean(views: list[float | None]) -> float | None:
    known = [v for v in views if v is not None]
    return sum(known) / len(known) if known else None


def in_force(members: list[Member]) -> tuple[float | None, Member | None]:
    """The rate in force among live `members`, and their leader (the first to have joined):
    the leader's view, else (a leader that just took over, or one discovering) the mean of the
    others' views."""
    if not members:
        return None, None
    leader = min(members, key=lambda m: (m.joined, m.name))
    if leader.view is not None:
        return leader.view, leader
    return _mean([m.view for m in members]), leader


def _slots(
    tat: float, now: float, rate: float | None, count: int, opens: float = 0.0
) -> tuple[float, float, float]:
    """GCRA for `count` slots, none before `opens` (the end of a hold): (seconds to the first,
    interval, the new arrival time)."""
    if rate is None or count <= 0:
        return 0.0, 0.0, tat
    interval = 1.0 / rate
    if tat < now or tat > now + MAX_AHEAD:
        tat = now
    tat = max(tat, min(opens, now + MAX_AHEAD))
    return tat - now, interval, tat + count * interval


class LocalPacingStore:
    """The schedule in this process's memory: the reference implementation (and the store of
    tests and of threads sharing one budget). `now` is injectable: tests move it by hand."""

    kind = "local"
    location = "this process"

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._scopes: dict[str, _Scope] = {}
        self._learned: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def reserve(
        self,
        scope: str,
        member: str,
        count: int,
        view: float | None,
        discovering: bool = False,
        refused: int = 0,
        admitted: int = 0,
    ) -> Grant:
        with self._lock:
            now = self._now()
            state = self._scopes.setdefault(scope, _Scope())
            state.refused += refused
            state.admitted += admitted
            known = state.members.get(member)
            joined = known[0].joined if known is not None else now
            state.members[member] = (Member(member, joined, view, discovering), now + MEMBER_TTL)
            state.members = {m: v for m, v in state.members.items() if v[1] > now}
            rate, leader = in_force([m for m, _ in state.members.values()])
            wait, interval, state.tat = _slots(state.tat, now, rate, count, state.opens)
            got = count if rate is not None else 0
            hold = max(0.0, state.opens - now)
            gate = _gate_wait(*state.gate, member, now)
            leads = leader is None or leader.name == member
            finding = leader is not None and leader.discovering
            live = len(state.members)
            told = state.refused, state.admitted
            return Grant(wait, interval, got, rate, live, hold, gate, leads, finding, *told)

    def close_gate(self, scope: str, member: str, seconds: float) -> None:
        with self._lock:
            state = self._scopes.setdefault(scope, _Scope())
            until = self._now() + seconds
            if until > state.gate[0]:
                state.gate = (until, member)

    def hold(self, scope: str, seconds: float) -> None:
        with self._lock:
            state = self._scopes.setdefault(scope, _Scope())
            state.opens = max(state.opens, self._now() + seconds)

    def leave(self, scope: str, member: str) -> None:
        with self._lock:
            state = self._scopes.get(scope)
            if state is not None:
                state.members.pop(member, None)

    def learned(self, key: str) -> dict[str, Any] | None:
        return self._learned.get(key)

    def remember(self, key: str, pace: dict[str, Any]) -> None:
        self._learned[key] = dict(pace)

    def states(self) -> list[ScopeState]:
        now = self._now()
        members = {}
        for scope, state in self._scopes.items():
            live = [member for member, until in state.members.values() if until > now]
            members[scope] = (len(live), in_force(live)[0])
        tats = {scope: state.tat for scope, state in self._scopes.items()}
        learned = [(key, json.dumps(pace)) for key, pace in self._learned.items()]
        return _states(now, members, tats, learned)

    def close(self) -> None:
        pass


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS schedule (scope TEXT PRIMARY KEY, tat REAL NOT NULL)",
    """CREATE TABLE IF NOT EXISTS members (
        scope TEXT NOT NULL, member TEXT NOT NULL, view REAL, expires REAL NOT NULL,
        joined REAL NOT NULL, discovering INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (scope, member)
    )""",
    "CREATE TABLE IF NOT EXISTS holds (scope TEXT PRIMARY KEY, until REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS gates (scope TEXT PRIMARY KEY, until REAL NOT NULL, member TEXT)",
    "CREATE TABLE IF NOT EXISTS learned (key TEXT PRIMARY KEY, pace TEXT NOT NULL, updated REAL)",
    """CREATE TABLE IF NOT EXISTS answers (
        scope TEXT PRIMARY KEY, refused INTEGER NOT NULL, admitted INTEGER NOT NULL
    )""",
)
# PRAGMA user_version of a file with _SCHEMA. Version 1 (no version set) had members without
# `joined`, version 2 a table `refusals` without the admitted answers: both live seconds, so an
# older file's are dropped rather than converted.
SCHEMA_VERSION = 3


class SqlitePacingStore:
    """The schedule in a SQLite file every process of this user on this machine opens.

    WAL (readers never wait; a process killed mid-transaction leaves the last committed
    state), `synchronous=NORMAL` (no fsync per commit: a schedule lost to a power cut costs
    nothing), and one `BEGIN IMMEDIATE` per reservation, taking the write lock at once so two
    processes never deadlock upgrading a read. Time is the wall clock (`time.time`), the one
    clock every process on the machine reads alike; `now` is injectable for tests.
    """

    kind = "sqlite"

    def __init__(
        self,
        path: Path,
        now: Callable[[], float] = time.time,
        busy_timeout: float = BUSY_TIMEOUT,
    ) -> None:
        self.path = path
        self.location = str(path)
        self._now = now
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            enable_wal(self._db, busy_timeout)
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self._write() as db:
                if db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                    db.execute("DROP TABLE IF EXISTS members")
                    db.execute("DROP TABLE IF EXISTS refusals")
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                for statement in _SCHEMA:
                    db.execute(statement)
        except (OSError, sqlite3.Error) as exc:
            raise PacingStoreError(f"cannot open the pacing store {path}: {exc}") from exc

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise PacingStoreError(f"pacing store {self.path}: {exc}") from exc

    def reserve(
        self,
        scope: str,
        member: str,
        count: int,
        view: float | None,
        discovering: bool = False,
        refused: int = 0,
        admitted: int = 0,
    ) -> Grant:
        with self._write() as db:
            now = self._now()
            db.execute(
                "INSERT INTO answers VALUES (?, ?, ?) ON CONFLICT (scope) DO UPDATE SET "
                "refused = refused + excluded.refused, admitted = admitted + excluded.admitted",
                (scope, refused, admitted),
            )
            told = db.execute(
                "SELECT refused, admitted FROM answers WHERE scope = ?", (scope,)
            ).fetchone()
            db.execute(
                "INSERT INTO members VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (scope, member) "
                "DO UPDATE SET view = excluded.view, expires = excluded.expires, "
                "discovering = excluded.discovering",
                (scope, member, view, now + MEMBER_TTL, now, int(discovering)),
            )
            live = self._members(db, scope, now)
            rate, leader = in_force(live)
            held = db.execute("SELECT until FROM holds WHERE scope = ?", (scope,)).fetchone()
            opens = held[0] if held else 0.0
            hold = max(0.0, opens - now)
            closed = db.execute(
                "SELECT until, member FROM gates WHERE scope = ?", (scope,)
            ).fetchone()
            gate = _gate_wait(closed[0], closed[1], member, now) if closed else 0.0
            leads = leader is None or leader.name == member
            finding = leader is not None and leader.discovering
            if rate is None or count <= 0:
                return Grant(0.0, 0.0, 0, rate, len(live), hold, gate, leads, finding, *told)
            row = db.execute("SELECT tat FROM schedule WHERE scope = ?", (scope,)).fetchone()
            wait, interval, tat = _slots(row[0] if row else now, now, rate, count, opens)
            db.execute(
                "INSERT INTO schedule VALUES (?, ?) "
                "ON CONFLICT (scope) DO UPDATE SET tat = excluded.tat",
                (scope, tat),
            )
            return Grant(wait, interval, count, rate, len(live), hold, gate, leads, finding, *told)

    @staticmethod
    def _members(db: sqlite3.Connection, scope: str, now: float) -> list[Member]:
        rows = db.execute(
            "SELECT member, joined, view, discovering FROM members WHERE scope = ? AND expires > ?",
            (scope, now),
        ).fetchall()
        return [Member(name, joined, view, bool(finding)) for name, joined, view, finding in rows]

    def hold(self, scope: str, seconds: float) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO holds VALUES (?, ?) ON CONFLICT (scope) "
                "DO UPDATE SET until = max(until, excluded.until)",
                (scope, self._now() + seconds),
            )

    def close_gate(self, scope: str, member: str, seconds: float) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO gates VALUES (?, ?, ?) ON CONFLICT (scope) DO UPDATE SET "
                "until = excluded.until, member = excluded.member WHERE excluded.until > until",
                (scope, self._now() + seconds, member),
            )

    def leave(self, scope: str, member: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM members WHERE scope = ? AND member = ?", (scope, member))
            # (rows of processes killed long ago go with the next one to leave)
            db.execute("DELETE FROM members WHERE expires < ?", (self._now() - 60,))

    def learned(self, key: str) -> dict[str, Any] | None:
        try:
            with self._lock:
                row = self._db.execute("SELECT pace FROM learned WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            raise PacingStoreError(f"pacing store {self.path}: {exc}") from exc
        return _decode(row[0]) if row else None

    def remember(self, key: str, pace: dict[str, Any]) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO learned VALUES (?, ?, ?) ON CONFLICT (key) "
                "DO UPDATE SET pace = excluded.pace, updated = excluded.updated",
                (key, json.dumps(pace), self._now()),
            )

    def states(self) -> list[ScopeState]:
        now = self._now()
        try:
            with self._lock:
                db = self._db
                scopes = db.execute(
                    "SELECT DISTINCT scope FROM members WHERE expires > ?", (now,)
                ).fetchall()
                members = []
                for (scope,) in scopes:
                    live = self._members(db, scope, now)
                    members.append((scope, len(live), in_force(live)[0]))
                tats = dict(db.execute("SELECT scope, tat FROM schedule").fetchall())
                learned = db.execute("SELECT key, pace FROM learned").fetchall()
        except sqlite3.Error as exc:
            raise PacingStoreError(f"pacing store {self.path}: {exc}") from exc
        return _states(now, {s: (n, r) for s, n, r in members}, tats, learned)

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.close()


def _decode(text: str | bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _states(
    now: float,
    members: dict[str, tuple[int, float | None]],
    tats: dict[str, float],
    learned: list[tuple[str, str]],
) -> list[ScopeState]:
    """Scope states from a store's rows: live members and schedules, and learned rates (kept
    under "scope type": the scope is the key up to the last space)."""
    by_scope: dict[str, dict[str, Any]] = {}
    for key, text in learned:
        scope, _, type_name = key.rpartition(" ")
        pace = _decode(text)
        if pace is not None:
            by_scope.setdefault(scope, {})[type_name] = pace
    found = []
    for scope in sorted(set(members) | set(by_scope) | set(tats)):
        count, rate = members.get(scope, (0, None))
        ahead = max(0.0, tats.get(scope, now) - now) if count else 0.0
        found.append(ScopeState(scope, count, rate, round(ahead, 3), by_scope.get(scope, {})))
    return found


def open_pacing_store(
    spec: str | None, state_directory: Path, *, now: Callable[[], float] | None = None
) -> PacingStore | None:
    """The store `--pacing-store` names: None for "local" (this process paces itself, as
    before), a Redis URL, else the SQLite file (in the state directory by default).
    Raises PacingStoreError when it cannot be opened."""
    if spec == "local":
        return None
    if spec is not None and spec.startswith(("redis://", "rediss://", "unix://")):
        from scanctl.pacestore_redis import RedisPacingStore

        return RedisPacingStore(spec)
    path = state_directory / FILE_NAME if not spec else Path(spec)
    if path.is_dir():
        path = path / FILE_NAME
    return SqlitePacingStore(path) if now is None else SqlitePacingStore(path, now=now)
