"""The scanner scanctl replaces, re-implemented as a peer for benchmarks (not production code).

It behaves as the original did, flaws included, because the benchmark's point
is to measure what those flaws cost:

- symbols are cut into batches of 50; each batch runs with `asyncio.gather` and the next one
  waits for the slowest request of the last (a barrier), plus the original's 0.1 s pause;
- its "rate limiter" is a concurrency limit (a semaphore) that starts at 10 and moves only
  between batches: +5 after a batch with < 2 % failed symbols, -10 after one with > 5 %,
  clamped to 5..50;
- every request gets 3 attempts, sleeping 1 s then 2 s, after any error at all: 404 and 429
  included, Retry-After ignored; only a 200 with JSON is a success;
- one `httpx.AsyncClient`, 30 s total timeout per request (10 s to connect), at most 20
  connections to the host (the original's connection pool: aiohttp's `limit_per_host=20`), so a
  limit above 20 only queues for a connection. With it, this peer reproduces the figures
  measured for the original against 50 req/s (3.2x the ideal, ~700 429s per 1000).

    python benchmarks/original_scanner.py --base-url URL -t signals < symbols.txt
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

BATCH_SIZE = 50
START_LIMIT, MIN_LIMIT, MAX_LIMIT = 10, 5, 50
ATTEMPTS = 3
CONNECTIONS = 20
PATHS = {
    "smart_money": "/smart-money/analyze/{symbol}",
    "mss": "/mss/analyze/{symbol}?send_alert=false",
    "signals": "/signals/{symbol}",
    "price": "/coinapi/quote/{symbol}",
}


@dataclass(slots=True)
class Outcome:
    """The last word on one symbol."""

    symbol: str
    ok: bool
    error: str | None
    attempts: int


@dataclass(slots=True)
class OriginalResult:
    """What a run of the original scanner produced."""

    outcomes: list[Outcome]
    requests: int
    limits: list[int] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return sum(o.ok for o in self.outcomes)

    @property
    def failed(self) -> int:
        return len(self.outcomes) - self.ok

    @property
    def errors(self) -> dict[str, int]:
        return dict(Counter(o.error for o in self.outcomes if o.error is not None))

    def summary(self) -> dict[str, object]:
        return {
            "total_scanned": len(self.outcomes),
            "successful": self.ok,
            "failed": self.failed,
            "requests_sent": self.requests,
            "errors": self.errors,
            "failed_symbols": [o.symbol for o in self.outcomes if not o.ok],
            "limits_per_batch": self.limits,
        }


class _Scanner:
    def __init__(self, client: httpx.AsyncClient, path: str) -> None:
        self.client = client
        self.path = path
        self.requests = 0

    async def _attempt(self, symbol: str) -> str | None:
        """One request; None on success, else the error as the original named it."""
        self.requests += 1
        try:
            answer = await self.client.get(self.path.format(symbol=symbol))
            if answer.status_code != 200:
                return f"HTTP {answer.status_code}"
            answer.json()
        except httpx.TimeoutException:
            return "Request timeout"
        except httpx.HTTPError as exc:
            return f"Client error: {type(exc).__name__}"
        except ValueError:
            return "Unexpected error: invalid JSON"
        return None

    async def scan_one(self, symbol: str) -> Outcome:
        """Three attempts, 1 s then 2 s apart, whatever the error was."""
        error: str | None = None
        for attempt in range(ATTEMPTS):
            error = await self._attempt(symbol)
            if error is None:
                return Outcome(symbol, True, None, attempt + 1)
            if attempt < ATTEMPTS - 1:
                await asyncio.sleep(2**attempt)
        return Outcome(symbol, False, error, ATTEMPTS)


def _next_limit(limit: int, batch: list[Outcome]) -> int:
    """The original's adjustment, on the share of failed symbols in the batch just done."""
    failed = sum(not o.ok for o in batch) / len(batch)
    if failed < 0.02:
        return min(limit + 5, MAX_LIMIT)
    if failed > 0.05:
        return max(limit - 10, MIN_LIMIT)
    return limit


async def scan_original(
    symbols: list[str],
    base_url: str,
    scan_type: str = "signals",
    *,
    batch_pause: float = 0.1,
) -> OriginalResult:
    """Scan `symbols` the way the original scanner did; return every symbol's outcome."""
    timeout = httpx.Timeout(30.0, connect=10.0)
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    outcomes: list[Outcome] = []
    used: list[int] = []
    limit = START_LIMIT
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits) as client:
        scanner = _Scanner(client, PATHS[scan_type])
        batches = [symbols[i : i + BATCH_SIZE] for i in range(0, len(symbols), BATCH_SIZE)]
        for index, batch in enumerate(batches):
            semaphore = asyncio.Semaphore(limit)

            async def limited(symbol: str, semaphore: asyncio.Semaphore = semaphore) -> Outcome:
                async with semaphore:
                    return await scanner.scan_one(symbol)

            done = await asyncio.gather(*(limited(s) for s in batch))
            outcomes.extend(done)
            used.append(limit)
            limit = _next_limit(limit, done)
            if index < len(batches) - 1 and batch_pause > 0:
                await asyncio.sleep(batch_pause)
    return OriginalResult(outcomes, scanner.requests, used)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("-t", "--type", default="signals", choices=sorted(PATHS))
    parser.add_argument("symbols", nargs="*", help="symbols (default: one per line on stdin)")
    args = parser.parse_args()
    symbols = args.symbols or [line.strip().upper() for line in sys.stdin if line.strip()]
    started = time.perf_counter()
    result = asyncio.run(scan_original(symbols, args.base_url, args.type))
    summary = result.summary()
    summary["total_time_seconds"] = round(time.perf_counter() - started, 3)
    print(json.dumps(summary, indent=2))
    return 0 if result.failed == 0 else 3


if __name__ == "__main__":
    raise SystemExit(main())
