"""The adaptive rate: cuts once per round trip, measures, holds, searches, never passes --rate."""

from __future__ import annotations

import pytest

from scanctl.demo.limiters import TokenBucket
from scanctl.ratecontrol import (
    BETA,
    BLOCK_AFTER,
    HOLD,
    HOLD_EXPENSIVE,
    MARGIN,
    MIN_CUT_INTERVAL,
    PAUSE_FIRST,
    PROBE_POLL,
    AdaptiveRate,
    LearnedPace,
)


def sending(control: AdaptiveRate, start: float, stop: float, rate: float) -> list[float]:
    """Record sends at `rate` in [start, stop); return their times."""
    times = []
    t = start
    while t < stop:
        control.on_send(t)
        times.append(t)
        t += 1.0 / rate
    return times


def test_429s_in_flight_at_the_old_rate_cut_only_once() -> None:
    control = AdaptiveRate(0.0)
    control.rate = 100.0  # found, but never held: no `low` to fall back to
    sending(control, 0.0, 1.0, 100.0)
    assert control.on_throttled(0.90, now=1.0, latency=0.1)
    # More 429s for requests sent before the cut, or back within one round trip: no new cut.
    assert not control.on_throttled(0.95, now=1.01, latency=0.1)
    assert not control.on_throttled(0.99, now=1.02, latency=0.1)
    assert not control.on_throttled(1.05, now=1.06, latency=0.1)
    assert control.cuts == 1 and control.rate == pytest.approx(100.0 * BETA)
    # A request sent after the cut that is throttled a round trip later: that one counts.
    later = 1.0 + MIN_CUT_INTERVAL + 0.01
    assert control.on_throttled(later - 0.05, now=later, latency=0.1)
    assert control.cuts == 2


def test_measurement_after_a_cut_drops_the_rate_to_what_the_limiter_admitted() -> None:
    """Sending 400/s into a 50/s limiter: the admitted share of the saturated span says 50."""
    control = AdaptiveRate(0.0)
    sends = sending(control, 0.0, 0.3, 400.0)
    # The limiter emptied at 0.1 s; from then on it admits one request in eight (50/s).
    first_throttled = next(t for t in sends if t >= 0.1)
    control.on_throttled(first_throttled, now=0.3, latency=0.05)
    for i, t in enumerate(s for s in sends if s > first_throttled):
        if i % 8 == 7:
            control.on_admitted(t, now=0.31, rate_bound=True)
        else:
            control.on_throttled(t, now=0.31, latency=0.05)
    assert control.measure_due(now=0.36, oldest_in_flight=None, latency=0.05)
    control.measure(now=0.36)
    assert control.rate == pytest.approx(0.95 * 50, rel=0.15)
    assert control.history[-1].reason == "measured the limit"


def test_a_rate_that_holds_becomes_low_and_the_search_bisects_towards_high() -> None:
    control = AdaptiveRate(0.0, learned=LearnedPace(40.0, 60.0))
    control._search_after = 0.0  # no trust period in this test
    control.on_send(0.0)
    control.on_admitted(0.0, now=HOLD + 0.01, rate_bound=True)
    assert control.low == 40.0 and control.rate == pytest.approx(50.0)
    # A 429 at 50: back to the rate that held, and 50 becomes the new upper bound.
    control.on_send(HOLD + 0.1)
    control.on_throttled(HOLD + 0.1, now=HOLD + 0.2)
    assert control.rate == 40.0 and control.high == 50.0


def test_a_low_that_a_429_disproves_falls_back_to_the_one_that_held_before_it() -> None:
    """A bucket's burst hides a small excess longer than a hold: 121.6/s "held" 2 s against a
    limit of 120 and burst 10. The 429 that proves it wrong sends the search back to the rate
    that held before (119), not 5 % under the 429 (115.5: 3.5 % under the limit)."""
    control = AdaptiveRate(0.0, learned=LearnedPace(119.0, 124.0))
    control._search_after = 0.0
    control.on_send(0.0)
    control.on_admitted(0.0, now=HOLD + 0.01, rate_bound=True)
    assert control.low == 119.0 and control.rate == pytest.approx(121.5)
    control.on_send(HOLD + 0.02)
    control.on_admitted(HOLD + 0.02, now=2 * HOLD + 0.05, rate_bound=True)
    assert control.low == pytest.approx(121.5) and control.rate == pytest.approx(122.75)
    # A 429 at 122.75: back to low (121.5), which then draws one too.
    t = 2 * HOLD + 0.1
    control.on_send(t)
    assert control.on_throttled(t, now=t + 0.01)
    assert control.rate == pytest.approx(121.5)
    t += MIN_CUT_INTERVAL + 0.1
    control.on_send(t)
    assert control.on_throttled(t, now=t + 0.01)
    assert control.low == 119.0 and control.rate == 119.0
    # Once that fallback is used up, a 429 at low goes MARGIN under it, as before.
    t += MIN_CUT_INTERVAL + 0.1
    control.on_send(t)
    assert control.on_throttled(t, now=t + 0.01)
    assert control.low == pytest.approx(119.0 * MARGIN) and control.rate == control.low


def test_growth_needs_the_rate_to_be_what_holds_senders_back() -> None:
    control = AdaptiveRate(0.0, learned=LearnedPace(40.0))
    control._search_after = 0.0
    control.on_send(0.0)
    control.on_admitted(0.0, now=10.0, rate_bound=False)
    assert control.rate == 40.0  # nobody waited on the rate: raising it teaches nothing


def test_effective_rate_never_exceeds_the_ceiling() -> None:
    control = AdaptiveRate(0.0, ceiling=20.0, learned=LearnedPace(15.0))
    control._search_after = 0.0
    t = 0.0
    for _ in range(50):
        control.on_send(t)
        t += HOLD + 0.1
        control.on_admitted(t, now=t, rate_bound=True)
        assert control.effective is not None and control.effective <= 20.0
    assert control.rate is not None and control.rate > 20.0  # it grew, the ceiling held


def test_a_learned_rate_is_checked_within_about_two_seconds() -> None:
    """It may have been one run's share of a budget others used too: search above it soon."""
    control = AdaptiveRate(0.0, learned=LearnedPace(50.0, 60.0, gated=True))
    control.on_send(0.0)
    control.on_admitted(0.0, now=1.0, rate_bound=True)
    assert control.rate == 50.0  # (held for a second only)
    control.on_admitted(0.0, now=2.5, rate_bound=True)
    assert control.rate == pytest.approx(55.0)  # halfway to the rate that drew 429s


def gated_episodes(control: AdaptiveRate, admitted_by_rate: list[tuple[float, int]]) -> float:
    """Episodes each starting on a full limiter after a 1 s gate: at each rate, `admitted`
    requests go through and the next is refused (a 429 with Retry-After). Returns the time."""
    t = 0.0
    for rate, admitted in admitted_by_rate:
        times = sending(control, t, t + (admitted + 0.5) / rate, rate)  # admitted + the refused
        refused = times[-1]
        control.on_throttled(refused, now=refused + 0.002, latency=0.05, expensive=True)
        t = refused + 1.0  # the gate
    return t


def test_gated_episodes_of_a_bucket_fit_its_rate_and_the_rate_goes_just_under_it() -> None:
    # A bucket of 10 refilling at 50/s, from full: at r/s it admits 10 + 50 T, T = 10 / (r - 50).
    control = AdaptiveRate(0.0)
    bucket = [(240.0, 10 + 2), (120.0, 10 + 7), (60.0, 10 + 50)]
    gated_episodes(control, bucket)
    assert control.history[-1].reason == "429: fitted the limit"
    assert control.rate is not None and 0.95 * 50 <= control.rate < 50
    assert control.upper is not None and control.upper >= 50  # what drew 429s, at least


def test_a_window_limiter_is_not_mistaken_for_a_bucket() -> None:
    # 40 per window, whatever the rate: the admitted count does not grow with the episode.
    control = AdaptiveRate(0.0)
    gated_episodes(control, [(240.0, 40), (220.0, 40), (110.0, 40), (55.0, 60)])
    assert all(change.reason != "429: fitted the limit" for change in control.history)


def test_a_429_another_process_drew_cuts_but_fits_nothing() -> None:
    """The leader of processes sharing a budget takes the others' 429s as its own, at a
    guessed send time: they cut, but end no gated episode, so the bucket's fit is the same
    as without them (and a fit of guessed times never happens)."""
    control = AdaptiveRate(0.0)
    t = gated_episodes(control, [(240.0, 10 + 2), (120.0, 10 + 7)])
    times = sending(control, t, t + 0.2, 60.0)
    cuts = control.cuts
    assert control.on_throttled(times[-1], now=times[-1] + 0.01, expensive=True, hearsay=True)
    assert control.cuts == cuts + 1 and control.history[-1].reason == "429: cut"
    gated_episodes_from = times[-1] + 1.0
    sending(control, gated_episodes_from, gated_episodes_from + 60.5 / 60.0, 60.0)
    refused = gated_episodes_from + 60 / 60.0
    control.on_throttled(refused, now=refused + 0.002, latency=0.05, expensive=True)
    assert control.history[-1].reason == "429: fitted the limit"
    assert control.rate is not None and 0.95 * 50 <= control.rate < 50


def test_a_429_without_a_gate_fits_nothing() -> None:
    control = AdaptiveRate(0.0)
    t = 0.0
    for rate, admitted in [(240.0, 12), (120.0, 17), (60.0, 60)]:
        times = sending(control, t, t + (admitted + 0.5) / rate, rate)
        control.on_throttled(times[-1], now=times[-1] + 0.002, latency=0.05, expensive=False)
        t = times[-1] + 1.0
    assert all(change.reason != "429: fitted the limit" for change in control.history)


def test_the_first_429_tells_the_next_run_the_limiters_burst() -> None:
    # A bucket of 10 at 50/s, met at 240/s: the i-th send (t = i / 240) goes through while
    # i + 1 <= 10 + 50 t, so sends 0..11 do and send 12 is refused.
    control = AdaptiveRate(0.0)
    times = sending(control, 0.0, 12.5 / 240, 240.0)
    assert len(times) == 13
    control.on_throttled(times[-1], now=times[-1] + 0.002, latency=0.05)
    control.low = 50.0  # the rate the run's search settled on later
    learned = control.learned()
    assert learned is not None and learned.burst == 10


def test_a_learned_burst_is_spent_once_at_the_start_of_a_run_without_gates() -> None:
    from scanctl.clock import FakeClock
    from scanctl.pacing import INITIAL_WINDOW, GcraMeter

    clock = FakeClock()
    meter = GcraMeter(clock, credit=4)
    assert [meter.reserve(10.0) for _ in range(6)] == pytest.approx([0, 0, 0, 0, 0, 0.1])
    clock.now += 5.0
    assert [meter.reserve(10.0) for _ in range(2)] == pytest.approx([0, 0.1])  # not again
    assert INITIAL_WINDOW == 10  # (the credit a learned burst gets at most)


def test_sends_at_the_same_instant_are_told_apart_by_their_number() -> None:
    # Ten sends at one instant (a coarse clock, or a burst); the fifth is refused.
    control = AdaptiveRate(0.0)
    for _ in range(10):
        control.on_send(0.0)
    control.on_throttled(0.0, now=0.002, latency=0.05, seq=5)
    control.low = 50.0
    learned = control.learned()
    assert learned is not None and learned.burst == 4


def test_a_gated_429_from_a_new_episode_cuts_even_within_a_slow_round_trip() -> None:
    # Answers take 1.5 s, longer than the 1 s gate: the next episode's 429 comes back
    # before a round trip has passed since the last cut, and must still end that episode.
    control = AdaptiveRate(0.0)
    sending(control, 0.0, 0.05, 240.0)
    assert control.on_throttled(0.05, now=0.052, latency=1.5, expensive=True)
    sending(control, 1.052, 1.3, control.rate or 0.0)
    assert control.on_throttled(1.3, now=1.302, latency=1.5, expensive=True)
    assert control.cuts == 2


def test_no_burst_is_read_off_a_first_429_that_came_late() -> None:
    # Sent slower than the limit for a minute, the bucket sat full: B + L x T says nothing.
    control = AdaptiveRate(0.0, learned=LearnedPace(40.0, burst=7))
    times = sending(control, 0.0, 60.0, 48.0)
    control.on_throttled(times[-1], now=times[-1] + 0.002, latency=0.05)
    learned = control.learned()
    assert learned is not None and learned.burst == 7  # what the earlier run learned


def paused_after_a_cut() -> tuple[AdaptiveRate, float]:
    """Held at 40/s for 2 s, then 60/s drew a 429 at 2.5 s (a cut back to 40/s), and four
    requests sent after the cut were refused with none admitted: paused. Returns the control
    and the time of the last refusal's send + 0.05 s."""
    control = AdaptiveRate(0.0)
    control.rate = control.low = 40.0
    for sent in sending(control, 0.0, 2.0, 40.0):
        control.on_admitted(sent, sent + 0.05, rate_bound=True)
    control.rate = 60.0
    sends = sending(control, 2.0, 2.5, 60.0)
    assert control.on_throttled(sends[-1], now=2.5, latency=0.05)
    assert control.rate == 40.0 and control.high == pytest.approx(60.0)
    t = 2.6
    for _ in range(4):  # refused after the cut, none admitted: remembering
        control.on_send(t)
        control.on_throttled(t, now=t + 0.01, latency=0.05)
        t += 0.05
    assert control.paused
    return control, t


def test_after_a_short_pause_the_rate_that_drew_the_429s_still_bounds_the_search() -> None:
    """Held at 40/s, then probing at 60/s drew 429s; a measurement put an estimate under that
    (the limiter's lockout admitted little); 429s at any rate paused it, and the first probe
    passed (a debt). The search resumes bounded by 60/s, the rate that drew them, not by the
    estimate and not unbounded: climbing fast from there overshot again every few seconds."""
    control, t = paused_after_a_cut()
    assert control.low == pytest.approx(40.0 * MARGIN)  # (the pause's 429s came at it)
    control.high, control._high_measured = 45.0, True  # (as a measurement's estimate would)
    probe_at = t + control.pause_wait(t)
    assert probe_at == pytest.approx(2.5 + PAUSE_FIRST)  # (see the next test)
    control.on_send(probe_at)
    control.on_admitted(probe_at, probe_at + 0.05, rate_bound=False)
    assert not control.paused
    # What held before the pause (a little under it: the pause's 429s came at that rate).
    assert control.rate == pytest.approx(40.0 * MARGIN)
    assert control.high == pytest.approx(60.0)
    held = probe_at + 0.2 + HOLD
    for sent in sending(control, probe_at + 0.1, held, 40.0):
        control.on_admitted(sent, sent + 0.05, rate_bound=True)
    control.on_send(held)
    control.on_admitted(held, held + 0.05, rate_bound=True)
    # Bisection towards it, not x1.25 unbounded (as after a long pause).
    assert control.rate == pytest.approx((40.0 * MARGIN + 60.0) / 2)


def test_the_first_probe_goes_a_pause_after_the_cut_the_429s_followed() -> None:
    """The limiter has refused everything since the cut: its silence began there, not when
    enough refusals came back to call it remembering (a fixed window's turn, or a debt paid off,
    is that much nearer). Sending nothing from the pause on, the probe goes PAUSE_FIRST after
    the cut; refused, the next goes twice that after it was refused."""
    control, t = paused_after_a_cut()
    assert control.pause_wait(t) == pytest.approx(2.5 + PAUSE_FIRST - t)
    assert control.pause_wait(2.5 + PAUSE_FIRST) == 0.0
    control.on_send(3.5)
    control.on_throttled(3.5, now=3.55, latency=0.05)
    assert control.paused
    assert control.pause_wait(3.55) == pytest.approx(2 * PAUSE_FIRST)


def slow_start_cut_into_a_full_window() -> tuple[AdaptiveRate, float]:
    """Slow start overshot at 800/s into a window full from the first contact: its 429 cut,
    and the answers measured by the end of the hold were all 429s. Returns (control, time)."""
    control = AdaptiveRate(0.0)
    sends = sending(control, 0.0, 0.5, 800.0)
    assert control.on_throttled(sends[-3], now=0.5, latency=0.05)
    for sent in sends[-2:]:
        control.on_throttled(sent, now=0.51, latency=0.05)
    assert control.holding
    assert control.measure_due(now=0.56, oldest_in_flight=None, latency=0.05)
    control.measure(now=0.56)
    assert not control.holding and control.rate == pytest.approx(400.0, rel=0.05)
    return control, 0.56


def test_after_slow_start_finds_a_full_window_four_requests_feel_the_way() -> None:
    """Half the overshoot, 400/s, is no rate: sending on at it until the pause's evidence came
    in (four 429s, two round trips after the cut) sent 51 requests into a full window. Only
    BLOCK_AFTER go; all refused, the pause starts at once."""
    control, t = slow_start_cut_into_a_full_window()
    feelers = []
    for _ in range(50):  # (a round trip and a half at 400/s)
        if control.pause_wait(t) > 0.0:
            break
        control.on_send(t)
        feelers.append(t)
        t += 1.0 / 400.0
    assert len(feelers) == BLOCK_AFTER
    assert control.pause_wait(t + 0.5) == PROBE_POLL  # (they are out: none more goes)
    for sent in feelers:
        control.on_throttled(sent, now=sent + 0.01, latency=0.05)
    control.pause_wait(t + 0.02)
    assert control.paused


def test_a_feeler_admitted_lets_sending_go_on_and_a_lost_one_lets_another_go() -> None:
    control, t = slow_start_cut_into_a_full_window()
    for _ in range(BLOCK_AFTER):
        control.on_send(t)
    control.on_unanswered(t, now=t + 0.1)  # a timeout: another may go in its place
    assert control.pause_wait(t + 0.1) == 0.0
    control.on_send(t + 0.1)
    assert control.pause_wait(t + 0.1) == PROBE_POLL
    control.on_admitted(t, now=t + 0.15, rate_bound=True)
    assert control.pause_wait(t + 0.15) == 0.0 and not control.paused


def test_a_process_told_to_follow_a_shared_rate_stops_feeling_its_own_way() -> None:
    """Another process leads the budget: this one's own answers decide nothing any more."""
    control, t = slow_start_cut_into_a_full_window()
    for _ in range(BLOCK_AFTER):
        control.on_send(t)
    assert control.pause_wait(t) == PROBE_POLL
    control.follow(12.5, now=t + 0.01)
    assert control.pause_wait(t + 0.01) == 0.0 and control.rate == 12.5


def test_a_probe_that_gets_no_answer_ends_and_the_next_goes_a_gap_later() -> None:
    """A timeout or a dropped connection says nothing about the rate: the probe is over, the
    gap is not doubled (nothing was refused), and another request's lost answer, sent before
    the probe, changes nothing."""
    control, _ = paused_after_a_cut()
    probe_at = 2.5 + PAUSE_FIRST
    control.on_send(probe_at)
    assert control.pause_wait(probe_at + 5.0) == PROBE_POLL  # (one probe at a time)
    control.on_unanswered(probe_at - 0.5, now=probe_at + 0.2)
    assert control.pause_wait(probe_at + 0.2) == PROBE_POLL
    control.on_unanswered(probe_at, now=probe_at + 3.0)
    assert control.paused
    assert control.pause_wait(probe_at + 3.0) == pytest.approx(PAUSE_FIRST)


def test_an_estimated_bound_is_gone_to_at_once_and_then_probed_past() -> None:
    """A bound a measurement estimated (not a rate that drew a 429) is gone to in one step
    after a hold, not halved towards, and once it held, probed past, even where 429s close a
    gate: such an estimate, made within a window's first contact, held four processes at 40 %
    of a sliding log's limit, creeping towards it for 17 s."""
    control = AdaptiveRate(0.0)
    control.rate = control.low = 10.0
    control.high, control._high_measured = 20.0, True
    control._expensive, control.cuts = True, 1
    t = 0.0
    for _ in range(2):
        rate = control.rate
        stop = t + HOLD_EXPENSIVE + 0.2
        for sent in sending(control, t, stop, rate):
            control.on_admitted(sent, sent + 0.05, rate_bound=True)
        t = stop
        control.on_send(t)
        control.on_admitted(t, t + 0.05, rate_bound=True)
        t += 0.1
        if rate == 10.0:
            assert control.rate == pytest.approx(20.0)  # straight to the estimate
    assert control.rate > 20.0 and control.high is None  # it held: probed past


def test_a_process_sharing_the_limiter_fits_no_bucket() -> None:
    """Sharing a budget (`unit` under 1), what a limiter admitted of this process's own sends
    in an episode depends on the others' too: the same episodes that fit a bucket alone fit
    nothing."""
    bucket = [(240.0, 10 + 2), (120.0, 10 + 7), (60.0, 10 + 50)]
    alone, shared = AdaptiveRate(0.0), AdaptiveRate(0.0)
    shared.unit = 0.25
    gated_episodes(alone, bucket)
    gated_episodes(shared, bucket)
    assert alone.history[-1].reason == "429: fitted the limit"
    assert all(change.reason != "429: fitted the limit" for change in shared.history)


def test_a_measurement_is_never_under_what_the_run_was_admitted() -> None:
    """A window's allowance admitted at once, then a gate held the measurement up for the
    window (five seconds): what was admitted over the run bounds the estimate from below."""
    control = AdaptiveRate(0.0)
    sends = sending(control, 0.0, 0.5, 500.0)  # 250 at once: the window's allowance
    for sent in sends:
        control.on_admitted(sent, sent + 0.05, rate_bound=False)
    control.rate = 100.0
    late = sending(control, 5.0, 5.2, 100.0)
    assert control.on_throttled(late[0], now=late[0] + 0.01, latency=0.05)
    for sent in late[1:]:
        control.on_throttled(sent, now=sent + 0.01, latency=0.05)
    control.measure(5.3)
    assert control.rate is not None and control.rate >= 0.95 * 250 / 5.3 * MARGIN


def test_another_process_s_429_with_no_rate_cuts_from_this_one_s_last_second() -> None:
    """No rate of its own yet (--rate only caps it), a 429 another process drew is measured
    against what this one sent over the last second (its share), not around a guessed send
    time: guessed, it found none sent and cut to the floor, and two processes sharing --rate 8
    crawled at 0.1 requests/s for a minute. One that sent nothing has no share to cut."""
    idle = AdaptiveRate(0.0, ceiling=8.0)
    assert not idle.on_throttled(9.0, now=10.0, latency=0.05, expensive=True, hearsay=True)
    assert idle.rate is None
    control = AdaptiveRate(0.0, ceiling=8.0)
    sending(control, 9.0, 10.0, 4.0)
    assert control.on_throttled(9.93, now=10.0, latency=0.05, expensive=True, hearsay=True)
    assert control.rate == pytest.approx(4.0 * 0.5)


def answer(control: AdaptiveRate, limiter: TokenBucket, t: float) -> bool:
    """Send at `t` into `limiter` and answer it (a 429 at once, an admitted one 50 ms later)."""
    control.on_send(t)
    if limiter.admit(t).allowed:
        control.on_admitted(t, now=t + 0.05, rate_bound=True)
        return True
    control.on_throttled(t, now=t + 0.002, latency=0.05)
    return False


def climb_into_a_counting_bucket(limit: float = 50.0) -> tuple[AdaptiveRate, float]:
    """Against a token bucket (burst 10) that counts refused requests: slow start's overshoot
    runs it into debt, four feelers are refused, the pause's probe passes, and the rate climbs
    from what was admitted (11 requests in a second) until a step over the limit draws a 429.
    Returns the control and the time of that 429."""
    control, bucket = AdaptiveRate(0.0), TokenBucket(limit, 10, count_rejected=True)
    t = 0.0
    while answer(control, bucket, t):  # slow start, 500/s
        t += 0.002
    if control.measure_due(t + 0.06, None, 0.05):
        control.measure(t + 0.06)  # (nothing admitted since its 429: feel the way)
    t += 0.06
    while t < 30.0:
        wait = control.pause_wait(t)
        if wait > 0.0:
            t += wait
            continue
        refused = not answer(control, bucket, t)
        last = control.history[-1]
        if refused and last.reason.startswith("429") and last.at > 1.0:  # (past slow start)
            return control, t
        t += 1.0 / (control.effective or 400.0)
    raise AssertionError("never drew a 429 past slow start")


def test_an_episode_of_a_counting_bucket_from_full_to_its_first_429_measures_its_rate() -> None:
    """Over-driven, a bucket that counts refusals admits nothing (in debt), so what it admitted
    measures nothing; an episode from a full bucket to its first 429 does: B + L x T sent in T
    seconds, B as the first contact showed. The rate goes just under L, and the search is
    bounded by it (a step from below it, the bucket was full)."""
    control, _ = climb_into_a_counting_bucket(50.0)
    assert control.history[-1].reason == "429: fitted the limit"
    assert control.rate == pytest.approx(50.0 * 0.95, rel=0.05)
    assert control.rate < 50.0 and control.high is not None and control.high >= 49.0
    # Once a pause has shown the limiter remembers, close enough under that bound it stays:
    # a probe over it would run the bucket into debt and cost a pause.
    assert control.high < 50.0 * 1.15


def test_a_limiter_that_remembers_is_not_measured_by_what_it_admits_over_driven() -> None:
    """A measurement after a cut would put a counting bucket's rate at what it let through in
    debt (a third of what was sent, and what it admitted over the run: 19 requests/s, for a
    limit of 50). Once a pause has shown it remembers, none is made."""
    control, t = climb_into_a_counting_bucket(50.0)
    rate = control.rate
    assert rate is not None
    t += MIN_CUT_INTERVAL + 0.1
    sends = sending(control, t, t + 0.3, rate)
    assert control.on_throttled(sends[0], now=sends[0] + 0.002, latency=0.3)
    cut = control.rate
    assert cut is not None and cut > 0.9 * rate
    for i, sent in enumerate(sends[1:]):
        if i % 3 == 2:
            control.on_admitted(sent, now=sent + 0.3, rate_bound=True)
        else:
            control.on_throttled(sent, now=sent + 0.002, latency=0.3)
    assert not control.paused
    control.measure(t + 0.4)
    assert control.rate == cut


def test_a_due_cut_with_everything_refused_since_the_last_one_pauses_a_remembering_limiter() -> (
    None
):
    """A leaky bucket counting refusals answers slower than the half second between cuts, so
    the pause's evidence never settled: five cuts in 2.5 s took the rate 16 % under its limit
    while it only worked off the queue our refused requests had run up. Once it is known to
    remember, a cut due with four 429s since the last one and nothing admitted is a pause."""
    control, t = paused_after_a_cut()
    probe_at = t + control.pause_wait(t)
    control.on_send(probe_at)
    control.on_admitted(probe_at, probe_at + 0.05, rate_bound=False)
    assert not control.paused
    t = probe_at + 1.0
    control.on_send(t)
    assert control.on_throttled(t, now=t + 0.01, latency=0.6)
    for _ in range(BLOCK_AFTER):  # 429s sent after the cut; admitted answers take 0.6 s
        t += 0.05
        control.on_send(t)
        control.on_throttled(t, now=t + 0.01, latency=0.6)
    assert not control.paused  # (not settled: two round trips are 1.2 s)
    t += 0.6
    control.on_send(t)
    assert not control.on_throttled(t, now=t + 0.01, latency=0.6)
    assert control.paused and control.cuts == 2


def test_a_rate_that_drew_a_429_out_of_slow_start_bounds_the_search_after_a_pause() -> None:
    """Out of slow start, a rate that drew a 429 is a bound however far above the resumed rate
    it is (120/s over the 23/s a counting bucket's debt let through): the search bisects
    towards it; only slow start's overshoot, which doubled each round trip, bounds nothing."""
    control, t = paused_after_a_cut()
    control._drew = 200.0  # (drawn by the cut before the pause, at 200/s)
    probe_at = t + control.pause_wait(t)
    control.on_send(probe_at)
    control.on_admitted(probe_at, probe_at + 0.05, rate_bound=False)
    assert control.high == 200.0


def test_a_429_after_a_step_up_cuts_to_what_the_bucket_proved_it_admits() -> None:
    """A step up from a rate that held (104/s) to halfway to the bound (127/s) drains a bucket
    of 120/s and burst 10 in about 1.4 s. What it admitted meanwhile, less its burst, over the
    time since, is at most its rate: the cut goes there (just under 120/s), not back to 104/s
    for a hold of 2 s. The burst is known (here, from an earlier run)."""
    control = AdaptiveRate(0.0, learned=LearnedPace(104.0, 150.0, burst=10))
    control._search_after = 0.0
    bucket = TokenBucket(120.0, 10)
    t = 0.0
    while t < 10.0:
        refused = not answer(control, bucket, t)
        if refused and control.history[-1].reason == "429: cut":
            break
        t += 1.0 / (control.effective or 1.0)
    assert [round(change.rate or 0.0) for change in control.history] == [
        104,
        127,
        round(control.rate or 0.0),
    ]
    assert control.low == control.rate
    assert 115.0 <= control.rate < 120.0


def test_a_429_cuts_back_to_the_rate_that_held_while_the_burst_is_unknown() -> None:
    """Without the burst, what was admitted bounds nothing (it may be all of it)."""
    control = AdaptiveRate(0.0, learned=LearnedPace(104.0, 150.0, burst=10))
    control._search_after = 0.0
    control._learned_burst = None
    bucket = TokenBucket(120.0, 10)
    t = 0.0
    while t < 10.0:
        if not answer(control, bucket, t) and control.history[-1].reason == "429: cut":
            break
        t += 1.0 / (control.effective or 1.0)
    assert control.rate == 104.0


def test_a_gated_cut_from_far_over_what_was_admitted_goes_down_to_it_at_once() -> None:
    """Sending at 320/s into a window that admitted 60/s over the last 5 s, each 429 closing
    a gate: the rate is not what limits, so halving it (160, 80, one gate apart) gets nowhere
    for seconds. The cut goes to what was admitted (a sliding window with Retry-After alone
    measured 1.45x at one latency seed with the halving, 1.35x without)."""
    control = AdaptiveRate(0.0)
    control.rate = 320.0
    t = 0.0
    while t < 5.0:
        control.on_send(t)
        control.on_admitted(t, now=t + 0.01, rate_bound=False)
        t += 1.0 / 60.0
    control.on_send(5.0)
    assert control.on_throttled(5.0, now=5.01, latency=0.01, expensive=True)
    assert 60.0 * MARGIN <= (control.rate or 0.0) <= 60.0


def test_a_gated_cut_with_a_handful_admitted_lately_halves_as_before() -> None:
    """Two requests admitted in 5 s (a long gate, say) are no rate to cut to: the cut halves."""
    control = AdaptiveRate(0.0)
    control.rate = 320.0
    for t in (0.5, 4.0):
        control.on_send(t)
        control.on_admitted(t, now=t + 0.01, rate_bound=False)
    control.on_send(5.0)
    assert control.on_throttled(5.0, now=5.01, latency=0.01, expensive=True)
    assert control.rate == pytest.approx(160.0)
