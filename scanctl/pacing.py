"""How fast to send: the one place every worker waits before a request.

One `Pacer` per upstream host, shared by all workers. A request may leave when all of these
agree, checked in this order:

1. the gate: a `Retry-After` on any answer closes it for every request until then;
2. the circuit breaker, when the upstream looks down: one probe at a time (`resilience`);
3. the quota, when the upstream tells it (`hints`): spend what remains at once, then wait for
   the reset (see `_Quota`);
4. the rate: `--rate`, or the adaptive rate found from 429s (`ratecontrol`), metered by a
   Generic Cell Rate Algorithm (the token bucket written as one "theoretical arrival time";
   https://en.wikipedia.org/wiki/Generic_cell_rate_algorithm). Each caller reserves the next
   slot and sleeps until it, so callers are served in order and the rate holds however many
   wait;
5. the window: requests in flight. `--concurrency` is its ceiling; while the rate is being
   discovered it grows from 10 by one per answer (TCP's slow start, doubling per round trip,
   so a first contact does not open with a 50-request burst); once a rate is known it follows
   Little's law, rate x latency with headroom.

`acquire` returns a `Ticket`; `release` takes it back with what the answer said.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import anyio
import anyio.lowlevel

from scanctl.clock import Clock
from scanctl.hints import QuotaHint
from scanctl.ratecontrol import AdaptiveRate, LearnedPace
from scanctl.resilience import CircuitBreaker

INITIAL_WINDOW = 10
# How often senders held by a spent quota look whether an answer has refilled it.
QUOTA_POLL = 0.02
# Reset times come in whole seconds, rounded up: a boundary may lie up to this much earlier.
RESET_GRANULARITY = 1.0
# Once an advertised reset's lateness is known this closely (s), no more early probes check it.
LATENESS_KNOWN = 0.05
# Refused checks of precise resets (one per reset at most) after which no more are made.
EARLY_REFUSALS = 3
EARLY_PROBE_WAIT = 1.0  # seconds an early probe's answer is waited for before giving up on it
PERIODS_KEPT = 5  # spans between window boundaries, whose median is the period
MISFIT_TURNS = 3  # windows with a 429 the quota's model let happen, before it is dropped
NOT_TURNED_WAIT = 0.05  # s: the least wait after a turnover found early, doubling each time
# A sliding window's slot is taken again this long (s, or this share of the window) after it
# freed, and this many 429s while taking the window for a sliding one prove it is not.
SLIDE_MARGIN = 0.02
SLIDE_MISSES = 3
# A refill rate is measured over at least this span (s) of the latest answers (at most this
# many), while the quota stays short of full.
REFILL_SPAN = 0.5
REFILL_MARKS = 100


# A Retry-After between these (s) is checked with one request sent this share of it after the
# 429 (while 429s are cheap): a token bucket's "Retry-After: 1" usually means 1/rate, a whole
# second rounded up from a fiftieth; a longer one is a deliberate wait, obeyed as it is.
GATE_CHECKED_FROM = 0.5
GATE_CHECKED_UP_TO = 2.0
GATE_PROBE_SHARE = 0.25
GATE_CHECKS = 3  # checks refused before a Retry-After is taken as exact


class _Gate:
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

    def wait(self, now: float) -> float:
        """Seconds until a request may leave: 0 for the one that checks the gate, when due."""
        if self._probe_at is not None and self.probe_seq is None:
            return min(self._probe_at, self.until) - now  # (waiters wake for the check)
        return self.until - now

    def on_send(self, seq: int, now: float) -> bool:
        """A request leaves: while the gate is closed, that is the one checking it (True)."""
        if self._probe_at is not None and self.probe_seq is None and now < self.until:
            self.probe_seq = seq
            return True
        if self._awaiting_first and now >= self.until:
            self._first_after, self._awaiting_first = seq, False
        return False

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


def hedge_slots(concurrency: int) -> int:
    """How many of `concurrency` in-flight places hedged copies may use (a tenth, none of 1)."""
    return 0 if concurrency < 2 else max(1, concurrency // 10)


class UpstreamDown(Exception):
    """The circuit breaker gave up: down past --max-outage, or never reachable at all."""


@dataclass(frozen=True, slots=True)
class Ticket:
    """Permission for one request: its sequence number and when it left."""

    seq: int
    sent_at: float
    probe: bool = False


@dataclass(frozen=True, slots=True)
class Feedback:
    """What an answer tells the pacer."""

    admitted: bool  # the upstream answered, and not with 429
    throttled: bool = False
    unavailable: bool = False  # no answer, or a 5xx: the upstream may be down
    retry_after: float | None = None
    quota: QuotaHint | None = None
    error: str | None = None


class Meter(Protocol):
    """What `Pacer` asks before each send: `GcraMeter` in this process, or a schedule shared
    with other processes (`sharedpace.SharedMeter`)."""

    def delay(self, rate: float) -> float: ...
    def reserve(self, rate: float) -> float: ...
    def grant(self, sends: int) -> None: ...


class GcraMeter:
    """Hands out send times no closer than 1/rate apart, allowing `burst` back to back."""

    def __init__(self, clock: Clock, burst: int = 1, credit: int = 0) -> None:
        self.clock = clock
        self.burst = max(1, burst)
        self._tat = clock.monotonic()
        self._credit = max(0, credit)  # sends allowed at once beyond the schedule, once

    def _next_slot(self, rate: float) -> tuple[float, float]:
        """(seconds from now to the next slot at `rate`, the arrival time after taking it)."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        interval = 1.0 / rate
        now = self.clock.monotonic()
        tat = max(self._tat, now)
        return max(now, tat - (self.burst - 1) * interval) - now, tat + interval

    def grant(self, sends: int) -> None:
        """Let `sends` more requests go at once, beyond the schedule."""
        self._credit += max(0, sends)

    def delay(self, rate: float) -> float:
        """How long the next slot at `rate` is from now (reserving nothing)."""
        return 0.0 if self._credit else self._next_slot(rate)[0]

    def reserve(self, rate: float) -> float:
        """Reserve the next slot at `rate`; return how long to wait before using it."""
        if self._credit:
            self._credit -= 1
            return 0.0
        wait, self._tat = self._next_slot(rate)
        return wait


class _Quota:
    """The upstream's own account of what we may still send, kept current between answers.

    The reset time is kept as the tightest upper bound any answer gave (an integer "seconds
    until reset" is rounded up, and the answer took time to come back). When it passes and the
    quota is spent, one request goes first to learn whether the window refilled completely (a
    fixed window) or frees slots one by one (a sliding window, a token bucket); once a full
    refill has been seen, later windows are spent at once without that probe. When it refills
    bit by bit and the policy (q per w seconds) is known, a spent quota lets one request
    through every w/q seconds instead of idling until the reset: the limiter's own rate.

    An advertised reset is a claim, checked against what the upstream then does: server
    libraries add a second "to be safe", round twice, or state when a bucket is full rather
    than when it admits again. While 429s are cheap (`early_ok`: the profile does not say the
    upstream bans, and no such check was refused yet), one request goes before the advertised
    reset, halfway through what is still uncertain. Admitted, it proves the reset late by at
    least that much; refused, by less, and no more early probes go (one 429 is all checking a
    hint may cost). The lateness so learned (its lower bound) moves every later reset earlier.

    A window that slides frees each slot one period after it was taken, so its reset says only
    when the oldest slot frees. It shows itself by a 429 in a window taken for refilled whole,
    or by slots coming back one by one at a reset shown to be exact; from then on our own send
    log says what is free (`_slide`), until three 429s prove that wrong too (a bucket, a
    queue), and the adaptive rate paces the quota instead.
    """

    def __init__(self) -> None:
        self.remaining: int | None = None
        self.reset_at = 0.0
        self.limit: int | None = None
        self.window: float | None = None
        self.refills_fully = False
        self.refills_gradually = False
        # A window that slides: each send leaves it one period after it was made (see `wait`).
        self.sliding = False
        self._log: deque[float] = deque()  # our latest sends, at most `limit` of them
        # The first send since the last turnover, and the one before it (the last window's).
        self._window_started: float | None = None
        self._last_window_started: float | None = None
        self._slide_misses = 0  # 429s since we took the window for a sliding one
        self._refused: deque[float] = deque()  # our sends refused lately
        self.counts_refusals = False  # the limiter counts refused requests against the quota
        self._turned_at = float("-inf")
        self._probing = False
        self._fresh = False  # the reset time is a placeholder set at our turnover
        self._period: float | None = None  # the window's length, as seen after turnovers
        self._last_boundary: float | None = None  # the reset of the last window turned over
        self._pending_boundary: float | None = None  # ...and of this one, until confirmed
        self._periods: deque[float] = deque(maxlen=PERIODS_KEPT)
        self._last_drip = float("-inf")
        # Answers (sent at, remaining, send number) since the quota last showed itself idle,
        # and the refill rate they show (see `_measure_refill`).
        self._marks: deque[tuple[float, int, int]] = deque(maxlen=REFILL_MARKS)
        self.refill_rate: float | None = None
        self._recent_sends: deque[float] = deque()
        self._lowest: int | None = None  # the lowest remaining this window's answers gave
        self.early_ok = True
        self._checks_refused = 0
        self._checked_this_turn = False  # a check of this reset was refused: wait it out
        self._spent_at: float | None = None  # when the quota last ran out
        # How late advertised resets are: seen at least `_late_lo` late, less than `_late_hi`.
        self._late_lo = 0.0
        self._late_hi: float | None = None
        self._early: tuple[float, float] | None = None  # (probe let through at, reset then)
        self.misfit = False  # the hints' model failed window after window: they pace nothing
        self._missed_turns: set[float] = set()  # turnovers (times) followed by a 429
        # When the first request since our last turnover left (refused: not turned over yet),
        # and how much longer than the reset the next such turnover waits.
        self._first_of_turn: float | None = None
        self._not_before = float("-inf")  # no turnover before this, whatever the hints say
        self._turn_reset = float("-inf")  # the reset of our last turnover
        self._early_from: float | None = None  # ...when it proved early, until one is not
        self._not_turned_wait = NOT_TURNED_WAIT

    def update(
        self,
        hint: QuotaHint,
        sent_at: float,
        now: float,
        out: int,
        admitted: bool = True,
        seq: int | None = None,
    ) -> bool:
        """Take a hint from an answer to a request sent at `sent_at`; True when it was a 429
        this quota accounts for (a check of a reset, or spent with a known refill), which then
        says nothing about the rate.

        `out`: requests still waiting for their answer, which the hint may not count yet;
        `seq`: the request's number, in the order sent (None: unknown).
        The lowest remaining any answer of this window gave, minus those, is what may still
        be sent: the upstream admits requests from many connections in an order of its own, so
        "this answer's remaining minus what was sent after it" can count one request twice
        (admitted before this one, sent after it) and leave a slot unused for good, and a
        single unused slot can cost a whole window at the end of a run.
        Only our own turnover (in `wait`) starts a new window: an integer reset can move by a
        second between answers of the same window, so a later reset proves nothing.
        """
        if not admitted and sent_at in self._log:
            # A refused request took no slot, with most limiters; some count it (below).
            self._log.remove(sent_at)
            self._refused.append(sent_at)
        if sent_at < self._turned_at:  # sent before the window turned over: the old window's
            return self._accounts_for(admitted, hint)
        if admitted and sent_at == self._first_of_turn:
            self._confirm_turn()
        if self._early is not None and sent_at >= self._early[0]:
            probe_at, advertised = self._early
            self._early = None
            # (`advertised` was already corrected by what was learned: the check measures
            # the lateness left over)
            if not admitted:  # no refill yet: the reset is late by less than that...
                hi = self._late_lo + advertised - probe_at
                self._late_hi = hi if self._late_hi is None else min(self._late_hi, hi)
                # ...and one 429 to learn it is all a hint in whole seconds may cost (rounded
                # by a different amount each time, it never converges; a lateness one window
                # showed would turn the next over early, into a burst of 429s). A precise one
                # is late by a constant: the next reset's check goes halfway between what is
                # known, one 429 per reset at most and `EARLY_REFUSALS` in all.
                self._checks_refused += 1
                self._checked_this_turn = True
                self.early_ok = hint.precise and self._checks_refused < EARLY_REFUSALS
                return True
            refilled = self._lowest is None or hint.remaining > self._lowest
            if refilled:  # (admitted from what the old window still had: that proves nothing)
                self._late_lo += advertised - probe_at
                self._last_boundary = None  # (the probe's time is no window boundary)
                self._turned_at, self._lowest, self._probing = probe_at, None, True
        self.limit = hint.limit if hint.limit is not None else self.limit
        self.window = hint.window if hint.window is not None else self.window
        if admitted and seq is not None:
            self._measure_refill(sent_at, hint.remaining, seq)
        first = sent_at == self._first_of_turn  # (the first request since our turnover)
        if not admitted and first and not (self.sliding or self.refills_gradually):
            if self._not_turned_wait >= RESET_GRANULARITY:
                self._missed()  # (early once too often: not a reset that comes early)
            self._not_turned_yet(now, hint)
            return not self.misfit
        if not admitted and (self.refills_fully or self.sliding):
            self._missed()
        if not admitted and self.refills_fully and self._span is not None:
            # Refused in a window we took for refilled whole: it slides instead, freeing each
            # slot one period after it was taken. From now on our own sends tell what is free.
            self.refills_fully, self.sliding, self._slide_misses = False, True, 0
        elif not admitted and self.sliding and not self.counts_refusals and self._refused:
            self.counts_refusals = True  # (refused while the refusals' slots seemed free)
        elif not admitted and self.sliding:
            self._slide_misses += 1
            if self._slide_misses >= SLIDE_MISSES:
                # Not a sliding window either (a bucket, a queue): it refills bit by bit at a
                # pace no hint tells, and the adaptive rate paces it from here.
                self.sliding, self.refills_gradually = False, True
        if self.sliding:
            return self._accounts_for(admitted, hint)
        reset_at = now + max(0.0, hint.reset - self._late_lo)  # (as late as resets were seen)
        reset_at = max(reset_at, self._not_before)  # (a reset found early is not believed)
        lowest = hint.remaining if self._lowest is None else min(self._lowest, hint.remaining)
        self._lowest = lowest
        known = max(0, lowest - out)
        if self.remaining is None or self._probing:
            if self._probing:
                full = self.limit is not None and hint.remaining + 1 >= self.limit
                # (a bucket seen refilling bit by bit stays one: found full after a wait, it
                # had merely drained)
                full = full and not self.refills_gradually
                self.refills_fully, self.refills_gradually = full, not full
                self._probing = False
                began = self._last_window_started
                exact = self._late_hi is not None and not self._late_lo  # (checked, not late)
                if not full and exact and self.limit and self._span is None and began:
                    # At a reset shown to be exact, slots came back one by one, and nothing
                    # says at what pace: a window that slides (a bucket or a queue would have
                    # refilled before the reset the early check tried), as long as the one
                    # that just passed, from its first send. Three 429s say otherwise.
                    self._period = self._turned_at - began
                    self.sliding, self._slide_misses = self._period > 0, 0
            self.remaining, self.reset_at, self._fresh = known, reset_at, False
            return self._accounts_for(admitted, hint)
        if self.refills_fully:
            # We spend this window from our own count. The upstream admits requests in an
            # order of its own (many connections), so "its remaining minus what we sent after
            # this one" double-counts; it is heard only when it says less than that count,
            # as when another client shares the quota.
            self.remaining = min(self.remaining, hint.remaining)
        elif self.refills_gradually:
            # Slots come back one by one, so the latest answer is the best account: what it
            # says remains, less what is out (which it may not count yet). The lowest of a
            # window, as for the other kinds, would let a bucket or a queue drain to idle
            # before every turnover.
            self.remaining = max(0, hint.remaining - out)
        else:
            self.remaining = known
        self.reset_at = reset_at if self._fresh else min(self.reset_at, reset_at)
        self._fresh = False
        if self.remaining <= 0 and (self._spent_at is None or self._spent_at < self._turned_at):
            self._spent_at = now  # (spent by the upstream's count rather than ours)
        return self._accounts_for(admitted, hint)

    def _confirm_turn(self) -> None:
        """The window did turn over at the reset we turned at: that reset was a boundary. The
        period is the span from one boundary to the next, the median of the last few (a
        turnover held up by a gate spans two windows)."""
        if self._early_from is not None:
            # The advertised reset was early by at least the time it took the window to turn
            # over after it: later resets are taken that much later (a negative lateness).
            self._late_lo = min(self._late_lo, self._early_from - self._turned_at)
            self._early_from, self._not_turned_wait = None, NOT_TURNED_WAIT
            self._last_boundary = None  # (our waits since were no boundaries)
        boundary, self._pending_boundary = self._pending_boundary, None
        if boundary is None:
            return
        if self._last_boundary is not None and boundary > self._last_boundary:
            self._periods.append(boundary - self._last_boundary)
            self._period = statistics.median(self._periods)
        self._last_boundary = boundary

    def _not_turned_yet(self, now: float, hint: QuotaHint) -> None:
        """The first request since our turnover was refused: the window had not turned over
        yet. If a learned lateness moved the turnover earlier, the resets are not late by
        a constant (a reset in whole seconds is rounded up by anything under one, a different
        amount each window): what one window showed is not the next one's, and the resets
        are taken as they come from now on. Otherwise the reset came early (a server clock
        behind ours): one request asks again after a wait that doubles, and once the window
        has turned, later resets are taken that much later (`_confirm_turn`)."""
        self._pending_boundary = None  # (that reset was no boundary)
        if self._early_from is None:
            self._early_from = self._turn_reset
        if self._late_lo > 0:
            self._late_lo, self.early_ok, self._last_boundary = 0.0, False, None
        wait = max(hint.reset - self._late_lo, self._not_turned_wait)
        self._not_turned_wait = min(2.0 * self._not_turned_wait, RESET_GRANULARITY)
        self.remaining, self._fresh = 0, False
        self.reset_at = self._not_before = now + wait

    def _accounts_for(self, admitted: bool, hint: QuotaHint) -> bool:
        """A 429 that says the quota is spent, when the quota knows how it refills."""
        return not admitted and hint.remaining == 0 and self.knows_refill

    def _missed(self) -> None:
        """A 429 the model of the quota let happen. Now and then, after a turnover: fine (a
        reset rounded, an upstream admitting out of order); in one window after another, the
        model does not fit this upstream, and the hints no longer pace it (the adaptive rate
        does, and hears its 429s)."""
        self._missed_turns.add(self._turned_at)
        if len(self._missed_turns) >= MISFIT_TURNS:
            self.misfit = True

    @property
    def knows_refill(self) -> bool:
        """Whether this quota knows how it refills: whole, sliding, or at the policy's pace."""
        if self.misfit:
            return False
        return self.refills_fully or self.sliding or self._drip_interval() is not None

    @property
    def _span(self) -> float | None:
        """How long a send counts against the quota: the period seen, or the policy's window."""
        return self._period or self.window

    def wait(self, now: float) -> float:
        if self.misfit:
            return 0.0
        if self.sliding:
            return self._slide(now)
        if self.remaining is None or self.remaining > 0:
            return 0.0
        if self._early is not None:
            if now - self._early[0] < EARLY_PROBE_WAIT:
                return QUOTA_POLL  # an early probe is out: its answer decides...
            self._early = None  # ...unless it never comes (no hint on it, a lost request)
        drip = self._drip_interval()
        # A reset says when a bucket is full again, not when its next slot comes: with its
        # pace measured, the drip alone paces it (a turnover's probe would only draw a 429).
        if now < self.reset_at or (drip is not None and not self.window):
            if drip is None:
                early = self._early_probe_at()
                if early is not None and now >= early:
                    self._early = (now, self.reset_at)
                    self.remaining = 1
                    return 0.0
                return (self.reset_at if early is None else early) - now
            next_drip = self._last_drip + drip
            if now >= next_drip:
                self._last_drip = now
                self.remaining = 1
                return 0.0
            if self.window:
                return min(self.reset_at, next_drip) - now
            return next_drip - now
        previous, self._turned_at = self._turned_at, now
        self._lowest = None
        self._checked_this_turn = False
        self._first_of_turn = None
        if self.refills_fully and self.limit is not None:
            # The reset we waited for is an upper bound, up to a second late: what we sent
            # in that last second may already have counted against the new window, but not
            # what went out in the first half of the window (a short window's own burst).
            since = max(now - RESET_GRANULARITY, previous + 0.5 * (now - previous))
            recent = sum(1 for t in self._recent_sends if t >= since)
            self.remaining = max(1, self.limit - recent)
        else:
            self.remaining = 1  # how much did the reset give back? one request asks
            self._probing = True
        closing = self._turn_reset = self.reset_at  # the tightest reset the answers gave
        # A boundary once the first request after it is admitted (see `_confirm_turn`).
        self._pending_boundary = closing if self.refills_fully else None
        if self._period is not None and self.refills_fully:
            # Windows follow each other: the next reset is a whole number of periods after
            # this one, however late we turned over, so lateness does not add up.
            periods = max(1, math.ceil((now - closing) / self._period + 1e-9))
            self.reset_at, self._fresh = closing + periods * self._period, False
        else:
            self.reset_at, self._fresh = now + (self.window or 1.0), True
        return 0.0

    def _slide(self, now: float) -> float:
        """A sliding window: free are the slots of our sends older than one period (refused
        ones included once the limiter showed that it counts them)."""
        span = self._span or RESET_GRANULARITY
        span += max(SLIDE_MARGIN, SLIDE_MARGIN * span)  # (a send arrives later than it left)
        for log in (self._log, self._refused):
            while log and log[0] <= now - span:
                log.popleft()
        taken = [self._log, self._refused] if self.counts_refusals else [self._log]
        free = (self.limit or 1) - sum(len(log) for log in taken)
        if free > 0:
            self.remaining = free
            return 0.0
        self.remaining = 0
        return min(log[0] for log in taken if log) + span - now

    @property
    def probing(self) -> bool:
        """One request is out to learn how the window refilled; the rest wait for its answer."""
        return self._probing or self._early is not None

    def checks_a_reset(self, sent_at: float) -> bool:
        """Whether a request sent then is out to check an advertised reset (see above)."""
        return self._early is not None and sent_at >= self._early[0]

    def _early_probe_at(self) -> float | None:
        """When to check the advertised reset with one request before it (None: don't)."""
        if not self.early_ok or self._checked_this_turn:
            return None
        reset_at = self.reset_at
        if self._spent_at is None:
            return None
        span = reset_at - self._spent_at  # uncertain: the reset may come anywhere in it
        if self._late_hi is not None:
            span = min(span, self._late_hi - self._late_lo)
        if span < LATENESS_KNOWN:
            return None
        return reset_at - span / 2.0

    def _measure_refill(self, sent_at: float, remaining: int, seq: int) -> None:
        """The pace at which slots come back, from the answers themselves: between two
        answers, the slots that came back are the rise in what remained plus what was sent
        in between (each took one). Only while the quota never showed itself full: a bucket
        or a queue that sat idle refilled less than it could have, and the count restarts."""
        if self.limit is not None and remaining + 1 >= self.limit:
            self._marks.clear()
            return
        self._marks.append((sent_at, remaining, seq))
        first = min(self._marks, key=lambda mark: mark[2])
        last = max(self._marks, key=lambda mark: mark[2])
        span = last[0] - first[0]
        if span >= REFILL_SPAN:
            self.refill_rate = (last[1] - first[1] + last[2] - first[2]) / span

    def _drip_interval(self) -> float | None:
        if not self.refills_gradually or not self.limit:
            return None
        if self.window:  # a hair under the policy rate: no 429 on jitter
            return self.window / self.limit * 1.02
        if self.refill_rate:  # ...or under the rate measured
            return 1.02 / self.refill_rate
        return None

    def spend(self, now: float) -> None:
        if self.remaining is not None:
            self.remaining -= 1
            if self.remaining <= 0:
                self._spent_at = now
            self._recent_sends.append(now)
            while self._recent_sends and self._recent_sends[0] < now - RESET_GRANULARITY:
                self._recent_sends.popleft()
            self._log.append(now)
            if self._first_of_turn is None:
                self._first_of_turn = now
            if self._window_started is None or self._window_started < self._turned_at:
                self._last_window_started, self._window_started = self._window_started, now
            for log in (self._log, self._refused):
                while len(log) > (self.limit or 1):
                    log.popleft()


class Pacer:
    """Decides when each request may leave (see the module docstring)."""

    def __init__(
        self,
        clock: Clock,
        *,
        concurrency: int = 50,
        rate: float | None = None,
        adaptive: bool = True,
        learned: LearnedPace | None = None,
        breaker: CircuitBreaker | None = None,
        check_hints: bool = True,
        meter: Meter | None = None,
    ) -> None:
        """`meter`: where the rate's slots come from (default: this process's own GCRA)."""
        self.clock = clock
        self.ceiling = max(1, concurrency)
        self.adaptive = adaptive
        now = clock.monotonic()
        self.control = AdaptiveRate(
            now,
            ceiling=rate,
            learned=learned if adaptive else None,
        )
        # A known bucket, when its 429s are cheap, is spent at the start as the first run's
        # slow start would have (INITIAL_WINDOW at most), but only half of it: requests sent
        # evenly arrive bunched, and a bucket spent to its last token answers that with a 429
        # (and a cut) in the first tenth of a second. A gated one is not risked, and --rate
        # means at most that many a second, from the first.
        credit = 0
        if learned is not None and adaptive and not learned.gated and rate is None:
            credit = min(learned.burst, INITIAL_WINDOW) // 2
        self.meter: Meter = meter if meter is not None else GcraMeter(clock)
        self.meter.grant(credit)
        self.breaker = breaker
        self.quota = _Quota()
        self.quota.early_ok = check_hints  # (an upstream that bans: no 429 risked for a hint)
        # Slow start only when nothing is known about this upstream yet.
        start = self.ceiling if (learned or rate or not adaptive) else INITIAL_WINDOW
        self.window = anyio.CapacityLimiter(min(self.ceiling, start))
        self._slow_start = adaptive and learned is None and rate is None
        enough = learned.gate_enough if learned is not None and adaptive else None
        self.gate = _Gate(check=check_hints, enough=enough)
        self._seq = 0
        self._in_flight: dict[int, float] = {}
        self._borrowers: dict[int, object] = {}
        self._hedges: set[int] = set()
        self._hedges_out = 0
        self.latency = 0.0  # smoothed seconds per answered request
        self.admitted_latency = 0.0  # the same, for requests that were not throttled
        self._rate_waited_at = float("-inf")

    @property
    def rate(self) -> float | None:
        """The rate in force now (requests/s), or None when nothing limits it."""
        return self.control.effective

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def gate_closures(self) -> int:
        return self.gate.closures

    def close_gate(
        self, seconds: float, *, checkable: bool = False, seq: int | None = None
    ) -> None:
        """Hold every request for `seconds` (from Retry-After), extending but never shortening."""
        self.gate.close(seconds, self.clock.monotonic(), checkable=checkable, seq=seq)

    def learned(self) -> LearnedPace | None:
        """What the next run should start from: the rate control's pace, and how long a
        Retry-After gate proved to need when its hints overstate."""
        pace = self.control.learned()
        if pace is None or self.gate.verdict != "overstated":
            return pace
        return dataclasses.replace(pace, gate_enough=round(self.gate.enough, 3))

    def gate_wait(self) -> float:
        """Seconds until the gate opens (0 when open)."""
        return max(0.0, self.gate.until - self.clock.monotonic())

    def _hold(self, now: float) -> float:
        """Seconds to wait before trying again, 0 when gate, breaker and quota allow."""
        reason = self.breaker.give_up_reason(now) if self.breaker is not None else None
        if reason is not None:
            raise UpstreamDown(reason)
        self._measure_if_due(now)  # (senders held for a measurement must not wait in vain)
        waits = [self.gate.wait(now), self.quota.wait(now), self.control.pause_wait(now)]
        if self.breaker is not None:
            waits.append(self.breaker.wait_time(now))
        return max(0.0, *waits)

    def acquire_at_once(self) -> Ticket | None:
        """A ticket when a request may leave this instant, else None (then await `acquire`).

        The usual case at full speed; it spares the caller setting up a wait that can be cut
        short. (The caller checks for cancellation first: this does not.)
        """
        if self.breaker is not None and self.breaker.is_open:
            return None  # one probe at a time: `acquire` hands those out
        borrower = object()
        try:
            self.window.acquire_on_behalf_of_nowait(borrower)
        except anyio.WouldBlock:
            return None
        try:
            rate = self.rate
            if self._hold(self.clock.monotonic()) > 0 or (
                rate is not None and self.meter.delay(rate) > 0
            ):
                self.window.release_on_behalf_of(borrower)
                return None
        except BaseException:
            self.window.release_on_behalf_of(borrower)
            raise
        if rate is not None:
            self.meter.reserve(rate)
        ticket = self._issue()
        self._borrowers[ticket.seq] = borrower
        return ticket

    async def acquire(self) -> Ticket:
        """Wait until one request may leave; return its ticket (hand it back to `release`)."""
        borrower = object()
        # A cancelled scan (deadline, refusal, second Ctrl-C) sends nothing more...
        await anyio.lowlevel.checkpoint_if_cancelled()
        try:
            # ...and a free slot is taken without a trip through the event loop (the awaited
            # form always yields once: a loop iteration per request at thousands a second).
            self.window.acquire_on_behalf_of_nowait(borrower)
        except anyio.WouldBlock:
            await self.window.acquire_on_behalf_of(borrower)
        try:
            probe = await self._wait_turn()
        except BaseException:
            self.window.release_on_behalf_of(borrower)
            raise
        ticket = self._issue(probe)
        self._borrowers[ticket.seq] = borrower
        return ticket

    def _issue(self, probe: bool = False) -> Ticket:
        """Book one request as leaving now: in flight, quota spent, seen by the rate control."""
        now = self.clock.monotonic()
        self._seq += 1
        self._in_flight[self._seq] = now
        checks_gate = self.gate.on_send(self._seq, now)
        self.quota.spend(now)
        if not checks_gate:  # (a check of the gate is about the hint, not about the rate)
            self.control.on_send(now)
        return Ticket(self._seq, now, probe)

    async def _wait_turn(self) -> bool:
        while True:
            now = self.clock.monotonic()
            hold = self._hold(now)
            if hold > 0:
                if self.quota.probing:
                    # The probe's answer will refill the quota long before the placeholder
                    # reset: look again soon rather than sleep through it.
                    hold = min(hold, QUOTA_POLL)
                await self.clock.sleep(hold)
                continue
            probe = self.breaker is not None and self.breaker.is_open
            if probe and not self.breaker.try_probe(now):  # type: ignore[union-attr]
                continue
            rate = self.rate
            if rate is not None:
                delay = self.meter.reserve(rate)
                if delay > 0:
                    self._rate_waited_at = now
                    await self.clock.sleep(delay)
                    if self._hold(self.clock.monotonic()) > 0:
                        continue  # closed while we slept: the slot is void
            return probe

    def release(self, ticket: Ticket, feedback: Feedback) -> None:
        """Hand a ticket back with what its answer said; adjusts rate, window and gate."""
        now = self.clock.monotonic()
        self._give_back(ticket)
        latency = now - ticket.sent_at
        self.latency = latency if self.latency == 0 else 0.8 * self.latency + 0.2 * latency
        if feedback.admitted:
            # 429s are usually quick: the round trip that matters is that of admitted requests.
            lat = self.admitted_latency
            self.admitted_latency = latency if lat == 0 else 0.8 * lat + 0.2 * latency
        # A 429 for a request sent to check an advertised reset is about the hint: the quota
        # waits for the reset anyway, and its Retry-After says no more than the reset did.
        checking = feedback.throttled and self.quota.checks_a_reset(ticket.sent_at)
        # The same for the request sent to check a Retry-After gate (see `_Gate`).
        checked_gate = self.gate.on_answer(
            ticket.seq, now, admitted=feedback.admitted, throttled=feedback.throttled
        )
        gated = feedback.throttled or feedback.unavailable
        if feedback.retry_after is not None and gated and not checking:
            # (a gate the quota's own hints explain is the quota's to check; a refused check's
            # own Retry-After is the upstream's latest word, obeyed like any other)
            checkable = feedback.throttled and self.quota.remaining is None and not checked_gate
            self.close_gate(feedback.retry_after, checkable=checkable, seq=ticket.seq)
        # A 429 the quota accounts for (it corrects itself on it) is not about the rate.
        about_quota = checking or checked_gate
        if feedback.quota is not None:
            explained = self.quota.update(
                feedback.quota,
                ticket.sent_at,
                now,
                len(self._in_flight),
                feedback.admitted,
                seq=ticket.seq,
            )
            about_quota = about_quota or (feedback.throttled and explained)
        if self.breaker is not None:
            self.breaker.record(
                now,
                unavailable=feedback.unavailable,
                answered=feedback.admitted or feedback.throttled,
                error=feedback.error,
            )
            if ticket.probe:
                self.breaker.probe_done(now)
        if self.adaptive and not about_quota:
            self._adapt(ticket, feedback, now)

    def _give_back(self, ticket: Ticket) -> None:
        borrower = self._borrowers.pop(ticket.seq, None)
        if borrower is not None:
            self.window.release_on_behalf_of(borrower)
        if ticket.seq in self._hedges:
            self._hedges.discard(ticket.seq)
            self._hedges_out -= 1
        self._in_flight.pop(ticket.seq, None)

    def abandon(self, ticket: Ticket) -> None:
        """Hand back a ticket whose request was called off (a losing hedge): nothing learned."""
        self._give_back(ticket)
        if ticket.probe and self.breaker is not None:
            self.breaker.probe_done(self.clock.monotonic())

    def _adapt(self, ticket: Ticket, feedback: Feedback, now: float) -> None:
        control = self.control
        if feedback.throttled:
            if self.quota.window is not None:
                control.pause_cap = self.quota.window  # a pause need not outlast the window
            expensive = (
                feedback.retry_after is not None
                and feedback.retry_after >= GATE_CHECKED_FROM
                and self.gate.verdict != "overstated"
            )
            cut = control.on_throttled(
                ticket.sent_at,
                now,
                latency=self.admitted_latency,
                expensive=expensive,
                seq=ticket.seq,
            )
            if cut or control.paused:
                self._slow_start = False
        elif feedback.admitted:
            rate_bound = now - self._rate_waited_at < 1.0
            control.on_admitted(ticket.sent_at, now, rate_bound=rate_bound)
            if control.resume_credit:
                # Resumed after a long pause: the window it waited out has refilled.
                self.meter.grant(control.resume_credit)
                control.resume_credit = 0
            if self._slow_start and self.window.total_tokens < self.ceiling:
                self.window.total_tokens = min(self.ceiling, int(self.window.total_tokens) + 1)
        self._measure_if_due(now)
        if not self._slow_start and control.effective is not None:
            # Little's law: in flight = rate x latency; double it, plus room for stragglers.
            need = math.ceil(control.effective * max(self.latency, 0.001) * 2.0) + 4
            self.window.total_tokens = max(1, min(self.ceiling, need))

    def _measure_if_due(self, now: float) -> None:
        """Let the rate control measure a cut once the answers it waits for are back."""
        control = self.control
        if control.measuring:  # (the oldest in flight is looked up only then)
            oldest = min(self._in_flight.values(), default=None)
            if control.measure_due(now, oldest, self.admitted_latency):
                control.measure(now)

    def try_acquire_now(self) -> Ticket | None:
        """A ticket for a hedged copy, only if one may leave this instant (hedges never queue).

        The copy does not wait for a window slot: the primary is the request that is stuck,
        and a copy that had to queue would come too late to help. Instead, with --hedge the
        engine runs that many fewer workers (`hedge_slots`), so copies and primaries together
        stay within --concurrency; the retry budget bounds copies over time.
        """
        if self.breaker is not None and self.breaker.is_open:
            return None  # (checked first: a breaker that gave up is the primary's to report)
        if self._hold(self.clock.monotonic()) > 0:
            return None
        if self._hedges_out >= hedge_slots(self.ceiling) or self.quota.remaining == 0:
            return None
        rate = self.rate
        if rate is not None and self.meter.reserve(rate) > 0:
            return None  # (the slot stays reserved: a hedge is worth one slot of rate)
        ticket = self._issue()
        self._hedges_out += 1
        self._hedges.add(ticket.seq)
        return ticket
