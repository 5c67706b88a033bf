"""The simulated upstream: each limiter admits what it should, hints say what they should."""

from __future__ import annotations

import math
import re
import time

import httpx
import pytest

from scanctl.demo.limiters import FixedWindow, LeakyBucket, SlidingWindow, TokenBucket
from scanctl.demo.options import DemoConfig, parse_args
from scanctl.demo.payloads import ROUTES
from scanctl.demo.server import build_app
from scanctl.errors import UsageError


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
    with pytest.raises(
        UsageError, match=r"add up to more than 1 \(--error-rate 0.6, --drop-rate 0.6\)"
    ):
        parse_args(["--error-rate", "0.6", "--drop-rate", "0.6"])
    exactly_one = ["--error-rate", "0.1", "--drop-rate", "0.2", "--html-rate", "0.7"]
    assert parse_args(exactly_one)[1].html_rate == 0.7  # not refused for a rounding error


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
        with pytest.raises(UsageError, match="expected START:DURATION in seconds"):
            parse_args(["--outage", bad])
    assert parse_args(["--outage", "0:1.5"])[1].outage == (0.0, 1.5)


# -- issue 13: limiters that count refused requests, hint headers that lie ------------------


def test_a_sliding_window_counting_refusals_stays_full_while_a_client_keeps_sending() -> None:
    plain = SlidingWindow(limit=1, window=1.0)
    counting = SlidingWindow(limit=1, window=1.0, count_rejected=True)
    # One request, then one every 0.6-0.9 s: a plain window lets every other one through, once
    # the one before it has left the window; a counting one remembers each refusal for a window.
    times = [0.0, 0.9, 1.5, 2.2, 2.9]
    assert admitted(plain, times) == [True, False, True, False, True]
    assert admitted(counting, times) == [True, False, False, False, False]
    assert not counting.admit(3.8).allowed  # 2.9 is still in the window
    assert counting.admit(4.9).allowed  # a whole window of silence since the last refusal


def test_a_token_bucket_counting_refusals_goes_into_debt_of_at_most_one_bucket() -> None:
    plain = TokenBucket(rate=4, burst=1, start=0.0)
    counting = TokenBucket(rate=4, burst=1, start=0.0, count_rejected=True)
    times = [0.0, 0.125, 0.25, 0.375]  # twice the rate: every other one fits, without debt
    assert admitted(plain, times) == [True, False, True, False]
    assert admitted(counting, times) == [True, False, False, False]
    refused = counting.admit(0.5)  # -1 (the cap) + 0.5 refilled - 1 for this one: -1 again
    assert not refused.allowed and refused.retry_after == pytest.approx(0.5)
    assert counting.admit(1.0).allowed  # from -1: two tokens' worth of silence, as it said

    deep = TokenBucket(rate=4, burst=2, start=0.0, count_rejected=True)
    assert admitted(deep, [0.0, 0.0]) == [True, True]
    waits = [deep.admit(0.0).retry_after for _ in range(4)]
    assert waits == pytest.approx([0.5, 0.75, 0.75, 0.75])  # debt stops at one bucket (2)


def app_client(argv: list[str], clock: SteppedClock) -> httpx.AsyncClient:
    """The upstream as `python -m scanctl.demo ARGV` would build it, on a stepped clock."""
    _, config = parse_args([*argv, "--latency-median", "0"])
    transport = httpx.ASGITransport(app=build_app(config, clock=clock))
    return httpx.AsyncClient(transport=transport, base_url="http://demo.test")


@pytest.mark.parametrize("counting", [False, True])
@pytest.mark.parametrize("kind", ["token-bucket", "sliding-window", "fixed-window"])
@pytest.mark.anyio
async def test_count_rejected_reaches_the_limiter(kind: str, counting: bool) -> None:
    argv = ["--limiter", kind, "--rate-limit", "1", "--burst", "1", "--window", "1"]
    clock = SteppedClock(1000.0)
    statuses = []
    async with app_client(argv + ["--count-rejected"] * counting, clock) as http:
        for now in (1000.0, 1000.5, 1001.0):
            clock.now = now
            statuses.append((await http.get("/signals/BTC")).status_code)
    # At 1001.0 the first request is a second old: a plain limiter has room again; one that
    # counted the refusal at 1000.5 has not, except a fixed window, which has turned over.
    remembers = counting and kind != "fixed-window"
    assert statuses == [200, 429, 429 if remembers else 200]


@pytest.mark.parametrize("fractional", [False, True])
@pytest.mark.parametrize("offset", [0.0, 1.0])
@pytest.mark.anyio
async def test_an_epoch_reset_is_as_late_as_the_reset_offset_and_as_exact_as_asked(
    offset: float, fractional: bool
) -> None:
    argv = ["--limiter", "fixed-window", "--rate-limit", "4", "--window", "1"]
    argv += ["--hints", "x-ratelimit-epoch", "--reset-offset", str(offset)]
    argv += ["--fractional-epoch"] * fractional
    clock = SteppedClock(1000.0)  # the window opens at the upstream's start
    async with app_client(argv, clock) as http:
        clock.now = 1000.25  # the truth: the window resets in 0.75 s
        before = time.time()
        answer = await http.get("/signals/BTC")
        after = time.time()
    assert answer.status_code == 200
    header = answer.headers["x-ratelimit-reset"]
    late = 0.75 + offset
    if fractional:
        assert re.fullmatch(r"\d+\.\d{3}", header), header
        assert before + late - 0.001 <= float(header) <= after + late + 0.001
    else:
        assert re.fullmatch(r"\d+", header), header
        assert math.ceil(before + late) <= int(header) <= math.ceil(after + late)


@pytest.mark.parametrize(("offset", "expected"), [(0.0, "2"), (1.0, "3")])
@pytest.mark.anyio
async def test_a_reset_offset_makes_the_reset_and_retry_after_that_much_late(
    offset: float, expected: str
) -> None:
    argv = ["--limiter", "fixed-window", "--rate-limit", "1", "--window", "2"]
    argv += ["--hints", "x-ratelimit,retry-after", "--reset-offset", str(offset)]
    clock = SteppedClock(1000.0)
    async with app_client(argv, clock) as http:  # two per 2 s, all three at the window's start
        first, _, refused = [await http.get("/signals/BTC") for _ in range(3)]
    assert first.status_code == 200 and refused.status_code == 429
    # The truth is a whole 2 s here, which rounding up leaves as it is.
    assert first.headers["x-ratelimit-reset"] == expected
    assert refused.headers["x-ratelimit-reset"] == expected
    assert refused.headers["retry-after"] == expected


@pytest.mark.parametrize("always", [False, True])
@pytest.mark.anyio
async def test_retry_after_always_puts_it_on_a_200_too(always: bool) -> None:
    argv = ["--limiter", "fixed-window", "--rate-limit", "1", "--window", "1"]
    argv += ["--hints", "retry-after", *["--retry-after-always"] * always]
    clock = SteppedClock(1000.0)
    async with app_client(argv, clock) as http:
        clock.now = 1000.25
        ok = await http.get("/signals/BTC")
        refused = await http.get("/signals/BTC")
    assert ok.status_code == 200 and refused.status_code == 429
    assert ok.headers.get("retry-after") == ("1" if always else None)  # 0.75 s, rounded up
    assert refused.headers["retry-after"] == "1"  # a 429 has it either way


def test_parse_args_takes_issue_13s_knobs() -> None:
    _, plain = parse_args([])
    assert (plain.count_rejected, plain.reset_offset) == (False, 0.0)
    assert (plain.retry_after_always, plain.fractional_epoch) == (False, False)
    _, config = parse_args(
        [
            "--limiter",
            "sliding-window",
            "--rate-limit",
            "50",
            "--window",
            "10",
            "--count-rejected",
            "--hints",
            "x-ratelimit-epoch,retry-after",
            "--reset-offset",
            "1.5",
            "--retry-after-always",
            "--fractional-epoch",
        ]
    )
    assert config.count_rejected and config.retry_after_always and config.fractional_epoch
    assert config.reset_offset == 1.5
    assert config.hints == frozenset({"x-ratelimit-epoch", "retry-after"})
    with pytest.raises(UsageError, match="'soon' is not a valid float"):
        parse_args(["--reset-offset", "soon"])
