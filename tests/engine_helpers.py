"""Run the engine against an in-process handler with a fake clock (no network, no sleeping).

The engine sends every request through one `fetch.Fetcher`; here it is an `HttpxFetcher` over
httpx's MockTransport, so the engine runs the same code as with the default (aiohttp) fetcher,
which tests/test_transport.py and the CLI tests (tests/respx_bridge.py) run over real sockets."""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import anyio
import httpx

from scanctl.cache.front import CacheFront
from scanctl.clock import Clock, FakeClock
from scanctl.config import load_builtin_profile
from scanctl.demo.headers import HintStyle, hint_headers
from scanctl.demo.limiters import Limiter
from scanctl.engine import ScanEngine, ScanOutcome, ScanSettings
from scanctl.fetch import Fetcher, HttpxFetcher
from scanctl.metrics import RunMetrics
from scanctl.pacing import Pacer
from scanctl.records import ScanRecord
from scanctl.resilience import RetryBudget
from scanctl.runner import RunObserver

Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


@dataclass
class EngineRun:
    records: list[ScanRecord] = field(default_factory=list)
    metrics: RunMetrics | None = None
    outcome: ScanOutcome | None = None
    clock: Clock = field(default_factory=FakeClock)

    def by_symbol(self) -> dict[str, ScanRecord]:
        return {r.symbol: r for r in self.records}


async def run_engine(
    handler: Handler | None,
    symbols: Iterable[str],
    *,
    type_name: str = "signals",
    clock: Clock | None = None,
    client: httpx.AsyncClient | None = None,
    fetcher: Fetcher | None = None,
    pacer: Pacer | None = None,
    budget: RetryBudget | None = None,
    cache: CacheFront | None = None,
    **settings: object,
) -> EngineRun:
    run = EngineRun(clock=clock or FakeClock())
    endpoint = load_builtin_profile().endpoint(type_name)
    scan_settings = ScanSettings(endpoint=endpoint, base_url="http://upstream.test", **settings)  # type: ignore[arg-type]
    run.metrics = metrics = RunMetrics(type_name, total=0)
    if fetcher is None:
        if client is None:
            assert handler is not None
            client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        fetcher = HttpxFetcher(client, scan_settings.max_body)
    try:
        engine = ScanEngine(
            scan_settings,
            fetcher,
            run.clock,
            RunObserver(metrics, run.records.append),  # the run's own observer, records kept
            rng=random.Random(7),
            pacer=pacer,
            budget=budget,
            cache=cache,
        )
        run.outcome = await engine.run(symbols)
        if cache is not None:
            cache.flush()
    finally:
        await fetcher.aclose()
    return run


@dataclass
class UpstreamCounts:
    requests: int = 0
    throttled: int = 0
    by_symbol: dict[str, int] = field(default_factory=dict)
    sent_at: list[float] = field(default_factory=list)  # when each request arrived
    throttled_at: list[float] = field(default_factory=list)  # ...and each refused one


def limited_handler(
    clock: Clock,
    limiter: Limiter,
    *,
    hints: frozenset[str] | HintStyle = frozenset(),
    latency: float = 0.05,
    seed: int = 1,
    policy: tuple[int, int] | None = None,
) -> tuple[Handler, UpstreamCounts]:
    """An upstream in virtual time: one of the demo's limiters, hint headers, lognormal latency.

    `hints`: the header kinds, or a whole `HintStyle` (lying resets and all). `policy` is the
    IETF (q, w) to announce; by default the limiter's own limit and window.
    """
    rng = random.Random(seed)
    counts = UpstreamCounts()
    style = hints if isinstance(hints, HintStyle) else HintStyle(frozenset(hints))

    async def handler(request: httpx.Request) -> httpx.Response:
        counts.requests += 1
        symbol = request.url.path.rsplit("/", 1)[-1]
        counts.by_symbol[symbol] = counts.by_symbol.get(symbol, 0) + 1
        now = clock.monotonic()
        counts.sent_at.append(now)
        decision = limiter.admit(now)
        headers = hint_headers(
            decision,
            style,
            throttled=not decision.allowed,
            wall_now=clock.wall(),
            policy=policy,
        )
        if not decision.allowed:
            counts.throttled += 1
            counts.throttled_at.append(now)
            await anyio.sleep(0.002)
            return httpx.Response(429, headers=headers, json={"detail": "Too many requests"})
        await anyio.sleep(decision.delay + latency * math.exp(0.5 * rng.gauss(0.0, 1.0)))
        return httpx.Response(200, headers=headers, json={"symbol": symbol})

    return handler, counts
