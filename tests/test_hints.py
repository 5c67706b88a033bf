"""Rate-limit hints in every dialect, and the quota the pacer keeps from them."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from scanctl.clock import FakeClock
from scanctl.hints import DEFAULT_RESET, QuotaHint, WeightHeader, parse_quota
from scanctl.pacing import Feedback, Pacer
from scanctl.retry import Outcome, classify_response

NOW_WALL = 1_800_000_000.0


def quota(headers: dict[str, str], weight: WeightHeader | None = None) -> QuotaHint | None:
    return parse_quota(httpx.Headers(headers), NOW_WALL, weight)


def test_ietf_draft_policy_and_state() -> None:
    hint = quota({"RateLimit-Policy": '"burst";q=100;w=60', "RateLimit": '"burst";r=50;t=30'})
    assert hint == QuotaHint(remaining=50, reset=30.0, limit=100, window=60.0)


def test_older_ratelimit_triple_and_x_ratelimit_with_delta_or_epoch_reset() -> None:
    old = quota({"RateLimit-Limit": "10", "RateLimit-Remaining": "3", "RateLimit-Reset": "7"})
    assert old == QuotaHint(remaining=3, reset=7.0, limit=10)
    github = quota(
        {
            "x-ratelimit-limit": "5000",
            "x-ratelimit-remaining": "4999",
            "x-ratelimit-reset": str(int(NOW_WALL) + 1200),
        }
    )
    assert github == QuotaHint(remaining=4999, reset=1200.0, limit=5000)


def test_used_weight_header_needs_the_profile_to_name_it() -> None:
    headers = {"X-MBX-USED-WEIGHT-1M": "5700"}
    assert quota(headers) is None
    binance = WeightHeader("X-MBX-USED-WEIGHT-1M", budget=6000, window=60.0)
    hint = quota(headers, binance)
    assert hint is not None and hint.remaining == 300 and hint.limit == 6000
    assert 0 < hint.reset <= 60.0


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-RateLimit-Remaining": "lots"}, {"RateLimit": "garbage"}, {"RateLimit": '"x";t=5'}],
)
def test_absent_or_malformed_hints_are_ignored(headers: dict[str, str]) -> None:
    assert quota(headers) is None


def reset_of(value: str, now_wall: float = NOW_WALL) -> float:
    """The reset parsed from an X-RateLimit-Reset of `value` (the hint must survive it)."""
    headers = {"X-RateLimit-Remaining": "3", "X-RateLimit-Reset": value}
    hint = parse_quota(httpx.Headers(headers), now_wall)
    assert hint is not None and hint.remaining == 3
    return hint.reset


def test_reset_as_delta_seconds_integer_or_fractional() -> None:
    assert reset_of("30") == 30.0
    assert reset_of("0.5") == 0.5
    assert reset_of(" 2.25 ") == 2.25


def test_reset_as_epoch_seconds_integer_or_fractional() -> None:
    now = 1_764_435_000.0
    assert reset_of("1764435600", now) == pytest.approx(600.0)
    assert reset_of("1764435600.734", now) == pytest.approx(600.734)


@pytest.mark.parametrize(
    ("reset", "precise"),
    [("1800000030.734", True), ("0.5", True), ("30", False), ("1800000030", False), (None, False)],
)
def test_a_reset_written_with_a_fraction_is_precise(reset: str | None, precise: bool) -> None:
    """Whole seconds are rounded by a different amount each time; a fraction is kept to."""
    headers = {"X-RateLimit-Remaining": "3", "X-RateLimit-Limit": "10"}
    if reset is not None:
        headers["X-RateLimit-Reset"] = reset
    hint = quota(headers)
    assert hint is not None and hint.precise is precise
    ietf = quota({"RateLimit": f'"default";r=3;t={reset or 30}'})
    assert ietf is not None and ietf.precise is precise


def test_reset_as_epoch_milliseconds() -> None:
    now = 1_764_435_000.0
    assert reset_of("1764435600734", now) == pytest.approx(600.734)
    assert reset_of("1764435000500", now) == pytest.approx(0.5)


def test_reset_as_http_date() -> None:
    at = datetime(2026, 11, 29, 18, 0, 0, tzinfo=UTC).timestamp()
    assert reset_of("Sun, 29 Nov 2026 18:00:00 GMT", at - 90.0) == pytest.approx(90.0)
    # The obsolete forms RFC 9110 still asks recipients to read (GMT, both of them).
    assert reset_of("Sunday, 29-Nov-26 18:00:00 GMT", at - 90.0) == pytest.approx(90.0)
    assert reset_of("Sun Nov 29 18:00:00 2026", at - 90.0) == pytest.approx(90.0)


def test_reset_in_the_past_is_now_never_negative() -> None:
    now = 1_764_435_000.0
    assert reset_of("1764434000", now) == 0.0  # epoch seconds, 1000 s ago
    assert reset_of("1764434000000", now) == 0.0  # epoch milliseconds
    assert reset_of("Thu, 01 Jan 1970 00:00:00 GMT", now) == 0.0


@pytest.mark.parametrize(
    "garbage",
    ["soon", "", "NaN", "inf", "-5", "1e400", "12abc", "9" * 400, "1_000", "0x10", "+5", "..."],
)
def test_garbage_reset_keeps_remaining_with_the_reset_unknown(garbage: str) -> None:
    """Unknown reset = as if no reset header came: the default, finite and >= 0."""
    assert reset_of(garbage) == DEFAULT_RESET
    ietf = quota({"RateLimit": f'"b";r=4;t={garbage}', "RateLimit-Policy": '"b";q=9;w=60'})
    assert ietf == QuotaHint(remaining=4, reset=60.0, limit=9, window=60.0)  # the window


@pytest.mark.parametrize(
    "headers",
    [
        {"X-RateLimit-Remaining": "-5"},
        {"X-RateLimit-Remaining": "NaN"},
        {"X-RateLimit-Remaining": "1e400"},
        {"X-RateLimit-Remaining": ""},
        {"X-RateLimit-Remaining": "3", "X-RateLimit-Limit": "-10"},
        {"X-RateLimit-Remaining": "3", "X-RateLimit-Limit": "inf"},
        {"RateLimit-Remaining": "12abc", "RateLimit-Reset": "5"},
        {"RateLimit": '"b";r=-5'},
        {"RateLimit": '"b";r=1.2.3'},
        {"RateLimit": '"b";r=.'},
        {"RateLimit": '"b";r=5e3'},
        {"RateLimit": '"b";r=' + "9" * 400},
        {"RateLimit": '"b";r'},
        {"RateLimit": '"b";r=5', "RateLimit-Policy": '"b";q=-1;w=60'},
        {"RateLimit": '"b";r=5', "RateLimit-Policy": '"b";q=10;w=nan'},
    ],
)
def test_garbage_or_negative_counts_drop_the_hint(headers: dict[str, str]) -> None:
    assert quota(headers) is None


def test_a_garbage_dialect_does_not_hide_a_readable_one() -> None:
    headers = {"RateLimit": '"b";r=oops', "X-RateLimit-Remaining": "8", "X-RateLimit-Reset": "2"}
    assert quota(headers) == QuotaHint(remaining=8, reset=2.0)


def test_retry_after_is_read_on_a_429_but_not_on_a_200() -> None:
    headers = httpx.Headers({"Retry-After": "5"})
    ok = classify_response(200, headers, b"{}", NOW_WALL)
    assert ok.outcome is Outcome.OK and ok.retry_after is None
    throttled = classify_response(429, headers, b"", NOW_WALL)
    assert throttled.outcome is Outcome.THROTTLED and throttled.retry_after == 5.0


@pytest.mark.anyio
async def test_quota_is_spent_then_waits_for_the_reset_then_probes_once() -> None:
    clock = FakeClock()
    pacer = Pacer(clock, concurrency=10)
    ticket = await pacer.acquire()
    hint = QuotaHint(remaining=2, reset=5.0, limit=3)
    pacer.release(ticket, Feedback(admitted=True, quota=hint))
    assert pacer.quota.remaining == 2
    pacer.quota.spend(clock.monotonic())
    pacer.quota.spend(clock.monotonic())
    # While 429s are cheap, one request checks the reset halfway (issue 13: hints are claims)...
    assert pacer.quota.wait(clock.monotonic()) == pytest.approx(2.5)
    pacer.quota.early_ok = False  # ...and with checks off, the advertised reset is waited for
    assert pacer.quota.wait(clock.monotonic()) == pytest.approx(5.0)
    clock.now += 5.0
    assert pacer.quota.wait(clock.monotonic()) == 0.0 and pacer.quota.remaining == 1


@pytest.mark.anyio
async def test_a_stale_answer_from_before_the_reset_does_not_reopen_the_window() -> None:
    clock = FakeClock()
    pacer = Pacer(clock, concurrency=10)
    early = await pacer.acquire()
    first = await pacer.acquire()
    pacer.release(first, Feedback(admitted=True, quota=QuotaHint(0, 2.0, limit=5)))
    clock.now += 2.0
    assert pacer.quota.wait(clock.monotonic()) == 0.0  # turned over: one probe may go
    pacer.quota.spend(clock.monotonic())
    # The early request, sent in the old window, answers late with that window's figures.
    pacer.release(early, Feedback(admitted=True, quota=QuotaHint(4, 0.0, limit=5)))
    assert pacer.quota.remaining == 0  # not 4: that answer described the old window


@pytest.mark.anyio
async def test_answers_admitted_out_of_send_order_leave_no_slot_unused() -> None:
    """Ten requests out at once; the upstream admits the third before the first (many
    connections). Once every answer is in, exactly limit - 10 may still be sent: a slot
    counted twice would be lost for the window (and cost a whole window at a run's end)."""
    clock = FakeClock()
    pacer = Pacer(clock, concurrency=10)
    tickets = [await pacer.acquire() for _ in range(10)]
    admitted = [2, 0, 1, 3, 4, 5, 6, 7, 8, 9]  # the order the upstream took them in
    remaining = {index: 100 - 1 - position for position, index in enumerate(admitted)}
    for index in range(10):  # answers handled in send order
        hint = QuotaHint(remaining=remaining[index], reset=2.0, limit=100)
        pacer.release(tickets[index], Feedback(admitted=True, quota=hint))
        assert pacer.quota.remaining is not None
        assert pacer.quota.remaining <= 100 - 10  # never more than is really left: no 429
    assert pacer.quota.remaining == 90


@pytest.mark.anyio
async def test_a_check_admitted_from_what_the_old_window_had_left_proves_no_lateness() -> None:
    """Our count says spent while the upstream still has some (answers in flight): a request
    sent before the reset and admitted from that remainder is no sign of an early refill."""
    clock = FakeClock()
    pacer = Pacer(clock, concurrency=10)
    ticket = await pacer.acquire()
    pacer.release(ticket, Feedback(admitted=True, quota=QuotaHint(remaining=1, reset=4.0, limit=5)))
    pacer.quota.spend(clock.monotonic())
    assert pacer.quota.remaining == 0
    clock.now += 2.0
    assert pacer.quota.wait(clock.monotonic()) == 0.0  # the check goes, halfway to the reset
    check = await pacer.acquire()
    leftover = QuotaHint(remaining=0, reset=3.0, limit=5)  # (the old window's last slot)
    pacer.release(check, Feedback(admitted=True, quota=leftover))
    assert pacer.quota._late_lo == 0.0
    assert pacer.quota.wait(clock.monotonic()) > 0.0  # the reset is still waited for
