"""Time as an object, so pacing, retries and progress can be tested without sleeping.

`MonotonicClock` is the real thing. Tests pass a `FakeClock` whose `sleep` only moves its own
time forward (after yielding once, so other tasks get to run), which makes a retry test take
milliseconds, in the spirit of stamina's testing mode; concurrent sleeps on it add up, so tests of
many workers at once use `LoopClock` under trio's virtual-time `MockClock` instead.
"""

from __future__ import annotations

import time
from typing import Protocol

import anyio


class Clock(Protocol):
    """What the engine needs to know about time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps; for durations and deadlines."""
        ...

    def wall(self) -> float:
        """Seconds since the epoch; for HTTP dates and timestamps."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait this long (or, in a fake, pretend to)."""
        ...


class MonotonicClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that moves only when someone sleeps on it; for tests."""

    def __init__(self, start: float = 1000.0, wall_offset: float = 1_700_000_000.0) -> None:
        self.now = start
        self.wall_offset = wall_offset
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.wall_offset + self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds > 0:
            self.now += seconds
        await anyio.lowlevel.checkpoint()


class LoopClock:
    """Time as the running event loop sees it.

    Under trio's `MockClock(autojump_threshold=0)` this time is virtual: it jumps ahead whenever
    every task is waiting, so tests of many concurrent workers see exact timings without
    sleeping. Only usable inside the event loop. `wall_offset` makes the wall clock virtual too
    (that offset plus loop time), for tests of epoch and date headers in virtual time.
    """

    def __init__(self, wall_offset: float | None = None) -> None:
        self.wall_offset = wall_offset

    def monotonic(self) -> float:
        return anyio.current_time()

    def wall(self) -> float:
        if self.wall_offset is not None:
            return self.wall_offset + anyio.current_time()
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))
