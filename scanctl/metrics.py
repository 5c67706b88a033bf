"""Counting what happened, and the run summary built from it.

`RunMetrics` is one of a scan's observers (`engine.ScanObserver`): the engine tells it of records
and requests and never reads it back; the runner and the progress display read it. Its summary
(`outcome.Summary`) keeps the field names of the original scanner's, which users' scripts read,
and adds latency percentiles and request counts.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from scanctl.outcome import CacheFigures, LatencyFigures, Performance, Summary
from scanctl.records import ScanRecord


def percentile(sorted_values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100) by the nearest-rank method; None when there is no data."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def iso_time(epoch: float) -> str:
    """An ISO 8601 UTC timestamp with milliseconds."""
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


@dataclass(slots=True)
class RunMetrics:
    """Counters for one run. Request latencies are per HTTP request, not per symbol."""

    scan_type: str
    total: int
    successful: int = 0
    failed: int = 0
    cached: int = 0
    stale: int = 0
    resumed: int = 0  # ok records an earlier run left in the output (--resume): counted as done
    requests_sent: int = 0
    retries: int = 0
    throttled: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    failed_symbols: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    hedged: int = 0
    breaker_opened: int = 0
    # The pacing in force, for the progress display: requests/s (None: no limit) and in flight.
    current_rate: float | None = None
    in_flight: int = 0
    # Processes sharing the upstream's budget (`pacestore`): now, and the most at once.
    processes: int = 1
    processes_peak: int = 1
    rate_history: list[dict[str, Any]] = field(default_factory=list)
    # What the cache did (location, hits, misses...), when the run used one.
    cache: CacheFigures | None = None
    # Records whose answer changed (None: the run does not compare answers, --changes).
    changed: int | None = None

    @property
    def done(self) -> int:
        return self.successful + self.failed

    def observe_request(self, latency_ms: float) -> None:
        """One HTTP request got an answer or an error after this long."""
        self.requests_sent += 1
        self.latencies_ms.append(latency_ms)

    def observe_throttled(self) -> None:
        """The upstream answered 429 (the symbol goes back in line)."""
        self.throttled += 1

    def observe_retry(self) -> None:
        """A retry was granted from the budget."""
        self.retries += 1

    def observe_hedge(self) -> None:
        """A second copy of a slow request went out (--hedge)."""
        self.hedged += 1

    def pace(self, rate: float | None, in_flight: int, processes: int = 1) -> None:
        """The rate in force, requests in flight, and the processes sharing the budget."""
        self.current_rate = rate
        self.in_flight = in_flight
        self.processes = processes
        self.processes_peak = max(self.processes_peak, processes)

    def resume(self, done: int) -> None:
        """Count `done` ok records an earlier run left in the output (--resume)."""
        self.resumed += done
        self.successful += done

    def observe_record(self, record: ScanRecord) -> None:
        """One symbol is finished."""
        if record.cached:
            self.cached += 1
        if record.stale:
            self.stale += 1
        if self.changed is not None and record.change is not None and record.change.changed:
            self.changed += 1
        if record.ok:
            self.successful += 1
        else:
            self.failed += 1
            self.failed_symbols.append(record.symbol)
            self.errors[record.error_kind or "Unknown error"] += 1

    def summary(
        self,
        *,
        started_wall: float,
        finished_wall: float,
        elapsed: float,
        final_rate_limit: float | None,
        interrupted: bool,
        stopped_reason: str | None = None,
    ) -> Summary:
        """The run summary (everything of the json output except `results`)."""
        scanned = self.done
        lat = sorted(self.latencies_ms)

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value, 1)

        performance = Performance(
            total_time_seconds=round(elapsed, 3),
            scans_per_second=round(scanned / elapsed, 2) if elapsed > 0 else 0.0,
            avg_time_per_coin=round(elapsed / scanned, 4) if scanned else 0.0,
            # There are no batches any more: the run is one continuous stream.
            batches_processed=1 if scanned else 0,
            final_rate_limit=final_rate_limit,
            latency_ms=LatencyFigures(
                p50=ms(percentile(lat, 50)),
                p90=ms(percentile(lat, 90)),
                p99=ms(percentile(lat, 99)),
                max=ms(lat[-1] if lat else None),
                mean=ms(sum(lat) / len(lat) if lat else None),
            ),
            processes_sharing=self.processes_peak,
        )
        return Summary(
            scan_type=self.scan_type,
            total_scanned=scanned,
            successful=self.successful,
            failed=self.failed,
            success_rate=round(100.0 * self.successful / scanned, 2) if scanned else 0.0,
            errors=dict(self.errors.most_common()),
            failed_symbols=list(self.failed_symbols),
            performance=performance,
            requests_sent=self.requests_sent,
            retries=self.retries,
            throttled=self.throttled,
            hedged=self.hedged,
            breaker_opened=self.breaker_opened,
            rate_history=list(self.rate_history),
            requested=self.total,
            not_scanned=self.total - scanned,
            cached=self.cached,
            stale=self.stale,
            resumed=self.resumed,
            cache=self.cache,
            interrupted=interrupted,
            stopped_reason=stopped_reason,
            started_at=iso_time(started_wall),
            finished_at=iso_time(finished_wall),
            changed=self.changed,
        )
