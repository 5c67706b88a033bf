"""`scanctl demo-api` (and `python -m scanctl.demo`) takes its options as every scanctl command
does: Typer's help, one-line errors naming the flag, exit 2, nothing served."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from scanctl.cli import app
from scanctl.demo.options import DemoConfig, Listen, parse_args


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--error-rate", "2"], "--error-rate must be a share between 0 and 1, got 2"),
        (["--drop-rate", "-0.1"], "--drop-rate must be a share between 0 and 1, got -0.1"),
        (
            ["--error-rate", "0.5", "--hang-rate", "0.6"],
            "the fault rates add up to more than 1 (--error-rate 0.5, --hang-rate 0.6)",
        ),
        (["--outage", "5"], "bad --outage '5': expected START:DURATION in seconds (e.g. 5:20)"),
        (["--outage", "5:0"], "bad --outage '5:0': expected START:DURATION"),
        (["--outage-mode", "slow"], "unknown --outage-mode 'slow'; allowed: drop, 503"),
        (
            ["--limiter", "nope"],
            "unknown --limiter 'nope'; allowed: token-bucket, leaky-bucket, fixed-window, "
            "sliding-window",
        ),
        (["--hints", "retry-after,lies"], "unknown --hints 'lies'; allowed: none, retry-after"),
        (["--hints", ","], "unknown --hints ','; allowed: none"),
        (["--rate-limit", "0"], "--rate-limit must be a positive number, got 0"),
        (["--rate-limit", "nan"], "--rate-limit must be a positive number, got nan"),
        (["--burst", "0"], "--burst must be 1 or more, got 0"),
        (["--window", "0"], "--window must be a positive number of seconds, got 0"),
        (["--latency-median", "-1"], "--latency-median must be 0 or more seconds, got -1"),
        (["--reset-offset", "inf"], "--reset-offset must be a number of seconds, got inf"),
        (["--ban-after", "0"], "--ban-after must be 1 or more, got 0"),
        (["--port", "70000"], "--port must be between 0 and 65535, got 70000"),
        (["--port", "http"], "Invalid value for '--port': 'http' is not a valid int"),
        (["--reset-offset", "soon"], "'soon' is not a valid float"),
        (["--no-such-knob"], "No such option: --no-such-knob (see --help)"),
        (["--seed"], "Option '--seed' requires an argument"),
    ],
)
def test_a_bad_value_is_one_line_and_exit_2(
    runner: CliRunner, args: list[str], message: str
) -> None:
    result = runner.invoke(app, ["demo-api", *args])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("scanctl: error: ")
    assert message in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_python_m_scanctl_demo_is_scanctl_demo_api() -> None:
    """The way tests and benchmarks start it: same checks, same one line, nothing on stdout."""
    result = subprocess.run(
        [sys.executable, "-m", "scanctl.demo", "--port", "0", "--outage", "5"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "scanctl: error: bad --outage '5': expected START:DURATION in seconds (e.g. 5:20)\n"
    )


def test_help_lists_every_option_with_its_metavar(runner: CliRunner) -> None:
    result = runner.invoke(app, ["demo-api", "--help"], prog_name="scanctl")
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: scanctl demo-api [OPTIONS]")
    # Every knob has its flag: a field of DemoConfig is the option of the same name.
    for name in ["host", "port", *(field.name for field in dataclasses.fields(DemoConfig))]:
        assert f"--{name.replace('_', '-')} " in result.stdout, name
    for shown in ("--rate-limit R", "--outage START:DURATION", "--error-rate SHARE"):
        assert shown in result.stdout
    assert "--outage-mode drop|503" in result.stdout and "--hints HINT[,HINT...]" in result.stdout
    listing = runner.invoke(app, ["--help"]).stdout
    assert "demo-api    Serve a simulated analysis API" in listing


def test_defaults_and_the_burst_that_follows_the_rate() -> None:
    assert parse_args([]) == (Listen("127.0.0.1", 8000), DemoConfig())
    assert parse_args(["--rate-limit", "40"])[1].burst == 40
    assert parse_args(["--rate-limit", "0.2"])[1].burst == 1
    listen, config = parse_args(["--host", "::1", "--port", "0", "--outage", "1:2.5"])
    assert listen == Listen("::1", 0) and config.outage == (1.0, 2.5)
    assert parse_args(["--hints", "none"])[1].hints == frozenset()


def test_without_the_demo_extra_it_says_what_to_install(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "scanctl.demo.server", None)  # import fails as if absent
    result = runner.invoke(app, ["demo-api", "--port", "0"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(
        "scanctl: error: the simulated upstream needs the demo extra: pip install 'scanctl[demo]'"
    )
    assert len(result.stderr.splitlines()) == 1
    # Its options are checked, and its help shown, without the extra.
    assert runner.invoke(app, ["demo-api", "--help"]).exit_code == 0
    assert "--error-rate must be" in runner.invoke(app, ["demo-api", "--error-rate", "9"]).stderr
