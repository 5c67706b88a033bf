"""The simulated upstream: each limiter admits what it should, hints say what they should."""

from __future__ import annotations

import httpx
import pytest

from scanctl.demo.limiters import FixedWindow, LeakyBucket, SlidingWindow, TokenBucket
from scanctl.demo.payloads import ROUTES
from scanctl.demo.server import DemoConfig, build_app, parse_args


def admitted(limiter, times: list[float]) -> list[bool]:  # type: ignore[no-untyped-def]
    return [limiter.admit(t).allowed for t in times]


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=3, start=0.0)
    assert admitted(bucket, [0, 0, 0, 0]) == [True, True, True, False]
    refused = bucket.admit(0.0)
    assert refused.retry_after == pytest.approx(0.1)
    assert admitted(bucket, [0.1, 0.15, 0.2]) == [True, False, True]


def test_leaky_bucket_queues_up_to_burst_then_rejects() -> None:
    bucket = LeakyBucket(rate=10, burst=2, start=0.0)
    first, second, third = (bucket.admit(0.0) for _ in range(3))
    assert [first.delay, second.delay, third.delay] == pytest.approx([0.0, 0.1, 0.2])
    rejected = bucket.admit(0.0)
    assert not rejected.allowed and rejected.retry_after == pytest.approx(0.1)
    assert bucket.admit(0.1).allowed  # one place freed in the queue


def test_fixed_window_resets_at_the_boundary_and_allows_a_double_burst_across_it() -> None:
    window = FixedWindow(limit=3, window=1.0, start=0.0)
    assert admitted(window, [0.7, 0.8, 0.9, 0.95]) == [True, True, True, False]
    assert window.admit(0.95).retry_after == pytest.approx(0.05)
    assert admitted(window, [1.0, 1.0, 1.0, 1.0]) == [True, True, True, False]


def test_sliding_window_counts_any_window_of_that_length() -> None:
    window = SlidingWindow(limit=3, window=1.0)
    assert admitted(window, [0.7, 0.8, 0.9]) == [True, True, True]
    assert admitted(window, [1.0, 1.6, 1.71]) == [False, False, True]
    assert window.admit(1.72).retry_after == pytest.approx(0.08)


def asgi_client(config: DemoConfig) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=build_app(config))
    return httpx.AsyncClient(transport=transport, base_url="http://demo.test")


def client(**config: object) -> httpx.AsyncClient:
    return asgi_client(DemoConfig(latency_median=0.0, **config))  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_routes_answer_deterministic_json_and_404_for_zz_symbols() -> None:
    async with client() as http:
        for path in ROUTES:
            first = await http.get(path.replace("{symbol}", "btc"))
            assert first.status_code == 200 and first.json()["symbol"] == "BTC"
            assert (await http.get(path.replace("{symbol}", "BTC"))).json() == first.json()
        missing = await http.get("/signals/ZZTOP")
        assert missing.status_code == 404 and missing.json() == {"detail": "No data for ZZTOP"}
        assert (await http.get("/coinapi/price/BTC")).status_code == 404  # the route the API lacks
        stats = (await http.get("/_demo/stats")).json()
    assert stats["requests"] == 9 and stats["by_status"] == {"200": 8, "404": 1}


@pytest.mark.parametrize(
    ("hints", "expected"),
    [
        ("retry-after", {"retry-after"}),
        ("none", set()),
        ("x-ratelimit", {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"}),
        ("ietf", {"ratelimit", "ratelimit-policy"}),
        ("used-weight", {"x-mbx-used-weight-1m"}),
    ],
)
@pytest.mark.anyio
async def test_a_429_carries_exactly_the_hints_asked_for(hints: str, expected: set[str]) -> None:
    _, config = parse_args(["--rate-limit", "1", "--burst", "1", "--hints", hints])
    config.latency_median = 0.0
    async with asgi_client(config) as http:
        assert (await http.get("/signals/BTC")).status_code == 200
        throttled = await http.get("/signals/ETH")
    assert throttled.status_code == 429
    hint_names = {"retry-after", "x-ratelimit-limit", "x-ratelimit-remaining"}
    hint_names |= {"x-ratelimit-reset", "ratelimit", "ratelimit-policy", "x-mbx-used-weight-1m"}
    assert {name for name in throttled.headers if name in hint_names} == expected


@pytest.mark.anyio
async def test_ietf_hints_describe_the_window_quota() -> None:
    async with client(
        rate_limit=50.0, limiter="fixed-window", window=2.0, hints=frozenset({"ietf"})
    ) as http:
        answer = await http.get("/signals/BTC")
    assert answer.headers["ratelimit-policy"] == '"default";q=100;w=2'
    assert answer.headers["ratelimit"].startswith('"default";r=99;t=')
    async with client(rate_limit=80.0, burst=20, hints=frozenset({"ietf"})) as http:
        bucket = await http.get("/signals/BTC")
    assert bucket.headers["ratelimit-policy"] == '"default";q=80;w=1'  # the rate, per second
    assert bucket.headers["ratelimit"].startswith('"default";r=19;t=')


@pytest.mark.anyio
async def test_too_many_429s_earn_a_418_ban_with_retry_after() -> None:
    async with client(rate_limit=1.0, burst=1, ban_after=3, ban_seconds=120.0) as http:
        statuses = [(await http.get("/signals/BTC")).status_code for _ in range(5)]
        banned = await http.get("/signals/BTC")
    assert statuses == [200, 429, 429, 429, 418]
    assert banned.status_code == 418 and 119 <= int(banned.headers["retry-after"]) <= 120


@pytest.mark.anyio
async def test_faults_answer_as_configured() -> None:
    async with client(error_rate=1.0) as http:
        assert (await http.get("/mss/analyze/BTC")).status_code == 500
    async with client(unavailable_rate=1.0) as http:
        assert (await http.get("/mss/analyze/BTC")).status_code == 503
    async with client(html_rate=1.0) as http:
        answer = await http.get("/mss/analyze/BTC")
        assert answer.status_code == 200 and answer.text.startswith("<html>")
    async with client(truncated_rate=1.0) as http:
        with pytest.raises(ValueError):
            (await http.get("/mss/analyze/BTC")).json()
    async with client(require_key="s3cret") as http:
        assert (await http.get("/signals/BTC")).status_code == 401
        assert (await http.get("/signals/BTC", headers={"X-API-Key": "s3cret"})).status_code == 200


def test_fault_rates_adding_past_one_are_refused() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--error-rate", "0.6", "--drop-rate", "0.6"])


class SteppedClock:
    """Time that moves only when the test says so: an outage is crossed without sleeping."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("mode", ["drop", "503"])
@pytest.mark.anyio
async def test_an_outage_opens_relative_to_the_first_request_and_closes_after_its_duration(
    mode: str,
) -> None:
    _, config = parse_args(["--outage", "5:20", "--outage-mode", mode, "--latency-median", "0"])
    clock = SteppedClock(1000.0)
    transport = httpx.ASGITransport(app=build_app(config, clock=clock))
    async with httpx.AsyncClient(transport=transport, base_url="http://demo.test") as http:
        assert (await http.get("/_demo/stats")).json()["outage"] is None  # no request yet
        clock.now = 1002.0  # the first request, 2 s after the start: the outage is 7..27 s
        assert (await http.get("/signals/BTC")).status_code == 200
        clock.now = 1006.9
        assert (await http.get("/signals/BTC")).status_code == 200
        clock.now = 1007.0
        during = await http.get("/signals/BTC")
        clock.now = 1026.9
        late = await http.get("/signals/BTC")
        clock.now = 1027.0
        assert (await http.get("/signals/BTC")).status_code == 200
        stats = (await http.get("/_demo/stats")).json()
    for answer in (during, late):
        if mode == "503":
            assert answer.status_code == 503 and "retry-after" not in answer.headers
        else:  # the body stops short of the length promised: a connection cut mid-answer
            assert len(answer.content) < int(answer.headers["content-length"])
    assert stats["outage"] == [7.0, 27.0]
    assert stats["faults"] == {"outage": 2} and stats["requests"] == 5
    assert stats["per_second"][2] == 1 and stats["per_second"][7] == 1
    assert stats["uptime"] == 27.0


def test_an_outage_needs_start_and_duration() -> None:
    for bad in ("5", "5:0", "-1:20", "a:b", "5:inf"):
        with pytest.raises(SystemExit):
            parse_args(["--outage", bad])
    assert parse_args(["--outage", "0:1.5"])[1].outage == (0.0, 1.5)
