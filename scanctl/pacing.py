"""How fast to send: a shared gate for Retry-After, and a GCRA rate ceiling.

All workers ask one `Pacer` before each request. Two things can hold them:

- the gate, closed by a `Retry-After` on any answer: the upstream told us when it will take
  requests again, and that holds for every request to that host, not just the one that got it;
- the rate ceiling (`--rate`), a Generic Cell Rate Algorithm meter (the token bucket written as
  one "theoretical arrival time"; see https://en.wikipedia.org/wiki/Generic_cell_rate_algorithm).
  Each caller reserves the next free slot and then sleeps until it, so callers are served in
  order and the rate holds however many workers wait.

Concurrency is capped elsewhere: by the number of workers, each with one request in flight.
"""

from __future__ import annotations

from scanctl.clock import Clock


class GcraMeter:
    """Hands out send times no closer than 1/rate apart, allowing `burst` back to back."""

    def __init__(self, rate: float, clock: Clock, burst: int = 1) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.interval = 1.0 / rate
        self.tolerance = (max(1, burst) - 1) * self.interval
        self.clock = clock
        self._tat = clock.monotonic()

    def reserve(self) -> float:
        """Reserve the next slot; return how long to wait before using it."""
        now = self.clock.monotonic()
        tat = max(self._tat, now)
        send_at = max(now, tat - self.tolerance)
        self._tat = tat + self.interval
        return send_at - now


class Pacer:
    """The single place workers wait before sending."""

    def __init__(self, clock: Clock, rate: float | None = None, burst: int = 1) -> None:
        self.clock = clock
        self.meter = GcraMeter(rate, clock, burst) if rate else None
        self.rate = rate
        self._gate_until = 0.0
        self.gate_closures = 0

    def close_gate(self, seconds: float) -> None:
        """Hold every request for `seconds` (from Retry-After), extending but never shortening."""
        until = self.clock.monotonic() + seconds
        if until > self._gate_until:
            self._gate_until = until
            self.gate_closures += 1

    def gate_wait(self) -> float:
        """Seconds until the gate opens (0 when open)."""
        return max(0.0, self._gate_until - self.clock.monotonic())

    async def acquire(self) -> None:
        """Wait until this caller may send one request."""
        while True:
            wait = self.gate_wait()
            if wait > 0:
                await self.clock.sleep(wait)
                continue
            if self.meter is not None:
                delay = self.meter.reserve()
                if delay > 0:
                    await self.clock.sleep(delay)
                    if self.gate_wait() > 0:  # closed while we slept: the slot is void
                        continue
            return
