"""--hedge: a request slower than the p95 so far gets a second copy; the first answer wins.

A copy is sent only when it costs the upstream little: the pacer must have a slot free at once
(copies never wait for one) and the retry budget room in its first quarter (copies never crowd
out retries). The copy that loses is cancelled, its ticket given back unused.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio
import anyio.abc

from scanctl.clock import Clock
from scanctl.metrics import percentile
from scanctl.pacing import Feedback, Pacer, Ticket
from scanctl.resilience import RetryBudget

HEDGE_MIN_SAMPLES = 20  # latencies seen before any copy is sent

Answer = TypeVar("Answer")


class RecentLatency:
    """The p95 of recent request latencies, recomputed now and then (not per request)."""

    def __init__(self, size: int = 512, every: int = 32) -> None:
        self.samples: deque[float] = deque(maxlen=size)
        self.every = every
        self.added = 0  # all samples ever: the deque's length stops growing at `size`
        self.p95: float | None = None

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)
        self.added += 1
        count = self.added
        first = self.p95 is None and count == HEDGE_MIN_SAMPLES
        if first or (count >= HEDGE_MIN_SAMPLES and count % self.every == 0):
            self.p95 = percentile(sorted(self.samples), 95)


class Hedger(Generic[Answer]):
    """Races a copy of a slow request against it. `feedback` says what an answer tells the
    pacer (the copy's ticket is released with it); `stopping` is true once the scan winds down,
    when no copy goes out; `sent_copy` is told of each copy sent (the run's metrics)."""

    def __init__(
        self,
        pacer: Pacer,
        budget: RetryBudget,
        clock: Clock,
        *,
        feedback: Callable[[Answer], Feedback],
        stopping: Callable[[], bool],
        sent_copy: Callable[[], None],
    ) -> None:
        self.latency = RecentLatency()
        self._pacer = pacer
        self._budget = budget
        self._clock = clock
        self._feedback = feedback
        self._stopping = stopping
        self._sent_copy = sent_copy

    async def send(self, send: Callable[[], Awaitable[Answer]]) -> Answer:
        """The first answer of `send()` and, once it has taken longer than the p95, a copy."""
        threshold = self.latency.p95
        if threshold is None:
            return await send()
        answers: list[Answer] = []

        async def attempt(delay: float, group: anyio.abc.TaskGroup) -> None:
            ticket = await self._copy_ticket(delay) if delay > 0 else None
            if delay > 0 and ticket is None:
                return
            try:
                answer = await send()
            except anyio.get_cancelled_exc_class():
                if ticket is not None:
                    self._pacer.abandon(ticket)
                raise
            if ticket is not None:
                self._pacer.release(ticket, self._feedback(answer))
            answers.append(answer)
            group.cancel_scope.cancel()

        async with anyio.create_task_group() as group:
            group.start_soon(attempt, 0.0, group)
            group.start_soon(attempt, threshold, group)
        return answers[0]

    async def _copy_ticket(self, delay: float) -> Ticket | None:
        """After `delay`, a ticket for a copy, if the pacer and the budget have room at once."""
        await self._clock.sleep(delay)
        if self._stopping():
            return None  # no copies once we are winding down
        ticket = self._pacer.try_acquire_now()
        if ticket is None:
            return None
        if not self._budget.try_spend(self._clock.monotonic(), share_of_allowance=0.25):
            self._pacer.abandon(ticket)
            return None
        self._sent_copy()
        return ticket
