"""A window limiter's cycles: its allowance at once, then nothing until the window frees."""

from __future__ import annotations

import pytest

from scanctl.ratecontrol import PAUSE_FIRST, AdaptiveRate
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
    for i in range(99):
        assert control.pause_wait(probe + 0.06) == 0.0
        control.on_send(probe + 0.06 + i * 0.001)
    assert control.paused
    cycle = control.window_cycle
    assert control.pause_wait(probe + 0.2) == pytest.approx(
        probe + (cycle.low + cycle.high) / 2 - (probe + 0.2)
    )
