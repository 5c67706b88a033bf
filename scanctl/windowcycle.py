"""Sending a window limiter's allowance at once, then nothing until the window frees.

A limiter that refused a pause's probe long after the first contact filled it is a window
(a sliding log, a long fixed window, a penalty box): it admits what its window allows, A
requests, and nothing more until what filled it leaves the window W seconds later. No send
rate fits that well. Sending at a rate after the window's allowance went at once overfills it
(A + rate x W > A) and costs a pause whose probes, 1, 2, 4 s apart, come back up to half a
gap after it freed: measured, a sliding window of 100 per 2 s took 1.38x its ideal. Sending
A at once and the next A when the window frees fills it exactly, if W is known.

W is found from the probes, as bounds: the window that a burst filled at F (the probe that
started it, its oldest request) is still full at a probe refused at t (W > t - F), and free
again at a probe admitted at t (W <= t - F). The first bounds come from the pause that made
this a window (filled by the first contact, from the run's first send); each cycle's probe
then goes halfway between them, until they are within `CLOSE` of each other, and then at the
upper one. A burst that drew a 429 (something older was still in the window: a refused
request that a counting limiter logged) says nothing about W, and neither does a probe
refused at the upper bound (our own refused probes, logged, took the room): the next ones go
as a pause's do, 1, 2, 4 s apart.

The same cycles pace a window known only by its `Retry-After` (the rate control's
`gate_check_refused`: the first gate's check was refused, as a slow bucket's is too). So the
first burst sends a quarter of the allowance and waits for its answers; a burst refused beyond
what older requests in the window explain (`NOT_A_WINDOW`) met no window of that allowance,
and the caller stops cycling.

Pure and clock-free, as `ratecontrol`: callers pass the times.
"""

from __future__ import annotations

import math

CLOSE = 0.05  # bounds this close (share of the upper one) are W
# A burst refused more than this share of what it sent so far (and more than NOT_A_WINDOW_MIN
# requests) was met by no window: a few refusals are older requests still in it (a limiter
# that logs refusals keeps our refused probes a whole window), but a slow bucket admits one
# or two of any burst.
NOT_A_WINDOW = 0.25
NOT_A_WINDOW_MIN = 2
# Of the first burst, this share goes first, and the rest once its answers are in: a window
# admits it all, a slow bucket (taken for a window by a refused gate check) refuses most of
# it, and the rest is not sent into it (a bucket of 20 at 1 request/s: 17 of 19 refused).
FIRST_SHARE = 0.25
ANSWER_POLL = 0.02  # seconds between looks while the first share's answers are awaited


class WindowCycle:
    """The cycles of one window limiter: bursts of its allowance, pauses until it frees."""

    def __init__(self, allowance: int, filled_from: float, refused: float, admitted: float) -> None:
        """`allowance`: what the first contact got through at once; the first pause's bounds:
        filled from `filled_from`, a probe refused at `refused` and one admitted at
        `admitted`."""
        self.allowance = max(1, allowance)
        self.low: float = max(0.0, refused - filled_from)
        self.high = max(self.low, admitted - filled_from)
        self.filled_from = filled_from
        self.refused = 0  # 429s the current burst drew
        self.answered = 0  # ...and answers of any kind it had
        self.left = 0  # sends of the current burst still to go
        # How many of the first burst go before their answers are in (0: none held back).
        self._first_share = max(1, math.ceil(self.allowance * FIRST_SHARE))
        # When the current burst's requests went, and the last one's shifted by the time
        # between their probes: the i-th request of a burst goes no sooner than the i-th of
        # the last one left the window.
        self.sends: list[float] = []
        self._replay: list[float] = []
        self._last_sent = filled_from
        self.logs_refusals = False  # refused requests take room too (see `probe_at`)

    def start(self, probe_sent: float) -> int:
        """A probe was admitted: a new burst fills the window from it. Returns its size (the
        probe is in the window already)."""
        shift = probe_sent - self.filled_from
        self._replay = [sent + shift for sent in self.sends] if self.sends else []
        self.sends = []
        self.filled_from = probe_sent
        self.refused = self.answered = 0
        self.left = self.allowance - 1
        return self.left

    def wait(self, now: float) -> float:
        """Seconds until the burst's next request may go: a sliding window frees room as the
        last burst's requests leave it, as spread out as they went (sent at once, the next
        burst met the tail of the last one and half of it was refused)."""
        i = len(self.sends)
        if self._first_share:
            if self.answered < self._first_share <= i:
                return ANSWER_POLL  # (the first burst: its first share's answers first)
            if self.answered >= self._first_share:
                self._first_share = 0
        return max(0.0, self._replay[i] - now) if i < len(self._replay) else 0.0

    def sent(self, now: float) -> bool:
        """A request of the burst went: True when it was the last (pause now)."""
        self.sends.append(now)
        self._last_sent = now
        self.left -= 1
        return self.left <= 0

    @property
    def clean(self) -> bool:
        """The current burst drew no 429."""
        return not self.refused

    def admitted_in_burst(self) -> None:
        self.answered += 1

    def refused_in_burst(self) -> bool:
        """A 429 within the burst: the window held something older, the bounds learn nothing.
        True when more of what the burst sent so far was refused than older requests explain
        (`NOT_A_WINDOW`): the limiter is no window of this allowance."""
        self.refused += 1
        self.answered += 1
        return self.refused > max(NOT_A_WINDOW_MIN, NOT_A_WINDOW * len(self.sends))

    def probe_at(self, refused: float | None = None) -> float | None:
        """When the next probe should go, after one `refused` at that time if any (None: not
        by the window's bounds: a probe refused where it should be free, which a limiter that
        logs refused requests does when our own refused probes take the room; the pause's
        gaps then)."""
        if refused is not None and refused - self.filled_from >= self.high * (1.0 - 1e-9):
            # Our refused probes are logged (they took the room): probe no more below the
            # upper bound, and this time once the whole burst has left the window.
            self.logs_refusals = True
            last = self._last_sent + self.high
            return last if last > refused else None
        if self.logs_refusals or self.high - self.low <= CLOSE * self.high:
            return self.filled_from + self.high
        at = self.filled_from + (self.low + self.high) / 2.0
        if refused is not None and at <= refused:
            return self.filled_from + self.high
        return at

    def probe_refused(self, sent: float) -> None:
        if self.clean and sent - self.filled_from < self.high:
            self.low = max(self.low, sent - self.filled_from)

    def probe_admitted(self, sent: float) -> None:
        if self.clean:
            self.high = min(self.high, sent - self.filled_from)
            self.low = min(self.low, self.high)
