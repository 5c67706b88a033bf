"""The Retry-After gate's check of its own hint (`scanctl.gate`), driven by hand: no clock."""

from __future__ import annotations

from scanctl.gate import RetryAfterGate


def test_a_check_that_never_left_before_its_gate_opened_is_dropped_not_sent_in_a_later_one() -> (
    None
):
    """A check is due a quarter into its gate; when no request was waiting then (this process
    held back by a schedule shared with others), the gate opens unchecked. The next gate gets
    its own check, timed from its own 429: timed from the old one, a request sent the moment
    the new gate closed counted as the check, and what "proved enough" was the 28 s since the
    old 429 (measured: four overlapping runs stored that, and the run after them kept every
    later one-second gate in full)."""
    gate = RetryAfterGate(check=True)
    gate.close(1.0, 0.0, checkable=True, seq=1)
    assert gate.wait(0.0) == 0.25  # the check is due a quarter in...
    assert gate.on_send(2, 1.5) is False  # ...but the first send comes after the gate opened
    gate.close(1.0, 28.0, checkable=True, seq=3)
    assert gate.wait(28.0) == 0.25  # a check of its own, a quarter into the new gate
    assert gate.on_send(4, 28.0) is False  # (not a request sent as the gate closed)
    assert gate.on_send(5, 28.25) is True
    assert gate.on_answer(5, 28.3, admitted=True, throttled=False) is True
    assert gate.verdict == "overstated" and abs(gate.enough - 0.3) < 1e-9


def test_a_check_waits_for_its_time_however_early_a_request_is_ready() -> None:
    gate = RetryAfterGate(check=True)
    gate.close(1.0, 10.0, checkable=True, seq=1)
    assert gate.on_send(2, 10.1) is False  # (something let go early is not the check)
    assert gate.on_send(3, 10.25) is True


def test_a_check_refused_a_quarter_in_is_tried_5_8_into_the_next_gate() -> None:
    """A window's whole-second Retry-After overstates by anything from 0 to 1 s: refused a
    quarter into one gate (before the window's turn), the next gate's check goes 5/8 in, and
    admitted there, the hint is known to overstate. (Paced alone, a window whose first check
    is refused goes to cycles, see `AdaptiveRate.gate_check_refused`; this is for when it
    cannot: sharing a budget, or from a learned rate.)"""
    gate = RetryAfterGate(check=True)
    gate.close(1.0, 0.0, checkable=True, seq=1)
    assert gate.on_send(2, 0.25) is True
    assert gate.on_answer(2, 0.26, admitted=False, throttled=True) is True
    assert gate.verdict is None
    gate.close(1.0, 2.0, checkable=True, seq=3)
    assert gate.wait(2.0) == 0.625
    assert gate.on_send(4, 2.625) is True
    assert gate.on_answer(4, 2.63, admitted=True, throttled=False) is True
    assert gate.verdict == "overstated"
