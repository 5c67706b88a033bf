"""Displays: where they appear, how often, and what they say."""

from __future__ import annotations

import io

from scanctl.clock import FakeClock
from scanctl.metrics import RunMetrics
from scanctl.progress import (
    NullDisplay,
    RichDisplay,
    StatusLineDisplay,
    bar_text,
    choose_display,
    status_line,
)


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_choice_depends_on_quiet_flag_and_terminal() -> None:
    clock = FakeClock()
    assert isinstance(
        choose_display(clock, quiet=True, no_progress=False, stderr=Tty()), NullDisplay
    )
    assert isinstance(
        choose_display(clock, quiet=False, no_progress=False, stderr=Tty()), RichDisplay
    )
    assert isinstance(
        choose_display(clock, quiet=False, no_progress=True, stderr=Tty()), StatusLineDisplay
    )
    assert isinstance(
        choose_display(clock, quiet=False, no_progress=False, stderr=io.StringIO()),
        StatusLineDisplay,
    )


def test_status_line_appears_every_interval_only() -> None:
    clock = FakeClock()
    out = io.StringIO()
    display = StatusLineDisplay(clock, out, interval=10.0)
    metrics = RunMetrics("mss", total=1000)
    display.start(1000)
    for _ in range(25):
        clock.now += 1.0
        metrics.successful += 10
        display.update(metrics)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # at 10 s and 20 s, not at every update
    assert lines[0].startswith("scanctl: 100/1000 (10%) ok 100 failed 0")
    assert "10.0 scans/s" in lines[0] and "ETA 0:01:30" in lines[0]


def test_short_runs_print_no_status_line() -> None:
    clock = FakeClock()
    out = io.StringIO()
    display = StatusLineDisplay(clock, out)
    metrics = RunMetrics("mss", total=3)
    display.start(3)
    clock.now += 2
    display.update(metrics)
    display.stop(metrics)
    assert out.getvalue() == ""


def test_status_line_without_progress_has_unknown_eta() -> None:
    assert "ETA ?" in status_line(RunMetrics("mss", total=10), 0.0)


def test_bar_fits_an_80_column_terminal_with_every_figure() -> None:
    from rich.console import Console

    clock = FakeClock()
    screen = io.StringIO()
    console = Console(file=screen, width=80, force_terminal=True, color_system=None)
    display = RichDisplay(clock, console=console)
    metrics = RunMetrics("mss", total=1000)
    display.start(1000)
    clock.now += 5.0
    metrics.successful, metrics.failed, metrics.throttled = 498, 2, 7
    metrics.requests_sent, metrics.retries = 520, 3
    metrics.pace(48.25, 12)
    display.stop(metrics)
    drawn = screen.getvalue()
    assert "500/1000 ok 498 failed 2 | 100 scans/s | ETA 0:00:05" in drawn
    pacing = "pacing 48.2 req/s | sent 104 req/s | 12 in flight | 7 throttled, 3 retried"
    assert pacing in drawn
    line = drawn.split("\x1b[2K")[-1].splitlines()[0]
    bar = line[: line.index("500/1000")]
    assert "…" not in line and len(line) <= 80
    assert len(bar) >= 10 and bar.startswith("━━━━")  # the bar has room, half full


def test_bar_updates_are_throttled() -> None:
    clock = FakeClock()
    console_output = io.StringIO()
    from rich.console import Console

    display = RichDisplay(clock, min_interval=0.1, console=Console(file=console_output))
    metrics = RunMetrics("mss", total=100)
    display.start(100)
    refreshed = []
    display._refresh = lambda m, now: refreshed.append(now)  # type: ignore[method-assign]
    for _ in range(100):
        clock.now += 0.01
        metrics.successful += 1
        display.update(metrics)
    display.progress.stop()
    assert 9 <= len(refreshed) <= 11  # about every 0.1 s of 1 s, not 100 times


def test_cached_answers_show_beside_ok_once_there_are_any() -> None:
    metrics = RunMetrics("mss", total=1000)
    metrics.successful = 300
    assert "300/1000 ok 300 failed 0" in bar_text(metrics, 1.0)
    metrics.cached = 250
    assert "300/1000 ok 300 (250 cached) failed 0" in bar_text(metrics, 1.0)
    assert "ok 300 (250 cached) failed 0" in status_line(metrics, 1.0)
