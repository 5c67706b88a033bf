"""The terminal table (-F table, the default on a terminal) and the colour rules."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanctl.changes import Change
from scanctl.demo.testing import running_demo_process
from scanctl.records import ScanRecord
from scanctl.table import TableWriter
from scanctl.terminal import wants_color
from tests.summaries import summary_of


class Captured:
    """A destination that keeps what is written (a terminal or not, as asked)."""

    def __init__(self, is_terminal: bool = False) -> None:
        import io

        self.stream = io.StringIO()
        self.is_terminal = is_terminal

    def commit(self) -> None:
        pass

    def discard(self) -> None:
        pass


def record(index: int, symbol: str, **kw: object) -> ScanRecord:
    fields: dict[str, object] = {
        "ok": True,
        "status": 200,
        "data": {"symbol": symbol, "score": index * 10.5, "signal": "LONG", "nested": {"a": 1}},
        "error": None,
        "attempts": 1,
        "elapsed_ms": 3.0,
        **kw,
    }
    return ScanRecord(symbol, "signals", index=index, **fields)  # type: ignore[arg-type]


def lines_of(writer: TableWriter) -> list[str]:
    writer.finish(summary_of())
    text: str = writer.destination.stream.getvalue()  # type: ignore[attr-defined]
    return [line.rstrip() for line in text.splitlines()]


def test_rows_come_in_input_order_with_the_profiles_fields_and_failures_marked() -> None:
    writer = TableWriter(Captured(), ("signal", "score"))
    failed = record(1, "ZZNO", ok=False, status=404, data=None, error="HTTP 404: No data for ZZNO")
    for item in (record(2, "SOL", cached=True), failed, record(0, "BTC")):
        writer.write(item)
    header, rule, btc, zz, sol = lines_of(writer)
    assert header.split() == ["symbol", "ok", "status", "cached", "signal", "score"]
    assert set(rule) == {"─"}
    assert btc.split() == ["BTC", "yes", "200", "LONG", "0.0"]
    assert zz.split()[:3] == ["ZZNO", "no", "HTTP"] and "No data for ZZNO" in zz
    assert sol.split() == ["SOL", "yes", "200", "yes", "LONG", "21.0"]


def test_without_declared_fields_the_answers_first_scalars_are_shown() -> None:
    writer = TableWriter(Captured())
    writer.write(record(0, "BTC"))
    header = lines_of(writer)[0].split()
    assert header[4:] == ["score", "signal"]  # not `symbol` (a column already), not `nested`


def test_a_large_run_keeps_the_earliest_rows_and_says_how_many_it_left_out() -> None:
    writer = TableWriter(Captured(), ("score",), max_rows=5)
    order = list(range(40))
    random.Random(5).shuffle(order)
    for index in order:
        writer.write(record(index, f"S{index:02d}"))
    lines = lines_of(writer)
    assert [line.split()[0] for line in lines[2:7]] == [f"S{i:02d}" for i in range(5)]
    assert "35 more rows not shown" in lines[-1] and "-F csv" in lines[-1]
    assert len(writer._kept) == 5  # memory stays bounded


def test_changes_get_a_column_naming_the_fields() -> None:
    writer = TableWriter(Captured(), ("score",))
    writer.write(record(0, "BTC", change=Change(True, ("score", "signal"))))
    writer.write(record(1, "ETH", change=Change(False)))
    header, _, btc, eth = lines_of(writer)
    assert header.split()[4] == "changed"
    assert "score, signal" in btc and eth.split()[3:] == ["no", "10.5"]  # not cached: blank


def test_colour_only_when_asked() -> None:
    plain, coloured = TableWriter(Captured()), TableWriter(Captured(), color=True)
    for writer in (plain, coloured):
        writer.write(record(0, "BTC"))
        writer.write(record(1, "ZZ", ok=False, status=404, data=None, error="HTTP 404"))
    assert "\x1b" not in "".join(lines_of(plain))
    assert "\x1b[" in "".join(lines_of(coloured))


@pytest.mark.parametrize(
    ("choice", "env", "terminal", "expected"),
    [
        ("auto", {}, True, True),
        ("auto", {}, False, False),
        ("auto", {"NO_COLOR": "1"}, True, False),
        ("auto", {"NO_COLOR": ""}, True, True),  # empty means unset (no-color.org)
        ("auto", {"FORCE_COLOR": "1"}, False, True),
        ("auto", {"FORCE_COLOR": "0"}, True, False),  # as Node's supports-color reads it
        ("auto", {"NO_COLOR": "1", "FORCE_COLOR": "1"}, True, False),
        ("always", {"NO_COLOR": "1"}, False, True),  # the flag wins
        ("never", {"FORCE_COLOR": "1"}, True, False),
    ],
)
def test_colour_rules(choice: str, env: dict[str, str], terminal: bool, expected: bool) -> None:
    assert wants_color(choice, env, is_terminal=terminal) is expected


# -- the command line, on a pseudo-terminal (`script`) and piped ---------------------------------

SCANCTL = [sys.executable, "-m", "scanctl"]


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with running_demo_process(["--latency-median", "0.002", "--latency-sigma", "0.1"]) as url:
        yield url


def on_terminal(command: str, tmp_path: Path, env: dict[str, str] | None = None) -> str:
    """What `command` writes to stdout when stdout is a terminal (stderr goes to a file)."""
    if shutil.which("script") is None:
        pytest.skip("script(1) is not installed")
    import os

    result = subprocess.run(
        ["script", "-qec", f"{command} 2>{tmp_path / 'stderr'}", "/dev/null"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "120", **(env or {})},
    )
    assert result.returncode == 0, (result.stdout, (tmp_path / "stderr").read_text())
    return result.stdout


def test_a_terminal_gets_a_table_and_no_color_gets_no_escapes(
    upstream: str, tmp_path: Path
) -> None:
    command = f"{sys.executable} -m scanctl scan BTC ETH SOL -t mss --base-url {upstream} -q"
    coloured = on_terminal(command, tmp_path, {"NO_COLOR": "", "FORCE_COLOR": ""})
    assert "\x1b[" in coloured
    plain = on_terminal(command, tmp_path, {"NO_COLOR": "1"})
    assert "\x1b" not in plain
    lines = [line.split() for line in plain.splitlines() if line.strip()]
    assert lines[0][:4] == ["symbol", "ok", "status", "cached"]
    assert lines[0][4:] == ["score", "tier", "phase", "confidence"]  # the profile's display
    assert [line[0] for line in lines[2:]] == ["BTC", "ETH", "SOL"]
    assert "scanctl:" not in plain  # the summary line stays on stderr
    explicit = on_terminal(f"{command} -F json", tmp_path, {"NO_COLOR": "1"})
    assert json.loads(explicit)["successful"] == 3  # an explicit -F wins over detection


def test_piped_output_is_the_json_it_always_was(upstream: str) -> None:
    base = [*SCANCTL, "scan", "BTC", "ETH", "ZZNOPE", "-t", "signals", "--base-url", upstream]
    base.append("--no-cache")  # both runs ask the upstream
    default = subprocess.run([*base, "-q"], capture_output=True, text=True, timeout=60)
    explicit = subprocess.run([*base, "-q", "-F", "json"], capture_output=True, text=True)
    assert default.returncode == explicit.returncode == 3
    assert default.stdout.count("\n") == 1 and default.stdout.startswith('{"scan_type": ')

    def steady(text: str) -> str:
        document = json.loads(text)
        for key in ("performance", "started_at", "finished_at", "rate_history"):
            document.pop(key)
        for result in document["results"]:
            result.pop("elapsed_ms")
        return json.dumps(document)

    assert steady(default.stdout) == steady(explicit.stdout)
    table = subprocess.run([*base, "-q", "-F", "table"], capture_output=True, text=True)
    assert table.stdout.split()[:4] == ["symbol", "ok", "status", "cached"]
    assert "\x1b" not in table.stdout  # piped: no colour unless asked
    forced = subprocess.run([*base, "-q", "-F", "table", "--color", "always"], capture_output=True)
    assert b"\x1b[" in forced.stdout


def test_a_bad_color_value_is_a_usage_error() -> None:
    result = subprocess.run([*SCANCTL, "scan", "BTC", "--color", "sometimes"], capture_output=True)
    assert result.returncode == 2 and result.stdout == b""
    assert b"unknown --color 'sometimes'; allowed: auto, always, never" in result.stderr


def test_the_readme_table_is_what_a_run_prints(upstream: str, tmp_path: Path) -> None:
    """The README's example, run: the answers are deterministic, so the rows are too."""
    readme = (Path(__file__).parent.parent / "README.md").read_text().splitlines()
    start = readme.index("    $ scanctl scan BTC ETH SOL ZZNOPE -t mss") + 1
    shown = []
    for line in readme[start:]:
        if not line.startswith("    ") or line.startswith("    scanctl:"):
            break
        shown.append(line[4:])
    command = [*SCANCTL, "scan", "BTC", "ETH", "SOL", "ZZNOPE", "-t", "mss", "-F", "table"]
    result = subprocess.run(
        [*command, "--base-url", upstream, "-q", "--cache", str(tmp_path / "fresh.sqlite3")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3
    assert len(shown) == 6 and [line.rstrip() for line in result.stdout.splitlines()] == shown
