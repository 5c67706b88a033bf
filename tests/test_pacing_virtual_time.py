"""Timing of many concurrent workers, in trio's virtual time (MockClock autojump: no sleeping)."""

from __future__ import annotations

import itertools
from typing import Any

import anyio
import httpx
import pytest
from trio.testing import MockClock

from scanctl.clock import LoopClock
from tests.engine_helpers import run_engine

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return ("trio", {"clock": MockClock(autojump_threshold=0)})


@pytest.mark.parametrize(("rate", "concurrency"), [(20.0, 10), (50.0, 50), (5.0, 2)])
async def test_send_rate_never_exceeds_the_rate_ceiling(rate: float, concurrency: int) -> None:
    clock = LoopClock()
    sent: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        sent.append(clock.monotonic())
        await anyio.sleep(0.2)  # upstream latency, in virtual time
        return httpx.Response(200, json={})

    n = 120
    await run_engine(
        handler, [f"S{i}" for i in range(n)], concurrency=concurrency, rate=rate, clock=clock
    )
    assert len(sent) == n
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert min(gaps) >= 1 / rate - 1e-9
    # ...and the ceiling is reached, not undershot, when concurrency allows it.
    span = sent[-1] - sent[0]
    ideal = (n - 1) / min(rate, concurrency / 0.2)
    assert span == pytest.approx(ideal, rel=0.02)


async def test_wall_time_is_bound_by_latency_over_concurrency_without_barrier() -> None:
    """40 symbols, 4 workers, S0 takes 1 s and the rest 0.1 s.

    Without a barrier, three workers share the 39 quick ones while S0 runs: 3.9 / 3 = 1.3 s.
    Batches of 4 would take 1.0 + 9 * 0.1 = 1.9 s.
    """
    clock = LoopClock()

    async def handler(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(1.0 if request.url.path.endswith("/S0") else 0.1)
        return httpx.Response(200, json={})

    start = clock.monotonic()
    run = await run_engine(handler, [f"S{i}" for i in range(40)], concurrency=4, clock=clock)
    elapsed = clock.monotonic() - start
    assert all(r.ok for r in run.records)
    assert elapsed == pytest.approx(1.3, abs=0.01)


async def test_timeout_bounds_the_whole_request() -> None:
    clock = LoopClock()

    async def handler(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(60)  # a trickling / hung upstream
        return httpx.Response(200, json={})

    start = clock.monotonic()
    run = await run_engine(handler, ["BTC"], timeout=2.0, retries=1, backoff_base=0.5, clock=clock)
    record = run.records[0]
    assert record.error == "Request timeout" and record.attempts == 2
    assert clock.monotonic() - start == pytest.approx(4.0, abs=0.6)
