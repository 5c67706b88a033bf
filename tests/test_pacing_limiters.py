"""Pacing against every kind of limiter the simulated upstream has, in trio's virtual time.

Each test runs 1000 symbols through 50 workers against one of the demo limiters with the
hints a real API of that kind sends, and checks what a user cares about: nothing lost, few
429s, and time close to the ideal (n - burst) / rate. Virtual time: no test sleeps for real.
"""

from __future__ import annotations

from typing import Any

import pytest
from trio.testing import MockClock

from scanctl.clock import FakeClock, LoopClock
from scanctl.demo.headers import HintStyle
from scanctl.demo.limiters import make_limiter
from scanctl.pacing import Feedback, Pacer
from scanctl.quota import EARLY_REFUSALS
from scanctl.ratecontrol import LearnedPace
from scanctl.resilience import CircuitBreaker
from tests.engine_helpers import UpstreamCounts, limited_handler, run_engine

pytestmark = pytest.mark.anyio
N = 1000
# While 429s are cheap, one request checks an advertised reset before it comes (issue 13: hints
# are claims); against an honest upstream that one request is refused, and no other is.
EARLY_CHECK = 1


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return ("trio", {"clock": MockClock(autojump_threshold=0)})


async def scan_against(
    kind: str,
    rate: float,
    *,
    burst: int = 10,
    window: float = 1.0,
    hints: frozenset[str] | HintStyle = frozenset(),
    learned: LearnedPace | None = None,
    policy: tuple[int, int] | None = None,
) -> tuple[float, UpstreamCounts, int, Pacer]:
    """Scan N symbols; return (seconds, upstream counts, symbols lost, the pacer)."""
    clock = LoopClock(wall_offset=1_764_435_600.0)  # (virtual: epoch resets stay exact)
    limiter = make_limiter(kind, rate, burst=burst, window=window, start=clock.monotonic())
    handler, counts = limited_handler(clock, limiter, hints=hints, policy=policy)
    pacer = Pacer(
        clock,
        concurrency=50,
        learned=learned,
        breaker=CircuitBreaker(),
    )
    started = clock.monotonic()
    run = await run_engine(
        handler, [f"S{i}" for i in range(N)], clock=clock, concurrency=50, pacer=pacer
    )
    lost = sum(1 for record in run.records if not record.ok)
    assert len(run.records) == N
    return clock.monotonic() - started, counts, lost, pacer


def learned_from(pacer: Pacer) -> LearnedPace:
    learned = pacer.learned()
    assert learned is not None
    return learned


async def test_token_bucket_without_hints_is_found_then_reused_on_the_next_run() -> None:
    ideal = (N - 10) / 120
    seconds, counts, lost, pacer = await scan_against("token-bucket", 120)
    assert lost == 0
    assert counts.throttled <= 0.05 * counts.requests
    assert seconds <= 1.2 * ideal
    again, counts, lost, _ = await scan_against("token-bucket", 120, learned=learned_from(pacer))
    assert lost == 0 and counts.throttled <= 0.01 * counts.requests
    # The first run (8 s) ends its search within a few % of the limit; the second keeps that.
    assert again <= 1.08 * ideal


async def test_a_bucket_s_whole_second_retry_after_is_checked_and_found_overstated() -> None:
    """A bucket refilling every 20 ms says "Retry-After: 1": obeyed, every 429 would cost a
    second. One request a quarter into the first gate is admitted, so later gates last only as
    long as a check proved enough (halved while checks pass)."""
    hints = frozenset({"retry-after"})
    ideal = (N - 10) / 50
    seconds, counts, lost, pacer = await scan_against("token-bucket", 50, hints=hints)
    assert lost == 0 and counts.throttled <= 0.02 * counts.requests
    assert pacer.gate.verdict == "overstated" and pacer.gate.enough < 0.25
    assert seconds <= 1.1 * ideal
    learned = learned_from(pacer)
    assert learned.gate_enough == pytest.approx(pacer.gate.enough, abs=0.001)
    again, counts, lost, _ = await scan_against("token-bucket", 50, hints=hints, learned=learned)
    assert lost == 0 and counts.throttled <= 0.01 * counts.requests
    assert again <= 1.07 * ideal


async def test_a_remembered_gate_that_proves_too_short_grows() -> None:
    """The next run starts from what proved enough (LearnedPace.gate_enough); against a
    sliding window that counts refusals and whose Retry-After tells the truth, a request
    refused the moment a short gate opens doubles it instead of hammering the window."""
    clock = LoopClock(wall_offset=1_764_435_600.0)
    limiter = make_limiter(
        "sliding-window", 50, burst=50, window=1.0, start=clock.monotonic(), count_rejected=True
    )
    handler, counts = limited_handler(clock, limiter, hints=frozenset({"retry-after"}))
    learned = LearnedPace(50.0, gate_enough=0.05)
    pacer = Pacer(clock, concurrency=50, breaker=CircuitBreaker(), learned=learned)
    started = clock.monotonic()
    run = await run_engine(handler, [f"S{i}" for i in range(N)], clock=clock, pacer=pacer)
    assert all(record.ok for record in run.records)
    assert counts.throttled <= 0.02 * counts.requests and pacer.gate.enough > 0.05
    assert clock.monotonic() - started <= 1.15 * (N - 50) / 50


async def test_a_retry_after_that_tells_the_truth_is_obeyed_after_three_checks() -> None:
    """A bucket refilling one request a second says "Retry-After: 1" and means it. Checks go a
    quarter, then 5/8, then 13/16 into three gates (a window's whole-second hint overstates
    by anything up to a second); all refused, the hint counts as exact and is obeyed."""
    clock = LoopClock(wall_offset=1_764_435_600.0)
    limiter = make_limiter("token-bucket", 1.0, burst=1, window=1.0, start=clock.monotonic())
    handler, counts = limited_handler(clock, limiter, hints=frozenset({"retry-after"}))
    pacer = Pacer(clock, concurrency=50, breaker=CircuitBreaker())
    run = await run_engine(handler, [f"S{i}" for i in range(60)], clock=clock, pacer=pacer)
    assert all(record.ok for record in run.records) and pacer.gate.verdict == "exact"
    # (slow start's first window of 10 draws most of these at 1 r/s; the checks cost three)
    assert counts.throttled <= 0.3 * counts.requests


@pytest.mark.parametrize(
    ("kind", "allowance", "window"), [("fixed", 50, 1.0), ("sliding", 100, 2.0)]
)
async def test_a_window_known_only_by_its_retry_after_is_paced_in_cycles(
    kind: str, allowance: int, window: float
) -> None:
    """A window's whole-second "Retry-After" comes up to a second after it frees, and the check
    a quarter into the run's first gate is refused (a window stays full until it turns): from
    that gate's end on, the window is sent its allowance at once each time it frees, and its
    429s' gates are the cycles' to time. Paced by a rate between gates instead, a sliding
    window of 100 per 2 s took 1.35x its ideal, a fixed one of 50 a second 1.19x."""
    hints = frozenset({"retry-after"})
    seconds, counts, lost, pacer = await scan_against(
        f"{kind}-window", 50, burst=allowance, window=window, hints=hints
    )
    assert lost == 0 and pacer.control.window_cycle is not None
    assert pacer.control.window_cycle.allowance == allowance
    assert pacer.gate.closures <= 2  # (the first contact's: none while cycling)
    assert counts.throttled <= 0.02 * counts.requests
    assert seconds <= 1.12 * (N - allowance) / 50


async def test_a_window_s_cycles_keep_the_first_429_s_gate_and_close_none_of_their_own() -> None:
    """The refused check's own "Retry-After: 2", half a second later, says no more than the
    first 429's (the window frees by then): kept, it held the first burst back half a second.
    Once cycling, a 429's whole-second gate is the cycles' to time, not obeyed."""
    clock = FakeClock(start=0.0)
    pacer = Pacer(clock, concurrency=200)
    admitted = 0
    while admitted < 100:  # slow start: the window grows by one per answer
        ticket = pacer.acquire_at_once()
        assert ticket is not None
        pacer.release(ticket, Feedback(admitted=True))
        admitted += 1
    refused = pacer.acquire_at_once()
    assert refused is not None
    pacer.release(refused, Feedback(admitted=False, throttled=True, retry_after=2.0))
    assert pacer.gate.until == 2.0
    clock.now = 0.5
    check = pacer.acquire_at_once()  # (the gate's check, a quarter in)
    assert check is not None and pacer.gate.probe_seq == check.seq
    clock.now = 0.51
    pacer.release(check, Feedback(admitted=False, throttled=True, retry_after=2.0))
    assert pacer.gate.until == 2.0 and pacer.control.paused
    assert pacer.acquire_at_once() is None
    clock.now = 2.0
    probe = pacer.acquire_at_once()
    assert probe is not None
    pacer.release(probe, Feedback(admitted=True))
    assert pacer.control.window_cycle is not None
    burst = [pacer.acquire_at_once() for _ in range(25)]  # (a quarter first, see windowcycle)
    closures = pacer.gate.closures
    for ticket in burst[:2]:  # (something older still in the window)
        assert ticket is not None
        pacer.release(ticket, Feedback(admitted=False, throttled=True, retry_after=2.0))
    assert pacer.gate.closures == closures and pacer.gate_wait() == 0.0
    assert pacer.control.window_cycle is not None


async def test_an_upstream_that_bans_gets_no_check_of_its_gates() -> None:
    clock = LoopClock(wall_offset=1_764_435_600.0)
    limiter = make_limiter("token-bucket", 50, burst=10, window=1.0, start=clock.monotonic())
    handler, counts = limited_handler(clock, limiter, hints=frozenset({"retry-after"}))
    pacer = Pacer(clock, concurrency=50, breaker=CircuitBreaker(), check_hints=False)
    started = clock.monotonic()
    await run_engine(handler, [f"S{i}" for i in range(300)], clock=clock, pacer=pacer)
    assert pacer.gate.verdict is None and counts.throttled >= 1
    # every 429 closed the gate for its whole second: nothing left while one was closed
    for refused in counts.throttled_at:
        assert not [t for t in counts.sent_at if refused < t < refused + 0.99]
    assert clock.monotonic() - started > 300 / 50


async def test_x_ratelimit_headers_pace_a_fixed_window_exactly_without_a_429() -> None:
    hints = frozenset({"x-ratelimit"})
    seconds, counts, lost, _ = await scan_against("fixed-window", 50, window=2.0, hints=hints)
    assert lost == 0 and counts.throttled <= EARLY_CHECK
    assert seconds <= 1.05 * (N - 100) / 50


async def test_whole_second_resets_do_not_let_the_windows_drift_later() -> None:
    """The tightest whole-second reset of a window comes from the first answer after our
    turnover, a latency later than the boundary: a period measured across such resets is that
    much over the window's, and turned each window over later again (12 ms a window here). Once
    the period is known (three windows), it is the window's own 2 s, counted from the earliest
    boundary found: the last windows start as soon after their boundaries as the first did."""
    hints = frozenset({"x-ratelimit"})
    _, counts, lost, _ = await scan_against("fixed-window", 50, window=2.0, hints=hints)
    assert lost == 0
    start = counts.sent_at[0]  # (the limiter's windows start with the scan, in virtual time)
    firsts: dict[int, float] = {}
    for sent in counts.sent_at:
        firsts.setdefault(int((sent - start) // 2.0), sent)
    lags = [firsts[k] - (start + 2.0 * k) for k in sorted(firsts) if k >= 1]
    assert len(lags) == (N - 100) // 100
    assert max(lags[-5:]) <= lags[0] + 0.02  # (0.18-0.24 s later before)


async def test_one_second_windows_are_spent_whole_each_second() -> None:
    """A short window's own burst is not mistaken for sends that leaked into the next one."""
    hints = frozenset({"x-ratelimit"})
    seconds, counts, lost, _ = await scan_against("fixed-window", 40, window=1.0, hints=hints)
    assert lost == 0 and counts.throttled <= EARLY_CHECK
    assert seconds <= 1.1 * (N - 40) / 40


async def test_ietf_headers_are_obeyed_without_a_429() -> None:
    hints = frozenset({"ietf"})
    _, counts, lost, _ = await scan_against("fixed-window", 40, window=1.0, hints=hints)
    assert lost == 0 and counts.throttled <= EARLY_CHECK


async def test_ietf_policy_of_a_token_bucket_is_followed_at_its_rate_without_a_429() -> None:
    """A bucket refills bit by bit: after the burst, a request per w/q seconds, not per reset."""
    hints = frozenset({"ietf"})
    seconds, counts, lost, _ = await scan_against(
        "token-bucket", 80, burst=20, hints=hints, policy=(80, 1)
    )
    assert lost == 0 and counts.throttled <= EARLY_CHECK
    assert seconds <= 1.15 * (N - 20) / 80


async def test_leaky_bucket_with_retry_after_loses_nothing() -> None:
    hints = frozenset({"retry-after"})
    seconds, counts, lost, _ = await scan_against("leaky-bucket", 50, hints=hints)
    assert lost == 0 and counts.throttled <= 0.02 * counts.requests
    assert seconds <= 1.2 * (N - 10) / 50


async def test_sliding_window_without_hints_loses_nothing_and_does_not_collapse() -> None:
    seconds, _, lost, pacer = await scan_against("sliding-window", 50, window=2.0)
    assert lost == 0
    assert pacer.control.rate is not None and pacer.control.rate > 10  # not driven to the floor
    assert seconds <= 4.0 * (N - 100) / 50


async def test_resets_a_second_late_are_learned_and_windows_spent_on_time() -> None:
    """A limiter library's habit: every reset a second late, Retry-After on every answer."""
    hints = HintStyle(
        frozenset({"x-ratelimit-epoch", "retry-after"}),
        reset_offset=1.0,
        retry_after_always=True,
        fractional_epoch=True,
    )
    seconds, counts, lost, pacer = await scan_against("fixed-window", 50, hints=hints)
    # (resets with a fraction are late by a constant: checks go on, one per reset, until the
    # lateness is known or EARLY_REFUSALS of them were refused)
    assert lost == 0 and counts.throttled <= EARLY_REFUSALS
    assert pacer.quota.refills_fully  # (a fixed window, spent whole on time)
    assert seconds <= 1.1 * (N - 50) / 50  # waiting for each advertised reset took 2x


async def test_a_window_that_slides_is_spent_as_its_slots_free() -> None:
    """X-RateLimit on a sliding log: the reset says when the oldest slot frees, not all."""
    hints = frozenset({"x-ratelimit", "retry-after"})
    seconds, counts, lost, pacer = await scan_against("sliding-window", 50, window=5.0, hints=hints)
    assert lost == 0 and counts.throttled <= EARLY_CHECK
    assert pacer.quota.sliding
    assert seconds <= 1.1 * (N - 250) / 50  # one slot per advertised reset took 1.46x


@pytest.mark.parametrize("kind", ["leaky-bucket", "token-bucket"])
async def test_a_bucket_s_hints_pace_it_at_the_refill_rate_its_answers_show(kind: str) -> None:
    """X-RateLimit on a bucket says how many remain and when it is full again, never its rate.
    Waiting for each reset, or for the lowest count of a window, let the bucket drain to idle
    between turnovers (1.3x; 4x with resets a second late); the refill rate measured from the
    answers paces it instead, and its reset no longer does."""
    hints = HintStyle(frozenset({"x-ratelimit-epoch"}), reset_offset=1.0, fractional_epoch=True)
    seconds, counts, lost, pacer = await scan_against(kind, 50, hints=hints)
    assert lost == 0 and counts.throttled <= 0.01 * counts.requests
    assert pacer.quota.refills_gradually
    assert pacer.quota.refill_rate == pytest.approx(50, rel=0.1)
    assert seconds <= 1.12 * (N - 10) / 50


async def test_resets_that_come_early_are_waited_out_not_hammered() -> None:
    """A server clock behind ours: every epoch reset half a second early. The first request
    after each such turnover is refused; the turnover is then taken later, not retried."""
    hints = HintStyle(frozenset({"x-ratelimit-epoch"}), reset_offset=-0.5, fractional_epoch=True)
    seconds, counts, lost, _ = await scan_against("fixed-window", 50, hints=hints)
    assert lost == 0 and counts.throttled <= 0.03 * counts.requests
    assert seconds <= 1.2 * (N - 50) / 50


def test_a_long_retry_after_is_obeyed_even_once_short_ones_proved_overstated() -> None:
    from scanctl.clock import FakeClock

    clock = FakeClock()
    pacer = Pacer(clock, learned=LearnedPace(50.0, gate_enough=0.05))
    pacer.close_gate(1.0, checkable=True)
    assert pacer.gate_wait() == pytest.approx(0.05)  # a whole-second hint: what proved enough
    pacer.close_gate(30.0, checkable=True)
    assert pacer.gate_wait() == pytest.approx(30.0)  # a deliberate wait: obeyed as it is


async def test_a_window_s_gated_episodes_are_not_fitted_as_a_bucket() -> None:
    """A fixed window whose only hint is Retry-After admits its whole count after every gate,
    however long the episode: (0.2 s, 51), (0.4 s, 51), (0.85 s, 53) lie on a nearly flat line,
    whose slope (3 r/s) once became the rate (20 r/s against a limit of 50: 2.3x)."""
    hints = frozenset({"retry-after"})
    seconds, counts, lost, pacer = await scan_against(
        "fixed-window", 50, burst=50, window=1.0, hints=hints
    )
    fits = [c.rate for c in pacer.control.history if c.reason == "429: fitted the limit"]
    assert lost == 0 and all(rate is not None and rate >= 40 for rate in fits)
    assert seconds <= 1.45 * (N - 50) / 50 and counts.throttled <= 0.02 * counts.requests
