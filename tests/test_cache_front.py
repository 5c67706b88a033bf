"""What a scan does with the cache, on SQLite and on Redis alike (the same suite for both)."""

from __future__ import annotations

import random
from collections import Counter

import httpx
import pytest

from scanctl.cache.front import CacheFront, CachePolicy
from scanctl.cache.store import CacheKey, CacheStore, Entry
from scanctl.clock import FakeClock
from scanctl.records import ScanRecord
from tests.engine_helpers import run_engine

pytestmark = pytest.mark.anyio
NS = "cryptosatx http://upstream.test"


class Upstream:
    """Counts requests per symbol; answers 200, 404 for ZZ*, or `status` when set."""

    def __init__(self, status: int | None = None) -> None:
        self.status = status
        self.requests: Counter[str] = Counter()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        symbol = request.url.path.rsplit("/", 1)[-1]
        self.requests[symbol] += 1
        if self.status is not None:
            return httpx.Response(self.status, json={"detail": "down for maintenance"})
        if symbol.startswith("ZZ"):
            return httpx.Response(404, json={"detail": f"No data for {symbol}"})
        return httpx.Response(200, json={"symbol": symbol, "n": self.requests[symbol]})


def front(store: CacheStore, clock: FakeClock, **policy: object) -> CacheFront:
    settings: dict[str, object] = {"ttl": 300.0, **policy}
    return CacheFront(
        store,
        NS,
        "signals",
        CachePolicy(**settings),
        wall=clock.wall,
        rng=random.Random(3),  # type: ignore[arg-type]
    )


async def scan(
    store: CacheStore, clock: FakeClock, upstream: Upstream, symbols: list[str], **policy: object
):  # type: ignore[no-untyped-def]
    cache = front(store, clock, **policy)
    run = await run_engine(upstream, symbols, clock=clock, cache=cache, retries=1)
    return run, cache


async def test_a_second_scan_within_the_ttl_sends_nothing(shared_store: CacheStore) -> None:
    clock, upstream = FakeClock(), Upstream()
    symbols = [f"S{i:03d}" for i in range(300)]
    first, _ = await scan(shared_store, clock, upstream, symbols)
    assert all(r.ok and not r.cached for r in first.records)
    clock.now += 100
    second, cache = await scan(shared_store, clock, upstream, symbols)
    assert sum(upstream.requests.values()) == 300
    assert len(second.records) == 300 and all(r.ok and r.cached for r in second.records)
    assert second.by_symbol()["S007"].data == {"symbol": "S007", "n": 1}
    assert sorted(r.index for r in second.records) == list(range(300))
    assert cache.counts.hits == 300 and cache.counts.misses == 0


async def test_expired_entries_are_fetched_again(shared_store: CacheStore) -> None:
    clock, upstream = FakeClock(), Upstream()
    await scan(shared_store, clock, upstream, ["BTC"])
    clock.now += 301
    run, _ = await scan(shared_store, clock, upstream, ["BTC"])
    assert upstream.requests["BTC"] == 2 and run.records[0].data["n"] == 2
    assert not run.records[0].cached


async def test_ttl_override_sets_how_long_answers_stay_fresh(shared_store: CacheStore) -> None:
    clock, upstream = FakeClock(), Upstream()
    await scan(shared_store, clock, upstream, ["BTC"], ttl=5.0)
    key = CacheKey(NS, "signals", "BTC")
    assert shared_store.get_many([key])[key].ttl == 5.0
    clock.now += 3
    assert (await scan(shared_store, clock, upstream, ["BTC"], ttl=5.0))[0].records[0].cached
    clock.now += 3  # 6 s old: expired under a 5 s TTL, fresh under the type's 300 s
    run, _ = await scan(shared_store, clock, upstream, ["BTC"], ttl=5.0)
    assert upstream.requests["BTC"] == 2 and not run.records[0].cached


async def test_refresh_fetches_everything_and_stores_it(shared_store: CacheStore) -> None:
    clock, upstream = FakeClock(), Upstream()
    await scan(shared_store, clock, upstream, ["BTC", "ETH"])
    clock.now += 10
    run, cache = await scan(shared_store, clock, upstream, ["BTC", "ETH"], refresh=True)
    assert upstream.requests == {"BTC": 2, "ETH": 2}
    assert not any(r.cached for r in run.records) and cache.counts.misses == 2
    clock.now += 10
    third, _ = await scan(shared_store, clock, upstream, ["BTC"])
    assert third.records[0].cached and third.records[0].data["n"] == 2  # the refreshed answer


async def test_a_404_is_cached_briefly_as_a_negative_entry(shared_store: CacheStore) -> None:
    clock, upstream = FakeClock(), Upstream()
    first, _ = await scan(shared_store, clock, upstream, ["ZZX"], negative_ttl=30.0)
    assert first.records[0].status == 404 and not first.records[0].ok
    clock.now += 20
    second, _ = await scan(shared_store, clock, upstream, ["ZZX"], negative_ttl=30.0)
    record = second.records[0]
    assert record.cached and not record.ok and record.status == 404 and record.data is None
    assert record.error == "HTTP 404: No data for ZZX" and record.error_kind == "HTTP 404"
    assert upstream.requests["ZZX"] == 1
    clock.now += 11  # past the negative TTL (not the type's 300 s)
    await scan(shared_store, clock, upstream, ["ZZX"], negative_ttl=30.0)
    assert upstream.requests["ZZX"] == 2


async def test_failures_are_never_cached(shared_store: CacheStore) -> None:
    clock = FakeClock()
    await scan(shared_store, clock, Upstream(status=500), ["BTC"], negative_ttl=30.0)
    key = CacheKey(NS, "signals", "BTC")
    assert shared_store.get_many([key]) == {}


async def test_stale_if_error_serves_a_recently_expired_answer(shared_store: CacheStore) -> None:
    clock = FakeClock()
    await scan(shared_store, clock, Upstream(), ["BTC", "ETH"], ttl=60.0)
    clock.now += 100  # expired 40 s ago
    down = Upstream(status=503)
    run, cache = await scan(
        shared_store, clock, down, ["BTC", "ETH"], ttl=60.0, stale_if_error=50.0
    )
    assert down.requests["BTC"] >= 1  # it did try first
    record = run.by_symbol()["BTC"]
    assert record.ok and record.stale and record.cached and record.data == {"symbol": "BTC", "n": 1}
    assert cache.counts.stale_served == 2 and run.metrics is not None and run.metrics.stale == 2
    # Past the window: the failure stands.
    clock.now += 20  # expired 60 s ago
    late, _ = await scan(shared_store, clock, down, ["BTC"], ttl=60.0, stale_if_error=50.0)
    assert not late.records[0].ok and not late.records[0].stale
    assert late.records[0].error_kind == "HTTP 503"


async def test_without_stale_if_error_an_expired_answer_is_not_served(
    shared_store: CacheStore,
) -> None:
    clock = FakeClock()
    await scan(shared_store, clock, Upstream(), ["BTC"], ttl=60.0)
    clock.now += 61
    run, _ = await scan(shared_store, clock, Upstream(status=503), ["BTC"], ttl=60.0)
    assert not run.records[0].ok and not run.records[0].cached


async def test_an_early_refresh_that_fails_serves_the_still_fresh_entry(
    shared_store: CacheStore,
) -> None:
    clock = FakeClock()
    await scan(shared_store, clock, Upstream(), ["BTC"])
    clock.now += 200  # 100 s left, under half the TTL: refresh ahead sends it on...
    down = Upstream(status=503)
    run, cache = await scan(shared_store, clock, down, ["BTC"], refresh_ahead=0.5)
    assert down.requests["BTC"] >= 1 and cache.counts.refreshed_early == 1
    record = run.records[0]  # ...and its failure falls back on the entry, not stale
    assert record.ok and record.cached and not record.stale


async def test_single_flight_a_second_scan_waits_for_the_first_ones_answer(
    shared_store: CacheStore,
) -> None:
    """Two scans (two owners) over one store: the second waits on the lease, sends nothing."""
    clock, upstream = FakeClock(), Upstream()
    first, second = front(shared_store, clock), front(shared_store, clock)
    assert first.claim(0, "BTC") is True
    assert second.claim(0, "BTC") is False  # in flight elsewhere: wait
    run_task = await run_engine(upstream, ["BTC"], clock=clock, cache=first)
    assert run_task.records[0].ok
    answer = second.claim(0, "BTC")
    assert (
        not isinstance(answer, bool) and answer.cached and answer.data == {"symbol": "BTC", "n": 1}
    )
    assert upstream.requests["BTC"] == 1 and second.counts.waited == 1


async def test_a_waiting_symbol_does_not_hold_a_worker(shared_store: CacheStore) -> None:
    """BTC's lease is held elsewhere: ETH goes at once on the only worker; when the holder gives
    up (its fetch failed, so it stored nothing), BTC is claimed and fetched here."""
    import anyio

    clock, upstream = FakeClock(), Upstream()
    holder = front(shared_store, clock)
    assert holder.claim(0, "BTC") is True
    cache = front(shared_store, clock)

    async def give_up_later() -> None:
        for _ in range(20):  # the fake clock moves as the scan polls
            await anyio.lowlevel.checkpoint()
        shared_store.release([CacheKey(NS, "signals", "BTC")], holder.owner)

    async with anyio.create_task_group() as group:
        group.start_soon(give_up_later)
        run = await run_engine(upstream, ["BTC", "ETH"], clock=clock, cache=cache, concurrency=1)
    assert [r.symbol for r in run.records] == ["ETH", "BTC"]
    assert upstream.requests == {"ETH": 1, "BTC": 1} and all(r.ok for r in run.records)


async def test_a_cache_that_fails_mid_run_is_dropped_with_one_warning(
    shared_store: CacheStore,
) -> None:
    from scanctl.errors import CacheError

    class Failing:
        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            attr = getattr(shared_store, name)
            if name in ("set_many", "release"):

                def fail(*args: object, **kwargs: object) -> None:
                    raise CacheError("cache x: database or disk is full")

                return fail
            return attr

    warnings: list[str] = []
    clock, upstream = FakeClock(), Upstream()
    cache = CacheFront(
        Failing(),
        NS,
        "signals",
        CachePolicy(ttl=60.0),
        wall=clock.wall,
        warn=warnings.append,  # type: ignore[arg-type]
    )
    symbols = [f"S{i:03d}" for i in range(600)]
    run = await run_engine(upstream, symbols, clock=clock, cache=cache)
    assert len(run.records) == 600 and all(r.ok for r in run.records)
    assert warnings == ["cache x: database or disk is full; going on without the cache"]


async def test_entries_are_keyed_by_upstream_and_type(shared_store: CacheStore) -> None:
    clock = FakeClock()
    shared_store.set_many(
        [
            Entry(
                CacheKey("other http://elsewhere", "signals", "BTC"),
                200,
                {"x": 1},
                None,
                clock.wall(),
                300,
            )
        ]
    )
    upstream = Upstream()
    run, _ = await scan(shared_store, clock, upstream, ["BTC"])
    assert upstream.requests["BTC"] == 1 and not run.records[0].cached


async def test_an_interrupted_run_gives_back_its_leases(shared_store: CacheStore) -> None:
    clock = FakeClock()
    interrupted, other = front(shared_store, clock), front(shared_store, clock)
    assert interrupted.claim(0, "BTC") is True and interrupted.claim(1, "ETH") is True
    interrupted.settle(ScanRecord("ETH", "signals", True, 200, {"x": 1}, None, 1, 5.0, index=1))
    assert other.claim(0, "BTC") is False
    interrupted.close()  # BTC never finished
    assert other.claim(0, "BTC") is True
    answer = other.claim(1, "ETH")
    assert not isinstance(answer, bool) and answer.data == {"x": 1}


async def test_a_shorter_ttl_applies_to_entries_already_stored(shared_store: CacheStore) -> None:
    clock, upstream = FakeClock(), Upstream()
    await scan(shared_store, clock, upstream, ["BTC"], ttl=300.0)
    clock.now += 100
    run, _ = await scan(shared_store, clock, upstream, ["BTC"], ttl=60.0)  # 100 s old > 60 s
    assert upstream.requests["BTC"] == 2 and not run.records[0].cached


async def test_any_2xx_answer_is_cached_as_ok(shared_store: CacheStore) -> None:
    clock = FakeClock()

    def answer_201(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, json={"made": True})

    await run_engine(answer_201, ["BTC"], clock=clock, cache=front(shared_store, clock))
    clock.now += 5
    run, _ = await scan(shared_store, clock, Upstream(), ["BTC"])
    record = run.records[0]
    assert record.cached and record.ok and record.status == 201 and record.data == {"made": True}


async def test_a_lease_is_renewed_before_another_try(shared_store: CacheStore) -> None:
    clock = FakeClock()
    mine = front(shared_store, clock, lease_seconds=3.0)
    other = front(shared_store, clock, lease_seconds=3.0)
    assert mine.claim(0, "BTC") is True
    clock.now += 2.5
    mine.renew("BTC")  # e.g. before a retry
    clock.now += 2.0  # past the first lease, inside the renewed one
    assert other.claim(0, "BTC") is False


def test_editing_an_endpoint_changes_its_cache_namespace() -> None:
    import dataclasses

    from scanctl.cache import namespace_for
    from scanctl.config import load_builtin_profile

    mss = load_builtin_profile().endpoint("mss")
    same = namespace_for("p", "http://a", mss)
    assert same == namespace_for("p", "http://a", dataclasses.replace(mss))
    edited = dataclasses.replace(mss, params={"send_alert": "false", "window": "4h"})
    assert namespace_for("p", "http://a", edited) != same
    assert namespace_for("p", "http://a", dataclasses.replace(mss, payload="data")) != same
