"""Run the engine against an in-process handler with a fake clock (no network, no sleeping)."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import httpx

from scanctl.clock import Clock, FakeClock
from scanctl.config import load_builtin_profile
from scanctl.engine import ScanEngine, ScanOutcome, ScanSettings
from scanctl.metrics import RunMetrics
from scanctl.pacing import Pacer
from scanctl.records import ScanRecord

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
    pacer: Pacer | None = None,
    **settings: object,
) -> EngineRun:
    run = EngineRun(clock=clock or FakeClock())
    endpoint = load_builtin_profile().endpoint(type_name)
    scan_settings = ScanSettings(endpoint=endpoint, base_url="http://upstream.test", **settings)  # type: ignore[arg-type]
    run.metrics = RunMetrics(type_name, total=0)
    if client is None:
        assert handler is not None
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    async with client:
        engine = ScanEngine(
            scan_settings,
            client,
            run.clock,
            run.records.append,
            run.metrics,
            rng=random.Random(7),
            pacer=pacer,
        )
        run.outcome = await engine.run(symbols)
    return run
