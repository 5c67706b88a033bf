"""The `Retry-After` gate: while it is closed, no request leaves; checked, not obeyed blindly.

One per upstream, in the `Pacer`: a `Retry-After` on any answer closes it for every request
until then. Kept apart from the pacer because what a gate is worth is a question of its own:
a limiter answering in whole seconds says "Retry-After: 1" when it refills in a fiftieth of
that, and the gate finds out (see `RetryAfterGate`).
"""

from __future__ import annotations

import math

# A Retry-After between these (s) is checked with one request sent this share of it after the
# 429 (while 429s are cheap): a token bucket's "Retry-After: 1" usually means 1/rate, a whole
# second rounded up from a fiftieth; a longer one is a deliberate wait, obeyed as it is.
GATE_CHECKED_FROM = 0.5
GATE_CHECKED_UP_TO = 2.0
GATE_PROBE_SHARE = 0.25
GATE_CHECKS = 3  # checks refused before a Retry-After is taken as exact


class RetryAfterGate:
    """The `Retry-After` gate: every request waits until it opens. Checked, not obeyed blindly.

    A limiter that answers in whole seconds says "Retry-After: 1" when its bucket refills in a
    fiftieth of that: obeyed, each 429 costs a second of silence. So while 429s are cheap (the
    profile does not say the upstream bans, no ban seen) the first gate of one or two seconds
    is tested once: one request leaves a quarter of the way into it. Admitted, the hint is
    known to overstate, and later such gates last no longer than that quarter proved enough;
    refused, the hint is known to be right (that 429 was all the check cost) and every later
    gate is obeyed in full. What proved enough is kept for the next run
    (`LearnedPace.gate_enough`); should the first request sent after a short gate be refused,
    it was not enough after all, and doubles. A longer Retry-After is a deliberate wait: obeyed.
    """

    def __init__(self, check: bool, enough: float | None = None) -> None:
        self.until = 0.0
        self.closures = 0
        self.check = check
        self.verdict: str | None = None  # None: unchecked; "overstated" or "exact"
        self.enough = math.inf  # once overstated: how long a gate proved to need at most
        if check and enough is not None:
            self.verdict, self.enough = "overstated", enough
        self.refining = True  # whether a shorter gate may still prove enough
        self._first_after: int | None = None  # the first request sent once a gate opened
        self._awaiting_first = False
        self._probe_at: float | None = None
        self._closed_at = 0.0
        self.probe_seq: int | None = None
        # Where in the next gate a check goes, and how many refusals are left before the hint
        # counts as exact: a window's whole-second Retry-After overstates by anything from 0
        # to 1 s, so a check refused at a quarter is tried later in the next gate (5/8, 13/16).
        self._share = GATE_PROBE_SHARE
        self._checks_left = GATE_CHECKS

    def close(
        self,
        seconds: float,
        now: float,
        *,
        checkable: bool = False,
        seq: int | None = None,
    ) -> None:
        """Hold every request `seconds` from now (extending, never shortening); a 429's gate
        (`checkable`: request `seq`'s) may be tested as above."""
        hinted = seconds
        self._drop_unsent_check(now)
        if self.verdict == "overstated" and hinted <= GATE_CHECKED_UP_TO:
            if seq is not None and seq == self._first_after:
                self.enough = min(hinted, self.enough * 2)  # refused at once: not enough
                self.refining = False
            seconds = min(seconds, self.enough)
        if now + seconds > self.until:
            self.until = now + seconds
            self.closures += 1
            self._awaiting_first = True
        if not (checkable and self.check and self._probe_at is None):
            return
        if self.verdict is None and GATE_CHECKED_FROM <= hinted <= GATE_CHECKED_UP_TO:
            self._closed_at = now
            self._probe_at = now + hinted * self._share
        elif self.verdict == "overstated" and self.refining:
            # Each later gate is tested at half of what proved enough, until a test fails.
            self._closed_at = now
            self._probe_at = now + self.enough / 2

    def obeyed(self, hinted: float) -> bool:
        """Whether a gate of `hinted` seconds is kept as the hint says (neither checked nor
        shortened): a deliberate wait, or a hint known to be exact, or checks off. Only such
        a gate holds the other processes sharing a budget: one that this process doubts
        (and checks, then shortens to what proved enough) would cost them a whole second
        each time a "Retry-After: 1" overstates a bucket's fiftieth of one."""
        checked = GATE_CHECKED_FROM <= hinted <= GATE_CHECKED_UP_TO
        return not (self.check and checked) or self.verdict == "exact"

    def wait(self, now: float) -> float:
        """Seconds until a request may leave: 0 for the one that checks the gate, when due."""
        if self._probe_at is not None and self.probe_seq is None:
            return min(self._probe_at, self.until) - now  # (waiters wake for the check)
        return self.until - now

    def on_send(self, seq: int, now: float) -> bool:
        """A request leaves: while the gate is closed, from the check's time, that is the one
        checking it (True)."""
        self._drop_unsent_check(now)
        due = self._probe_at is not None and self._probe_at <= now < self.until
        if due and self.probe_seq is None:
            self.probe_seq = seq
            return True
        if self._awaiting_first and now >= self.until:
            self._first_after, self._awaiting_first = seq, False
        return False

    def _drop_unsent_check(self, now: float) -> None:
        """A check due in a gate that opened before any request left (none was waiting, or a
        schedule shared with other processes held this one back) is void: the next gate gets
        its own. Kept, the first request sent into that next gate counted as its check, and
        what "proved enough" was the time since the old 429 (28 s, measured, stored for the
        next run: which then kept every one-second gate in full)."""
        if self._probe_at is not None and self.probe_seq is None and now >= self.until:
            self._probe_at = None

    def on_answer(self, seq: int, now: float, *, admitted: bool, throttled: bool) -> bool:
        """Learn from the checking request's answer; True when this answer was that one."""
        if seq != self.probe_seq:
            return False
        if admitted:
            self.verdict = "overstated"
            self.enough = max(now - self._closed_at, 0.0)
            self.until = min(self.until, now)
        elif throttled and self.verdict == "overstated":
            self.refining = False  # what proved enough before is as short as gates get
        elif throttled:
            self._checks_left -= 1
            self._share = (self._share + 1.0) / 2.0
            if self._checks_left == 0:
                self.verdict = "exact"
        self._probe_at = self.probe_seq = None  # (neither: an error, so check another time)
        return True
