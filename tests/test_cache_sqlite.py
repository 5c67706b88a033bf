"""SQLite specifics: damaged and foreign files, schema migration, a writer killed mid-write."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from scanctl.cache import namespace_for
from scanctl.cache.sqlite_store import SCHEMA_VERSION, SqliteStore
from scanctl.cache.store import CacheKey, Entry
from scanctl.config import load_builtin_profile
from scanctl.errors import CacheError

NS = "cryptosatx http://upstream.test"
# What `scanctl scan -t signals --base-url http://upstream.test` keys its entries by.
SIGNALS_NS = namespace_for(
    "cryptosatx", "http://upstream.test", load_builtin_profile().endpoint("signals")
)


def test_a_file_that_is_not_sqlite_is_set_aside_and_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    path.write_bytes(b"this is not a database\x00" * 200)
    warnings: list[str] = []
    store = SqliteStore(path, warn=warnings.append)
    key = CacheKey(NS, "mss", "BTC")
    store.set_many([Entry(key, 200, {"ok": 1}, None, time.time(), 60)])
    assert store.get_many([key])[key].data == {"ok": 1}
    assert (
        len(warnings) == 1 and "moved it to" in warnings[0] and "started a new one" in warnings[0]
    )
    aside = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not a database")


def test_a_damaged_database_is_set_aside_and_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    good = SqliteStore(path)
    good.set_many(
        [Entry(CacheKey(NS, "mss", f"S{i}"), 200, {"i": i}, None, 1.0, 60) for i in range(300)]
    )
    good.close()
    raw = bytearray(path.read_bytes())
    raw[0:16] = b"\x00" * 16  # the header is gone
    path.write_bytes(bytes(raw))
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    warnings: list[str] = []
    store = SqliteStore(path, warn=warnings.append)
    assert store.get_many([CacheKey(NS, "mss", "S1")]) == {} and len(warnings) == 1


def test_another_programs_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        db.execute("INSERT INTO invoices (total) VALUES (9.5)")
    with pytest.raises(CacheError, match="another program; not touching it"):
        SqliteStore(path)
    assert not [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT total FROM invoices").fetchone() == (9.5,)


def test_stats_reports_a_damaged_file_without_moving_it(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from scanctl.cli import app

    path = tmp_path / "cache.sqlite3"
    path.write_bytes(b"not sqlite at all" * 100)
    result = CliRunner().invoke(app, ["stats", "--cache", str(path)])
    assert result.exit_code == 1 and "is damaged" in result.stderr
    assert path.read_bytes().startswith(b"not sqlite") and not [
        p for p in tmp_path.iterdir() if ".corrupt-" in p.name
    ]


def test_a_version_1_file_is_migrated_and_keeps_its_entries(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE entries (ns TEXT NOT NULL, type TEXT NOT NULL, symbol TEXT NOT NULL,
                status INTEGER NOT NULL, data TEXT, error TEXT, fetched_at REAL NOT NULL,
                ttl REAL NOT NULL, PRIMARY KEY (ns, type, symbol)) WITHOUT ROWID;
            CREATE TABLE leases (ns TEXT NOT NULL, type TEXT NOT NULL, symbol TEXT NOT NULL,
                owner TEXT NOT NULL, until REAL NOT NULL, PRIMARY KEY (ns, type, symbol))
                WITHOUT ROWID;
            CREATE TABLE runs (id INTEGER PRIMARY KEY, at REAL NOT NULL, run TEXT NOT NULL);
            INSERT INTO entries VALUES ('cryptosatx http://upstream.test', 'mss', 'BTC', 200,
                '{"score": 7}', NULL, 100.0, 60.0);
            PRAGMA user_version = 1;
            """
        )
    store = SqliteStore(path)
    key = CacheKey(NS, "mss", "BTC")
    entry = store.get_many([key])[key]
    assert entry.data == {"score": 7} and entry.expires_at == 160.0 and entry.cost == 0.0
    assert entry.previous is None  # no answer before it
    assert store.prune(now=10_000.0, retention=100.0) == 1  # the new expiry column is filled
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_file_from_a_newer_scanctl_is_refused_not_destroyed(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    SqliteStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(CacheError, match="newer scanctl"):
        SqliteStore(path)
    assert path.exists() and not [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]


WRITER = textwrap.dedent(
    """
    import sys, time
    from scanctl.cache.sqlite_store import SqliteStore
    from scanctl.cache.store import CacheKey, Entry
    store = SqliteStore(sys.argv[1])
    batch = 0
    while True:
        entries = [
            Entry(CacheKey(sys.argv[2], "signals", f"B{batch:04d}X{i:03d}"), 200,
                  {"batch": batch, "pad": "x" * 2000}, None, time.time(), 3600)
            for i in range(200)
        ]
        store.set_many(entries)
        print(batch, flush=True)
        batch += 1
    """
)


def test_a_writer_killed_mid_write_leaves_a_cache_the_next_run_uses(tmp_path: Path) -> None:
    """SIGKILL a process that writes batches as fast as it can, three times at different points;
    every committed batch survives and the file opens clean."""
    from typer.testing import CliRunner

    from scanctl.cli import app

    path = tmp_path / "cache.sqlite3"
    committed = -1
    for wait_for in (3, 7, 12):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), SIGNALS_NS],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None
        for _ in range(wait_for):
            committed = int(writer.stdout.readline())
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA quick_check").fetchone() == ("ok",)
    store = SqliteStore(path)
    keys = [CacheKey(SIGNALS_NS, "signals", f"B{committed:04d}X{i:03d}") for i in range(200)]
    assert len(store.get_many(keys)) == 200
    store.close()
    # The next scan opens it and answers from it without a request (nothing listens there).
    symbols = [f"B{committed:04d}X{i:03d}" for i in range(5)]
    result = CliRunner().invoke(
        app,
        [
            "scan",
            *symbols,
            "-t",
            "signals",
            "--base-url",
            "http://upstream.test",
            "--cache",
            str(path),
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert '"cached": 5' in result.stdout and '"requests_sent": 0' in result.stdout
