"""The pacer's meter when the send schedule is shared (`pacestore`): `Pacer` asks it, as it
asks `GcraMeter`, how long until the next slot at a rate, and it answers from the store.

Slots are reserved a few at a time (`BATCH_SPAN` seconds' worth at the rate in force: one at
50 requests/s, twenty at 2000), so one process at thousands of requests a second costs the store
a hundred transactions a second, not thousands; a slot not used within `STALE_SLOT` of its time
is dropped (using a pile of old slots at once would be a burst the schedule never allowed).

The pacer's own rate (its `AdaptiveRate`, fed by this process's answers alone) is this
process's share of the rate in force; what reaches the store is this process's *view* of the
rate for all (`_view`), and the rate in force is the mean of the live processes' views:

- a process that joins starts at its share of the rate in force, its view that rate;
- its rate going up (a hold, a probe) raises its view by the same factor;
- its rate going down (a cut on a 429, or a measurement of what the limiter admits, both made
  from its share of the answers) sets its view to that rate times the processes sharing now;
- a process that leaves takes its view along, and the rate in force stays: the others take
  its share of the schedule at once, without waiting for their estimators to find it.

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

from scanctl.clock import Clock
from scanctl.pacestore import Grant, PacingStore, PacingStoreError, member_id
from scanctl.pacing import GcraMeter

BATCH_SPAN = 0.01  # seconds of the schedule one reservation takes at most
MAX_BATCH = 64
MIN_VIEW = 0.1  # requests/s: the slowest a view goes (as `ratecontrol.MIN_RATE`)
STALE_SLOT = 0.05  # seconds past its time after which a reserved slot is dropped
HOLD_FRESH = 0.01  # seconds a store's word on a hold is taken as current before a send


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
        self._told: float | None = None  # this process's rate when its view was last set
        self.view: float | None = None  # its view of the rate for all processes together
        self._heard = float("-inf")  # (local monotonic) the store's last answer
        self._held_until = float("-inf")  # (local monotonic) the end of the scope's hold
        self._gate_until = float("-inf")  # (local monotonic) when another's gate opens

    @property
    def shared(self) -> bool:
        """Whether the schedule is still the store's (False once it failed)."""
        return self.store is not None

    def _view(self, rate: float | None) -> float | None:
        """This process's view of the rate for all, given its own rate `rate` now (see the
        module docstring), within `cap` and no lower than `MIN_VIEW`."""
        told, view = self._told, self.view
        if rate is None or rate == told:
            return view
        if told is None or view is None:
            view = rate * self.processes  # its first rate: its share, times those sharing
        elif rate > told:
            view *= rate / told
        else:
            view = rate * self.processes
        self._told = rate
        if self.cap is not None:
            view = min(view, self.cap)
        self.view = max(MIN_VIEW, view)
        return self.view

    def _call(self, rate: float | None, count: int) -> Grant | None:
        store = self.store
        if store is None:
            return None
        try:
            grant = store.reserve(self.scope, self.member, count, self._view(rate))
        except PacingStoreError as exc:
            self._give_up(exc)
            return None
        self.processes, self.shared_rate = max(1, grant.processes), grant.rate
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
        if store is not None:
            store.close()

    def beat(self, rate: float | None) -> None:
        """Say this process is alive at `rate` (the runner does, twice a second), so that it
        counts among the live processes and its rate among the rates in force."""
        self._call(rate, 0)

    def join(self, learned: float | None = None) -> float | None:
        """Register, and return this process's share of the rate in force among the processes
        already running: a process that joins starts there, with no slow start of its own.
        With none in force, a rate `learned` by an earlier run becomes this process's view
        (and so the rate in force) and is returned; else None."""
        grant = self._call(None, 0)
        if grant is None:
            return learned
        if grant.rate is None:
            if learned is not None:
                self._told = self.view = learned
                self._call(None, 0)
            return learned
        share = grant.rate / max(1, grant.processes)
        self._told, self.view = share, grant.rate
        self._call(None, 0)
        return share

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
