"""Finding the upstream's rate limit from its 429s when it gives no hint, and holding it.

The controller keeps a send rate (requests/s), or none while nothing has told us to slow down,
and two bounds on the limit it is looking for: `low`, the fastest rate that held for a while
without a 429, and `high`, the slowest rate that drew one. It is congestion control applied to
a rate (TCP, botocore's adaptive retry mode), turned into a search once it has both bounds:

- **Cut on a 429**, once per round trip: a 429 for a request sent before the last cut, or that
  comes back less than one smoothed latency after it, was in flight at the old rate and says
  nothing new (429s come back faster than answers, so "sent after the cut" alone would let a
  burst of quick 429s cut again and again). The cut goes back to `low` when there is one, else
  multiplies by 0.7 (0.5 while slow start overshoots, or when each 429 also closes a
  Retry-After gate and so costs a second of silence).
- **Then measure**: a 429 means the limiter was empty when that request arrived; the requests
  sent between that one and the latest 429 met an empty limiter too, so the ones it admitted
  came at its refill rate. admitted / elapsed estimates the limit directly, and the rate drops
  to just under it. One 429 event can then take the rate from a wild overshoot to the limit.
- **Hold, then search upward**: a rate that held for `HOLD` seconds without a 429 becomes
  `low`; the next rate is halfway to `high` (bisection), until the two are within
  `CLOSE_ENOUGH`; then it stays put. A `high` that a measurement only estimated is gone to in
  one step, and probed past once it held (a measurement within a window's first contact can
  put it far under the limit). After `FORGET` seconds of calm, `high` is forgotten and
  it probes upward again, faster the longer the calm lasts, since limits do change.

**When each 429 closes a Retry-After gate**, a probe too many costs a second of silence, so
the limit is fitted instead of searched for. Such a limiter (a token bucket, a leaky bucket
with burst) is full when a run starts and again when a gate has kept us away for a second:
sending faster than it refills, it admits B + L x T requests before refusing one T seconds
later (B its burst, L its rate). Each gated episode gives one (T, admitted) point; two of
different lengths give L, and the rate goes just under it at once. A fit that makes no sense
(a window limiter, whose admitted count does not grow with T) is ignored, and the search goes on.

**When 429s keep coming whatever the rate**, the limiter is remembering: a window that counts
the requests it refuses, a penalty box. There, every further 429 says nothing about the rate,
and cutting on each would drive it to the floor while the limiter only waits for time to pass
(or, counting refusals, waits for us to stop). So after a cut, `BLOCK_AFTER` 429s for requests
sent after it with none admitted mean: pause. (When slow start's first 429 is followed by no
admitted answer at all, a window full from the first contact, only `BLOCK_AFTER` requests go
until one is admitted: that evidence costs four 429s rather than a round trip's worth.)
Nothing is sent until 1 s after the cut (the limiter has refused everything since: a window's
turn or a debt's end is that much nearer than 1 s after the pause was decided), then one probe;
each probe refused doubles the pause (1, 2, 4 ... s, at most `PAUSE_MAX`, or the window a hint
gave). No 429 that comes back during a pause is evidence about the rate. When a probe is
admitted, sending resumes at what the upstream admitted over the whole run (the longest span
seen), never at the floor. A pause whose first probe passed was a debt run up by
overshooting: a rate measured before it still holds, and the rate that drew those 429s still
bounds the search. A limiter that refused a probe has a window far longer than the gap between
two sends: it is paced in cycles of what the first contact got through at once, sent at once
when the window has freed, and a pause until it frees again (see `windowcycle`, which learns
the window's length from the probes). (Sharing a budget, where this process's share of a
window is no allowance of its own, the bounds are forgotten, the rate climbs fast, and the
window's refill, at most the run's rate times the pause, may go at once.)

**When the run's first Retry-After gate is refused its check** (one request a quarter into
it, see `gate`), the limiter is a window too: a bucket refills within a quarter of a
"Retry-After: 1" rounded up from a fiftieth, a window full from the first contact refuses
until it frees. The gate is the pause, its refused check the refused probe, and from the
first request admitted once it opens, the window is paced in cycles as above (see
`gate_check_refused`). A slow bucket (1 request/s) refuses such a check as well, and then
most of the first burst: that ends the cycles for the run (see `windowcycle.NOT_A_WINDOW`).

Once a pause has shown the limiter remembers, its 429s are costly (each overshoot runs up a
debt that only a pause pays off) and what it admits while over-driven measures nothing (a
token bucket counting refusals, in debt, admits nothing at all): no measurement is made, a
cut due with everything refused since the last one is a pause, and the search stays once
close enough. Its episodes measure it instead: from a full bucket (after a pause, or a rate
that held) to the first 429, it admitted its burst (as the first contact showed) plus its
rate times the episode's length (see `_end_full_episode`). Slow start's overshoot bounds
nothing, but a later rate that drew a 429 bounds the search after a pause however far above
the resumed rate it is.

A rate that drew a 429 at or below `low` proves `low` wrong (a token bucket can hide an excess
for a few seconds), so `low` falls back to the one before it, or just under the 429. Neither
that nor a cut back to `low` goes below what the limiter proved it admits: once its burst is
known, what it admitted since any moment, less the burst, over the time since. Growing
only happens while the rate is what holds the senders back: raising a cap nobody reaches
teaches nothing.

Pure and clock-free: callers pass `now`, so tests drive it with plain numbers.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from scanctl.windowcycle import WindowCycle

BETA = 0.7  # multiplicative cut on a 429 with nothing better known
BETA_EXPENSIVE = 0.5  # the cut when 429s are costly (slow-start overshoot, Retry-After gates)
MARGIN = 0.95  # run this far under a measured limit
ADMITTED_SPAN = 5.0  # seconds over which what the upstream admitted bounds a gated cut
HOLD = 2.0  # seconds a rate must hold without a 429 to count as safe
# ...longer when 429s close a Retry-After gate: a wrong "safe" costs a second of silence.
HOLD_EXPENSIVE = 4.0
# Cuts are at least this far apart, whatever the round trip: a window limiter (fixed or
# sliding) answers 429 to everything until its window turns over, and cutting on each of
# those would drive the rate to the floor while the limiter is only waiting.
MIN_CUT_INTERVAL = 0.5
# Stop searching when high is within this share of low: 1 % while a 429 costs one request,
# 5 % when each also closes a Retry-After gate (a probe too many costs a second of silence).
CLOSE_ENOUGH = 0.01
CLOSE_ENOUGH_EXPENSIVE = 0.05
FORGET = 60.0  # seconds of calm after which `high` may be stale
# A rate learned on an earlier run may have been a share (other runs sent at the same time) or
# the limit may have grown since: with no 429 this long, search above it (only when its 429s
# closed Retry-After gates; cheap 429s need no wait at all).
TRUST_LEARNED = 2.0
PROBE_GAIN = 0.03  # growth per second while probing with no upper bound, doubling every 5 s
# ...and after a pause, whose resumed rate is a lower bound (the pause itself counts in it):
# Not faster: x1.5 per HOLD took a fixed window of 60/s without headers from 1.13-1.16x to
# 1.16-1.24x (real processes: each step overshoots into a pause), for a counting token bucket
# whose first contact let only its burst through, climbing from 10 requests/s (1.46-1.57x ->
# 1.32-1.45x over the matrix's latency seeds).
RESUME_GAIN = 0.125  # per second: x1.25 per HOLD until the first 429
MIN_RATE = 0.1  # requests/s: the slowest we go, however many 429s
MIN_MEASURED = 4  # answers needed before a measurement counts
MIN_SPAN = 0.05  # seconds: the shortest time over which a send rate means anything
HISTORY_LIMIT = 100
# 429s for requests sent after a cut, with none of those admitted, that mean the limiter is
# remembering rather than measuring our rate (see the module docstring).
BLOCK_AFTER = 4
BLOCK_SETTLE = 0.1  # seconds (and two round trips) after a cut before those 429s count
PAUSE_FIRST = 1.0  # seconds: the first pause; each refused probe doubles it...
PAUSE_MAX = 32.0  # ...up to this (or the window a hint gave)
PROBE_POLL = 0.02  # seconds between looks while a probe is out
MEASURE_HOLD_MAX = 0.5  # seconds past a round trip that sending waits for a measurement
# A pause that outlasted this many refused probes was a long window: spend its refill at once.
LONG_PAUSE_PROBES = 1
# The rate never drops below this share of what the upstream admitted over the run so far.
FLOOR_SHARE = 0.5
FLOOR_AFTER = 2.0  # seconds into the run before that floor counts (a start proves little)
FIT_EPISODES = 4  # the latest gated episodes a fit uses (limits change)
MIN_FIT_SPREAD = 0.2  # seconds between the shortest and longest episode for a fit to count
# A fit's relative uncertainty is about FIT_NOISE / (spread x L): the counts are whole
# requests. A close fit sets the rate that far under the limit (1 % at least); a loose one
# (over FIT_LOOSE) sets it at the fitted limit itself: if that is too fast, the bucket runs
# dry slowly, and that long episode makes the next fit close.
FIT_NOISE = 1.5
FIT_MIN_MARGIN = 0.01
# The burst is read off the first 429 only when it comes this soon (s): later, the bucket may
# have sat full while we sent slower than it refills, and B + L x T no longer holds.
FIRST_DRAIN = 2.0
FIT_TOLERANCE = 2.0  # requests an episode may be off the fitted line (a few are in flight)
FIT_LOOSE = 0.05
# The shortest span of a remembering limiter's episode that counts (see
# `_end_full_episode`): a request or two off is 10 % of the limit over it at 50/s.
FULL_SPAN_MIN = 0.2
BOUND_SPAN_MIN = 1.0  # seconds: the shortest span whose admitted requests bound the limit
# The fewest requests a first contact must have got through at once for its limiter to be
# paced in cycles: a smaller window is as well paced by a rate (and a burst of fewer could
# not tell a window from a slow bucket, see `windowcycle.NOT_A_WINDOW_MIN`).
MIN_ALLOWANCE = 4


@dataclass(frozen=True, slots=True)
class LearnedPace:
    """What a run learned about an upstream, for the next run to start from.

    `rate`: the fastest rate that held; `upper`: the slowest that drew a 429; `gated`: its 429s
    closed Retry-After gates (so probing costs seconds, and the next run is more careful);
    `burst`: what the limiter let through at once on first contact, beyond its rate (its
    bucket), estimated from the run's first 429; `gate_enough`: how long a Retry-After gate
    proved to need when the upstream's Retry-After overstates (None: it does not, or unknown);
    `upper_estimated`: `upper` is an estimate (a measurement's, or what overlapping runs were
    admitted together), not a rate that drew a 429: a later overlapping run that saw more
    admitted raises it (see `state.shared_pace`) rather than being capped by it.
    """

    rate: float
    upper: float | None = None
    gated: bool = False
    burst: int = 1
    gate_enough: float | None = None
    upper_estimated: bool = False


@dataclass(frozen=True, slots=True)
class RateChange:
    """One entry of the rate history: when (seconds into the run), the new rate, and why."""

    at: float
    rate: float | None
    reason: str


class AdaptiveRate:
    """The adaptive send rate of one upstream (see the module docstring)."""

    def __init__(
        self,
        now: float,
        *,
        ceiling: float | None = None,
        learned: LearnedPace | None = None,
    ) -> None:
        self.started = now
        self.ceiling = ceiling
        self.rate: float | None = learned.rate if learned else None
        self.low: float | None = self.rate
        # The `low` that the last hold replaced: where the search falls back to when a 429
        # proves the new one wrong (see `_disprove_low`).
        self._low_before: float | None = None
        self._hold_started = False
        # The last 429 closed a gate (or, from an earlier run, they used to).
        self._expensive = learned.gated if learned else False
        self.high: float | None = learned.upper if learned else None
        self._high_measured = False  # `high` is an estimate, not a rate that drew a 429
        self._drew: float | None = None  # the rate that drew the last cut's 429 (not an estimate)
        self._drew_in_slow_start = False  # ...slow start's overshoot, which bounds nothing
        self.last_cut_at = float("-inf")
        # When the current rate started to be used: the first send after it was set (time
        # behind a closed Retry-After gate sends nothing, so it proves nothing).
        self._held_since = now
        self._calm_since = now  # the last cut, or the start
        self._sends: deque[float] = deque()
        # Answers (send time, admitted?) since shortly before the last cut, for measuring.
        self._answers: deque[tuple[float, bool]] = deque()
        self._saturated_from: float | None = None
        self._last_throttled_send = float("-inf")
        self._measure_until = float("-inf")
        self._measure_pending = False
        self.cuts = 0
        # Gated episodes (see the module docstring): when the current one started (None until
        # the first send after a gate), the requests sent in it, and the (T, admitted) points.
        self._episode_start: float | None = None
        self._episode_first = 1  # the number of its first send (sends are numbered from 1)
        self._episodes: deque[tuple[float, int]] = deque(maxlen=FIT_EPISODES)
        self._first_episode: tuple[float, int] | None = None  # the run's first, from slow start
        # A pause proved this limiter remembers (429s came whatever the rate): its 429s are
        # costly, and what it admits while over-driven measures nothing.
        self._remembering = False
        # Its episodes from full to the first 429 (see `_end_full_episode`): the (limit, span)
        # each bounded from below; whether the current one began full (a pause, or a rate
        # that held, just ended), and the rate sent at before it.
        self._full_episodes: deque[tuple[float, float]] = deque(maxlen=FIT_EPISODES)
        self._episode_full = False
        self._episode_before = 0.0
        # (T, admitted) of the run's first 429, gated or not: what the limiter's burst was.
        self._first_drain: tuple[float, int] | None = None
        self._first_send: float | None = None
        self._sent = 0
        self._learned_burst = learned.burst if learned else None
        # Evidence of a remembering limiter: answers to requests sent after the last cut.
        self._throttled_since_cut = 0
        self._admitted_since_cut = 0
        self._sent_since_cut = 0
        # Slow start's measurement found nothing admitted: BLOCK_AFTER sends at most until one
        # is admitted; all refused, pause (see `pause_wait`).
        self._feeling = False
        self.admitted_total = 0.0
        # What one admitted answer counts for in `admitted_total`: 1 alone; sharing a budget,
        # where its rate is its share of the rate for all and it hears of every process's
        # answers (`count_admitted`), one over the processes sharing (the leader's kept with
        # its rate by `rescale`).
        self.unit = 1.0
        self._first_contact_burst: int | None = None  # sends before the run's first refused one
        # The pause (see the module docstring): None when sending; else when it began, the
        # current gap between probes, when the next probe may go, and when the one out left.
        self._paused_at: float | None = None
        self._pause_gap = PAUSE_FIRST
        self._probe_at = 0.0
        self._probe_sent: float | None = None
        self._probes_refused = 0
        self._refused_probe: float | None = None  # when the last refused probe was sent
        # A window limiter, once a pause outlasted a refused probe: its cycles (see
        # `windowcycle`; until then, its window was filled from the run's first send).
        self.window_cycle: WindowCycle | None = None
        self._no_cycles = False  # a burst showed the limiter is no window (`_leave_cycles`)
        self._window_suspected = False  # a gate's check was refused (`gate_check_refused`)
        self._hold_for_measure = False
        self.pause_cap = PAUSE_MAX
        self._measured: float | None = None  # the last rate a measurement or a fit set
        self._fitted_high: float | None = None  # the bound such an episode put on the limit
        self._resumed = False  # the rate came from a pause's end: grow fast until a 429
        self.resume_credit = 0  # sends the pacer may let go at once on resuming (taken by it)
        self.history: list[RateChange] = []
        # A run whose 429s were cheap needs no trust period: probing costs little.
        self._search_after = now + TRUST_LEARNED if learned and learned.gated else now
        if learned is not None:
            self._set(learned.rate, now, "learned on an earlier run")

    @property
    def upper(self) -> float | None:
        """The slowest rate known to draw a 429 (what the next run should not exceed)."""
        return self.high

    def learned(self) -> LearnedPace | None:
        """What the next run should start from, or None when nothing limited this one."""
        rate = self.low or self.rate
        if rate is None:
            return None
        burst = self._known_burst() or 1
        estimated = self.high is not None and self._high_measured
        return LearnedPace(rate, self.high, self._expensive, burst, upper_estimated=estimated)

    def _known_burst(self) -> int | None:
        """How many requests the limiter lets through at once beyond its rate (its bucket), as
        far as this run knows: from its first 429, else from an earlier run; None: unknown."""
        rate = self.low or self.rate
        if self._first_drain is not None and rate is not None:
            # The first 429 came after B + L x T admitted requests, T seconds into the run.
            drained_after, admitted = self._first_drain
            return max(1, min(admitted, round(admitted - rate * drained_after)))
        return self._learned_burst

    @property
    def effective(self) -> float | None:
        """The rate to pace at: the adaptive one under the user's ceiling (None: no limit)."""
        if self.rate is None:
            return self.ceiling
        return self.rate if self.ceiling is None else min(self.rate, self.ceiling)

    def _set(self, rate: float, now: float, reason: str) -> None:
        if self.ceiling is not None:
            rate = min(rate, self.ceiling * 1.5)  # no point growing far past --rate
        self.rate = max(self._floor(now), rate)
        # A new rate starts a new episode: sent below the limit before, the bucket is full.
        self._episode_start = None
        self._episode_full = False
        self._held_since = now
        self._hold_started = False
        rounded = round(self.rate, 2)
        self.history.append(RateChange(round(now - self.started, 3), rounded, reason))
        del self.history[:-HISTORY_LIMIT]

    def note(self, now: float, reason: str) -> None:
        """An entry in the history that changes nothing (why the rate is what it is)."""
        self.history.append(RateChange(round(now - self.started, 3), self.rate, reason))
        del self.history[:-HISTORY_LIMIT]

    def note_answer(self, sent_at: float, now: float, *, admitted: bool) -> None:
        """An answer counted and nothing decided (this process follows another's rate): what
        it was admitted stays measured (`admitted_rate`), for the runs overlapping it and for
        when it leads."""
        self._answers.append((sent_at, admitted))
        while self._answers and self._answers[0][0] < now - 5.0:
            self._answers.popleft()
        self.admitted_total += admitted * self.unit

    def lead(self, rate: float, now: float, *, unit: float) -> None:
        """Decide from here on, starting at `rate` (the share it followed, of those sharing
        now): as from a learned rate, held a moment and then probed, with no bound known.
        `unit`: what one admitted answer, its own or another's, counts for from now on."""
        self.unit = unit
        self.rate = self.low = rate
        self._low_before = None
        self.high = self._drew = None
        self.last_cut_at = self._calm_since = self._held_since = self._search_after = now
        self._hold_started = False
        self._since_cut()
        self._forget_episodes()
        self.window_cycle = None
        self.note(now, "leads the processes sharing the budget")

    def count_admitted(self, answers: int) -> None:
        """Admitted answers the other processes sharing the budget had."""
        self.admitted_total += answers * self.unit

    def follow(self, rate: float, now: float) -> None:
        """Pace at `rate`, decided elsewhere: by the leader of the processes sharing the budget
        (`sharedpace`), of which this is this process's share. No floor, no bounds: this
        process's own answers decide nothing while it follows."""
        self.rate = self.low = rate
        self._low_before = None
        self.high = None
        self._paused_at = self.window_cycle = None
        self._measure_pending = self._feeling = False
        self.note(now, "following the rate shared with other processes")

    def rescale(self, factor: float, now: float) -> None:
        """The processes sharing the budget changed: this process's share of the same rate for
        all is `factor` times what it was, and so are the rates it knows and what it counted
        (its measurements are of its share). The gated episodes are forgotten: their counts
        were of the old share."""
        if self.rate is not None:
            self.rate *= factor
        self.low = self.low * factor if self.low is not None else None
        self._low_before = self._low_before * factor if self._low_before is not None else None
        self.high = self.high * factor if self.high is not None else None
        self._drew = self._drew * factor if self._drew is not None else None
        self._measured = self._measured * factor if self._measured is not None else None
        self.admitted_total *= factor
        self.unit *= factor
        self._answers.clear()  # (each of them counted whole: a share of another size)
        self._forget_episodes()
        self.window_cycle = None  # (its allowance was this process's alone)
        self.note(now, "the processes sharing the budget changed: rescaled to this one's share")

    def _ran_for(self, now: float) -> float:
        """Seconds since the run's first send (0 before it)."""
        return 0.0 if self._first_send is None else now - self._first_send

    def _floor(self, now: float) -> float:
        """The slowest rate allowed: a share of what the upstream admitted over the run."""
        if self._ran_for(now) < FLOOR_AFTER:
            return MIN_RATE
        return max(MIN_RATE, FLOOR_SHARE * (self.long_span_rate(now) or 0.0))

    def long_span_rate(self, now: float) -> float | None:
        """What the upstream admitted per second over the whole run (None before any answer)."""
        first = self._first_send
        if first is None or not self.admitted_total:
            return None
        return self.admitted_total / max(now - first, MIN_SPAN)

    # -- the pause -------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    def pause_wait(self, now: float) -> float:
        """Seconds until the next send may go: 0 when not paused or a probe is due now."""
        if self.holding and now < self._measure_until + MEASURE_HOLD_MAX:  # (answers may be lost)
            return PROBE_POLL
        if self._feeling and not self._admitted_since_cut and self._sent_since_cut >= BLOCK_AFTER:
            # Feeling the way after slow start: sending on at half the overshoot's rate until
            # the pause's evidence came in (four 429s, two round trips after the cut) sent 51
            # requests into a full window: 5.5 % of a 1000-symbol scan, all refused.
            return PROBE_POLL
        if self._paused_at is None:
            return 0.0 if self.window_cycle is None else self.window_cycle.wait(now)
        if self._probe_sent is not None:
            return PROBE_POLL  # one probe at a time; its answer ends or extends the pause
        return max(0.0, self._probe_at - now)

    def _pause(
        self,
        now: float,
        since: float | None = None,
        *,
        remembering: bool = True,
        reason: str = "429s at any rate: paused",
    ) -> None:
        """Stop sending: the limiter has refused everything `since` (default: now), so the
        first probe is due PAUSE_FIRST after that. `remembering`: 429s at any rate led here
        (not a window's first gate)."""
        if self.low is not None and self.rate is not None and self.rate <= self.low * 1.001:
            # (the 429s that led here came at `low`: it did not hold)
            self._disprove_low(self.rate, now)
        self._paused_at = now
        self._remembering = self._remembering or remembering
        self._feeling = False
        self._pause_gap = min(PAUSE_FIRST, self.pause_cap)
        refused_from = now if since is None else since
        self._probe_at = max(now, refused_from + self._pause_gap)
        self._probe_sent = None
        self._probes_refused = 0
        self._refused_probe = None
        self._measure_pending = False
        self._forget_episodes()
        self.note(now, reason)

    def gate_check_refused(self, sent_at: float, now: float) -> bool:
        """The check of the run's first Retry-After gate, sent at `sent_at`, was refused: True
        when that makes this a window limiter, paced in cycles from the gate's end on.

        A bucket refills within a quarter of its "Retry-After: 1" (a fiftieth, rounded up); a
        window full from the first contact refuses until it frees. Paced by a rate, such a
        window cost a gate per 100 requests, each up to a second past its refill (whole-second
        hints), and a rate search between them: 1.35x on a sliding window of 100 per 2 s. Its
        cycles (see `windowcycle`) take what the first contact was admitted at once when it
        frees: the gate is this pause, the refused check its first refused probe, and the first
        request sent once the gate opens its probe. Only after slow start's overshoot (a run
        from a learned rate sends no allowance at once), and this process alone deciding."""
        first_contact = self.cuts == 1 and self._drew_in_slow_start
        sending = self.window_cycle is None and self._paused_at is None
        got_through = self.admitted_total >= MIN_ALLOWANCE * self.unit
        if not (first_contact and sending and got_through and self._cycles_possible()):
            return False
        reason = "a Retry-After gate's check refused: a window, paced in cycles"
        self._pause(now, remembering=False, reason=reason)
        self._window_suspected = True
        self._probes_refused, self._refused_probe = 1, sent_at
        self._probe_at = now  # (the gate holds the probe until it opens)
        return True

    def _probe_refused(self, now: float) -> None:
        self._refused_probe, self._probe_sent = self._probe_sent, None
        self._probes_refused += 1
        self._pause_gap = min(self._pause_gap * 2.0, max(self.pause_cap, PAUSE_FIRST))
        self._probe_at = now + self._pause_gap
        cycle = self.window_cycle
        if cycle is not None and self._refused_probe is not None:
            cycle.probe_refused(self._refused_probe)
            at = cycle.probe_at(self._refused_probe)
            if at is not None and cycle.clean:
                self._probe_at = max(now, at)
            elif at is not None:  # (room taken by something older may come back sooner)
                self._probe_at = max(now, min(at, self._probe_at))

    def _cycle_pause(self, now: float) -> None:
        """A window's allowance went: nothing more until it frees (see `windowcycle`)."""
        cycle = self.window_cycle
        assert cycle is not None
        self._paused_at = now
        self._probe_sent = self._refused_probe = None
        self._probes_refused = 0
        self._pause_gap = min(PAUSE_FIRST, self.pause_cap)
        at = cycle.probe_at()
        assert at is not None
        self._probe_at = max(now, at)
        self.note(now, "the window's allowance went: paused until it frees")

    def _resume(self, now: float) -> None:
        """A probe was admitted: send again at what the upstream admitted over the run."""
        probe_sent = self._probe_sent
        paused_at, self._paused_at, self._probe_sent = self._paused_at, None, None
        rate = self.long_span_rate(now) or MIN_RATE
        if not self._probes_refused:
            # The first probe passed: the limiter forgave within a second, a debt rather than a
            # long window, and a rate measured, or one that held, before the pause still holds.
            rate = max(rate, self._measured or 0.0, self.low or 0.0)
        if self.ceiling is not None:
            rate = min(rate, self.ceiling)
        cycle = self.window_cycle
        if self._window_suspected:
            # What the first contact got through: all it was admitted before this probe (a
            # window refuses everything once full, and the gate held everything since), rather
            # than the sends before the first 429 to come back (one more, when 429s overtake
            # answers: each burst's last was refused, and the cycles learned nothing).
            self._window_suspected = False
            self._first_contact_burst = round(self.admitted_total - self.unit)
            self._no_cycles = self._first_contact_burst < MIN_ALLOWANCE
        long_pause = self._probes_refused >= LONG_PAUSE_PROBES or cycle is not None
        if cycle is None and long_pause and self._cycles_allowed(probe_sent):
            assert self._first_contact_burst is not None and self._first_send is not None
            assert probe_sent is not None and self._refused_probe is not None
            cycle = self.window_cycle = WindowCycle(
                self._first_contact_burst, self._first_send, self._refused_probe, probe_sent
            )
        elif cycle is not None and probe_sent is not None:
            cycle.probe_admitted(probe_sent)
        if cycle is not None and probe_sent is not None:
            self.resume_credit = cycle.start(probe_sent)
        elif paused_at is not None and long_pause:
            burst = self._first_contact_burst or 1
            self.resume_credit = max(0, min(burst, int(rate * (now - paused_at))) - 1)
        drew = self._drew
        if long_pause or drew is None or self._drew_in_slow_start or drew <= rate:
            # A long window, or no rate near this one known to draw 429s (slow start's
            # overshoot): what came before says little of the rate; climb fast.
            self.high, self._resumed = None, True
        else:
            # After a short pause, the rate that drew the 429s that led to it still bounds the
            # search (a debt run up by overshooting it, paid off in a second), rather than an
            # estimate a measurement made: climbing fast from here, unbounded, overshot it
            # again every few seconds (measured: 1.54x on a leaky bucket counting refusals).
            self.high, self._high_measured = drew, False
            if self._fitted_high is not None and self._fitted_high < drew:
                self.high = self._fitted_high  # (a full bucket's episode measured it)
        self.low, self._low_before = rate, None
        self.last_cut_at = self._calm_since = now
        self._since_cut()
        self._search_after = now
        self._set(rate, now, "probe admitted: resumed at the run's admitted rate")
        self._episode_full, self._episode_before = True, 0.0

    def _cycles_allowed(self, probe_sent: float | None) -> bool:
        """Cycling needs the first contact's allowance and the pause's bounds, and this process
        alone deciding (sharing a budget, its share of a window is no allowance of its own)."""
        return (
            self._cycles_possible() and self._refused_probe is not None and probe_sent is not None
        )

    def _cycles_possible(self) -> bool:
        return (
            self.unit == 1.0
            and not self._no_cycles
            and self._first_contact_burst is not None
            and self._first_send is not None
        )

    def _leave_cycles(self, now: float) -> None:
        """A burst the window should have admitted was mostly refused: not a window of that
        allowance after all (a slow bucket: 1 request/s, whose "Retry-After: 1" check a quarter
        in was refused), so back to a rate for the rest of the run, from the one the last probe
        resumed at; the burst's 429s cut nothing (they were sent at once, not at a rate).
        Cycling on, each burst drew 4 refusals in 5."""
        self.window_cycle = None
        self._no_cycles = True
        self._paused_at = self._probe_sent = None
        # (what the probe resumed at, the run's admitted rate, was mostly the first contact's
        # burst, not a rate that held: kept as `low`, each 429 took 5 % off it, 44 % refused)
        self.low = self._low_before = None
        self.last_cut_at = now  # (the rest of the burst's 429s were sent before: not the rate's)
        self._since_cut()
        self.note(now, "a window's burst mostly refused: not a window, paced by a rate")

    def send_rate(self, until: float, span: float = 1.0) -> float:
        """Requests per second sent in the `span` seconds before `until` (or since the first)."""
        recent = sum(1 for t in self._sends if until - span <= t <= until)
        first = self._sends[0] if self._sends else until
        # A burst at the very start has no meaningful rate: count it over a short span at least.
        return recent / max(min(span, until - first), MIN_SPAN)

    def admitted_rate(self, now: float, span: float = 2.0) -> float:
        """Admitted answers per second over the last `span` seconds (by when they were sent)."""
        recent = sum(1 for sent, admitted in self._answers if admitted and sent >= now - span)
        return recent / max(min(span, now - self.started), 1e-3)

    def on_send(self, now: float) -> None:
        if self._first_send is None:
            self._first_send = now
        cycle = self.window_cycle
        if cycle is not None and self._paused_at is None and cycle.sent(now):
            self._cycle_pause(now)
        if self.cuts and now >= self.last_cut_at:
            self._sent_since_cut += 1
        if self._paused_at is not None and self._probe_sent is None and now >= self._probe_at:
            self._probe_sent = now  # the one request a pause lets through (not one let go
            # before it began: a window's burst may still be leaving)
        if self._episode_start is None:
            self._episode_start, self._episode_first = now, self._sent + 1
        self._sent += 1
        self._sends.append(now)
        while self._sends[0] < now - 5.0:  # only the last few seconds are ever measured
            self._sends.popleft()
        if not self._hold_started:
            self._hold_started = True
            self._held_since = now

    def on_unanswered(self, sent_at: float, now: float) -> None:
        """A request got no answer at all (a timeout, a dropped connection): nothing about the
        rate. When it was a pause's probe, the probe is over, and the next goes after the
        same gap (the limiter neither refused nor admitted it): waiting for its answer, the
        pause would last for ever."""
        if self._feeling and sent_at >= self.last_cut_at:
            self._sent_since_cut -= 1  # (a feeler lost: another may go)
        if self._paused_at is None or self._probe_sent is None or sent_at < self._probe_sent:
            return
        self._probe_sent = None
        self._probe_at = now + self._pause_gap

    def on_admitted(self, sent_at: float, now: float, *, rate_bound: bool) -> None:
        """A request was admitted (any answer but 429). `rate_bound`: senders waited on the rate."""
        self._answers.append((sent_at, True))
        while self._answers and self._answers[0][0] < now - 5.0:
            self._answers.popleft()  # only the last few seconds matter; keep memory flat
        self.admitted_total += self.unit
        if sent_at >= self.last_cut_at:
            self._admitted_since_cut += 1
        cycle = self.window_cycle
        if cycle is not None and sent_at >= cycle.filled_from and sent_at != self._probe_sent:
            cycle.admitted_in_burst()
        if self._paused_at is not None:
            if self._probe_sent is not None and sent_at >= self._probe_sent:
                self._resume(now)
            return  # (admitted answers to requests sent before the pause prove nothing)
        if self.rate is None or self._measure_pending or not rate_bound:
            return
        # (Before any 429 this run, the short hold: a learned rate is checked within ~2 s.)
        hold = HOLD_EXPENSIVE if self._expensive and self.cuts else HOLD
        if now - self._held_since < hold:
            return
        if self.low is None or self.rate > self.low:
            self.low, self._low_before = self.rate, self.low
        calm = now - self._calm_since
        if self.high is not None and calm >= FORGET:
            self.high = None  # limits change: look again
        if now < self._search_after:
            self._held_since = now  # trusting what an earlier run learned
        elif self.high is None:
            gain = PROBE_GAIN * 2 ** min(4, int(calm // 5.0))
            if self._resumed:
                gain = max(gain, RESUME_GAIN)
            self._step_up(self.rate * (1.0 + gain * HOLD), now, "probing upward")
        elif self.high > self.low * (1.0 + self._close_enough):
            # Halfway to a rate that drew a 429; all the way to one a measurement estimated
            # (halving the way to an estimate took four holds, 17 s, to find it wrong).
            target = self.high if self._high_measured else (self.low + self.high) / 2.0
            self._step_up(target, now, "held: searching upward")
        elif self.low > self.high or self._high_measured:
            # Held above the rate that drew a 429, or up to a bound that was only estimated:
            # either way it says little, so probe upward freely (even where a probe too many
            # costs a gate: a measurement made within a window's first contact put such a
            # bound at 68 % of a sliding log's limit, and four processes stayed there).
            self.high = None
            self._step_up(self.rate * (1.0 + PROBE_GAIN * HOLD), now, "probing upward")
        elif self._expensive or self._remembering:
            # Close enough, and a probe too many costs a gate, or a pause while a limiter that
            # remembers forgets the debt it ran up: stay.
            self._held_since = now
        else:
            # Cheap 429s: check now and then that the bound is still right, one step above it.
            self._step_up(self.high * (1.0 + self._close_enough), now, "probing above the bound")

    def _step_up(self, rate: float, now: float, reason: str) -> None:
        """Raise the rate from one that held: the bucket refilled meanwhile, so the episode
        this starts began full (see `_end_full_episode`), from `low`."""
        self._set(rate, now, reason)
        self._episode_full, self._episode_before = True, self.low or 0.0

    @property
    def _close_enough(self) -> float:
        return CLOSE_ENOUGH_EXPENSIVE if self._expensive else CLOSE_ENOUGH

    def on_throttled(
        self,
        sent_at: float,
        now: float,
        *,
        latency: float = 0.0,
        expensive: bool = False,
        seq: int | None = None,
        hearsay: bool = False,
    ) -> bool:
        """A 429 for a request sent at `sent_at`; True when it cut the rate.

        `latency` is the smoothed time an admitted request takes (one round trip); `expensive`
        says the 429 also closed a gate for everyone; `seq` is the request's number among the
        sends (from 1, as `on_send` saw them), which tells sends made at the same instant apart.
        `hearsay`: another process drew it (`sharedpace`), and `sent_at` is a guess: it cuts,
        but counts in no gated episode and fits nothing (a fit of guessed times found a window
        limiter a bucket three times its rate).
        """
        self._answers.append((sent_at, False))
        cycle = self.window_cycle
        if cycle is not None and sent_at >= cycle.filled_from and sent_at != self._probe_sent:
            if cycle.clean and self._paused_at is not None and self._probe_sent is None:
                # (a burst's 429 back after its pause began: part of the room was taken by
                # something older, which may leave sooner than the burst)
                self._probe_at = min(self._probe_at, now + self._pause_gap)
            if cycle.refused_in_burst():
                self._leave_cycles(now)
            if self._paused_at is None:
                return False  # (the burst's, sent at once: the rate is no matter)
        if self._paused_at is not None:
            # No 429 during a pause is evidence about the rate: the limiter is remembering.
            if self._probe_sent is not None and sent_at >= self._probe_sent:
                self._probe_refused(now)
            return False
        if self.cuts and sent_at >= self.last_cut_at:
            self._throttled_since_cut += 1
            # (429s come back sooner than admitted answers: give those a round trip or two;
            # feelers leave once slow start's answers are in, a round trip after the cut)
            settled = now - self.last_cut_at >= max(2.0 * latency, BLOCK_SETTLE)
            settled = settled or self._feeling
            if settled and self._blocked():
                self._pause(now, since=self.last_cut_at)  # (refused everything since)
                return False
        if sent_at <= self._measure_until:
            self._last_throttled_send = max(sent_at, self._last_throttled_send)
        # A gated 429 for a request sent after the gate reopened is a new overshoot, however
        # soon after the last cut it comes back (a slow upstream's round trip can outlast the
        # gate); its episode must end here, or it would run on across the next gate.
        start = self._episode_start
        fresh = expensive and start is not None and start > self.last_cut_at and sent_at >= start
        fresh = fresh and not hearsay  # (the time it was sent is a guess: no telling)
        in_flight = sent_at < self.last_cut_at
        if not fresh and (in_flight or now < self.last_cut_at + max(latency, MIN_CUT_INTERVAL)):
            return False  # in flight at the old rate: already answered for by the last cut
        if self._remembering and self._blocked():
            # A cut due, and everything since the last one refused, from a limiter known to
            # remember: pause rather than cut again. (A leaky bucket counting refusals answers
            # slower than the half second between cuts, so `settled` never came: five cuts
            # in 2.5 s took the rate from 55 to 42 requests/s, 16 % under its limit, while it
            # only worked off the queue our refused requests had run up.)
            self._pause(now, since=self.last_cut_at)
            return False
        slow_start = self.rate is None
        self._expensive = expensive
        if self.rate is None and hearsay:
            # Another process's 429, sent at a time only guessed: how fast this one sent over
            # the last second is its share of what drew it (two round trips around the guess
            # found none sent at --rate 8 shared by two, and cut to the floor for good).
            base = self.send_rate(now, span=1.0)
            if not base:
                return False  # (sending nothing, it has no share to cut)
        elif self.rate is None:
            # Slow start ramps fast: what matters is how fast we sent just before the request
            # the limiter refused, over about two round trips, not a longer average.
            base = self.send_rate(sent_at, span=max(0.25, 2.0 * latency))
        else:
            base = self.rate
        base = max(base, MIN_RATE)
        # A window limiter answers 429 to everything until its window turns over, even at a
        # rate it would take: what it admitted lately bounds the limit from below.
        drew_429 = max(base, self.admitted_rate(now))
        self._drew = drew_429
        self._drew_in_slow_start = slow_start
        if self.high is None or drew_429 < self.high:
            self.high, self._high_measured = drew_429, False
        if self.low is not None and base <= self.low * 1.001:
            self._disprove_low(base, now)
        if self.low is not None and self.low < base:
            # Back to the rate that held, or to what the limiter proved it admits when that is
            # higher: a bucket's 429 after a step up from 104/s to 126/s (a limit of 120) sent
            # the search back to 104/s for a 2 s hold.
            proven = self._admitted_bound(now, under=base)
            if proven > self.low:
                self.low, self._low_before = proven, None
            new = self.low
        else:
            new = base * (BETA_EXPENSIVE if (slow_start or expensive) else BETA)
            if expensive and not slow_start and self._ran_for(now) >= FLOOR_AFTER:
                # Each 429 closes a gate until the limiter admits again, so sending faster
                # than it admits costs one 429 a window, while sending slower than it admitted
                # lately costs throughput for certain: never cut below that. Nor stay above
                # it: from far over it, the rate is not what limits, and halving it once a
                # gate (320, 160, 80 requests/s for a window admitting 50) took 9 s to get
                # there. (Not in the first seconds, where a window's allowance, admitted at
                # once, is most of it; nor down to a count too small to mean a rate.)
                admitted = self.admitted_rate(now, ADMITTED_SPAN)
                if admitted * min(ADMITTED_SPAN, now - self.started) >= MIN_MEASURED:
                    new = min(new, admitted)
                new = max(new, admitted * MARGIN)
        reason = "429: cut"
        first = self._first_send
        if self.cuts == 0 and first is not None and not hearsay:
            self._first_contact_burst = max(1, self._sends_before(sent_at, seq, 1))
            if first <= sent_at <= first + FIRST_DRAIN:
                self._first_drain = (sent_at - first, self._sends_before(sent_at, seq, 1))
        fitted = None
        if hearsay:
            pass  # (the episode this process is in goes on: that 429 was not of its sends)
        elif expensive and self.unit < 1.0:
            # Sharing the limiter with other processes: what it admitted of this one's sends
            # in an episode depends on theirs too, and fits nothing (a fit from them held four
            # processes at 40 % of a sliding log's limit).
            self._forget_episodes()
        elif expensive:
            fitted = self._end_episode(sent_at, seq)
        elif self._remembering and self._episode_full and self.unit == 1.0:
            fitted = self._end_full_episode(sent_at)
        else:
            self._forget_episodes()
        if fitted is not None and not expensive:
            limit, uncertainty = fitted
            margin = max(uncertainty, FIT_MIN_MARGIN)
            if self._episode_before <= limit:
                # Sent under this limit before the episode, the bucket was full when it began:
                # the bound from below is the limit itself, and bounds the search too.
                new = limit * (1.0 - margin)
                self.low, self._low_before = new, None
                self.high, self._high_measured = limit * (1.0 + uncertainty), False
                reason = "429: fitted the limit"
                self._measured, self._fitted_high = new, self.high
            elif limit * (1.0 - margin) > new:
                # (over it before, the bucket may not have been full: a bound from below only)
                new, reason = limit * (1.0 - margin), "429: cut to what the episode admitted"
                self._measured = self.low = new
            fitted = None
        elif fitted is not None:
            limit, uncertainty = fitted
            margin = 0.0 if uncertainty > FIT_LOOSE else max(uncertainty, FIT_MIN_MARGIN)
            new = max(limit * (1.0 - margin), self.low if self.low is not None else 0.0)
            self.high, self._high_measured = limit * (1.0 + uncertainty), True
            reason = "429: fitted the limit"
            self._measured = new
        self.last_cut_at = self._calm_since = now
        self._since_cut()
        self._resumed = False
        # Out of slow start, the rate it ran at is no guide (it doubled each round trip):
        # send nothing until the answers already on their way have been measured.
        self._hold_for_measure = slow_start and fitted is None
        self.cuts += 1
        self._saturated_from = sent_at
        self._last_throttled_send = sent_at
        self._measure_until = now + latency  # measure what was sent up to a round trip on
        self._measure_pending = fitted is None  # (a fit already used a longer measurement)
        self._set(new, now, reason)
        return True

    def _blocked(self) -> bool:
        """Since the last cut, `BLOCK_AFTER` 429s and nothing admitted: the limiter is
        remembering rather than measuring our rate."""
        return self._throttled_since_cut >= BLOCK_AFTER and not self._admitted_since_cut

    def _since_cut(self) -> None:
        """A cut, a resume or a new lead: the evidence about the limiter starts again from it."""
        self._throttled_since_cut = self._admitted_since_cut = self._sent_since_cut = 0
        self._feeling = False

    def _disprove_low(self, drew: float, now: float) -> None:
        """A 429 at `drew`, at or under `low`: `low` did not hold after all. A bucket's burst
        hides a small excess for longer than a hold (10 requests over 1.6/s too many: 6 s), so
        the rate that held before it is likelier right than a guess under the 429: the search
        falls back to it, or to `MARGIN` under the 429, or to what the limiter admitted lately
        less its burst (`_admitted_bound`), whichever is highest. Measured on a learned run at
        120/s: 5 % under the 429 was 3.5 % under the limit, for the two seconds of a hold."""
        before = self._low_before
        fallback = before if before is not None and before < drew else 0.0
        admitted = self._admitted_bound(now, under=drew)
        self.low, self._low_before = max(drew * MARGIN, fallback, admitted), None

    def _admitted_bound(self, now: float, under: float) -> float:
        """The limit, bounded from below by what it admitted: of the requests sent since t, a
        limiter admits at most its rate times the time since plus what its bucket held at t,
        so (admitted since t - burst) / (now - t) is at most its rate, for any t; the best
        over the last few seconds (spans of `BOUND_SPAN_MIN` or more), kept just `under` the
        rate that drew the 429 this bound answers (at least `CLOSE_ENOUGH` under it, so that
        a cut to it is a cut). 0.0 while the burst is
        unknown (the bound would be too high by all of it), and for a limiter that remembers:
        at its limit, the debt our refused requests ran up is never worked off (its episodes
        from full measure it instead: a leaky bucket counting refusals went from 1.20x to
        1.23x with this bound)."""
        burst = self._known_burst()
        if burst is None or self._remembering:
            return 0.0
        best, admitted = 0.0, 0
        for sent_at, ok in reversed(self._answers):
            admitted += ok
            if now - sent_at >= BOUND_SPAN_MIN:
                best = max(best, (admitted - burst) / (now - sent_at))
        return min(best, under * (1.0 - CLOSE_ENOUGH))

    def _sends_before(self, refused_at: float, seq: int | None, first: int) -> int:
        """How many requests went out from send number `first` up to the refused one."""
        if seq is None:  # by time: sends at the very same instant cannot be told apart
            seq = self._sent - sum(1 for t in self._sends if t > refused_at)
        return max(0, seq - first)

    def _end_episode(self, refused_at: float, seq: int | None) -> tuple[float, float] | None:
        """Close the gated episode the request sent at `refused_at` ended; fit the limit.

        Returns (limit, relative uncertainty), or None when no credible fit exists yet.
        """
        start, self._episode_start = self._episode_start, None  # the next send starts one
        if start is None or refused_at < start:
            return None
        admitted = self._sends_before(refused_at, seq, self._episode_first)
        if self._first_episode is None:
            self._first_episode = (refused_at - start, admitted)
        else:
            self._episodes.append((refused_at - start, admitted))
        return self._fit()

    def _end_full_episode(self, refused_at: float) -> tuple[float, float] | None:
        """Close an episode of a limiter that remembers; bound its limit from below.

        Its 429s are cheap (no gate), but what it admits while over-driven measures nothing
        (a counting token bucket, in debt, admits nothing at all), so the episodes are what
        is left: a bucket of burst B, full at time t, admits at most B + L x (T - t) requests
        up to the first it refuses at T. So for every t of the episode, (sent since t - B) /
        (T - t) bounds L from below, and the best of them is L when the bucket was full at
        that t (before the rate stepped over the limit, whenever that was within the
        episode). B is what the run's first 429 showed (`_first_drain`); the best bound of
        the last few episodes counts. A window limiter lies on no such line: a bound whose
        bucket could not have admitted what this run got is dropped.

        Returns (limit, relative uncertainty), or None.
        """
        start, self._episode_start = self._episode_start, None
        first = self._first_drain
        if start is None or refused_at < start or first is None or self._first_send is None:
            return None
        drained_after, drained = first
        sends = [t for t in self._sends if start <= t < refused_at]
        best: tuple[float, float] | None = None
        for i, sent in enumerate(sends):
            span = refused_at - sent - drained_after
            if span < FULL_SPAN_MIN:
                break
            limit = (len(sends) - i - drained) / span
            if best is None or limit > best[0]:
                best = (limit, span)
        if best is not None:
            self._full_episodes.append(best)
        if not self._full_episodes:
            return None
        limit, span = max(self._full_episodes)
        burst = drained - limit * drained_after
        could_admit = burst + limit * (refused_at - self._first_send)
        if limit <= MIN_RATE or could_admit < 0.9 * self.admitted_total:
            return None
        return limit, FIT_NOISE / (span * limit)

    def _forget_episodes(self) -> None:
        """A 429 without a gate: the limiter was not given time to refill, so no episode."""
        self._episode_start = None
        self._episodes.clear()
        self._first_episode = None

    def _fit(self) -> tuple[float, float] | None:
        """Least squares admitted = B + L x T over the episodes: (L, its uncertainty), or None."""
        points = list(self._episodes)
        times = [t for t, _ in points]
        if len(points) < 2 or max(times) - min(times) < MIN_FIT_SPREAD:
            # The run's first episode, from slow start, ends within a round trip: it mostly
            # measures the burst, and is a little off the gated ones' line. Used only until
            # two gated episodes span enough time to do without it.
            if self._first_episode is None:
                return None
            points.append(self._first_episode)
            times.append(self._first_episode[0])
        spread = max(times) - min(times)
        if len(points) < 2 or spread < MIN_FIT_SPREAD:
            return None
        mean_t = sum(times) / len(points)
        mean_a = sum(a for _, a in points) / len(points)
        var = sum((t - mean_t) ** 2 for t in times)
        limit = sum((t - mean_t) * (a - mean_a) for t, a in points) / var
        burst = mean_a - limit * mean_t
        if limit <= MIN_RATE or burst < 0.5:
            return None  # not a bucket: a window limiter, or noise
        if limit * spread < 2 * FIT_NOISE:
            # The count grew across the episodes by no more than its own noise: a window's
            # episodes (all its count whatever their length) lie on such a flat line.
            return None
        if any(t > 0 and a / t <= limit for t, a in points):
            return None  # an episode that sent slower than the limit could not have run dry
        if any(abs(a - burst - limit * t) > max(FIT_TOLERANCE, 0.05 * a) for t, a in points):
            return None  # off the line: a window limiter (its count does not grow with T)
        return limit, FIT_NOISE / (spread * limit)

    @property
    def expensive(self) -> bool:
        """The last 429 closed a Retry-After gate (or an earlier run's did)."""
        return self._expensive

    @property
    def holding(self) -> bool:
        """Sending nothing until slow start's overshoot has been measured (see `measure`)."""
        return self._hold_for_measure and self._measure_pending

    @property
    def measuring(self) -> bool:
        """A cut is waiting for its answers to be measured."""
        return self._measure_pending

    def measure_due(self, now: float, oldest_in_flight: float | None, latency: float) -> bool:
        """True when the answers to measure are in: all requests sent in the window are back.

        Admitted requests come back slower than 429s, so measuring early would undercount
        them; a straggler is waited for three round trips (half a second at least) at most.
        """
        if not self._measure_pending or now < self._measure_until:
            return False
        back = oldest_in_flight is None or oldest_in_flight > self._last_throttled_send
        return back or now >= self._measure_until + max(3.0 * latency, 0.5)

    def measure(self, now: float) -> None:
        """Lower the rate to what the limiter admitted while saturated (see above)."""
        self._measure_pending = False
        start, end = self._saturated_from, self._last_throttled_send
        window = [] if start is None else [a for sent, a in self._answers if start <= sent <= end]
        if self._hold_for_measure and not any(window):
            # Slow start's overshoot, and nothing admitted since its first 429: no measure of
            # the rate at all, and half the overshoot is still far over any limit. Feel the
            # way instead (see `pause_wait`).
            self._feeling = True
        if start is None or end - start <= 0 or self.rate is None or len(window) < MIN_MEASURED:
            return
        if self._remembering:
            return  # (over-driven, such a limiter admits nothing: see `_end_full_episode`)
        estimate = max(sum(window), 1) / (end - start)
        if self._ran_for(now) >= FLOOR_AFTER:
            # A window limiter admits nothing between its windows, so a short measurement
            # undercounts it; what it admitted over the last seconds, or over the whole run
            # (a measurement a gate held up past the first contact's allowance: 23 requests/s
            # on a sliding log of 250 per 5 s), it demonstrably sustains.
            span = max(self.admitted_rate(now, span=5.0), self.long_span_rate(now) or 0.0)
            estimate = max(estimate, span)
        # The estimate is noisy (a few dozen answers): let the search start near it rather
        # than at the overshoot that drew the 429, but not below what was admitted lately
        # (once that means a rate: in the first seconds, a window's allowance admitted at
        # once is most of it, and made a bound five times the limit).
        near = estimate * 1.25
        if self._ran_for(now) >= FLOOR_AFTER:
            near = max(near, self.admitted_rate(now))
        if self.high is None or near < self.high:
            self.high, self._high_measured = near, True
        if estimate * MARGIN < self.rate:
            self._measured = estimate * MARGIN
            self._set(estimate * MARGIN, now, "measured the limit")
