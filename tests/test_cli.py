"""The command line through Typer's CliRunner: stdout (data) and stderr (humans) apart."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import httpx
import pytest
import respx
from typer.testing import CliRunner

from scanctl.cli import app

# respx routes, served over a socket to the default transport (tests/respx_bridge.py).
pytestmark = pytest.mark.usefixtures("respx_over_aiohttp")

BASE = "http://upstream.test"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def upstream():  # type: ignore[no-untyped-def]
    """A mocked upstream: ZZ* are 404, everything else a deterministic answer."""

    def answer(request: httpx.Request) -> httpx.Response:
        symbol = request.url.path.rsplit("/", 1)[-1]
        if symbol.startswith("ZZ"):
            return httpx.Response(404, json={"detail": f"No data for {symbol}"})
        return httpx.Response(
            200, json={"symbol": symbol, "score": len(symbol) * 10, "signal": "BUY"}
        )

    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        route = mock.get(path__regex=r"^/").mock(side_effect=answer)
        yield route


def scan(
    runner: CliRunner, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["scan", "--base-url", BASE, *args], env=env, input=stdin)


def test_json_to_stdout_and_a_human_summary_to_stderr(
    runner: CliRunner, upstream: respx.Route
) -> None:
    result = scan(runner, "btc", "eth", "-t", "mss")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["scan_type"] == "mss" and doc["successful"] == 2 and doc["success_rate"] == 100.0
    assert [r["symbol"] for r in doc["results"]] == ["BTC", "ETH"]
    assert doc["performance"]["batches_processed"] == 1 and doc["requests_sent"] == 2
    assert "scanctl: mss: 2/2 ok" in result.stderr
    assert "scanctl" not in result.stdout.replace('"scan_type"', "")


def test_some_failed_exits_3_with_failed_symbols_listed(
    runner: CliRunner, upstream: respx.Route
) -> None:
    result = scan(runner, "BTC", "ZZFAKE", "-t", "signals")
    assert result.exit_code == 3
    doc = json.loads(result.stdout)
    assert doc["failed_symbols"] == ["ZZFAKE"] and doc["errors"] == {"HTTP 404": 1}


def test_nothing_succeeded_exits_4(runner: CliRunner, upstream: respx.Route) -> None:
    result = scan(runner, "ZZA", "ZZB")
    assert result.exit_code == 4
    assert "nothing succeeded" in result.stderr


def test_jsonl_and_quiet_leave_stderr_empty(
    runner: CliRunner, upstream: respx.Route, tmp_path: Path
) -> None:
    metrics = tmp_path / "metrics.json"
    result = scan(runner, "BTC", "ETH", "SOL", "-F", "jsonl", "-q", "--metrics", str(metrics))
    assert result.exit_code == 0 and result.stderr == ""
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(line["symbol"] for line in lines) == ["BTC", "ETH", "SOL"]
    summary = json.loads(metrics.read_text())
    assert summary["successful"] == 3 and "results" not in summary


def test_csv_output_file(runner: CliRunner, upstream: respx.Route, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    result = scan(runner, "BTC", "ZZX", "-F", "csv", "-o", str(out))
    assert result.exit_code == 3 and result.stdout == ""
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(r["symbol"], r["ok"], r["score"]) for r in rows] == [
        ("BTC", "true", "30"),
        ("ZZX", "false", ""),
    ]


def test_symbols_from_stdin_and_file(
    runner: CliRunner, upstream: respx.Route, tmp_path: Path
) -> None:
    path = tmp_path / "coins.txt"
    path.write_text("# list\nbtc\n\neth\n")
    from_file = scan(runner, "-f", str(path), "-F", "jsonl")
    from_stdin = scan(runner, "-f", "-", "-F", "jsonl", stdin="sol\nada\n")
    assert sorted(json.loads(x)["symbol"] for x in from_file.stdout.splitlines()) == ["BTC", "ETH"]
    assert sorted(json.loads(x)["symbol"] for x in from_stdin.stdout.splitlines()) == ["ADA", "SOL"]


def test_api_key_from_env_and_headers_are_sent(runner: CliRunner, upstream: respx.Route) -> None:
    result = scan(runner, "BTC", "-H", "X-Team: blue", env={"SCANCTL_API_KEY": "sekret-key"})
    assert result.exit_code == 0
    sent = upstream.calls.last.request
    assert sent.headers["x-api-key"] == "sekret-key" and sent.headers["x-team"] == "blue"
    assert "sekret-key" not in result.stdout + result.stderr


def test_base_url_from_environment(runner: CliRunner, upstream: respx.Route) -> None:
    result = runner.invoke(app, ["scan", "BTC"], env={"SCANCTL_BASE_URL": BASE})
    assert result.exit_code == 0 and upstream.call_count == 1


# --- bad input: one line on stderr, the documented exit code, nothing sent --------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-f", "{tmp}/missing.txt"], "missing.txt"),
        (["-f", "{tmp}/empty.txt"], "empty.txt"),
        (["-f", "{tmp}/comments.txt"], "comments.txt"),
        (["-f", "{tmp}"], "directory"),
        (["-f", "{tmp}/bad.txt"], "bad.txt:2:"),
        (["BTC", "-t", "nope"], "allowed: mss, price, signals, smart_money"),
        (["BTC", "--base-url", "localhost:8000"], "bad --base-url"),
        (["BTC", "--base-url", "ftp://example.com"], "scheme http or https"),
        (["BTC", "--base-url", "http://example.com/api?"], "must not carry a query"),
        (["BTC", "--base-url", "http://example.com/#top"], "must not carry a query"),
        (["BTC", "--concurrency", "0"], "--concurrency must be between 1 and 10000"),
        (["BTC", "--rate", "-1"], "--rate must be a positive"),
        (["BTC", "--deadline", "0"], "--deadline must be a positive"),
        (["BTC", "--retry-budget", "2"], "--retry-budget must be a share between 0 and 1"),
        (["BTC", "--max-outage", "-1"], "--max-outage must be a positive"),
        (["BTC", "-F", "xml"], "allowed: json, jsonl, csv"),
        (["BTC", "-o", "{tmp}/no/such/dir/out.json"], "does not exist"),
        (["BTC", "--metrics", "{tmp}/no/such/dir/m.json"], "does not exist"),
        (["BTC", "--metrics", "{tmp}/no/such/dir/m.prom"], "does not exist"),
        (["BTC", "--metrics", "{tmp}/m", "--metrics-format", "xml"], "allowed: json, prom"),
        (["BTC", "--metrics-format", "prom"], "--metrics-format needs --metrics PATH"),
        (["BTC", "-H", "no-colon-here"], "expected 'Name: value'"),
        (["BTC", "--concurrency", "many"], "--concurrency"),
        (["BTC/USD"], "invalid symbol"),
        ([], "no symbols"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_sends_nothing(
    runner: CliRunner, upstream: respx.Route, tmp_path: Path, args: list[str], needle: str
) -> None:
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "comments.txt").write_text("# nothing\n\n# here\n")
    (tmp_path / "bad.txt").write_text("BTC\n../etc\n")
    result = scan(runner, *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 2, result.stderr
    assert result.stdout == ""
    assert needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("scanctl: error: ")
    assert upstream.call_count == 0


def test_skip_invalid_warns_and_scans_the_rest(
    runner: CliRunner, upstream: respx.Route, tmp_path: Path
) -> None:
    path = tmp_path / "coins.txt"
    path.write_text("BTC\n../etc\nETH\n")
    result = scan(runner, "-f", str(path), "--skip-invalid")
    assert result.exit_code == 0
    assert "skipped 1 invalid symbols" in result.stderr
    assert json.loads(result.stdout)["total_scanned"] == 2


def test_upstream_html_or_truncated_json_fails_that_symbol_only(runner: CliRunner) -> None:
    with respx.mock(base_url=BASE) as mock:
        mock.get("/signals/BTC").respond(200, json={"score": 1})
        mock.get("/signals/HTML").respond(
            200, text="<html>oops</html>", headers={"content-type": "text/html"}
        )
        mock.get("/signals/TRUNC").respond(
            200, text='{"score": ', headers={"content-type": "application/json"}
        )
        result = scan(runner, "BTC", "HTML", "TRUNC", "-t", "signals")
    assert result.exit_code == 3
    doc = json.loads(result.stdout)
    assert doc["errors"] == {"Invalid JSON": 2} and doc["successful"] == 1


def test_refusal_exits_4_and_says_why(runner: CliRunner) -> None:
    with respx.mock(base_url=BASE) as mock:
        mock.get(path__regex=r"^/").respond(403, json={"detail": "IP banned"})
        result = scan(runner, "BTC", "ETH", "SOL", "--concurrency", "1")
    assert result.exit_code == 4
    assert "upstream refused us (HTTP 403: IP banned)" in result.stderr
    doc = json.loads(result.stdout)
    assert doc["total_scanned"] == 3 and doc["failed"] == 3  # every symbol accounted for


def test_nothing_listening_fails_fast_with_connection_refused(runner: CliRunner) -> None:
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = runner.invoke(
        app,
        [
            "scan",
            "BTC",
            "ETH",
            "--base-url",
            f"http://127.0.0.1:{port}",
            "--retries",
            "1",
            "-F",
            "jsonl",
        ],
    )
    assert result.exit_code == 4
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["error"] for r in records} == {"Connection refused"}
    assert "nothing succeeded (Connection refused for 2 of 2)" in result.stderr


def test_version_and_help(runner: CliRunner) -> None:
    assert runner.invoke(app, ["--version"]).stdout.startswith("scanctl ")
    assert "--concurrency" in runner.invoke(app, ["scan", "--help"]).stdout


# --- scan types in any case ------------------------------------------------------------------


def test_a_type_in_capitals_is_the_type(runner: CliRunner, upstream: respx.Route) -> None:
    result = scan(runner, "BTC", "-t", "MSS")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["scan_type"] == "mss"
    assert upstream.calls.last.request.url.path == "/mss/analyze/BTC"
    assert "scanctl: mss: 1/1 ok" in result.stderr


CASE_TWINS = """\
[profiles.twins]
base_url = "http://upstream.test"

[profiles.twins.types.Mss]
path = "/upper/{symbol}"

[profiles.twins.types.mss]
path = "/lower/{symbol}"

[profiles.twins.types.Price]
path = "/price/{symbol}"
"""


@pytest.mark.parametrize(
    ("given", "path"), [("mss", "/lower/BTC"), ("Mss", "/upper/BTC"), ("price", "/price/BTC")]
)
def test_an_exact_name_wins_over_one_that_differs_only_by_case(
    runner: CliRunner, upstream: respx.Route, tmp_path: Path, given: str, path: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CASE_TWINS)
    result = scan(runner, "BTC", "-t", given, "--config", str(config), "--profile", "twins")
    assert result.exit_code == 0, result.stderr
    assert upstream.calls.last.request.url.path == path


def test_a_name_that_fits_two_types_only_ignoring_case_is_refused(
    runner: CliRunner, upstream: respx.Route, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CASE_TWINS)
    result = scan(runner, "BTC", "-t", "MSS", "--config", str(config), "--profile", "twins")
    assert result.exit_code == 2 and result.stdout == "" and upstream.call_count == 0
    assert result.stderr.strip() == (
        "scanctl: error: --type 'MSS' is ambiguous: it matches 'Mss' and 'mss', which differ "
        "only by case; give one of them exactly"
    )
