"""The line of symbols a scan's workers take from: new ones from the input, and the ones back in
line after a 429 or a failure, each due again at its own time.

A symbol waiting out a backoff holds no worker: its worker takes the next symbol meanwhile (no
batches, no barrier). Every worker shares one line without a lock, since tasks only switch at
awaits and nothing here awaits.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass

from scanctl.clock import Clock


@dataclass(slots=True)
class Pending:
    """A symbol that has not finished yet, and how far it got."""

    index: int
    symbol: str
    started: float | None = None
    attempts: int = 0
    retries: int = 0
    throttled: int = 0
    last_error: str | None = None
    needs_budget: bool = False  # its next try is a retry: it must draw on the budget first
    claimed: bool = False  # we hold its cache lease (or there is no cache)


class SymbolLine:
    """New symbols, read from `stream` one at a time as workers free up, and symbols due again."""

    def __init__(self, stream: Iterator[tuple[int, str]], clock: Clock) -> None:
        self._stream = stream
        self._clock = clock
        self._unfinished: dict[int, Pending] = {}  # taken and not finished, by input position
        # Symbols back in line, by when they may go again (index breaks ties: input order).
        self._later: list[tuple[float, int, Pending]] = []

    def take(self) -> Pending | None:
        """A symbol whose wait is over, else the next new one, else None (for now)."""
        later = self._later
        if later and later[0][0] <= self._clock.monotonic():
            return heapq.heappop(later)[2]
        for index, symbol in self._stream:
            pending = Pending(index, symbol)
            self._unfinished[index] = pending
            return pending
        return None

    def again(self, pending: Pending, delay: float) -> None:
        """Put a symbol back in line, to be taken again after `delay` seconds."""
        due = self._clock.monotonic() + max(0.0, delay)
        heapq.heappush(self._later, (due, pending.index, pending))

    def waiting_for(self) -> float | None:
        """Seconds until the next symbol back in line is due (0 when one is); None when none is
        waiting: the line is empty once `take` has nothing either."""
        if not self._later:
            return None
        return max(self._later[0][0] - self._clock.monotonic(), 0.0)

    def finished(self, index: int) -> None:
        """The symbol at this input position has its record."""
        self._unfinished.pop(index, None)

    def drain(self) -> list[Pending]:
        """Every symbol without a record, in input order, the ones not read yet included; the
        line is empty afterwards (the scan stopped: each gets a record saying why)."""
        left = [pending for _, pending in sorted(self._unfinished.items())]
        left += [Pending(index, symbol) for index, symbol in self._stream]
        self._unfinished.clear()
        self._later.clear()
        return left
