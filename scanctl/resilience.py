"""Keeping failures from multiplying: a retry budget and a circuit breaker.

Retries help when failures are rare and independent; when the upstream is overloaded or down,
every retry is more load on something already failing (Google SRE book, "Handling Overload").
Two guards, shared by all workers:

- `RetryBudget`: retries may be at most `share` of the requests sent in the last `window`
  seconds, plus a small `reserve` per second so a short run can still retry (Finagle's
  RetryBudget). A retry over budget waits; it does not fail its symbol.
- `CircuitBreaker`: when most recent requests failed for want of an upstream (connection
  refused or dropped, timeouts, 5xx), stop sending, let one probe through every
  `probe_interval` seconds, close on the first probe that gets an answer, and give up once the
  upstream has been gone for `max_outage` seconds, or at once when it never answered at all in
  this run (a wrong address or a server that is not running is not an outage to wait out).

Both take `now` from the caller's clock, so tests need no sleeping.
"""

from __future__ import annotations

from collections import deque


class RetryBudget:
    """Retries limited to a share of recent requests."""

    def __init__(self, share: float = 0.1, window: float = 10.0, reserve: float = 10.0) -> None:
        self.share = share
        self.window = window
        self.reserve = reserve  # retries per second allowed whatever the traffic
        self._requests: deque[float] = deque()
        self._retries: deque[float] = deque()
        self.denied = 0

    def _trim(self, now: float) -> None:
        for times in (self._requests, self._retries):
            while times and times[0] <= now - self.window:
                times.popleft()

    def note_request(self, now: float) -> None:
        self._requests.append(now)
        self._trim(now)  # memory stays flat however long the run

    def allowance(self, now: float) -> float:
        """How many retries the last window allows in all."""
        self._trim(now)
        return self.share * len(self._requests) + self.reserve * self.window

    def try_spend(self, now: float, *, share_of_allowance: float = 1.0) -> bool:
        """Take one retry from the budget; False (and nothing taken) when it is spent.

        `share_of_allowance` below 1 keeps the rest for others: hedged copies take only from
        the first quarter, so they never starve the retries of requests that actually failed.
        """
        allowed = self.allowance(now) * share_of_allowance  # trims old entries first
        if len(self._retries) + 1 > allowed:
            self.denied += 1
            return False
        self._retries.append(now)
        return True


class CircuitBreaker:
    """Stops sending while the upstream is down; probes; gives up after `max_outage`."""

    def __init__(
        self,
        *,
        failure_share: float = 0.5,
        min_samples: int = 10,
        sample_size: int = 20,
        probe_interval: float = 1.0,
        max_outage: float = 60.0,
    ) -> None:
        self.failure_share = failure_share
        self.min_samples = min_samples
        self.probe_interval = probe_interval
        self.max_outage = max_outage
        self._recent: deque[bool] = deque(maxlen=sample_size)
        self.opened_at: float | None = None
        self._next_probe_at = 0.0
        self._probe_out = False
        self.times_opened = 0
        self.last_error: str | None = None
        self.ever_answered = False

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def record(
        self, now: float, *, unavailable: bool, answered: bool = True, error: str | None = None
    ) -> None:
        """One outcome. `unavailable`: it says the upstream is down; `answered`: HTTP came back."""
        self.ever_answered = self.ever_answered or answered
        if unavailable:
            self.last_error = error
        if self.opened_at is not None:
            if not unavailable:  # anything that got through means it is back
                self.opened_at = None
                self._recent.clear()
            return
        self._recent.append(unavailable)
        failures = sum(self._recent)
        if len(self._recent) >= self.min_samples and failures >= self.failure_share * len(
            self._recent
        ):
            self.opened_at = now
            self.times_opened += 1
            self._next_probe_at = now + self.probe_interval
            self._probe_out = False

    def wait_time(self, now: float) -> float:
        """Seconds until this caller may try to send (0 when closed or a probe is due)."""
        if self.opened_at is None:
            return 0.0
        if self._probe_out:
            return self.probe_interval
        return max(0.0, self._next_probe_at - now)

    def try_probe(self, now: float) -> bool:
        """While open: claim the one probe request allowed now."""
        if self.opened_at is None:
            return True
        if self._probe_out or now < self._next_probe_at:
            return False
        self._probe_out = True
        return True

    def probe_done(self, now: float) -> None:
        """The probe got its answer (recorded through `record`); schedule the next one."""
        self._probe_out = False
        self._next_probe_at = now + self.probe_interval

    def give_up_reason(self, now: float) -> str | None:
        """Why to stop sending for good, or None while it is worth waiting."""
        if self.opened_at is None:
            return None
        last = self.last_error or "no answer"
        if not self.ever_answered:
            return f"upstream unreachable ({last})"
        if now - self.opened_at >= self.max_outage:
            return f"upstream unavailable for {self.max_outage:g} s ({last})"
        return None
