"""The engine's shape: workers over a stream, no barrier, concurrency and rate ceilings."""

from __future__ import annotations

import anyio
import httpx
import pytest

from scanctl.clock import FakeClock
from scanctl.config import load_builtin_profile
from scanctl.engine import ScanEngine, ScanSettings
from scanctl.fetch import Fetcher, HttpxFetcher, LazyFetcher, make_client
from scanctl.hedge import RecentLatency
from scanctl.pacing import Feedback, GcraMeter, Pacer
from scanctl.ratecontrol import LearnedPace
from scanctl.records import ScanRecord
from tests.engine_helpers import run_engine

BASE = "http://upstream.test"


@pytest.mark.anyio
async def test_a_slow_symbol_never_idles_the_other_workers() -> None:
    """SLOW answers only after every other symbol is done: impossible with a batch barrier."""
    others_done = anyio.Event()
    symbols = ["SLOW", *(f"S{i}" for i in range(30))]
    answered: set[str] = set()

    async def handler(request: httpx.Request) -> httpx.Response:
        symbol = request.url.path.rsplit("/", 1)[-1]
        if symbol == "SLOW":
            await others_done.wait()
        else:
            answered.add(symbol)
            if len(answered) == len(symbols) - 1:
                others_done.set()
        return httpx.Response(200, json={"symbol": symbol})

    run = await run_engine(handler, symbols, concurrency=2)
    assert [r.symbol for r in run.records][-1] == "SLOW"
    assert len(run.records) == len(symbols) and all(r.ok for r in run.records)


@pytest.mark.anyio
@pytest.mark.parametrize("concurrency", [1, 3, 8])
async def test_requests_in_flight_never_exceed_concurrency(concurrency: int) -> None:
    in_flight = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        in_flight -= 1
        return httpx.Response(200, json={})

    run = await run_engine(handler, [f"S{i}" for i in range(40)], concurrency=concurrency)
    assert len(run.records) == 40
    assert peak == concurrency


@pytest.mark.anyio
async def test_api_key_and_extra_headers_are_sent() -> None:
    seen: list[httpx.Headers] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(200, json={})

    settings = ScanSettings(
        endpoint=load_builtin_profile().endpoint("signals"),
        base_url="http://upstream.test",
        headers={"X-API-Key": "k-123", "X-Team": "blue"},
    )
    client = make_client(settings, transport=httpx.MockTransport(handler))
    await run_engine(None, ["BTC"], client=client)
    assert seen[0]["x-api-key"] == "k-123" and seen[0]["x-team"] == "blue"


@pytest.mark.anyio
async def test_symbols_are_consumed_lazily() -> None:
    """The engine pulls symbols as workers free up; it never lists the whole input first."""
    pulled = 0

    def symbols():  # type: ignore[no-untyped-def]
        nonlocal pulled
        for i in range(10):
            pulled += 1
            yield f"S{i}"

    pulled_when_first_answered: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        pulled_when_first_answered.append(pulled)
        return httpx.Response(200, json={})

    run = await run_engine(handler, symbols(), concurrency=2)
    assert len(run.records) == 10
    assert pulled_when_first_answered[0] <= 2


def test_gcra_spaces_reservations_and_allows_the_burst() -> None:
    clock = FakeClock()
    meter = GcraMeter(clock, burst=3)
    waits = [meter.reserve(10.0) for _ in range(6)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3:] == pytest.approx([0.1, 0.2, 0.3])


@pytest.mark.anyio
async def test_gate_holds_until_retry_after_passes_and_never_shortens() -> None:
    clock = FakeClock()
    pacer = Pacer(clock)
    pacer.close_gate(5.0)
    pacer.close_gate(2.0)  # a shorter hint does not reopen early
    start = clock.monotonic()
    await pacer.acquire()
    assert clock.monotonic() - start == pytest.approx(5.0)
    assert pacer.gate_wait() == 0.0


@pytest.mark.anyio
async def test_a_ticket_at_once_only_when_nothing_would_make_it_wait() -> None:
    clock = FakeClock()
    pacer = Pacer(clock, concurrency=2, rate=10.0)
    first = pacer.acquire_at_once()
    assert first is not None and first.sent_at == clock.monotonic()
    assert pacer.acquire_at_once() is None  # the next slot at 10/s is 0.1 s away...
    clock.now += 0.1
    second = pacer.acquire_at_once()  # ...and asking early reserved nothing: it is free now
    assert second is not None
    clock.now += 1.0
    assert pacer.acquire_at_once() is None  # both window places taken
    pacer.release(first, Feedback(admitted=True))
    pacer.close_gate(1.0)
    assert pacer.acquire_at_once() is None  # a closed gate holds everyone
    assert pacer.in_flight == 1  # the refusals took no window place
    clock.now += 1.0
    assert pacer.acquire_at_once() is not None


@pytest.mark.anyio
async def test_a_learned_burst_never_passes_the_rate_ceiling() -> None:
    clock = FakeClock()
    learned = LearnedPace(5.0, burst=10)
    capped = Pacer(clock, concurrency=20, rate=2.0, learned=learned)
    assert capped.acquire_at_once() is not None and capped.acquire_at_once() is None
    # No --rate: half the burst is spent at once (the other half is room for jitter).
    free = Pacer(clock, concurrency=20, learned=learned)
    tickets = [free.acquire_at_once() for _ in range(11)]
    assert all(tickets[:6]) and tickets[6] is None


def test_the_hedging_p95_is_recomputed_now_and_then_not_on_every_answer() -> None:
    from unittest import mock

    from scanctl import hedge

    recent = RecentLatency(size=64, every=32)
    with mock.patch.object(hedge, "percentile", wraps=hedge.percentile) as computed:
        for i in range(1000):
            recent.add(0.001 * (i % 100))
    # Once the window is full its length stops changing: that must not mean a sort per sample.
    assert computed.call_count == 1 + 1000 // 32  # the first at 20 samples, then every 32nd


class EventLog:
    """An observer that is not RunMetrics: what the engine tells, in order."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def observe_record(self, record: ScanRecord) -> None:
        self.events.append(f"record {record.symbol} ok={record.ok} attempts={record.attempts}")

    def observe_request(self, latency_ms: float) -> None:
        self.events.append("request")

    def observe_throttled(self) -> None:
        self.events.append("throttled")

    def observe_retry(self) -> None:
        self.events.append("retry")

    def observe_hedge(self) -> None:
        self.events.append("hedge")


@pytest.mark.anyio
async def test_the_engine_tells_its_observer_and_reads_nothing_back() -> None:
    """One symbol: a 429, a 500, then a 200. The observer hears each request, the throttle,
    the retry the budget granted, then the one record; nothing else watches the engine."""
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": "0"}),
            httpx.Response(500),
            httpx.Response(200, json={"score": 1}),
        ]
    )
    log = EventLog()
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: next(answers)))
    settings = ScanSettings(endpoint=load_builtin_profile().endpoint("signals"), base_url=BASE)
    clock = FakeClock()
    engine = ScanEngine(settings, HttpxFetcher(client, settings.max_body), clock, log)
    async with client:
        outcome = await engine.run(["BTC"])
    assert outcome.stop is None
    assert log.events == [
        "request",
        "throttled",
        "request",
        "retry",
        "request",
        "record BTC ok=True attempts=3",
    ]


class CountingFactory:
    def __init__(self) -> None:
        self.built = 0

    def __call__(self) -> Fetcher:
        self.built += 1
        client = httpx.AsyncClient(
            transport=httpx.MockTransport(lambda request: httpx.Response(200, json={}))
        )
        return HttpxFetcher(client, 1024)


@pytest.mark.anyio
async def test_the_fetcher_is_built_once_and_only_when_a_request_is_due() -> None:
    """A run answered entirely from the cache never pays for building a client."""
    factory = CountingFactory()
    lazy = LazyFetcher(factory)
    await lazy.aclose()
    assert factory.built == 0
    lazy.prepare()
    lazy.prepare()
    answer = await lazy.fetch("GET", httpx.URL(f"{BASE}/signals/BTC"))
    await lazy.aclose()
    assert answer.status == 200 and factory.built == 1
