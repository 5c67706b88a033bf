"""Finding the upstream's rate limit from its 429s when it gives no hint, and holding it.

The controller keeps a send rate (requests/s), or none while nothing has told us to slow down.
It is TCP congestion control applied to a rate, as in botocore's adaptive retry mode:

- **Cut on a 429**, multiplicatively (x0.7), but once per round trip: a 429 for a request that
  was sent before the last cut says nothing new about the new rate (the "in flight" answers of
  the old one), so it does not cut again.
- **Then measure**: a 429 means the limiter was empty when that request arrived. Every request
  sent between that one and the cut met an empty limiter too, so the ones it admitted came at
  exactly the limiter's refill rate: admitted / elapsed is a direct estimate of the limit. When
  their answers are in, the rate drops to just under that estimate if it is lower. This is what
  lets one 429 event take the rate from a wild overshoot to the limit, instead of a dozen cuts.
- **Probe upward gently** while the rate is what holds us back (growing a cap we do not use
  teaches nothing): a few percent per second, slower near the rate that last drew a 429,
  faster the longer the calm lasts (CUBIC's plateau-then-probe shape, without its constants).

Pure and clock-free: callers pass `now`, so tests drive it with plain numbers.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

BETA = 0.7  # multiplicative cut on a 429 (TCP Reno halves; CUBIC and botocore use 0.7)
MARGIN = 0.95  # run this far under a measured limit
PROBE_GAIN = 0.03  # growth per second while probing upward, relative
NEAR_UPPER_GAIN = 0.01  # growth per second close to the rate that last drew a 429
MIN_RATE = 0.1  # requests/s: the slowest we go, however many 429s
HISTORY_LIMIT = 100


@dataclass(frozen=True, slots=True)
class RateChange:
    """One entry of the rate history: when (seconds into the run), the new rate, and why."""

    at: float
    rate: float | None
    reason: str


class AdaptiveRate:
    """The adaptive send rate of one upstream (see the module docstring)."""

    def __init__(
        self,
        now: float,
        *,
        ceiling: float | None = None,
        learned: float | None = None,
        learned_upper: float | None = None,
    ) -> None:
        self.started = now
        self.ceiling = ceiling
        self.rate: float | None = learned
        # The lowest recent rate known to draw 429s: probing slows down as it gets close.
        self.upper = learned_upper
        self.last_cut_at = float("-inf")
        self._last_growth_at = now
        self._last_logged: float | None = learned
        self._sends: deque[float] = deque()
        # Answers since the last cut, by send time, for the measurement after it.
        self._answers: deque[tuple[float, bool]] = deque()
        self._saturated_from: float | None = None
        self._measure_pending = False
        self.cuts = 0
        self.history: list[RateChange] = []
        if learned is not None:
            self._log(now, "learned on an earlier run")

    @property
    def effective(self) -> float | None:
        """The rate to pace at: the adaptive one under the user's ceiling (None: no limit)."""
        if self.rate is None:
            return self.ceiling
        return self.rate if self.ceiling is None else min(self.rate, self.ceiling)

    def _log(self, now: float, reason: str) -> None:
        self._last_logged = self.rate
        rate = None if self.rate is None else round(self.rate, 2)
        self.history.append(RateChange(round(now - self.started, 3), rate, reason))
        del self.history[:-HISTORY_LIMIT]

    def send_rate(self, now: float, span: float = 1.0) -> float:
        """Requests per second sent over the last `span` seconds (or since the first send)."""
        while self._sends and self._sends[0] < now - 2.0:
            self._sends.popleft()
        recent = [t for t in self._sends if t >= now - span]
        if not recent:
            return 0.0
        elapsed = min(span, now - self.started)
        return len(recent) / max(elapsed, 1e-3)

    def on_send(self, now: float) -> None:
        self._sends.append(now)

    def on_admitted(self, sent_at: float, now: float, *, rate_bound: bool) -> None:
        """A request was admitted (any answer but 429). `rate_bound`: senders waited on the rate."""
        self._answers.append((sent_at, True))
        while self._answers and self._answers[0][0] < now - 5.0 and not self._measure_pending:
            self._answers.popleft()  # only answers near the next 429 matter; keep memory flat
        dt, self._last_growth_at = now - self._last_growth_at, now
        if self.rate is None or not rate_bound or self._measure_pending:
            return
        calm = now - self.last_cut_at
        gain = PROBE_GAIN * 2 ** min(4, max(0, int((calm - 5.0) // 5.0)))
        if self.upper is not None and self.rate >= self.upper * MARGIN and calm < 30.0:
            gain = NEAR_UPPER_GAIN
        self.rate *= 1.0 + gain * min(dt, 1.0)
        if self.ceiling is not None:
            self.rate = min(self.rate, self.ceiling * 1.5)  # no point growing far past --rate
        if self._last_logged is not None and self.rate >= self._last_logged * 1.1:
            self._log(now, "probing upward")

    def on_throttled(self, sent_at: float, now: float) -> bool:
        """A 429 for a request sent at `sent_at`; True when it cut the rate."""
        self._answers.append((sent_at, False))
        if sent_at < self.last_cut_at:
            return False  # sent at the old rate: already answered for by the last cut
        base = self.rate if self.rate is not None else self.send_rate(now)
        base = max(base, MIN_RATE)
        self.upper = base
        self.rate = max(MIN_RATE, base * BETA)
        self.last_cut_at = now
        self.cuts += 1
        self._saturated_from = sent_at
        self._measure_pending = True
        self._answers = deque(a for a in self._answers if a[0] >= sent_at)
        self._log(now, "429: cut")
        return True

    def measure_due(self, oldest_in_flight: float | None) -> bool:
        """True when every request sent before the last cut has been answered."""
        return self._measure_pending and (
            oldest_in_flight is None or oldest_in_flight >= self.last_cut_at
        )

    def measure(self, now: float) -> None:
        """Set the rate from what the limiter admitted while it was saturated (see above)."""
        self._measure_pending = False
        start, end = self._saturated_from, self.last_cut_at
        if start is None or end <= start or self.rate is None:
            return
        window = [ok for sent, ok in self._answers if start <= sent <= end]
        if len(window) < 4:
            return
        estimate = max(sum(window), 1) / (end - start)
        floor = (self.upper or self.rate) * 0.25
        if estimate * MARGIN < self.rate:
            self.rate = max(estimate * MARGIN, floor, MIN_RATE)
            self.upper = min(self.upper or estimate, estimate)
            self._log(now, "measured the limit")
