"""A window limiter's cycles: its allowance at once, then nothing until the window frees."""

from __future__ import annotations

import pytest

from scanctl.ratecontrol import MIN_ALLOWANCE, PAUSE_FIRST, AdaptiveRate
from scanctl.windowcycle import CLOSE, WindowCycle


def test_the_probes_bisect_the_window_s_bounds_and_then_go_at_the_upper_one() -> None:
    """Filled at 0, still full at a probe at 1.1 s, free at one at 3.1 s: W is in (1.1, 3.1].
    Each burst's probe goes halfway; what it finds narrows the bounds; once they are within
    CLOSE, the probe goes at the upper one (always free)."""
    cycle = WindowCycle(100, filled_from=0.0, refused=1.1, admitted=3.1)
    assert cycle.start(probe_sent=3.1) == 99  # (the probe is in the window already)
    assert cycle.probe_at() == pytest.approx(3.1 + 2.1)
    cycle.probe_admitted(5.2)  # free at 2.1 s: W <= 2.1
    cycle.start(5.2)
    assert cycle.probe_at() == pytest.approx(5.2 + 1.6)
    cycle.probe_refused(6.8)  # full at 1.6 s: W > 1.6
    assert cycle.probe_at() == pytest.approx(5.2 + 1.85)
    cycle.probe_refused(7.05)
    cycle.probe_admitted(7.175)  # (1.85, 1.975]
    cycle.start(7.175)
    cycle.probe_refused(7.175 + 1.9125)  # (1.9125, 1.975]: within CLOSE of each other
    assert cycle.high - cycle.low <= CLOSE * cycle.high
    assert cycle.probe_at() == pytest.approx(7.175 + 1.975)


def test_each_request_of_a_burst_waits_for_its_counterpart_of_the_last_one_to_leave() -> None:
    """A sliding window frees room as the last burst's requests leave it, as spread out as they
    went: sent at once, the next burst met the tail of the last one and half of it was
    refused. Shifted by the time between the two probes, each goes as its room frees."""
    cycle = WindowCycle(4, filled_from=0.0, refused=1.0, admitted=2.0)
    cycle.start(2.0)
    assert cycle.wait(2.05) == 0.0  # (nothing to follow yet: at once)
    for t in (2.05, 2.15, 2.30):
        assert cycle.wait(t) == 0.0
        done = cycle.sent(t)
        cycle.admitted_in_burst()  # (the first burst's first share waits for its answers)
    assert done  # (three and the probe: the allowance)
    cycle.start(4.0)  # the next probe, 2 s after the last one
    assert cycle.wait(4.01) == pytest.approx(4.05 - 4.01)
    cycle.sent(4.05)
    assert cycle.wait(4.05) == pytest.approx(0.10)
    cycle.sent(4.15)
    assert cycle.wait(4.2) == pytest.approx(0.10)


def test_a_burst_that_drew_a_429_teaches_nothing_about_the_window() -> None:
    """Something older was still in the window (a refused request a counting limiter logged):
    a probe refused or admitted after that burst moves neither bound."""
    cycle = WindowCycle(100, filled_from=0.0, refused=1.0, admitted=3.0)
    cycle.start(3.0)
    cycle.refused_in_burst()
    cycle.probe_refused(5.5)
    cycle.probe_admitted(5.8)
    assert (cycle.low, cycle.high) == (1.0, 3.0)


def test_a_probe_refused_where_the_window_must_be_free_stops_the_bisection() -> None:
    """Refused at the upper bound: our own refused probes, logged by the limiter, took the room.
    The next probe goes once the whole burst has left the window, and no probe goes below the
    upper bound any more (each refused one would take room again)."""
    cycle = WindowCycle(3, filled_from=0.0, refused=1.0, admitted=3.0)
    cycle.start(3.0)
    cycle.sent(3.1)
    cycle.sent(3.4)
    assert cycle.probe_at(refused=6.0) == pytest.approx(3.4 + 3.0)
    assert cycle.logs_refusals
    cycle.start(6.5)
    assert cycle.probe_at() == pytest.approx(6.5 + 3.0)  # (not halfway: 1.0 and 3.0 apart)


def test_a_window_that_refused_a_probe_is_sent_its_allowance_at_once_then_waited_for() -> None:
    """Slow start filled a window of 100 from the run's first send; the pause's probe at 1 s
    was refused, the one at 3 s admitted. Sending resumes with the allowance (less the probe)
    at once, and after it nothing until the probe halfway between the bounds."""
    control = AdaptiveRate(0.0)
    t = 0.0
    for _ in range(100):  # admitted at once
        control.on_send(t)
        control.on_admitted(t, now=t + 0.05, rate_bound=False)
        t += 0.001
    while not control.paused:  # refused: cut, feelers, pause
        control.on_send(t)
        control.on_throttled(t, now=t + 0.002, latency=0.05)
        if control.measure_due(t + 0.06, None, 0.05):
            control.measure(t + 0.06)
        t += 0.005
    probe = t + control.pause_wait(t)
    assert probe == pytest.approx(control.last_cut_at + PAUSE_FIRST)
    control.on_send(probe)
    control.on_throttled(probe, now=probe + 0.002, latency=0.05)
    probe += control.pause_wait(probe + 0.002) + 0.002
    control.on_send(probe)
    control.on_admitted(probe, now=probe + 0.05, rate_bound=False)
    assert not control.paused and control.window_cycle is not None
    assert control.resume_credit == 99
    sends = [probe + 0.06 + i * 0.001 for i in range(99)]
    for sent in sends[:25]:  # a quarter of the allowance, and then its answers first...
        assert control.pause_wait(sent) == 0.0
        control.on_send(sent)
    assert control.pause_wait(sends[25]) > 0
    for sent in sends[:25]:
        control.on_admitted(sent, now=sends[25], rate_bound=False)
    for sent in sends[25:]:  # ...and then the rest at once
        assert control.pause_wait(sent) == 0.0
        control.on_send(sent)
    assert control.paused
    cycle = control.window_cycle
    assert control.pause_wait(probe + 0.2) == pytest.approx(
        probe + (cycle.low + cycle.high) / 2 - (probe + 0.2)
    )


def test_the_first_burst_sends_a_quarter_and_waits_for_its_answers_before_the_rest() -> None:
    """A slow bucket can pass for a window (see `AdaptiveRate.gate_check_refused`): sent whole,
    its first burst was mostly refused, 17 of 19. A quarter goes first; the rest once that
    quarter's answers are in; later bursts go whole."""
    cycle = WindowCycle(20, filled_from=0.0, refused=0.25, admitted=1.0)
    cycle.start(1.0)
    for i in range(5):
        assert cycle.wait(1.0) == 0.0
        cycle.sent(1.0 + i * 0.001)
    assert cycle.wait(1.01) > 0  # (the quarter's answers first)
    for _ in range(5):
        cycle.admitted_in_burst()
    assert cycle.wait(1.05) == 0.0
    while not cycle.sent(1.05):
        pass
    cycle.start(3.0)
    for _ in range(19):  # (the next burst: no wait but its counterpart's of the last)
        assert cycle.wait(5.0) == 0.0
        cycle.sent(5.0)


def test_a_burst_refused_beyond_what_older_requests_explain_is_no_window_s() -> None:
    """Two refusals are older requests still in the window (our own refused probes, logged);
    more than that, and more than a quarter of what the burst sent, is no window of this
    allowance: a bucket admitting a request or two of any burst."""
    cycle = WindowCycle(20, filled_from=0.0, refused=0.25, admitted=1.0)
    cycle.start(1.0)
    for i in range(5):
        cycle.sent(1.0 + i * 0.001)
    assert cycle.refused_in_burst() is False
    assert cycle.refused_in_burst() is False
    assert cycle.refused_in_burst() is True  # three of five
    window = WindowCycle(100, filled_from=0.0, refused=1.0, admitted=2.0)
    window.start(2.0)
    for i in range(99):
        window.sent(2.0 + i * 0.001)
    assert not any(window.refused_in_burst() for _ in range(3))  # (the tail of 99: older ones)


def test_a_refused_probe_past_the_halfway_point_of_an_unclean_cycle_waits_for_the_upper_bound() -> (
    None
):
    """A burst that drew a 429 moves no bound, so the halfway point stays where it was: a probe
    refused at or after it was followed by another at once, 14 in 0.4 s, each one logged by a
    limiter that counts refusals (and taking the next burst's room)."""
    cycle = WindowCycle(100, filled_from=0.0, refused=1.0, admitted=3.0)
    cycle.start(3.0)
    cycle.refused_in_burst()
    cycle.probe_refused(5.1)
    assert cycle.probe_at(refused=5.1) == pytest.approx(3.0 + 3.0)  # (not 5.0, gone by)


def first_gate_of_a_window(allowance: int = 100) -> tuple[AdaptiveRate, float]:
    """Slow start sent `allowance` at once, all admitted, then drew a gated 429: the cut.
    Returns (control, the time the gate's check went)."""
    control = AdaptiveRate(0.0)
    for i in range(allowance + 2):
        control.on_send(i * 0.001)
    for i in range(allowance):
        control.on_admitted(i * 0.001, now=0.05 + i * 0.001, rate_bound=False)
    sent = (allowance + 1) * 0.001
    assert control.on_throttled(sent, now=sent + 0.01, latency=0.05, expensive=True)
    return control, sent + 0.5


def test_a_refused_check_of_the_first_gate_paces_the_window_in_cycles_from_the_gate_s_end() -> None:
    """The check half a second into a 2 s gate was refused: the window is full until it frees,
    and from the first request admitted once the gate opened, it is sent what the first
    contact was admitted, at once (the refused check and that request bound its length)."""
    control, check = first_gate_of_a_window()
    assert control.gate_check_refused(check, now=check + 0.01)
    assert control.paused
    assert control.pause_wait(check + 0.01) == 0.0  # (the gate holds the probe)
    control.on_send(2.2)
    control.on_admitted(2.2, now=2.25, rate_bound=False)
    cycle = control.window_cycle
    assert not control.paused and cycle is not None
    assert cycle.allowance == 100 and control.resume_credit == 99
    assert (cycle.low, cycle.high) == pytest.approx((check, 2.2))


def test_a_refused_gate_check_makes_no_window_of_a_first_contact_of_a_request_or_two() -> None:
    """A first contact that got a request or two through (a bucket of 1 at 1 request/s, whose
    "Retry-After: 1" is exact) is paced by a rate: a burst of fewer than MIN_ALLOWANCE
    tells a window from a slow bucket no better."""
    control, check = first_gate_of_a_window(allowance=MIN_ALLOWANCE - 1)
    assert not control.gate_check_refused(check, now=check + 0.01)
    assert not control.paused


def test_a_window_s_first_burst_mostly_refused_is_paced_by_a_rate_for_the_rest_of_the_run() -> None:
    """A bucket of 20 at 1 request/s passes for a window when its gate's check is refused; a
    second later it admits one or two of the next burst. That burst's refusals end the cycles
    (and cut nothing: they were the burst's), and no later refused check starts them again."""
    control, check = first_gate_of_a_window(allowance=20)
    assert control.gate_check_refused(check, now=check + 0.01)
    control.on_send(1.0)
    control.on_admitted(1.0, now=1.05, rate_bound=False)
    burst = [1.06 + i * 0.001 for i in range(5)]
    for sent in burst:
        control.on_send(sent)
    rate, cuts = control.rate, control.cuts
    for sent in burst[:3]:
        control.on_throttled(sent, now=1.08, latency=0.05, expensive=True)
    assert control.window_cycle is None and not control.paused
    assert control.rate == rate and control.cuts == cuts
    assert not control.gate_check_refused(2.5, now=2.51)
