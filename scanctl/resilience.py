"""Keeping failures from multiplying: a retry budget and a circuit breaker.

Retries help when failures are rare and independent; when the upstream is overloaded or down,
every retry is more load on something already failing (Google SRE book, "Handling Overload").
Two guards, shared by all workers:

- `RetryBudget`: retries may be at most `share` of the requests sent in the last `window`
  seconds, plus a small `reserve` per second so a short run can still retry (Finagle's
  RetryBudget). A retry over budget waits; it does not fail its symbol.
- `CircuitBreaker`: when recent requests failed for want of an upstream (connection refused
  or dropped, timeouts, 5xx), stop sending and let one probe through at a time, spaced 1, 2,
  4, 4... seconds apart while the outage lasts; close on the first probe that gets an answer,
  and give up once the upstream has been gone for `max_outage` seconds, or at once when it
  never answered at all in this run (a wrong address or a server that is not running is not
  an outage to wait out).

Both take `now` from the caller's clock, so tests need no sleeping.
"""

from __future__ import annotations

from collections import deque

from scanctl.settings import MAX_OUTAGE, RETRY_BUDGET


class RetryBudget:
    """Retries limited to a share of recent requests."""

    def __init__(
        self, share: float = RETRY_BUDGET.built_in, window: float = 10.0, reserve: float = 10.0
    ) -> None:
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
    """Stops sending while the upstream is down; probes; gives up after `max_outage`.

    It opens on whichever comes first:

    - `unanswered_run` (5) outcomes in a row that got no HTTP answer at all (connection
      refused or dropped, timeouts): what a downed upstream sends; a flaky one drops 1-3 % of
      connections, independently, so five in a row comes less than once in 10**7 outcomes;
    - `failure_run` (8) failures in a row of any kind (5xx included): an upstream down behind
      a proxy answers 503 to everything; at a fault rate of 18 % eight in a row come about once
      in a million outcomes;
    - `failure_share` (60 %) or more of the last `sample_size` (20) outcomes failed, once
      `min_samples` (10) are in: a partial outage. The share is not 50 %: with the faults
      benchmark's mix (10 % 500s, 5 % 503s, 1 % drops, 2 % hangs; some 1200 outcomes a run)
      50 % opened the breaker in one run in eight to one in three (hangs answered or timed
      out), 60 % in fewer than one in 40, with the two runs above included.

    While open, probes go out one at a time, `probe_interval` (1 s) apart, then twice as far
    apart after each probe that failed, up to `max_probe_interval` (4 s): a 20 s outage costs
    the failures that opened the breaker plus six probes (at 1, 3, 7, 11, 15 and 19 s), not
    twenty. The cap is short on purpose: the upstream's return is noticed up to one interval
    late, so a cap of 4 s can add 4 s to the scan per outage, while raising it to 8 s would save
    one request every 8 s. The interval starts over at `probe_interval` when the breaker
    closes, and `max_outage` is kept to the second whatever the interval.
    """

    def __init__(
        self,
        *,
        failure_share: float = 0.6,
        min_samples: int = 10,
        sample_size: int = 20,
        unanswered_run: int = 5,
        failure_run: int = 8,
        probe_interval: float = 1.0,
        max_probe_interval: float = 4.0,
        max_outage: float = MAX_OUTAGE.built_in,
    ) -> None:
        self.failure_share = failure_share
        self.min_samples = min_samples
        self.unanswered_run = unanswered_run
        self.failure_run = failure_run
        self.probe_interval = probe_interval
        self.max_probe_interval = max(probe_interval, max_probe_interval)
        self.max_outage = max_outage
        self._recent: deque[bool] = deque(maxlen=sample_size)
        self._failures_in_a_row = 0
        self._unanswered_in_a_row = 0
        self.opened_at: float | None = None
        self._interval = probe_interval  # the current spacing of probes
        self._next_probe_at = 0.0
        self._probe_out = False
        self.times_opened = 0
        self.last_error: str | None = None
        self.ever_answered = False

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    @property
    def current_probe_interval(self) -> float:
        """The spacing of probes now: `probe_interval` while closed, longer as an outage lasts."""
        return self._interval

    def record(
        self, now: float, *, unavailable: bool, answered: bool = True, error: str | None = None
    ) -> None:
        """One outcome. `unavailable`: it says the upstream is down; `answered`: HTTP came back."""
        self.ever_answered = self.ever_answered or answered
        if unavailable:
            self.last_error = error
        if self.opened_at is not None:
            if not unavailable:  # anything that got through means it is back
                self._close()
            return
        self._recent.append(unavailable)
        self._failures_in_a_row = self._failures_in_a_row + 1 if unavailable else 0
        no_answer = unavailable and not answered
        self._unanswered_in_a_row = self._unanswered_in_a_row + 1 if no_answer else 0
        if (
            self._unanswered_in_a_row >= self.unanswered_run
            or self._failures_in_a_row >= self.failure_run
            or (
                len(self._recent) >= self.min_samples
                and sum(self._recent) >= self.failure_share * len(self._recent)
            )
        ):
            self._open(now)

    def _open(self, now: float) -> None:
        self.opened_at = now
        self.times_opened += 1
        self._interval = self.probe_interval
        self._next_probe_at = now + self._interval
        self._probe_out = False

    def _close(self) -> None:
        self.opened_at = None
        self._recent.clear()
        self._failures_in_a_row = self._unanswered_in_a_row = 0
        self._interval = self.probe_interval

    def wait_time(self, now: float) -> float:
        """Seconds until this caller may try to send (0 when closed or a probe is due).

        Never past the moment `give_up_reason` would say to stop (`max_outage`); while a probe
        is out, `probe_interval`: its answer may close the breaker long before the next probe.
        """
        if self.opened_at is None:
            return 0.0
        until = self.probe_interval if self._probe_out else self._next_probe_at - now
        return max(0.0, min(until, self.opened_at + self.max_outage - now))

    def try_probe(self, now: float) -> bool:
        """While open: claim the one probe request allowed now."""
        if self.opened_at is None:
            return True
        if self._probe_out or now < self._next_probe_at:
            return False
        self._probe_out = True
        return True

    def probe_done(self, now: float) -> None:
        """The probe got its answer (recorded through `record`); schedule the next one.

        Still open means the probe failed: the next one waits twice as long, up to the cap.
        """
        self._probe_out = False
        if self.opened_at is None:
            return
        if now >= self._next_probe_at:  # (a probe that was due; not a stray second call)
            self._interval = min(self.max_probe_interval, self._interval * 2.0)
        self._next_probe_at = now + self._interval

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
