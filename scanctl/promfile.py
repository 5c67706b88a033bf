"""The run's figures for a monitor: the Prometheus text exposition format, version 0.0.4.

This is node_exporter's textfile collector convention: cron runs a scan with `--metrics
DIR/NAME.prom`, node_exporter serves every `*.prom` file in DIR, and a monitor alerts when the
last success is too old. The file is replaced atomically (output.write_text_file), so the
collector never reads half of it; the temporary file ends in `.tmp`, never `.prom`.

What the file holds, every sample labelled with the scan `type`:

- Counters (`_total`) of the last run. Each run starts them from zero, as a process starts its
  counters: the file is the last run's final count, not a sum over runs. They are still
  counters (TYPE counter) because that is what they are within a run and what their `_total`
  names promise; read them as they are (`scanctl_symbols_total{outcome="failed"} > 0`), since
  rate() and increase() across runs that each start from zero mean nothing.
- Gauges of the last run: its duration, the rate it was paced at, request latency quantiles.
- When the last run finished, its exit code, and when the last run that exited 0 finished: a
  failed run keeps that one from the file it replaces, so `time() -
  scanctl_last_success_timestamp_seconds` keeps growing while runs fail.

A figure the run does not have (no rate limited it, no request was sent, no run ever succeeded)
is left out, family and all, rather than written as NaN: an absent series is Prometheus' own
"no value" (`absent()` and `or` see it), while NaN compares false with everything, so an alert
on it never fires, and it poisons max() and avg() over several series.

Written by hand, not with prometheus_client: the format is a few lines of text and the CLI
stays free of a dependency; the tests check the text with prometheus_client's own parser.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from scanctl.outcome import LatencyFigures, Summary
from scanctl.output import is_special_file, write_text_file

LAST_SUCCESS = "scanctl_last_success_timestamp_seconds"

# outcome label -> the summary's count. ok + failed + not_scanned is every symbol asked for;
# cached and stale count some of the ok and failed ones again (a cached 404 is failed and cached).
OUTCOMES: tuple[tuple[str, Callable[[Summary], int]], ...] = (
    ("ok", lambda s: s.successful),
    ("failed", lambda s: s.failed),
    ("not_scanned", lambda s: s.not_scanned),
    ("cached", lambda s: s.cached),
    ("stale", lambda s: s.stale),
)
# quantile label -> the summary's latency figure (nearest rank; 1 is the max).
QUANTILES: tuple[tuple[str, Callable[[LatencyFigures], float | None]], ...] = (
    ("0.5", lambda lat: lat.p50),
    ("0.9", lambda lat: lat.p90),
    ("0.99", lambda lat: lat.p99),
    ("1", lambda lat: lat.max),
)

# Reading back the file this run replaces: ours are a few kilobytes.
_MAX_READ = 1 << 20

Labels = dict[str, str]


@dataclass(slots=True)
class Family:
    """One metric family: its name, TYPE, HELP text and samples."""

    name: str
    kind: str  # "counter" or "gauge"
    help: str
    samples: list[tuple[Labels, float]] = field(default_factory=list)


def escape_label_value(value: str) -> str:
    """A label value as the format writes it between double quotes."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value: whole numbers without a fraction, others as Python's shortest repr
    (which Go's ParseFloat reads back exactly); NaN and infinities spelled as the format wants."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _label_text(labels: Labels) -> str:
    inner = ",".join(f'{name}="{escape_label_value(value)}"' for name, value in labels.items())
    return "{" + inner + "}" if inner else ""


def exposition(families: list[Family]) -> str:
    """The text of these families; a family without samples is left out, HELP and TYPE too."""
    lines: list[str] = []
    for family in families:
        if not family.samples:
            continue
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        lines += [f"{family.name}{_label_text(lbl)} {format_value(v)}" for lbl, v in family.samples]
    return "\n".join(lines) + "\n"


def epoch_seconds(iso: str) -> float:
    """Seconds since the epoch, to the millisecond, from the summary's ISO 8601 UTC time."""
    return round(datetime.fromisoformat(iso).timestamp(), 3)


def families(summary: Summary, *, exit_code: int, previous_success: float | None) -> list[Family]:
    """The run summary as metric families. The last success is this run's end when it exits 0,
    else `previous_success` (what the file being replaced said; None leaves it out)."""
    kind = {"type": summary.scan_type}
    perf = summary.performance
    finished = epoch_seconds(summary.finished_at)
    last_success = finished if exit_code == 0 else previous_success

    def one(value: float | None) -> list[tuple[Labels, float]]:
        return [] if value is None else [(kind, value)]

    return [
        Family(
            "scanctl_symbols_total",
            "counter",
            "Symbols of the last run by outcome (each run counts from 0): ok + failed + "
            "not_scanned is every symbol asked for; cached (answered from the cache) and stale "
            "(served expired after a failed fetch) count some of those again.",
            [({**kind, "outcome": outcome}, count(summary)) for outcome, count in OUTCOMES],
        ),
        Family(
            "scanctl_requests_total",
            "counter",
            "HTTP requests the last run sent, 429s and retries included.",
            one(summary.requests_sent),
        ),
        Family(
            "scanctl_throttled_requests_total",
            "counter",
            "Requests of the last run the upstream refused with 429 Too Many Requests.",
            one(summary.throttled),
        ),
        Family(
            "scanctl_retries_total",
            "counter",
            "Requests the last run sent again after a timeout, connection error or 5xx.",
            one(summary.retries),
        ),
        Family(
            "scanctl_hedged_requests_total",
            "counter",
            "Second copies of slow requests the last run sent (--hedge).",
            one(summary.hedged),
        ),
        Family(
            "scanctl_breaker_openings_total",
            "counter",
            "Times the circuit breaker opened in the last run (the upstream seemed down).",
            one(summary.breaker_opened),
        ),
        Family(
            "scanctl_run_duration_seconds",
            "gauge",
            "How long the last run took.",
            one(perf.total_time_seconds),
        ),
        Family(
            "scanctl_rate_requests_per_second",
            "gauge",
            "The request rate the last run was paced at when it ended (found from the "
            "upstream's 429s, or --rate); absent when nothing limited it.",
            one(perf.final_rate_limit),
        ),
        Family(
            "scanctl_request_latency_seconds",
            "gauge",
            "Latency of the last run's HTTP requests by quantile (nearest rank; 1 is the "
            "slowest); absent when it sent none.",
            [
                ({**kind, "quantile": quantile}, round(ms / 1000, 4))
                for quantile, figure in QUANTILES
                if (ms := figure(perf.latency_ms)) is not None
            ],
        ),
        Family(
            "scanctl_last_run_timestamp_seconds",
            "gauge",
            "When the last run finished, in seconds since the epoch.",
            one(finished),
        ),
        Family(
            LAST_SUCCESS,
            "gauge",
            "When the last run that exited 0 finished, in seconds since the epoch; failed "
            "runs keep it.",
            one(last_success),
        ),
        Family(
            "scanctl_last_exit_code",
            "gauge",
            "Exit code of the last run: 0 all ok, 3 some symbols failed, 4 upstream down or "
            "refusing, 130/143 interrupted (README, Exit codes).",
            one(exit_code),
        ),
    ]


def render(summary: Summary, *, exit_code: int, previous_success: float | None) -> str:
    """The .prom file's text for this run summary (see `families`)."""
    return exposition(families(summary, exit_code=exit_code, previous_success=previous_success))


def previous_last_success(path: str, scan_type: str) -> float | None:
    """The last success an earlier run wrote to `path` for this scan type, or None: no file, not
    a file of ours, another type, unreadable. A device or FIFO is never read: it could block."""
    if is_special_file(path):
        return None
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read(_MAX_READ)
    except (OSError, UnicodeDecodeError):
        return None
    start = f"{LAST_SUCCESS}{_label_text({'type': scan_type})} "
    for line in text.splitlines():
        if line.startswith(start):
            try:
                value = float(line[len(start) :])
            except ValueError:
                return None
            return value if math.isfinite(value) and value > 0 else None
    return None


def write_prom_file(path: str, summary: Summary, *, exit_code: int) -> None:
    """Write the run's .prom file atomically, keeping the last success of the file it replaces
    when this run did not exit 0."""
    kept = None if exit_code == 0 else previous_last_success(path, summary.scan_type)
    write_text_file(path, render(summary, exit_code=exit_code, previous_success=kept))
