"""How a run ended, as types: why it stopped, its summary, and the exit code they give.

The summary's JSON is a published format (README, "Output"): users' scripts read the original
scanner's field names in its order, so `Summary` declares its fields in exactly that order and
`to_dict` is the one place that turns it into JSON. Attributes are named as the JSON keys
(`summary.successful`), so Python callers and `jq` users read the same names.

The exit code is a pure function of why the run stopped and what it counted (`exit_code`), so
the table in the README and the code can be checked against each other in one test.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum
from typing import Any

from scanctl.errors import ExitCode


class StopReason(Enum):
    """Why a run ended before every symbol was tried (None when it simply finished)."""

    INTERRUPTED = "interrupted"  # SIGINT (Ctrl-C) came first
    TERMINATED = "terminated"  # SIGTERM came first (cron, systemd, `timeout`)
    REFUSED = "refused"  # the upstream answered 401, 403 or 418
    UPSTREAM_DOWN = "upstream down"  # down past --max-outage, or never reachable
    DEADLINE = "deadline"  # --deadline passed


# The error kind (the summary's `errors` key) of the symbols a stop left without an answer.
# Published in the JSON: scripts count them by these names.
UNFINISHED_KIND = {
    StopReason.REFUSED: "Not scanned (refused)",
    StopReason.UPSTREAM_DOWN: "Not scanned (upstream down)",
    StopReason.DEADLINE: "Deadline passed",
}


def exit_code(stop: StopReason | None, *, scanned: int, successful: int, failed: int) -> ExitCode:
    """The exit code of a run that stopped for `stop` (None: it finished) with these counts.

    README, "Exit codes": a signal decides first, then a refusing or vanished upstream, then
    whether anything succeeded; a deadline is a partial run like any other."""
    if stop is StopReason.INTERRUPTED:
        return ExitCode.INTERRUPTED
    if stop is StopReason.TERMINATED:
        return ExitCode.TERMINATED
    if stop in (StopReason.REFUSED, StopReason.UPSTREAM_DOWN):
        return ExitCode.UPSTREAM
    if successful == 0 and scanned > 0:
        return ExitCode.UPSTREAM
    if failed:
        return ExitCode.PARTIAL
    return ExitCode.OK


@dataclass(frozen=True, slots=True)
class LatencyFigures:
    """Per-request latency in milliseconds (nearest rank); None when no request was sent."""

    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None
    mean: float | None


@dataclass(frozen=True, slots=True)
class Performance:
    """The original scanner's `performance` block; two fields keep a new meaning (README)."""

    total_time_seconds: float
    scans_per_second: float
    avg_time_per_coin: float
    batches_processed: int
    final_rate_limit: float | None
    latency_ms: LatencyFigures
    # The most scanctl processes that shared this upstream's budget at once (1: alone).
    processes_sharing: int = 1


@dataclass(frozen=True, slots=True)
class CacheFigures:
    """What the cache did in a run."""

    backend: str
    location: str
    hits: int
    misses: int
    refreshed_early: int
    stale_served: int
    waited_for_other_flight: int
    ttl: float | None
    usable: bool


@dataclass(frozen=True, slots=True)
class Summary:
    """The run summary: the json output without `results`, and the --metrics file.

    Field order is the JSON's order. `changed` appears in the JSON only when the run compared
    answers (--changes); every other field is always there.
    """

    scan_type: str
    total_scanned: int
    successful: int
    failed: int
    success_rate: float
    errors: dict[str, int]
    failed_symbols: list[str]
    performance: Performance
    requests_sent: int
    retries: int
    throttled: int
    hedged: int
    breaker_opened: int
    rate_history: list[dict[str, Any]]
    requested: int
    not_scanned: int
    cached: int
    stale: int
    resumed: int
    cache: CacheFigures | None
    interrupted: bool
    stopped_reason: str | None
    started_at: str
    finished_at: str
    changed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, keys in the published order."""
        document: dict[str, Any] = _as_json(self)
        if self.changed is None:
            del document["changed"]
        return document


def _as_json(value: Any) -> Any:
    """A summary part as JSON values: dataclasses become objects in field order; lists and
    dicts are copied, so a caller changing the result never changes the summary."""
    if isinstance(value, LatencyFigures | Performance | CacheFigures | Summary):
        return {f.name: _as_json(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {key: _as_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_json(item) for item in value]
    return value
