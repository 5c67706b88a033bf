"""The upstream's own account of its quota, kept current between answers (`Quota`).

One per upstream, in the `Pacer`: when answers carry rate-limit hints (`hints`), what remains
is spent at once and the reset waited for, while the hints are checked against what the
upstream then does (a reset late or early, a window that slides, a bucket that refills bit
by bit at a rate no header states). Kept apart from the pacer: the quota is a model of the
upstream, the pacer the place where senders wait.
"""

from __future__ import annotations

import math
import statistics
from collections import deque

from scanctl.hints import QuotaHint

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
# A period measured from resets in whole seconds this little over a whole number of seconds is
# that number: the excess is the latency of the answers that gave the resets (see
# `_confirm_turn`).
PERIOD_SNAP = 0.1
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


class Quota:
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
        # The resets of the last windows turned over (the latest last), and of this one until
        # it is confirmed; the spans between them.
        self._boundaries: deque[float] = deque(maxlen=PERIODS_KEPT + 1)
        self._pending_boundary: float | None = None
        self._periods: deque[float] = deque(maxlen=PERIODS_KEPT)
        # With a whole-second period: the earliest boundary the confirmed ones put a whole
        # number of periods apart, from which later windows are counted (see `_confirm_turn`).
        self._anchor: float | None = None
        self._precise = False  # the latest hint's reset had a fraction (not whole seconds)
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
                self._forget_boundaries()  # (the probe's time is no window boundary)
                self._turned_at, self._lowest, self._probing = probe_at, None, True
        self.limit = hint.limit if hint.limit is not None else self.limit
        self.window = hint.window if hint.window is not None else self.window
        self._precise = hint.precise
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
                if hint.precise and self.early_ok and self._late_hi is not None:
                    # (a precise reset is still being checked: "not late" is proved only once
                    # that is known closely; a period measured against a reset late by a
                    # second would be taken for the window's)
                    exact = self._late_hi - self._late_lo < LATENESS_KNOWN
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
            self._forget_boundaries()  # (our waits since were no boundaries)
        boundary, self._pending_boundary = self._pending_boundary, None
        if boundary is None:
            return
        last = self._boundaries[-1] if self._boundaries else None
        if last is not None and boundary > last:
            self._periods.append(boundary - last)
            period = statistics.median(self._periods)
            whole = math.floor(period)
            if not self._precise and whole and period - whole <= PERIOD_SNAP:
                # A reset in whole seconds is an upper bound, and the tightest of a window
                # comes from the first answer after our turnover: each boundary so found is
                # that answer's latency later than the last one, and a period measured across
                # them turned each window over that much later again (30 ms a window, in a
                # real run of 2 s windows: 0.27 s by the tenth). The period is the whole
                # seconds, and windows are counted from the earliest boundary found.
                period = float(whole)
                known = [*self._boundaries, boundary]
                if self._anchor is not None:
                    known.append(self._anchor)
                self._anchor = min(b - round((b - boundary) / period) * period for b in known)
            else:
                self._anchor = None
            self._period = period
        self._boundaries.append(boundary)

    def _forget_boundaries(self) -> None:
        """Our turnovers since were no window boundaries: count none of them (the period
        already measured stays)."""
        self._boundaries.clear()
        self._anchor = None

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
            self._late_lo, self.early_ok = 0.0, False
            self._forget_boundaries()
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
        self._pending_boundary = None if self.refills_gradually else closing
        if self._period is not None and self.refills_fully:
            # Windows follow each other: the next reset is a whole number of periods after
            # this one, however late we turned over, so lateness does not add up.
            start = closing if self._anchor is None else self._anchor
            periods = max(1, math.ceil((now - start) / self._period + 1e-9))
            self.reset_at, self._fresh = start + periods * self._period, False
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
