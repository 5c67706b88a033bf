"""Displays: where they appear, how often, and what they say."""

from __future__ import annotations

import io

from scanctl.clock import FakeClock
from scanctl.metrics import RunMetrics
from scanctl.progress import (
    NullDisplay,
    RichDisplay,
    StatusLineDisplay,
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
