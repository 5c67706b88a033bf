"""Run summaries for tests of what reads them (writers, the .prom file, the stderr line)."""

from __future__ import annotations

from typing import Any

from scanctl.outcome import LatencyFigures, Performance, Summary


def summary_of(**fields: Any) -> Summary:
    """A summary of an empty run, with `fields` set (by their JSON names)."""
    performance = Performance(
        total_time_seconds=0.0,
        scans_per_second=0.0,
        avg_time_per_coin=0.0,
        batches_processed=0,
        final_rate_limit=None,
        latency_ms=LatencyFigures(None, None, None, None, None),
    )
    defaults: dict[str, Any] = {
        "scan_type": "mss",
        "total_scanned": 0,
        "successful": 0,
        "failed": 0,
        "success_rate": 0.0,
        "errors": {},
        "failed_symbols": [],
        "performance": performance,
        "requests_sent": 0,
        "retries": 0,
        "throttled": 0,
        "hedged": 0,
        "breaker_opened": 0,
        "rate_history": [],
        "requested": 0,
        "not_scanned": 0,
        "cached": 0,
        "stale": 0,
        "resumed": 0,
        "cache": None,
        "interrupted": False,
        "stopped_reason": None,
        "started_at": "2026-11-24T23:59:01.123Z",
        "finished_at": "2026-11-24T23:59:04.533Z",
    }
    return Summary(**{**defaults, **fields})
