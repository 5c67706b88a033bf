"""Rate-limit hints in every dialect, and the quota the pacer keeps from them."""

from __future__ import annotations

import httpx
import pytest

from scanctl.clock import FakeClock
from scanctl.hints import QuotaHint, WeightHeader, parse_quota
from scanctl.pacing import Feedback, Pacer

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
