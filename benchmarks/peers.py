"""Peer clients for the speed benchmark: the simplest loops a user could write instead of scanctl.

Each peer fetches `GET /mss/analyze/{symbol}?send_alert=false` for every symbol on stdin with at
most C requests in flight, reads the body and parses its JSON: the same work per symbol as
`scanctl scan -t mss`, minus everything scanctl adds (pacing, retries, records, output). They set
the bar for scanctl's own overhead, so they are written plainly, the way each library's docs show,
and not tuned; they run on asyncio's default loop, as scanctl does.

    python benchmarks/peers.py KIND --base-url URL --concurrency C < symbols.txt

prints one line of JSON: {"kind", "ok", "failed", "seconds"} (seconds: from the first request
to the last answer, without interpreter start and imports). Exit 0 when every symbol was ok,
else 3, like scanctl. Kinds:

- raw-aiohttp: one aiohttp ClientSession (TCPConnector(limit=C)), a semaphore, gather;
- plain-httpx: httpx.AsyncClient(limits=Limits(max_connections=C)), a semaphore, gather;
- aiometer-httpx: the same client, concurrency left to aiometer.run_all(max_at_once=C);
- httpx-aiohttp: httpx.AsyncClient over httpx_aiohttp.AiohttpTransport, a semaphore, gather;
- httpx2: httpx2.AsyncClient (the httpx successor; same API), a semaphore, gather.

The batch-of-50 original scanner is a peer too, but has its own script (original_scanner.py).
Libraries are imported inside the kind that uses them: a peer's CPU time is measured for the
whole process, so it should not pay for the others' imports.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

PATH = "/mss/analyze/{symbol}?send_alert=false"
TIMEOUT = 30.0  # seconds per request, scanctl's default; nothing should come near it here


async def _gather_limited(
    symbols: list[str], fetch: Callable[[str], Awaitable[bool]], c: int
) -> int:
    """Run fetch(symbol) for every symbol, at most c at once; return how many were ok."""
    semaphore = asyncio.Semaphore(c)

    async def limited(symbol: str) -> bool:
        async with semaphore:
            try:
                return await fetch(symbol)
            except Exception:  # a failed request is counted, not raised: the run goes on
                return False

    return sum(await asyncio.gather(*(limited(s) for s in symbols)))


async def raw_aiohttp(symbols: list[str], base_url: str, c: int) -> int:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=c)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(base_url, connector=connector, timeout=timeout) as session:

        async def fetch(symbol: str) -> bool:
            async with session.get(PATH.format(symbol=symbol)) as answer:
                body = await answer.read()
                return answer.status == 200 and json.loads(body) is not None

        return await _gather_limited(symbols, fetch, c)


async def _httpx_like(client: Any, symbols: list[str], c: int) -> int:
    """The semaphore loop over any client with httpx's API (httpx, httpx2, other transports)."""
    async with client:

        async def fetch(symbol: str) -> bool:
            answer = await client.get(PATH.format(symbol=symbol))
            return bool(answer.status_code == 200 and answer.json() is not None)

        return await _gather_limited(symbols, fetch, c)


async def plain_httpx(symbols: list[str], base_url: str, c: int) -> int:
    import httpx

    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    client = httpx.AsyncClient(base_url=base_url, limits=limits, timeout=TIMEOUT)
    return await _httpx_like(client, symbols, c)


async def aiometer_httpx(symbols: list[str], base_url: str, c: int) -> int:
    import functools

    import aiometer
    import httpx

    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=TIMEOUT) as client:

        async def fetch(symbol: str) -> bool:
            try:
                answer = await client.get(PATH.format(symbol=symbol))
                return bool(answer.status_code == 200 and answer.json() is not None)
            except Exception:  # as in _gather_limited: count it, go on
                return False

        jobs = [functools.partial(fetch, s) for s in symbols]
        return sum(await aiometer.run_all(jobs, max_at_once=c))


async def httpx_over_aiohttp(symbols: list[str], base_url: str, c: int) -> int:
    import httpx
    from httpx_aiohttp import AiohttpTransport

    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    transport = AiohttpTransport(limits=limits)
    client = httpx.AsyncClient(base_url=base_url, transport=transport, timeout=TIMEOUT)
    return await _httpx_like(client, symbols, c)


async def httpx2_client(symbols: list[str], base_url: str, c: int) -> int:
    import httpx2

    limits = httpx2.Limits(max_connections=c, max_keepalive_connections=c)
    client = httpx2.AsyncClient(base_url=base_url, limits=limits, timeout=TIMEOUT)
    return await _httpx_like(client, symbols, c)


# What each kind imports, loaded before the clock starts (the span excludes imports, as
# scanctl's own span does; CPU and wall of the whole process still include them).
IMPORTS = {
    "raw-aiohttp": ["aiohttp"],
    "plain-httpx": ["httpx"],
    "aiometer-httpx": ["httpx", "aiometer"],
    "httpx-aiohttp": ["httpx", "httpx_aiohttp"],
    "httpx2": ["httpx2"],
}

KINDS: dict[str, Callable[[list[str], str, int], Coroutine[Any, Any, int]]] = {
    "raw-aiohttp": raw_aiohttp,
    "plain-httpx": plain_httpx,
    "aiometer-httpx": aiometer_httpx,
    "httpx-aiohttp": httpx_over_aiohttp,
    "httpx2": httpx2_client,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    symbols = [line.strip().upper() for line in sys.stdin if line.strip()]
    for module in IMPORTS[args.kind]:
        importlib.import_module(module)
    started = time.perf_counter()
    ok = asyncio.run(KINDS[args.kind](symbols, args.base_url, args.concurrency))
    seconds = time.perf_counter() - started
    failed = len(symbols) - ok
    print(json.dumps({"kind": args.kind, "ok": ok, "failed": failed, "seconds": round(seconds, 4)}))
    return 0 if failed == 0 else 3


if __name__ == "__main__":
    raise SystemExit(main())
