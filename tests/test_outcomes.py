"""Every classification path, through the engine, with a fake clock and no network."""

from __future__ import annotations

import itertools
import json
import random
import ssl
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest
import respx

from scanctl.clock import FakeClock
from scanctl.retry import Outcome, backoff_delay, classify_response, parse_retry_after
from tests.engine_helpers import run_engine

pytestmark = pytest.mark.anyio


def raised_from(error: Exception, cause: BaseException) -> Exception:
    """`error` as a library raises it: `raise error from cause`."""
    error.__cause__ = cause
    return error


def ok_json(request: httpx.Request) -> httpx.Response:
    symbol = request.url.path.rsplit("/", 1)[-1]
    return httpx.Response(200, json={"symbol": symbol, "score": 71.5})


async def test_ok_answer_becomes_a_record_with_the_payload() -> None:
    run = await run_engine(ok_json, ["BTC", "ETH"])
    assert sorted(r.symbol for r in run.records) == ["BTC", "ETH"]
    btc = run.by_symbol()["BTC"]
    assert (btc.ok, btc.status, btc.data, btc.error, btc.attempts) == (
        True,
        200,
        {"symbol": "BTC", "score": 71.5},
        None,
        1,
    )
    assert btc.type == "signals" and btc.cached is False


@pytest.mark.parametrize("status", [400, 404, 422, 410])
async def test_permanent_errors_fail_at_once_and_are_never_retried(status: int) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(status, json={"detail": "No data for this coin"})

    run = await run_engine(handler, ["ZZTOP"], retries=5)
    record = run.records[0]
    assert calls == 1 and record.attempts == 1 and not record.ok
    assert record.status == status
    assert record.error == f"HTTP {status}: No data for this coin"
    assert run.metrics is not None and run.metrics.errors == {f"HTTP {status}": 1}


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<html><body>Bad gateway page</body></html>", "text/html"),
        (b'{"score": 7', "application/json"),
    ],
)
async def test_non_json_200_is_permanent_invalid_json(body: bytes, content_type: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/BAD"):
            return httpx.Response(200, content=body, headers={"content-type": content_type})
        return ok_json(request)

    run = await run_engine(handler, ["BTC", "BAD", "ETH"], retries=3)
    records = run.by_symbol()
    assert records["BAD"].error == "Invalid JSON in 2xx answer" and records["BAD"].attempts == 1
    assert records["BTC"].ok and records["ETH"].ok


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_retryable_statuses_are_retried_then_succeed(status: int) -> None:
    answers = iter([httpx.Response(status), httpx.Response(status), httpx.Response(200, json={})])
    run = await run_engine(lambda request: next(answers), ["BTC"], retries=3)
    record = run.records[0]
    assert record.ok and record.attempts == 3
    assert run.metrics is not None and run.metrics.retries == 2
    assert len(run.clock.sleeps) == 2  # backed off twice, in fake time


async def test_retries_bound_the_attempts_of_one_symbol() -> None:
    run = await run_engine(lambda request: httpx.Response(500), ["BTC"], retries=2)
    record = run.records[0]
    assert not record.ok and record.attempts == 3 and record.error == "HTTP 500"


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (httpx.ReadTimeout("read timed out"), "Request timeout"),
        (httpx.ConnectTimeout("connect timed out"), "Request timeout"),
        (
            raised_from(httpx.ConnectError("connect failed"), ConnectionRefusedError(111, "no")),
            "Connection refused",
        ),
        (httpx.ConnectError("[Errno 111] Connection refused"), "Connection error"),  # text alone
        (httpx.ConnectError("Name or service not known"), "Connection error"),
        (httpx.RemoteProtocolError("Server disconnected"), "Connection dropped"),
        (httpx.ReadError("connection reset"), "Connection dropped"),
    ],
)
async def test_transport_errors_are_retried_and_named(error: Exception, kind: str) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise error

    run = await run_engine(handler, ["BTC"], retries=2)
    record = run.records[0]
    assert calls == 3 and record.attempts == 3 and record.status is None
    assert record.error_kind == kind and record.error is not None and record.error.startswith(kind)


@pytest.mark.parametrize(
    "cause",
    [
        ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify"),
        ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
    ],
)
async def test_tls_failure_is_permanent(cause: ssl.SSLError) -> None:
    """Known by the ssl.SSLError underneath (httpcore and aiohttp both raise from one), not by
    what the message says."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise raised_from(httpx.ConnectError("handshake failed"), cause)

    run = await run_engine(handler, ["BTC"], retries=3)
    assert run.records[0].attempts == 1 and run.records[0].error_kind == "TLS error"


async def test_a_message_that_mentions_ssl_is_not_a_tls_failure() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("host ssl.example.test: Name or service not known")

    run = await run_engine(handler, ["BTC"], retries=1)
    assert run.records[0].attempts == 2 and run.records[0].error_kind == "Connection error"


async def test_429_with_retry_after_seconds_waits_and_does_not_use_a_retry() -> None:
    """The 2 s gate is checked once a quarter into it (0.5 s); refused with "Retry-After: 3",
    the request waits those 3 s (until 3.5 s), then is answered."""
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": "2"}),
            httpx.Response(429, headers={"Retry-After": "3"}),
            httpx.Response(200, json={"ok": 1}),
        ]
    )
    clock = FakeClock()
    start = clock.monotonic()
    run = await run_engine(lambda request: next(answers), ["BTC"], retries=0, clock=clock)
    record = run.records[0]
    assert record.ok and record.attempts == 3
    assert run.metrics is not None and run.metrics.throttled == 2 and run.metrics.retries == 0
    assert clock.monotonic() - start == pytest.approx(3.5)


async def test_429_with_retry_after_http_date_waits_until_that_date() -> None:
    clock = FakeClock()
    when = datetime.fromtimestamp(clock.wall() + 4, UTC)
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": format_datetime(when, usegmt=True)}),
            httpx.Response(200, json={}),
        ]
    )
    start = clock.monotonic()
    run = await run_engine(lambda request: next(answers), ["BTC"], retries=0, clock=clock)
    assert run.records[0].ok
    assert clock.monotonic() - start == pytest.approx(
        4.0, abs=1.0
    )  # HTTP dates have 1 s resolution


async def test_429_without_hint_backs_off_with_jitter_and_eventually_succeeds() -> None:
    clock = FakeClock()
    answers = iter([httpx.Response(429)] * 4 + [httpx.Response(200, json={})])
    sent: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(clock.monotonic())
        return next(answers)

    run = await run_engine(handler, ["BTC"], retries=0, backoff_base=0.5, clock=clock)
    assert run.records[0].ok and run.records[0].attempts == 5
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    # Full jitter: each wait is somewhere in [0, 0.5 * 2**i] (plus the polling granularity).
    assert len(gaps) == 4 and all(0 <= g <= 0.5 * 2**i + 0.25 for i, g in enumerate(gaps))
    assert len(set(gaps)) == 4  # jittered, not a fixed schedule


async def test_retry_after_closes_the_gate_for_every_worker() -> None:
    """After one 429 with Retry-After, no request at all goes out until it has passed."""
    clock = FakeClock()
    sent_at: list[tuple[str, float]] = []
    throttled_once = False

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal throttled_once
        sent_at.append((request.url.path, clock.monotonic()))
        if not throttled_once:
            throttled_once = True
            return httpx.Response(429, headers={"Retry-After": "10"})
        return httpx.Response(200, json={})

    start = clock.monotonic()
    run = await run_engine(handler, [f"S{i}" for i in range(6)], concurrency=1, clock=clock)
    assert all(r.ok for r in run.records)
    assert all(t >= start + 10 for _, t in sent_at[1:])


@pytest.mark.parametrize("status", [401, 403, 418])
async def test_refusal_stops_the_scan_and_marks_every_unsent_symbol(status: int) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 3:
            return httpx.Response(status, json={"detail": "banned"})
        return httpx.Response(200, json={})

    symbols = [f"S{i}" for i in range(20)]
    run = await run_engine(handler, symbols, concurrency=1)
    assert run.outcome is not None and run.outcome.refused is not None
    assert run.outcome.refused.status == status
    assert calls == 3  # nothing sent after the refusal
    assert sorted(r.symbol for r in run.records) == sorted(symbols)  # nothing silently lost
    records = run.by_symbol()
    assert records["S2"].status == status and records["S2"].error == f"HTTP {status}: banned"
    assert records["S3"].error is not None and records["S3"].error.startswith("Not scanned")
    assert sum(r.ok for r in run.records) == 2


async def test_mss_sends_send_alert_false_and_price_uses_the_quote_route() -> None:
    with respx.mock(base_url="http://upstream.test", assert_all_called=True) as mock:
        mss = mock.get("/mss/analyze/BTC", params={"send_alert": "false"}).respond(200, json={})
        price = mock.get("/coinapi/quote/BTC").respond(200, json={"price": 1.0})
        await run_engine(None, ["BTC"], type_name="mss", client=httpx.AsyncClient())
        await run_engine(None, ["BTC"], type_name="price", client=httpx.AsyncClient())
    assert mss.call_count == 1 and price.call_count == 1


def test_retry_after_parsing() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    date = format_datetime(datetime.fromtimestamp(now + 30, UTC), usegmt=True)
    assert parse_retry_after(date, now) == pytest.approx(30.0)
    past = format_datetime(datetime.fromtimestamp(now - 30, UTC), usegmt=True)
    assert parse_retry_after(past, now) == 0.0
    for garbage in (None, "", "soon", "-5", "nan"):
        assert parse_retry_after(garbage, now) is None


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    rng = random.Random(1)
    for attempt in range(1, 12):
        ceiling = min(10.0, 0.5 * 2 ** (attempt - 1))
        delays = [backoff_delay(attempt, 0.5, 10.0, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # spread over the whole range, not fixed


def test_classifier_keeps_2xx_payloads_and_reads_fastapi_detail() -> None:
    headers = httpx.Headers()
    ok = classify_response(200, headers, json.dumps([1, 2]).encode(), 0.0)
    assert ok.outcome is Outcome.OK and ok.data == [1, 2]
    redirect = classify_response(302, httpx.Headers({"location": "http://evil.test/"}), b"", 0.0)
    assert redirect.outcome is Outcome.PERMANENT and "not followed" in (redirect.error or "")


async def test_503_with_retry_after_holds_every_request_until_then() -> None:
    clock = FakeClock()
    sent: list[float] = []
    answers = iter([httpx.Response(503, headers={"Retry-After": "7"})])

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(clock.monotonic())
        return next(answers, httpx.Response(200, json={}))

    run = await run_engine(handler, ["BTC", "ETH"], concurrency=1, clock=clock)
    assert all(r.ok for r in run.records)
    assert sent[1] - sent[0] >= 7.0  # the next request, whichever symbol, waited out the hint
