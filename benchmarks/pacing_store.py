"""What sharing the send schedule costs (issue 14): acquire latency per store, and throughput.

1. Acquire: one reservation (`PacingStore.reserve`, one slot) timed over many calls, from one
   process and from four at once on one scope, for the SQLite file and for Redis on loopback
   (a redis-server of its own on a free port). Beside them, the `limits` library's Redis
   storage (a moving window: the one of its strategies that holds a rate without bursts at
   window edges), whose `hit` refuses rather than waits and takes the client's clock: its
   figure is one `hit`, what it costs before its caller even starts polling.
2. Throughput: one scanctl process on the instant upstream (benchmarks/fast_upstream.py),
   `--pacing-store local` against the default SQLite store, with no rate (nothing to meter:
   the store is only told the process is alive) and with `--rate 5000` (every request takes a
   slot of the shared schedule, reserved in batches).

    python benchmarks/pacing_store.py [--calls N] [--symbols N]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from scanctl.demo.testing import running_upstream
from scanctl.pacestore import SqlitePacingStore

RATE = 1_000_000.0  # requests/s: high enough that no reservation waits (the cost is the call)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_server() -> Iterator[str | None]:
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = free_port()
    with tempfile.TemporaryDirectory() as work:
        server = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            cwd=work,
            stdout=subprocess.DEVNULL,
        )
        import redis

        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.02)
        client.close()
        try:
            yield url
        finally:
            server.terminate()
            server.wait(10)


def open_store(kind: str, where: str) -> object:
    if kind == "sqlite":
        return SqlitePacingStore(Path(where))
    from scanctl.pacestore_redis import RedisPacingStore

    return RedisPacingStore(where)


def time_calls(call: Callable[[], object], calls: int) -> list[float]:
    """Seconds per call, after a few untimed ones (connections, the script's cache)."""
    for _ in range(20):
        call()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


def reserve_times(kind: str, where: str, calls: int, member: str) -> list[float]:
    store = open_store(kind, where)
    try:
        return time_calls(lambda: store.reserve("bench", member, 1, RATE), calls)  # type: ignore[attr-defined]
    finally:
        store.close()  # type: ignore[attr-defined]


def _worker(args: tuple[str, str, int, str]) -> list[float]:
    return reserve_times(*args)


def limits_times(url: str, calls: int) -> list[float]:
    from limits import RateLimitItemPerSecond
    from limits.storage import RedisStorage
    from limits.strategies import MovingWindowRateLimiter

    limiter = MovingWindowRateLimiter(RedisStorage(url))
    item = RateLimitItemPerSecond(1_000_000)
    return time_calls(lambda: limiter.hit(item, "bench"), calls)


def figures(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
    }


def acquire_rows(calls: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as work, redis_server() as url:
        path = os.path.join(work, "pacing.sqlite3")
        backends = [("sqlite", path)] + ([("redis", url)] if url else [])
        for kind, where in backends:
            rows.append(
                {"store": kind, "processes": 1, **figures(reserve_times(kind, where, calls, "one"))}
            )
            with multiprocessing.get_context("spawn").Pool(4) as pool:
                parts = pool.map(_worker, [(kind, where, calls, f"m{i}") for i in range(4)])
            rows.append({"store": kind, "processes": 4, **figures([t for p in parts for t in p])})
        if url is None:
            print("redis-server not found: Redis rows skipped", file=sys.stderr)
            return rows
        try:
            rows.append({"store": "limits MovingWindow (refuses; client clock)", "processes": 1,
                         **figures(limits_times(url, calls))})  # fmt: skip
        except ImportError:
            print("limits is not installed (pip install -e '.[bench]')", file=sys.stderr)
    return rows


def scan_rate(url: str, symbols: Path, state: str, extra: list[str]) -> float:
    command = [sys.executable, "-m", "scanctl", "scan", "-f", str(symbols), "-t", "price",
               "--base-url", url, "-F", "jsonl", "-o", os.devnull, "--no-cache", "-q",
               "--concurrency", "50", *extra]  # fmt: skip
    env = {**os.environ, "SCANCTL_STATE_DIR": state}
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return sum(1 for _ in symbols.open()) / (time.perf_counter() - started)


def throughput_rows(count: int, repeats: int = 3) -> list[dict[str, object]]:
    here = Path(__file__).resolve().parent
    command = [sys.executable, str(here / "fast_upstream.py"), "--port", "0"]
    rows: list[dict[str, object]] = []
    with running_upstream(command) as url, tempfile.TemporaryDirectory() as work:
        symbols = Path(work) / "symbols.txt"
        symbols.write_text("".join(f"S{i}\n" for i in range(count)))
        for rate in ([], ["--rate", "5000"]):
            for store in ("local", "default"):
                extra = [*rate] + (["--pacing-store", "local"] if store == "local" else [])
                runs = []
                for i in range(repeats):
                    state = os.path.join(work, f"state-{store}-{len(rate)}-{i}")
                    runs.append(scan_rate(url, symbols, state, extra))
                rows.append({"rate": rate[1] if rate else "none", "pacing_store": store,
                             "req_per_s_best": round(max(runs)),
                             "runs": [round(r) for r in runs]})  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000, help="reservations timed per process")
    parser.add_argument("--symbols", type=int, default=10000, help="symbols per throughput run")
    options = parser.parse_args()
    acquire = acquire_rows(options.calls)
    for row in acquire:
        print(json.dumps(row))
    throughput = throughput_rows(options.symbols)
    for row in throughput:
        print(json.dumps(row))
    out = Path(__file__).resolve().parent / "results" / "pacing_store.json"
    out.write_text(json.dumps({"acquire": acquire, "throughput": throughput}, indent=1) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
