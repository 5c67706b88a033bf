"""Typed outcomes: the exit code as a pure function of the stop and the counts, the summary's
JSON byte for byte what the dict-built summary was, and failures classified by type."""

from __future__ import annotations

import pytest

from scanctl import failures
from scanctl.changes import Change
from scanctl.errors import ExitCode
from scanctl.metrics import RunMetrics
from scanctl.outcome import CacheFigures, StopReason, Summary, exit_code
from scanctl.output import dumps
from scanctl.records import ScanRecord
from scanctl.retry import Outcome, classify_failure

S = StopReason


@pytest.mark.parametrize(
    ("stop", "scanned", "successful", "failed", "code"),
    [
        (None, 3, 3, 0, ExitCode.OK),
        (None, 0, 0, 0, ExitCode.OK),  # nothing asked for (an empty shard)
        (None, 3, 2, 1, ExitCode.PARTIAL),
        (None, 3, 0, 3, ExitCode.UPSTREAM),  # nothing succeeded
        (S.DEADLINE, 3, 2, 1, ExitCode.PARTIAL),
        (S.DEADLINE, 3, 0, 3, ExitCode.UPSTREAM),
        (S.REFUSED, 3, 2, 1, ExitCode.UPSTREAM),
        (S.UPSTREAM_DOWN, 3, 2, 1, ExitCode.UPSTREAM),
        (S.INTERRUPTED, 3, 3, 0, ExitCode.INTERRUPTED),
        (S.INTERRUPTED, 3, 0, 3, ExitCode.INTERRUPTED),  # a signal decides first
        (S.TERMINATED, 3, 2, 1, ExitCode.TERMINATED),
        (S.TERMINATED, 0, 0, 0, ExitCode.TERMINATED),
    ],
)
def test_exit_code_follows_the_readme_table(
    stop: StopReason | None, scanned: int, successful: int, failed: int, code: ExitCode
) -> None:
    assert exit_code(stop, scanned=scanned, successful=successful, failed=failed) is code


def build(*, changes: bool) -> Summary:
    """A run that met most of what a summary can say."""
    metrics = RunMetrics("mss", total=5)
    metrics.resume(1)
    if changes:
        metrics.changed = 0
    change = Change(True, ("a",)) if changes else None
    for record in [
        ScanRecord("BTC", "mss", True, 200, {}, None, 1, 1.0, change=change),
        ScanRecord("ETH", "mss", True, 200, {}, None, 0, 0.0, cached=True, stale=True),
        ScanRecord("ZZX", "mss", False, 404, None, "HTTP 404: x", 1, 1.0, error_kind="HTTP 404"),
    ]:
        metrics.observe_record(record)
    for ms in (151.04, 120.5, 290.33):
        metrics.observe_request(ms)
    metrics.throttled, metrics.retries, metrics.hedged, metrics.breaker_opened = 4, 2, 1, 1
    metrics.rate_history = [{"at": 0.236, "rate": 47.55, "reason": "429: cut"}]
    metrics.cache = CacheFigures("sqlite", "/tmp/ü/c.sqlite3", 1, 2, 0, 1, 0, 600.0, True)
    return metrics.summary(
        started_wall=1795982711.835,
        finished_wall=1795982715.245,
        elapsed=3.41,
        final_rate_limit=38.2,
        interrupted=False,
        stopped_reason="deadline of 3 s passed",
    )


# Written by the summary of main before it was typed (a dict built in metrics.py), from the
# same run as `build`: the JSON must not change by a byte (except by adding, as the output
# contract allows: `processes_sharing`, issue 14).
BEFORE = (
    '{"scan_type": "mss", "total_scanned": 4, "successful": 3, "failed": 1'
    ', "success_rate": 75.0, "errors": {"HTTP 404": 1}, "failed_symbols": ["ZZX"]'
    ', "performance": {"total_time_seconds": 3.41, "scans_per_second": 1.17'
    ', "avg_time_per_coin": 0.8525, "batches_processed": 1, "final_rate_limit": 38.2'
    ', "latency_ms": {"p50": 151.0, "p90": 290.3, "p99": 290.3, "max": 290.3, "mean": 187.3}'
    ', "processes_sharing": 1}'
    ', "requests_sent": 3, "retries": 2, "throttled": 4, "hedged": 1, "breaker_opened": 1'
    ', "rate_history": [{"at": 0.236, "rate": 47.55, "reason": "429: cut"}], "requested": 5'
    ', "not_scanned": 1, "cached": 1, "stale": 1, "resumed": 1, "cache": {"backend": "sqlite"'
    ', "location": "/tmp/ü/c.sqlite3", "hits": 1, "misses": 2, "refreshed_early": 0'
    ', "stale_served": 1, "waited_for_other_flight": 0, "ttl": 600.0, "usable": true}'
    ', "interrupted": false, "stopped_reason": "deadline of 3 s passed"'
    ', "started_at": "2026-11-29T20:05:11.835Z", "finished_at": "2026-11-29T20:05:15.245Z"}'
)
BEFORE_WITH_CHANGES = BEFORE.removesuffix("}") + ', "changed": 1}'  # the same run with --changes


@pytest.mark.parametrize(("changes", "expected"), [(False, BEFORE), (True, BEFORE_WITH_CHANGES)])
def test_the_json_is_byte_for_byte_what_it_was(changes: bool, expected: str) -> None:
    assert dumps(build(changes=changes).to_dict()) == expected


def test_attributes_are_named_as_the_json_keys() -> None:
    summary = build(changes=True)
    document = summary.to_dict()
    assert (summary.successful, summary.failed, summary.changed) == (3, 1, 1)
    assert summary.performance.latency_ms.p50 == document["performance"]["latency_ms"]["p50"]
    assert summary.cache is not None and summary.cache.location == document["cache"]["location"]


def test_the_json_form_is_a_copy() -> None:
    summary = build(changes=False)
    document = summary.to_dict()
    document["errors"]["HTTP 404"] = 99
    document["rate_history"][0]["rate"] = 0
    assert summary.errors == {"HTTP 404": 1} and summary.rate_history[0]["rate"] == 47.55


@pytest.mark.parametrize(
    ("failure", "outcome", "message"),
    [
        (failures.RequestTimeout("read timed out"), Outcome.RETRYABLE, "Request timeout"),
        (failures.ConnectionRefused("[Errno 111]"), Outcome.RETRYABLE, "Connection refused"),
        (
            failures.ConnectFailed("Name or service not known"),
            Outcome.RETRYABLE,
            "Connection error: Name or service not known",
        ),
        (
            failures.ConnectionDropped("Server disconnected"),
            Outcome.RETRYABLE,
            "Connection dropped by upstream",
        ),
        (failures.TransportFailure("proxy"), Outcome.RETRYABLE, "Transport error: proxy"),
        (failures.TlsFailure("bad cert"), Outcome.PERMANENT, "TLS error: bad cert"),
        (failures.BadRequestUrl("ftp"), Outcome.PERMANENT, "Bad request URL: ftp"),
        (failures.RedirectLoop("6 redirects"), Outcome.PERMANENT, "Too many redirects"),
        (failures.Undecodable("bad gzip"), Outcome.PERMANENT, "Undecodable answer: bad gzip"),
        (
            failures.TooLarge(200, 1024),
            Outcome.PERMANENT,
            "Response too large: over 1024 bytes (--max-body), not read",
        ),
    ],
)
def test_a_failure_is_classified_by_its_type(
    failure: failures.FetchFailure, outcome: Outcome, message: str
) -> None:
    verdict = classify_failure(failure)
    assert (verdict.outcome, verdict.error_kind, verdict.error) == (outcome, failure.kind, message)
    assert verdict.status == (200 if isinstance(failure, failures.TooLarge) else None)
