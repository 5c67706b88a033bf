"""Cache benchmark: a re-run within the TTL, and a bulk read of 4000 entries, measured in one run.

1. Re-run: the simulated upstream with ~100 ms median latency; `scanctl scan` over N symbols
   (default 1000) into a fresh SQLite cache, then the same command again. The second run must
   send no request (counted at the upstream) and its wall time, process start included, is
   reported as a ratio of the first's (target <= 0.1).
2. Bulk read: 4000 entries with the simulated upstream's own payloads are written to a fresh
   SQLite file (and to a Redis server started here when `redis-server` is installed); a new
   store then reads them all with one `get_many`, best and median of 7 (target <= 50 ms).

    python benchmarks/cache.py [--symbols 1000] [--entries 4000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from scanctl.cache.memory_store import LayeredStore
from scanctl.cache.sqlite_store import SqliteStore
from scanctl.cache.store import CacheKey, CacheStore, Entry
from scanctl.demo.payloads import mss
from scanctl.demo.testing import fetch_stats, running_demo_process

NAMESPACE = "cryptosatx http://bench"


def scan(url: str, symbols: str, cache: Path, state: Path) -> tuple[float, dict[str, Any]]:
    """One `scanctl scan` subprocess; its wall time and summary."""
    with tempfile.TemporaryDirectory() as work:
        metrics = Path(work) / "metrics.json"
        command = [sys.executable, "-m", "scanctl", "scan", "-f", "-", "-t", "mss"]
        command += ["--base-url", url, "-F", "jsonl", "-o", str(Path(work) / "out.jsonl")]
        command += ["--metrics", str(metrics), "-q", "--cache", str(cache)]
        env = {**os.environ, "SCANCTL_STATE_DIR": str(state)}
        started = time.perf_counter()
        subprocess.run(command, input=symbols, text=True, check=False, env=env)
        wall = time.perf_counter() - started
        return wall, json.loads(metrics.read_text())


def rerun(n: int) -> dict[str, Any]:
    symbols = "\n".join(f"C{i:06d}" for i in range(n))
    server = ["--latency-median", "0.1", "--latency-sigma", "0.5", "--seed", "42"]
    with running_demo_process(server) as url, tempfile.TemporaryDirectory() as work:
        cache, state = Path(work) / "cache.sqlite3", Path(work) / "state"
        first_wall, first = scan(url, symbols, cache, state)
        before = fetch_stats(url)["requests"]
        second_wall, second = scan(url, symbols, cache, state)
        sent = fetch_stats(url)["requests"] - before
    return {
        "symbols": n,
        "first_wall_s": round(first_wall, 3),
        "first_successful": first["successful"],
        "second_wall_s": round(second_wall, 3),
        "second_cached": second["cached"],
        "second_requests_at_upstream": sent,
        "second_over_first": round(second_wall / first_wall, 3),
        "target": "<= 0.1, 0 requests",
    }


def entries(n: int) -> list[Entry]:
    now = time.time()
    return [
        Entry(CacheKey(NAMESPACE, "mss", f"C{i:06d}"), 200, mss(f"C{i:06d}"), None, now, 600, 0.1)
        for i in range(n)
    ]


def time_reads(open_store: Any, keys: list[CacheKey], repeats: int = 7) -> dict[str, float]:
    """Each repeat opens a new store (empty memory layer) and reads every key at once."""
    times = []
    for _ in range(repeats):
        store: CacheStore = open_store()
        started = time.perf_counter()
        found = store.get_many(keys)
        times.append(time.perf_counter() - started)
        store.close()
        assert len(found) == len(keys), f"read {len(found)} of {len(keys)}"
    return {
        "best_ms": round(min(times) * 1000, 2),
        "median_ms": round(statistics.median(times) * 1000, 2),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bulk_read(n: int) -> dict[str, Any]:
    batch = entries(n)
    keys = [e.key for e in batch]
    report: dict[str, Any] = {"entries": n, "target": "<= 50 ms"}
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "cache.sqlite3"
        writer = SqliteStore(path)
        started = time.perf_counter()
        writer.set_many(batch)
        report["sqlite_write_ms"] = round((time.perf_counter() - started) * 1000, 2)
        writer.close()
        report["sqlite"] = time_reads(lambda: LayeredStore(SqliteStore(path)), keys)
    binary = shutil.which("redis-server")
    if binary is None:
        report["redis"] = "skipped: redis-server not installed"
        return report
    from scanctl.cache.redis_store import RedisStore

    port = free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while True:
            try:
                store = RedisStore(url)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        store.set_many(batch)
        store.close()
        report["redis"] = time_reads(lambda: LayeredStore(RedisStore(url)), keys)
    finally:
        server.terminate()
        server.wait(10)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--entries", type=int, default=4000)
    args = parser.parse_args()
    report = {"rerun_within_ttl": rerun(args.symbols), "bulk_read": bulk_read(args.entries)}
    print(json.dumps(report, indent=2))
    results = Path(__file__).parent / "results" / "latest.json"
    document = json.loads(results.read_text()) if results.exists() else {}
    document["cache"] = report
    results.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
