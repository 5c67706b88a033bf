"""How fast to send: the one place every worker waits before a request.

One `Pacer` per upstream host, shared by all workers. A request may leave when all of these
agree, checked in this order:

1. the gate: a `Retry-After` on any answer closes it for every request until then (`gate`),
   and, through a shared schedule, for every process sharing the budget (`sharedpace`); but
   not a 429's while a window is paced in its cycles, which time it (`windowcycle`);
2. the circuit breaker, when the upstream looks down: one probe at a time (`resilience`); and
   through a shared schedule, the processes sharing it wait on the shared gate meanwhile;
3. the quota, when the upstream tells it (`hints`) and this process paces alone: spend what
   remains at once, then wait for the reset (see `quota.Quota`);
4. the rate: `--rate`, or the adaptive rate found from 429s (`ratecontrol`), metered by a
   Generic Cell Rate Algorithm (the token bucket written as one "theoretical arrival time";
   https://en.wikipedia.org/wiki/Generic_cell_rate_algorithm). Each caller reserves the next
   slot and sleeps until it, so callers are served in order and the rate holds however many
   wait;
5. the window: requests in flight. `--concurrency` is its ceiling; while the rate is being
   discovered it grows from 10 by one per answer (TCP's slow start, doubling per round trip,
   so a first contact does not open with a 50-request burst); once a rate is known it follows
   Little's law, rate x latency with headroom.

Before all of these, a 418 ban: one this process or, through a shared schedule (`sharedpace`),
another process sharing the budget was told of raises `UpstreamBanned`, and the scan stops as
it does on a 418 of its own. And when the budget is shared, only the leader of the processes
sharing it adapts the rate; the others follow it (`_follow`), and wait while it looks for the
rate in slow start.

`acquire` returns a `Ticket`; `release` takes it back with what the answer said.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Protocol

import anyio
import anyio.lowlevel

from scanctl.clock import Clock
from scanctl.gate import GATE_CHECKED_FROM, RetryAfterGate
from scanctl.hints import QuotaHint
from scanctl.quota import QUOTA_POLL, Quota
from scanctl.ratecontrol import AdaptiveRate, LearnedPace
from scanctl.resilience import CircuitBreaker

INITIAL_WINDOW = 10
# Seconds between looks while the leader of processes sharing the budget is in slow start,
# and the most the others wait for it before they look for the rate themselves.
LEADER_POLL = 0.01
LEADER_WAIT = 2.0
# Seconds a leader's slow start must send at its ceiling with no 429 before the others take it
# that there is no limit and go with full windows.
NO_LIMIT_PROOF = 0.5
# Seconds the others' gate stays closed past the paused leader's next probe (renewed while the
# pause lasts): how long after the leader resumes the others may still wait.
PAUSE_SHARED = 0.2


# How long to stay away after a 418 that did not say (Binance bans start at 2 minutes).
DEFAULT_BAN_SECONDS = 120.0


def hedge_slots(concurrency: int) -> int:
    """How many of `concurrency` in-flight places hedged copies may use (a tenth, none of 1)."""
    return 0 if concurrency < 2 else max(1, concurrency // 10)


class UpstreamDown(Exception):
    """The circuit breaker gave up: down past --max-outage, or never reachable at all."""


class UpstreamBanned(Exception):
    """The upstream banned us (418), as a process sharing the budget was told: this one stops
    too, rather than send into the ban (or wait it out and earn a longer one)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"banned for {seconds:.0f} s more")
        self.seconds = seconds


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
    banned: bool = False  # a 418: the upstream bans us (the scan stops; others must hold)


@dataclass(frozen=True, slots=True)
class Following:
    """How a process that shares the budget, but does not lead it, paces (`sharedpace`)."""

    share: float | None  # its share of the rate in force (None: none in force)
    waiting: bool = False  # the leader is looking for the rate in slow start: send nothing


class Meter(Protocol):
    """What `Pacer` asks before each send: `GcraMeter` in this process, or a schedule shared
    with other processes (`sharedpace.SharedMeter`)."""

    processes: int  # the processes pacing on this schedule, this one included

    def delay(self, rate: float) -> float: ...
    def reserve(self, rate: float) -> float: ...
    def grant(self, sends: int) -> None: ...
    def shut(self, seconds: float) -> None:
        """A 418 ban for `seconds`: whoever shares this meter's schedule stops too."""
        ...

    def wait(self, now: float) -> float:
        """Seconds until a ban `shut` set (here or in another process) ends; 0: none."""
        ...

    def close_gate(self, seconds: float) -> None:
        """This process's Retry-After gate closed for `seconds`: whoever shares the schedule
        waits too."""
        ...

    def gate_wait(self, now: float) -> float:
        """Seconds until a gate another process sharing the schedule closed opens."""
        ...

    def following(self, rate: float | None, *, discovering: bool) -> Following | None:
        """How to pace when another process leads the budget (None: this one decides);
        `rate`: this one's rate now; `discovering`: it is in slow start, looking for one."""
        ...

    def rescale(self) -> float:
        """The factor this process's own rate must change by to stay the same share of the
        rate for all, as the processes sharing it changed (1.0: none)."""
        ...

    def note_refused(self) -> None:
        """A 429 to this process while it follows: for the leader to take in."""
        ...

    def refused_elsewhere(self) -> int:
        """429s the processes following this one drew since it last asked."""
        ...

    def note_admitted(self) -> None:
        """An answer admitted to this process: for the others sharing the schedule to count."""
        ...

    def admitted_elsewhere(self) -> int:
        """Answers the other processes were admitted since this one last asked."""
        ...


class GcraMeter:
    """Hands out send times no closer than 1/rate apart, allowing `burst` back to back."""

    processes = 1  # (this one alone)

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

    def shut(self, seconds: float) -> None:
        """Nothing to do: this process stops on its 418, and no one shares this schedule."""

    def wait(self, now: float) -> float:
        return 0.0

    def close_gate(self, seconds: float) -> None:
        """Nothing to do: no one else shares this schedule."""

    def gate_wait(self, now: float) -> float:
        return 0.0

    def following(self, rate: float | None, *, discovering: bool) -> Following | None:
        return None  # (alone: this process decides)

    def rescale(self) -> float:
        return 1.0

    def note_refused(self) -> None:
        """Nothing to do: no one follows this process."""

    def refused_elsewhere(self) -> int:
        return 0

    def note_admitted(self) -> None:
        """Nothing to do: no one else shares this schedule."""

    def admitted_elsewhere(self) -> int:
        return 0

    def reserve(self, rate: float) -> float:
        """Reserve the next slot at `rate`; return how long to wait before using it."""
        if self._credit:
            self._credit -= 1
            return 0.0
        wait, self._tat = self._next_slot(rate)
        return wait


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
        self.quota = Quota()
        self.quota.early_ok = check_hints  # (an upstream that bans: no 429 risked for a hint)
        # Slow start only when nothing is known about this upstream yet.
        start = self.ceiling if (learned or rate or not adaptive) else INITIAL_WINDOW
        self.window = anyio.CapacityLimiter(min(self.ceiling, start))
        self._slow_start = adaptive and learned is None and rate is None
        enough = learned.gate_enough if learned is not None and adaptive else None
        self.gate = RetryAfterGate(check=check_hints, enough=enough)
        self._seq = 0
        self._in_flight: dict[int, float] = {}
        self._borrowers: dict[int, object] = {}
        self._hedges: set[int] = set()
        self._hedges_out = 0
        self._following = False  # another process sharing the budget leads it
        self._waited_from = 0.0  # when this one began to wait for the leader's slow start
        # When slow start's window reached the ceiling (a ceiling of INITIAL_WINDOW or less:
        # from the start).
        self._window_full_at = now if start >= self.ceiling else float("inf")
        self._refused_unpaced = float("-inf")  # (a follower) its last 429 with no rate in force
        self._pause_shared_until = float("-inf")  # (the leader) the gate its pause closed
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
        now = self.clock.monotonic()
        until = self.gate.until
        self.gate.close(seconds, now, checkable=checkable, seq=seq)
        if self.gate.until > until and self.gate.obeyed(seconds):
            # A wait the upstream means holds the processes sharing the schedule too: it
            # throttles the key, not a process. (One this gate checks stays its own.)
            self.meter.close_gate(self.gate.until - now)

    @property
    def _quota_paces(self) -> bool:
        """Whether the upstream's quota hints pace this process: only while it paces alone.
        A quota is the key's, spent by every process sharing it: each spending "what remains
        at once" overshoots it that many times over, and the model of how it refills reads
        this process's own sends. Shared, the rate the leader finds paces them all (measured,
        four processes in virtual time: 1.96x on a leaky bucket with exact hints, 6.7x on a
        token bucket with overstated ones, each spending the quota; 1.02x and 1.03x without)."""
        return self.meter.processes <= 1

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
        """Seconds to wait before trying again, 0 when gate, breaker and quota allow; raises
        `UpstreamDown` when the breaker gave up, `UpstreamBanned` during a shared ban."""
        reason = self.breaker.give_up_reason(now) if self.breaker is not None else None
        if reason is not None:
            raise UpstreamDown(reason)
        self._measure_if_due(now)  # (senders held for a measurement must not wait in vain)
        banned = self.meter.wait(now)
        if banned > 0:
            raise UpstreamBanned(banned)
        # (after `wait` above heard from the store, and before the rate control is asked: the
        # others' 429s it takes in may pause it, and a send let through by a pause_wait asked
        # just before would count as the pause's probe, refused at once)
        follow = self._follow(now)
        quota = self.quota.wait(now) if self._quota_paces else 0.0
        waits = [self.gate.wait(now), quota, self.control.pause_wait(now), follow]
        waits.append(self.meter.gate_wait(now))
        if self.breaker is not None:
            waits.append(self.breaker.wait_time(now))
        return max(0.0, *waits)

    def _follow(self, now: float) -> float:
        """Pace as the budget's leader says when another process sharing it leads (see
        `sharedpace`); as the leader, keep its own rate its share. Returns seconds to wait:
        while the leader looks for the rate in slow start, nothing is sent."""
        if not self.adaptive:
            return 0.0
        control = self.control
        # Looking for the rate: in slow start (until its window reached the ceiling without a
        # 429: no limit), or measuring what its overshoot was admitted (its cut rate until then
        # is half the overshoot's, still far over the limit).
        slow = self._slow_start and self.window.total_tokens < self.ceiling
        # A window at the ceiling with no 429 yet is no proof of no limit until it has sent
        # that way a while: a limiter with a burst (a window of 100) admits the first hundred.
        unproven = self._slow_start and now - self._window_full_at < NO_LIMIT_PROOF
        discovering = slow or unproven or control.holding
        follow = self.meter.following(control.effective, discovering=discovering)
        if follow is not None:  # (the leader's unit is kept with its rate: see `rescale`)
            control.unit = 1.0 / self.meter.processes  # (its rate is a share of them)
        control.count_admitted(self.meter.admitted_elsewhere())
        if follow is None:
            if self._following:
                self._take_lead(now)
            elif control.rate is not None and not control.measuring:
                factor = self.meter.rescale()
                if factor != 1.0:
                    control.rescale(factor, now)
            elif control.rate is None and not discovering:
                # No limit found, and the others send alongside: a rate found from here on
                # is found on a share of the sends, and is a share already.
                self.meter.rescale()
            if self.meter.refused_elsewhere():
                self._refused_elsewhere(now)
            if control.paused:
                self._share_pause(now)
            return 0.0
        if follow.waiting:
            self._waited_from = self._waited_from or now
            if now - self._waited_from < LEADER_WAIT:
                return LEADER_POLL
            if follow.share is None:
                # Its slow start is taking long (it may have little to send: the others,
                # waiting, hold the symbols, as their cache leases): look for the rate alone.
                self._following = False
                return 0.0
        if follow.share is None:
            self._following = True
            if now - self._refused_unpaced < LEADER_WAIT:
                # A 429 with no rate in force: the leader, told of it, sets one (rather than
                # this process send on unpaced, retrying each 429 the moment it comes back).
                return LEADER_POLL
            if self._slow_start:  # the leader's slow start found no limit: none to look for
                self._slow_start = False
                self.window.total_tokens = self.ceiling
            return 0.0
        self._following = True
        self._slow_start = False
        if control.rate != follow.share:
            control.follow(follow.share, now)
            self._size_window()
        return 0.0

    def _share_pause(self, now: float) -> None:
        """The leader paused (429s at any rate: a limiter that remembers, see `ratecontrol`):
        the others stop too, on the shared gate, kept closed a little past its next probe
        while the pause lasts. Sending on, they would keep a window that counts refused
        requests full for ever, and every probe of the leader's would be refused."""
        ahead = self.control.pause_wait(now) + PAUSE_SHARED
        if now + ahead <= self._pause_shared_until + PAUSE_SHARED / 2:
            return  # (the gate already holds them about that long: no word to the store)
        self._pause_shared_until = now + ahead
        self.meter.close_gate(ahead)

    def _refused_elsewhere(self, now: float) -> None:
        """A 429 to a process following this one: taken as one of its own, for a request sent
        about a round trip ago (and the two trips to the store that told it). One that came
        soon after the last cut was in flight before it, as for this process's own."""
        control = self.control
        if control.paused or control.holding:
            return
        sent_at = now - self.admitted_latency - 2 * LEADER_POLL
        latency = self.admitted_latency
        if control.on_throttled(
            sent_at, now, latency=latency, expensive=control.expensive, hearsay=True
        ):
            self._slow_start = False
            self._size_window()

    def _take_lead(self, now: float) -> None:
        """The leader left or died, and this process leads now: it adapts from the rate it
        followed, as a run starts from a learned rate (no slow start, probing soon)."""
        self._following = False
        factor = self.meter.rescale()  # (its share was of those sharing with the leader)
        if self.control.rate is not None:
            self.control.lead(self.control.rate * factor, now, unit=1.0 / self.meter.processes)

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
            hold = self._hold(self.clock.monotonic())
            rate = self.rate  # (after `_hold`: a process that follows may have just been told)
            if hold > 0 or (rate is not None and self.meter.delay(rate) > 0):
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
        quota_paces = self._quota_paces
        checking = quota_paces and feedback.throttled and self.quota.checks_a_reset(ticket.sent_at)
        # The same for the request sent to check a Retry-After gate (see `gate.RetryAfterGate`).
        checked_gate = self.gate.on_answer(
            ticket.seq, now, admitted=feedback.admitted, throttled=feedback.throttled
        )
        # A refused check of the run's first gate may show a window (see
        # `AdaptiveRate.gate_check_refused`): the gate that check checked is its pause, and the
        # check's own Retry-After (later by the check's lateness) says no more than that one's.
        window = checked_gate and feedback.throttled and self.adaptive and not self._following
        window = window and self.control.gate_check_refused(ticket.sent_at, now)
        if feedback.banned:
            self.meter.shut(
                feedback.retry_after if feedback.retry_after is not None else DEFAULT_BAN_SECONDS
            )
        # Paced in a window's cycles, a 429's Retry-After is the cycle's to time (see
        # `windowcycle`: a whole-second one comes up to a second after the window frees).
        cycled = feedback.throttled and self.control.window_cycle is not None and self.gate.check
        gated = (feedback.throttled or feedback.unavailable) and not cycled
        if feedback.retry_after is not None and gated and not checking and not window:
            # (a gate the quota's own hints explain is the quota's to check; a refused check's
            # own Retry-After is the upstream's latest word, obeyed like any other)
            unexplained = self.quota.remaining is None or not quota_paces
            checkable = feedback.throttled and unexplained and not checked_gate
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
            about_quota = about_quota or (feedback.throttled and explained and quota_paces)
        if self.breaker is not None:
            self.breaker.record(
                now,
                unavailable=feedback.unavailable,
                answered=feedback.admitted or feedback.throttled,
                error=feedback.error,
            )
            if ticket.probe:
                self.breaker.probe_done(now)
            if self.breaker.is_open and feedback.unavailable:
                # Down for this process is down for those sharing the budget: they wait while
                # it probes, until its next probe has had its answer (a breaker each, all
                # probing, would send one probe per process into the outage).
                breaker = self.breaker
                self.meter.close_gate(breaker.wait_time(now) + breaker.probe_interval)
        if feedback.admitted:
            self.meter.note_admitted()
        if self._following:
            # (the leader adapts the rate, hearing of this one's 429s; this one follows it,
            # and counts its answers)
            if feedback.admitted or feedback.throttled:
                self.control.note_answer(ticket.sent_at, now, admitted=feedback.admitted)
            if feedback.throttled and not about_quota:
                self.meter.note_refused()
                if self.control.rate is None:
                    self._refused_unpaced = now
            self._size_window()
        elif self.adaptive and not about_quota:
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
        """Hand back a ticket whose request was called off (a losing hedge): nothing learned
        (but a pause's probe called off is over: the next may go)."""
        self._give_back(ticket)
        now = self.clock.monotonic()
        self.control.on_unanswered(ticket.sent_at, now)
        if ticket.probe and self.breaker is not None:
            self.breaker.probe_done(now)

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
                if self.window.total_tokens == self.ceiling:
                    self._window_full_at = now
        else:  # no answer at all: a timeout, a dropped connection
            control.on_unanswered(ticket.sent_at, now)
        self._measure_if_due(now)
        self._size_window()

    def _size_window(self) -> None:
        rate = self.control.effective
        if not self._slow_start and rate is not None:
            # Little's law: in flight = rate x latency; double it, plus room for stragglers.
            need = math.ceil(rate * max(self.latency, 0.001) * 2.0) + 4
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
        now = self.clock.monotonic()
        if self.meter.wait(now) > 0 or self._hold(now) > 0:
            return None  # (a ban, too, is the primary's to report)
        if self._hedges_out >= hedge_slots(self.ceiling) or self.quota.remaining == 0:
            return None
        rate = self.rate
        if rate is not None and self.meter.reserve(rate) > 0:
            return None  # (the slot stays reserved: a hedge is worth one slot of rate)
        ticket = self._issue()
        self._hedges_out += 1
        self._hedges.add(ticket.seq)
        return ticket
