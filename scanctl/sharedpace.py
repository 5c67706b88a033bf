"""The pacer's meter when the send schedule is shared (`pacestore`): `Pacer` asks it, as it
asks `GcraMeter`, how long until the next slot at a rate, and it answers from the store.

Slots are reserved a few at a time (`BATCH_SPAN` seconds' worth at the rate in force: one at
50 requests/s, twenty at 2000), so one process at thousands of requests a second costs the store
a hundred transactions a second, not thousands; a slot not used within `STALE_SLOT` of its time
is dropped (using a pile of old slots at once would be a burst the schedule never allowed).

One process decides the rate for all: the *leader* (the store's choice: the live member that
joined first). Its `AdaptiveRate` runs as a lone process's does, on its own answers; since it
takes an even share of the one schedule, its rate is its share, and what reaches the store is
its view of the rate for all, that share times the processes sharing (`_scale`). The others
*follow* (`following`): their rate is their share of the rate in force, whatever their own
answers say, and their view is that rate, so that when the leader leaves or dies the rate in
force stays where it was and the next leader, the oldest of them, takes over from it. One
estimator for all, rather than one per process each finding a share: estimators that each
cut and probed on their own drifted apart (views of 17 and 138 requests/s in one scope), and
the rate in force jumped whenever one of them left.

- a process that joins starts at its share of the rate in force, as a follower;
- while the leader is in slow start, with no rate yet (`discovering`), the others send nothing:
  one slow start finds the limit as fast as four, and four at once overshoot it four times;
- when the processes sharing change, the leader's own rate is rescaled to its new share
  (`rescale`), so its view, the rate for all, stays;
- a process that leaves or dies is gone from the count within `pacestore.MEMBER_TTL`, and the
  others take its share of the schedule at once (they reserve slots as fast as they need);
- the 429s the others draw reach the leader (`note_refused`, `refused_elsewhere`): its own
  answers are a sample of a quarter of them with four processes, and an estimator that hears
  of a quarter of the 429s stays over the limit four times as long;
- every process's admitted answers reach every other (`note_admitted`, `admitted_elsewhere`):
  what the upstream admitted over the run is what a pause resumes at, and the rate's floor,
  and one process's own answers say little of it when it did not send its share (the leader
  sent alone while the others waited for its slow start; a leader that finished within a
  window's allowance left the next one a run in which it had been admitted almost nothing).

A 418 ban told to any process holds the whole scope (`shut`, the store's `hold`): the upstream
bans the key or the address, not the process, so every process sharing it stops as if told
itself (`pacing.UpstreamBanned`), rather than send into the ban. A process hears of a ban with
every round trip to the store, and asks again before a send when its last word from the store
is older than `HOLD_FRESH` (a process that slept towards a slot reserved before the ban must not
send in it).

A 429's `Retry-After` told to any process closes the scope's gate for the others too
(`close_gate`): they wait until it opens (`gate_wait`), while the process told keeps its own
`RetryAfterGate`. Only a gate obeyed as the hint says is shared (`RetryAfterGate.obeyed`: a
deliberate wait, an exact hint): one the process checks first is its own, as a second's gate
for a bucket that refills in a fiftieth of one would cost every process that second.

A store that fails (unreachable from the start, or gone mid-run) costs one warning: from then on
this process paces itself with a `GcraMeter`, as `--pacing-store local` does.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from scanctl.clock import Clock
from scanctl.pacestore import Grant, PacingStore, PacingStoreError, member_id
from scanctl.pacing import Following, GcraMeter

BATCH_SPAN = 0.01  # seconds of the schedule one reservation takes at most
MAX_BATCH = 64
MIN_VIEW = 0.1  # requests/s: the slowest a view goes (as `ratecontrol.MIN_RATE`)
STALE_SLOT = 0.05  # seconds past its time after which a reserved slot is dropped
HOLD_FRESH = 0.01  # seconds a store's word on a hold is taken as current before a send


@dataclass(slots=True)
class _Tally:
    """Answers of one kind the processes in a scope report to each other through the store:
    this process's not told yet (`own`), and the others' not taken in yet (`elsewhere`, from the
    scope's running count, `seen` as last heard)."""

    own: int = 0
    seen: int | None = None
    elsewhere: int = 0

    def heard(self, total: int, told: int, *, keep: bool) -> None:
        """The store's count is `total`, `told` of them this process's just now; `keep`: take
        the others' in (else they are only seen, as 429s by a process that does not lead)."""
        self.own -= told
        if keep and self.seen is not None:
            self.elsewhere += max(0, total - self.seen - told)
        self.seen = total

    def take(self) -> int:
        taken, self.elsewhere = self.elsewhere, 0
        return taken


class SharedMeter:
    """A meter (`delay`, `reserve`, `grant`) over a shared `PacingStore` scope."""

    def __init__(
        self,
        store: PacingStore,
        scope: str,
        clock: Clock,
        *,
        warn: Callable[[str], None],
        member: str | None = None,
        cap: float | None = None,
    ) -> None:
        """`cap`: the most requests/s for all processes together (`--rate`)."""
        self.store: PacingStore | None = store
        self.scope = scope
        self.clock = clock
        self.member = member or member_id()
        self._warn = warn
        self.local = GcraMeter(clock)  # after a failure of the store
        self._credit = 0
        self._slots: deque[float] = deque()
        self.processes = 1  # live members sharing the budget, this one included
        self.shared_rate: float | None = None  # the rate in force for all of them
        self.reservations = 0  # round trips to the store that reserved slots
        self.cap = cap
        self.view: float | None = None  # its view of the rate for all processes together
        self.leads = True  # this process decides the rate (the leader, or alone)
        self.discovering = False  # it is in slow start with no rate (told by its pacer)
        self._leader_discovering = False  # (a follower's) the leader is
        self._scale = 1  # the processes sharing when its own rate was last rescaled
        self._rate: float | None = None  # its own rate, as its pacer last told
        self._refused = _Tally()  # 429s: a follower's told, the others' taken in by the leader
        self._admitted = _Tally()  # admitted answers: every process's told and taken in
        self._heard = float("-inf")  # (local monotonic) the store's last answer
        self._held_until = float("-inf")  # (local monotonic) the end of the scope's hold
        self._gate_until = float("-inf")  # (local monotonic) when another's gate opens

    @property
    def shared(self) -> bool:
        """Whether the schedule is still the store's (False once it failed)."""
        return self.store is not None

    def _view(self, rate: float | None) -> float | None:
        """This process's view of the rate for all, given its own rate `rate` now (None: no
        news): a leader's share times the processes it is a share of; a follower's, the rate
        in force it follows (with none in force yet, its own, as a leader's). Within `cap`, no
        lower than `MIN_VIEW`."""
        own = rate if rate is not None else self._rate
        if not self.leads and self.shared_rate is not None:
            view = self.shared_rate
        elif own is not None:  # (a follower with a rate of its own, --rate, and none in force)
            view = own * self._scale
        else:
            return self.view
        if view is not None:
            if self.cap is not None:
                view = min(view, self.cap)
            view = max(MIN_VIEW, view)
        self.view = view
        return view

    def _call(self, rate: float | None, count: int) -> Grant | None:
        store = self.store
        if store is None:
            return None
        try:
            view, told, heard = self._view(rate), self._refused.own, self._admitted.own
            finding = self.discovering
            grant = store.reserve(self.scope, self.member, count, view, finding, told, heard)
        except PacingStoreError as exc:
            self._give_up(exc)
            return None
        self._refused.heard(grant.refused, told, keep=grant.leads)
        self._admitted.heard(grant.admitted, heard, keep=True)
        self.processes, self.shared_rate = max(1, grant.processes), grant.rate
        self.leads, self._leader_discovering = grant.leads, grant.discovering
        self._heard = now = self.clock.monotonic()
        if grant.hold:  # (a hold never shortens)
            self._held_until = max(self._held_until, now + grant.hold)
        self._gate_until = now + grant.gate if grant.gate else float("-inf")
        return grant

    def shut(self, seconds: float) -> None:
        """Stop every process in the scope for `seconds` from now (a ban): see `pacing.Pacer`."""
        now = self.clock.monotonic()
        self._held_until = max(self._held_until, now + seconds)
        store = self.store
        if store is None:
            return
        try:
            store.hold(self.scope, seconds)
        except PacingStoreError as exc:
            self._give_up(exc)

    def wait(self, now: float) -> float:
        """Seconds until the scope's hold ends (0: not held), asking the store again when its
        last word is older than `HOLD_FRESH`."""
        if self.store is not None and now - self._heard > HOLD_FRESH:
            self._call(None, 0)
        return max(0.0, self._held_until - self.clock.monotonic())

    def close_gate(self, seconds: float) -> None:
        """A `Retry-After` told to this process, as its gate decided: the others wait too."""
        store = self.store
        if store is None:
            return
        try:
            store.close_gate(self.scope, self.member, seconds)
        except PacingStoreError as exc:
            self._give_up(exc)

    def gate_wait(self, now: float) -> float:
        """Seconds until a gate another process closed opens (as of `wait`'s last word)."""
        if self.store is None:
            return 0.0
        # (not `now`: the store may have answered since, and a gate is 0 s, not 0.3 ms)
        return max(0.0, self._gate_until - self.clock.monotonic())

    def _give_up(self, exc: Exception) -> None:
        self._warn(f"{exc}; pacing this process alone")
        store, self.store = self.store, None
        self._slots.clear()
        self.processes = 1
        self.leads = True
        if store is not None:
            store.close()

    def beat(self, rate: float | None) -> None:
        """Say this process is alive at `rate` (the runner does, twice a second), so that it
        counts among the live processes and its rate among the rates in force."""
        self._call(rate, 0)

    def join(self, learned: float | None = None, *, discover: bool = False) -> float | None:
        """Register, and return the rate this process starts at: its share of the rate in
        force among the processes already running (no slow start of its own). With none in
        force, a rate `learned` by an earlier run (for all processes) becomes this process's
        view, and so the rate in force, and its share is returned; else None, and `discover`
        says it will look for the rate in slow start (the others wait for it when it leads)."""
        self.discovering = discover and learned is None
        grant = self._call(None, 0)
        if grant is None:
            return learned
        rate = grant.rate if grant.rate is not None else learned
        if rate is None:
            return None
        self.discovering = False
        # (its share of those it knows of now: one that joined meanwhile is a rescale later,
        # not a smaller share with the old count, which would lower the rate for all)
        self._scale = self.processes
        self.view = min(rate, self.cap) if self.cap is not None else rate
        self._call(None, 0)
        return rate / self._scale

    def following(self, rate: float | None, *, discovering: bool) -> Following | None:
        """What this process paces at when it does not lead (None: it leads, or paces alone).
        `rate`: its own rate now, and `discovering`: it is in slow start looking for one (what
        the others wait on), both told to the store with the next word to it, together: a
        leader that just found the rate must not look, for a moment, as if it had found none."""
        self.discovering = discovering
        self._rate = rate
        if self.store is None or self.leads:
            return None
        rate = self.shared_rate
        share = None if rate is None else rate / self.processes
        self._scale = self.processes  # (its rate is a share of them: see `rescale`)
        return Following(share, waiting=self._leader_discovering)

    def note_refused(self) -> None:
        """A 429 this process drew while it follows: the leader's estimator takes it in."""
        self._refused.own += 1

    def refused_elsewhere(self) -> int:
        """(The leader) 429s the processes that follow drew since it last asked."""
        return self._refused.take()

    def note_admitted(self) -> None:
        """An answer this process was admitted: the others count it."""
        self._admitted.own += 1

    def admitted_elsewhere(self) -> int:
        """Answers the other processes were admitted since this one last asked."""
        return self._admitted.take()

    def rescale(self) -> float:
        """By how much a leader's own rate must change to stay its share of the same rate for
        all, since the processes sharing changed (1.0: no change); then its share is of them."""
        if self.store is None or self.processes == self._scale:
            return 1.0
        factor, self._scale = self._scale / self.processes, self.processes
        return factor

    def grant(self, sends: int) -> None:
        """Let `sends` more requests go at once, beyond the schedule."""
        self._credit += max(0, sends)

    def _next(self, rate: float) -> float | None:
        """The local time of the next reserved slot (reserving a batch when none is left), or
        None once the store has failed."""
        now = self.clock.monotonic()
        slots = self._slots
        while slots and slots[0] < now - STALE_SLOT:
            slots.popleft()
        if not slots:
            count = max(1, min(MAX_BATCH, math.floor(rate * BATCH_SPAN)))
            grant = self._call(rate, count)
            if grant is None:
                return None
            self.reservations += 1
            start = now + grant.wait
            slots.extend(start + i * grant.interval for i in range(grant.count))
            if not slots:  # (no member has a rate: cannot happen while we report one)
                slots.append(now)
        return slots[0]

    def delay(self, rate: float) -> float:
        """How long the next slot is from now (it stays this process's)."""
        if self._credit:
            return 0.0
        slot = self._next(rate)
        if slot is None:
            return self.local.delay(rate)
        return max(0.0, slot - self.clock.monotonic())

    def reserve(self, rate: float) -> float:
        """Take the next slot; return how long to wait before using it."""
        if self._credit:
            self._credit -= 1
            return 0.0
        slot = self._next(rate)
        if slot is None:
            return self.local.reserve(rate)
        self._slots.popleft()
        return max(0.0, slot - self.clock.monotonic())

    def close(self) -> None:
        """Leave the scope (the others take this process's share at once) and close."""
        store, self.store = self.store, None
        if store is None:
            return
        try:
            store.leave(self.scope, self.member)
        except PacingStoreError:
            pass  # (its row expires by itself within MEMBER_TTL)
        finally:
            store.close()
