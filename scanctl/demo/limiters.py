"""The rate limiters the simulated upstream can enforce, as pure objects over an injected time.

Real APIs limit in different ways, and a client tuned to one can misbehave against another, so
the simulated upstream can act as any of the four common kinds:

- `TokenBucket`: `burst` tokens, refilled at `rate` per second; a request takes one token
  (AWS API Gateway, Stripe). Bursty at the start, then smooth.
- `LeakyBucket`: nginx's `limit_req` with `burst` (no `nodelay`): requests over the rate are
  *queued* and served 1/rate apart, up to `burst` waiting; beyond that, rejected. Pushing harder
  buys latency, not throughput, which is what a client's concurrency window must notice.
- `FixedWindow`: at most `limit` requests per window of `window` seconds aligned to the clock
  (GitHub's hourly quota, many Redis INCR+EXPIRE limiters). Allows 2x the limit across a boundary.
- `SlidingWindow`: at most `limit` requests in any `window` seconds (a sliding log, as in
  Redis sorted-set limiters). The strictest of the four.

Many gateways and reverse proxies also count the requests they *reject* (`count_rejected`): a
client that keeps sending into a full window keeps it full, and a token bucket goes into debt.
There, a 429 says nothing about the rate of the moment, only that the limiter remembers.

Every limiter answers `admit(now)` with a `Decision`: allowed or not, how long to wait (for
Retry-After), and the quota figures hint headers report. None of them sleeps: the server does
(the leaky bucket's `delay`), so these are testable with plain numbers.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Decision:
    """What a limiter says about one request."""

    allowed: bool
    # Seconds the server holds an admitted request before serving it (leaky bucket queue).
    delay: float = 0.0
    # Seconds until a rejected request would be admitted (Retry-After).
    retry_after: float = 0.0
    # Quota figures for hint headers: the limit per window, what remains, seconds to reset.
    limit: int = 0
    remaining: int = 0
    reset: float = 0.0
    window: float = 1.0


class Limiter(Protocol):
    def admit(self, now: float) -> Decision: ...


class Unlimited:
    """No limit at all."""

    def admit(self, now: float) -> Decision:
        return Decision(True)


class TokenBucket:
    """`burst` tokens, refilled continuously at `rate` per second."""

    def __init__(
        self, rate: float, burst: int, start: float = 0.0, *, count_rejected: bool = False
    ) -> None:
        self.rate = rate
        self.capacity = float(max(1, burst))
        self.tokens = self.capacity
        self.updated = start
        self.count_rejected = count_rejected

    def admit(self, now: float) -> Decision:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        limit = int(self.capacity)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return Decision(
                True,
                limit=limit,
                remaining=int(self.tokens),
                reset=(self.capacity - self.tokens) / self.rate,
                window=self.capacity / self.rate,
            )
        if self.count_rejected:  # a refused request costs a token too: debt, up to a bucket
            self.tokens = max(-self.capacity, self.tokens - 1.0)
        wait = (1.0 - self.tokens) / self.rate
        return Decision(
            False,
            retry_after=wait,
            limit=limit,
            remaining=0,
            reset=wait,
            window=self.capacity / self.rate,
        )


class LeakyBucket:
    """A queue drained at `rate` per second holding at most `burst` waiting requests (nginx)."""

    def __init__(
        self, rate: float, burst: int, start: float = 0.0, *, count_rejected: bool = False
    ) -> None:
        self.interval = 1.0 / rate
        self.burst = max(0, burst)
        # When the request admitted last will be served ("theoretical arrival time").
        self.next_free = start
        self.count_rejected = count_rejected

    def admit(self, now: float) -> Decision:
        serve_at = max(now, self.next_free)
        waiting = math.ceil(round((serve_at - now) / self.interval, 9))
        limit = self.burst + 1
        if waiting > self.burst:
            # Rejected: a slot frees when the queue has drained by one.
            if self.count_rejected:  # ...later, when refusals take a place in it too (at
                # most one more queue's worth: a client that keeps sending stays locked out)
                limit_at = now + (2 * self.burst + 1) * self.interval
                self.next_free = min(self.next_free + self.interval, limit_at)
                serve_at = max(now, self.next_free)
            wait = serve_at - now - self.burst * self.interval
            return Decision(
                False, retry_after=wait, limit=limit, remaining=0, reset=wait, window=self.interval
            )
        self.next_free = serve_at + self.interval
        return Decision(
            True,
            delay=serve_at - now,
            limit=limit,
            remaining=max(0, self.burst - waiting),
            reset=self.next_free - now,
            window=self.interval,
        )


class FixedWindow:
    """At most `limit` requests in each window of `window` seconds, counted from `start`."""

    def __init__(
        self, limit: int, window: float, start: float = 0.0, *, count_rejected: bool = False
    ) -> None:
        self.limit = max(1, limit)
        self.window = window
        self.start = start
        self.current = -1
        self.count = 0
        self.count_rejected = count_rejected  # (changes nothing a client sees: the window
        # is full either way until it turns over; kept for the same knob on every kind)

    def admit(self, now: float) -> Decision:
        index = math.floor((now - self.start) / self.window)
        if index != self.current:
            self.current, self.count = index, 0
        reset = self.start + (index + 1) * self.window - now
        if self.count < self.limit:
            self.count += 1
            return Decision(
                True,
                limit=self.limit,
                remaining=self.limit - self.count,
                reset=reset,
                window=self.window,
            )
        if self.count_rejected:
            self.count += 1
        return Decision(
            False, retry_after=reset, limit=self.limit, remaining=0, reset=reset, window=self.window
        )


class SlidingWindow:
    """At most `limit` requests in any `window` seconds (an exact sliding log)."""

    def __init__(self, limit: int, window: float, *, count_rejected: bool = False) -> None:
        self.limit = max(1, limit)
        self.window = window
        self.log: deque[float] = deque()
        # With `count_rejected`, refused requests are logged too and keep the window full.
        self.count_rejected = count_rejected

    def admit(self, now: float) -> Decision:
        while self.log and self.log[0] <= now - self.window:
            self.log.popleft()
        if len(self.log) < self.limit:
            self.log.append(now)
            reset = self.log[0] + self.window - now
            return Decision(
                True,
                limit=self.limit,
                remaining=self.limit - len(self.log),
                reset=reset,
                window=self.window,
            )
        wait = self.log[0] + self.window - now
        if self.count_rejected:
            self.log.append(now)
        return Decision(
            False, retry_after=wait, limit=self.limit, remaining=0, reset=wait, window=self.window
        )


LIMITER_KINDS = ("token-bucket", "leaky-bucket", "fixed-window", "sliding-window")


def make_limiter(
    kind: str,
    rate: float | None,
    *,
    burst: int,
    window: float,
    start: float = 0.0,
    count_rejected: bool = False,
) -> Limiter:
    """Build a limiter by name; `rate` in requests/s (None: unlimited).

    Window limiters allow `round(rate * window)` requests per `window` seconds.
    """
    if not rate:
        return Unlimited()
    counting = {"count_rejected": count_rejected}
    if kind == "token-bucket":
        return TokenBucket(rate, burst, start, **counting)
    if kind == "leaky-bucket":
        return LeakyBucket(rate, burst, start, **counting)
    per_window = max(1, round(rate * window))
    if kind == "fixed-window":
        return FixedWindow(per_window, window, start, **counting)
    if kind == "sliding-window":
        return SlidingWindow(per_window, window, **counting)
    raise ValueError(f"unknown limiter {kind!r}; allowed: {', '.join(LIMITER_KINDS)}")
