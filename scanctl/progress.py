"""What a person sees on stderr while a scan runs; never a byte of it on stdout.

Three displays share one small interface (as httpie's progress and its dummy twin do):
- `RichDisplay`: a live bar when stderr is a terminal; updates are throttled to a few per
  second because redrawing per record costs more than the scan itself;
- `StatusLineDisplay`: for logs and cron without -q: one line every `interval` seconds;
- `NullDisplay`: for -q.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol, TextIO

from scanctl.clock import Clock
from scanctl.metrics import RunMetrics
from scanctl.outcome import Summary


class Display(Protocol):
    def start(self, total: int) -> None: ...

    def update(self, metrics: RunMetrics) -> None: ...

    def stop(self, metrics: RunMetrics) -> None: ...


def _eta(done: int, total: int, elapsed: float) -> str:
    if done == 0 or elapsed <= 0:
        return "?"
    remaining = (total - done) * elapsed / done
    minutes, seconds = divmod(round(remaining), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


def _cached(metrics: RunMetrics) -> str:
    """Say " (N cached)" once the cache answered something (the bar needs its room before)."""
    return f" ({metrics.cached} cached)" if metrics.cached else ""


def status_line(metrics: RunMetrics, elapsed: float) -> str:
    """One line of progress for logs."""
    done, total = metrics.done, metrics.total
    pct = 100.0 * done / total if total else 100.0
    speed = done / elapsed if elapsed > 0 else 0.0
    rate = "no limit" if metrics.current_rate is None else f"{metrics.current_rate:.1f} req/s"
    return (
        f"scanctl: {done}/{total} ({pct:.0f}%) ok {metrics.successful}{_cached(metrics)} "
        f"failed {metrics.failed} throttled {metrics.throttled}, {speed:.1f} scans/s, "
        f"ETA {_eta(done, total, elapsed)}, "
        f"pacing {rate}{_sharing(metrics)}"
    )


def _sharing(metrics: RunMetrics) -> str:
    return f" shared by {metrics.processes} processes" if metrics.processes > 1 else ""


def summary_line(summary: Summary) -> str:
    """The human summary printed to stderr at the end of a run."""
    perf = summary.performance
    errors = ", ".join(f"{kind}: {n}" for kind, n in summary.errors.items())
    text = (
        f"scanctl: {summary.scan_type}: {summary.successful}/{summary.total_scanned} ok, "
        f"{summary.failed} failed{f' ({errors})' if errors else ''} "
        f"in {perf.total_time_seconds:.2f} s, {perf.scans_per_second:.1f} scans/s, "
        f"{summary.requests_sent} requests, {summary.throttled} throttled"
    )
    if summary.cached:
        text += f", {summary.cached} from cache"
        if summary.stale:
            text += f" ({summary.stale} stale)"
    if summary.changed is not None:
        text += f", {summary.changed} changed"
    if perf.final_rate_limit is not None:
        text += f", paced at {perf.final_rate_limit:.1f} req/s"
    if summary.interrupted:
        text += f"; interrupted, {summary.not_scanned} not scanned"
    return text


class NullDisplay:
    def start(self, total: int) -> None:
        pass

    def update(self, metrics: RunMetrics) -> None:
        pass

    def stop(self, metrics: RunMetrics) -> None:
        pass


class StatusLineDisplay:
    """Prints a status line now and then; silent for runs shorter than `interval`."""

    def __init__(self, clock: Clock, stream: TextIO | None = None, interval: float = 10.0) -> None:
        self.clock = clock
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.started = 0.0
        self.next_at = 0.0

    def start(self, total: int) -> None:
        self.started = self.clock.monotonic()
        self.next_at = self.started + self.interval

    def update(self, metrics: RunMetrics) -> None:
        now = self.clock.monotonic()
        if now >= self.next_at:
            self.next_at = now + self.interval
            print(status_line(metrics, now - self.started), file=self.stream, flush=True)

    def stop(self, metrics: RunMetrics) -> None:
        pass


def bar_text(metrics: RunMetrics, elapsed: float) -> str:
    """The figures beside the bar, short enough to leave the bar room on an 80-column terminal."""
    done, total = metrics.done, metrics.total
    speed = done / elapsed if elapsed > 0 else 0.0
    return (
        f"{done}/{total} ok {metrics.successful}{_cached(metrics)} failed {metrics.failed} | "
        f"{speed:.0f} scans/s | ETA {_eta(done, total, elapsed)}"
    )


def pacing_text(metrics: RunMetrics, elapsed: float) -> str:
    """The second line: how fast we are allowed to go, and what the upstream made of it."""
    sent = metrics.requests_sent / elapsed if elapsed > 0 else 0.0
    limit = "no limit" if metrics.current_rate is None else f"{metrics.current_rate:.1f} req/s"
    if metrics.processes > 1:
        limit += f" shared by {metrics.processes} processes"
    return (
        f"pacing {limit} | sent {sent:.0f} req/s | {metrics.in_flight} in flight | "
        f"{metrics.throttled} throttled, {metrics.retries} retried"
    )


class RichDisplay:
    """A live rich progress bar on stderr: the bar and its figures, then a line on pacing.

    The bar takes whatever width the figures leave.
    """

    def __init__(self, clock: Clock, min_interval: float = 0.1, console: Any = None) -> None:
        from rich.console import Console, Group
        from rich.progress import BarColumn, Progress, TextColumn
        from rich.table import Column
        from rich.text import Text

        self.clock = clock
        self.min_interval = min_interval
        self.last = 0.0
        self.started = 0.0
        self.pacing = Text("", no_wrap=True, overflow="ellipsis", style="dim")
        pacing = self.pacing

        class _WithPacing(Progress):
            def get_renderables(self):  # type: ignore[no-untyped-def]
                yield Group(self.make_tasks_table(self.tasks), pacing)

        self.progress = _WithPacing(
            BarColumn(bar_width=None, table_column=Column(ratio=1, min_width=5)),
            TextColumn("{task.fields[line]}", table_column=Column(no_wrap=True)),
            console=console if console is not None else Console(stderr=True),
            redirect_stdout=False,
            redirect_stderr=False,
            refresh_per_second=8,
            transient=False,
            expand=True,
        )
        self.task = self.progress.add_task("scan", total=None, line="starting")

    def start(self, total: int) -> None:
        self.started = self.clock.monotonic()
        self.progress.update(self.task, total=total)
        self.progress.start()

    def _refresh(self, metrics: RunMetrics, now: float) -> None:
        elapsed = max(now - self.started, 0.0)
        self.pacing.plain = pacing_text(metrics, elapsed)
        self.progress.update(self.task, completed=metrics.done, line=bar_text(metrics, elapsed))

    def update(self, metrics: RunMetrics) -> None:
        now = self.clock.monotonic()
        if now - self.last >= self.min_interval:
            self.last = now
            self._refresh(metrics, now)

    def stop(self, metrics: RunMetrics) -> None:
        self._refresh(metrics, self.clock.monotonic())
        self.progress.stop()


def choose_display(
    clock: Clock,
    *,
    quiet: bool,
    no_progress: bool,
    stderr: TextIO | None = None,
    color: bool = True,
) -> Display:
    """A bar on a terminal (coloured unless `color` is off), status lines in logs, nothing
    with -q."""
    stream = stderr if stderr is not None else sys.stderr
    if quiet:
        return NullDisplay()
    if not no_progress and stream.isatty():
        if color:
            return RichDisplay(clock)
        from rich.console import Console

        return RichDisplay(clock, console=Console(stderr=True, color_system=None, no_color=True))
    return StatusLineDisplay(clock, stream)
