"""Real runs of the `scanctl` command against the simulated upstream on a loopback port."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanctl.demo.testing import fetch_stats, running_demo_process

ROOT = Path(__file__).resolve().parent.parent
SCANCTL = [sys.executable, "-m", "scanctl"]


def symbols(n: int) -> list[str]:
    return [f"C{i:04d}" for i in range(n)]


@pytest.fixture(scope="module")
def limited_upstream() -> Iterator[str]:
    """30 req/s, burst 5, 429 with Retry-After, ~20 ms latency."""
    args = [
        "--rate-limit",
        "30",
        "--burst",
        "5",
        "--hints",
        "retry-after",
        "--latency-median",
        "0.02",
    ]
    with running_demo_process(args) as url:
        yield url


@pytest.fixture(scope="module")
def fast_upstream() -> Iterator[str]:
    with running_demo_process(["--latency-median", "0.005"]) as url:
        yield url


@pytest.fixture(scope="module")
def slow_upstream() -> Iterator[str]:
    with running_demo_process(["--latency-median", "0.3", "--latency-sigma", "0.1"]) as url:
        yield url


def run(
    *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SCANCTL, *args], capture_output=True, text=True, input=stdin, timeout=timeout, cwd=ROOT
    )


def test_rate_limited_run_waits_out_every_429_and_loses_nothing(limited_upstream: str) -> None:
    before = fetch_stats(limited_upstream)
    result = run(
        "scan", *symbols(80), "-t", "signals", "--base-url", limited_upstream, "--concurrency", "20"
    )
    after = fetch_stats(limited_upstream)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["successful"] == 80 and doc["failed"] == 0
    assert [r["symbol"] for r in doc["results"]] == symbols(80)
    served = after["requests"] - before["requests"]
    throttled = after["throttled"] - before["throttled"]
    assert throttled > 0, "the limit should have been hit at least once"
    assert doc["throttled"] == throttled and doc["requests_sent"] == served
    assert doc["retries"] == 0  # 429s are waited out, never counted as retries


def test_json_jsonl_and_csv_against_the_real_thing(fast_upstream: str) -> None:
    coins = str(ROOT / "examples" / "coins.txt")
    as_json = run("scan", "-f", coins, "-t", "mss", "--base-url", fast_upstream)
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert doc["successful"] == doc["total_scanned"] >= 100
    assert all(isinstance(r["data"]["score"], int | float) for r in doc["results"])

    as_jsonl = run("scan", "-f", coins, "-t", "price", "--base-url", fast_upstream, "-F", "jsonl")
    lines = [json.loads(line) for line in as_jsonl.stdout.splitlines()]
    assert len(lines) == doc["total_scanned"] and all(r["ok"] for r in lines)

    as_csv = run("scan", "BTC", "ZZNOPE", "-t", "signals", "--base-url", fast_upstream, "-F", "csv")
    assert as_csv.returncode == 3
    header, btc, zz = as_csv.stdout.splitlines()
    assert header.startswith("symbol,type,ok,status,error,attempts,elapsed_ms,cached,")
    assert btc.startswith("BTC,signals,true,200,,1,") and zz.startswith("ZZNOPE,signals,false,404,")


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed")
def test_readme_recipes_run(fast_upstream: str) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", str(ROOT / "examples" / "recipes.sh"), fast_upstream],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].isdigit() and int(lines[1]) >= 100  # jq .successful printed a number
    assert any(line.split()[:4] == ["symbol", "ok", "status", "cached"] for line in lines)
    compared = [json.loads(line) for line in lines if '"changed":' in line]
    assert len(compared) == 3  # head -n 3 of the --changes recipe
    assert all(list(c) == ["symbol", "changed", "changed_fields"] for c in compared)
    ok_count = 'scanctl_symbols_total{type="price",outcome="ok"} '
    assert any(line.startswith(ok_count) and int(line.split()[-1]) >= 100 for line in lines)
    readme = (ROOT / "README.md").read_text()
    recipes = [
        line
        for line in (ROOT / "examples" / "recipes.sh").read_text().splitlines()
        if line.startswith(("scanctl ", "printf "))
    ]
    shown = [
        line
        for line in readme.splitlines()
        if line.startswith(("scanctl scan -f examples", "printf "))
    ]
    assert shown and all(line in recipes for line in shown)  # the README shows what runs


def test_crontab_lines_run(fast_upstream: str, tmp_path: Path) -> None:
    lines = [
        line
        for line in (ROOT / "examples" / "crontab").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    (tmp_path / "scans").mkdir()
    (tmp_path / "watchlist.txt").write_text("BTC\nETH\n")
    (tmp_path / "universe.txt").write_text("BTC\nETH\nSOL\n")
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    assert len(lines) == 4
    for line in lines:
        command = line.split(None, 5)[5].replace("http://localhost:8000", fast_upstream)
        result = subprocess.run(
            ["sh", "-c", command], capture_output=True, text=True, env=env, timeout=60
        )
        assert result.returncode == 0 and result.stdout == "" and result.stderr == "", line
    records = (tmp_path / "scans" / "signals.jsonl").read_text().splitlines()
    assert sorted(json.loads(r)["symbol"] for r in records) == ["BTC", "ETH"]
    assert json.loads((tmp_path / "scans" / "signals.metrics.json").read_text())["successful"] == 2
    flips = tmp_path / "scans" / "signal-flips.jsonl"
    assert flips.exists() and flips.read_text() == ""  # a first run has nothing to compare
    (dated,) = (tmp_path / "scans").glob("mss-20*.jsonl")  # the day's file
    nightly = dated.read_text().splitlines()
    assert sorted(json.loads(r)["symbol"] for r in nightly) == ["BTC", "ETH", "SOL"]
    prom = (tmp_path / "scans" / "mss.prom").read_text()  # for node_exporter's textfile collector
    assert 'scanctl_symbols_total{type="mss",outcome="ok"} 3\n' in prom
    assert 'scanctl_last_exit_code{type="mss"} 0\n' in prom


def test_progress_bar_goes_to_the_terminal_on_stderr_never_stdout(fast_upstream: str) -> None:
    """stderr is a pseudo-terminal (so the rich bar is on); stdout a pipe that must hold JSON."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [*SCANCTL, "scan", *symbols(200), "--base-url", fast_upstream, "--concurrency", "4"],
        stdout=subprocess.PIPE,
        stderr=follower,
        cwd=ROOT,
    )
    os.close(follower)
    terminal = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        terminal += chunk
    stdout, _ = process.communicate(timeout=60)
    os.close(leader)
    assert process.returncode == 0
    assert json.loads(stdout)["successful"] == 200
    assert b"\x1b[" not in stdout
    text = terminal.decode(errors="replace")
    assert "200/200" in text and "ok 200" in text  # the bar was drawn, on stderr


@pytest.mark.parametrize(
    ("signum", "fmt"), [(signal.SIGINT, "jsonl"), (signal.SIGTERM, "json"), (signal.SIGINT, "csv")]
)
def test_interrupt_flushes_what_finished_and_exits_130_or_143(
    slow_upstream: str, tmp_path: Path, signum: int, fmt: str
) -> None:
    out = tmp_path / f"out.{fmt}"
    metrics = tmp_path / "metrics.json"
    # The upstream is shared by the cases: count this scan's requests from what it has seen.
    seen_before = fetch_stats(slow_upstream)["requests"]
    process = subprocess.Popen(
        [
            *SCANCTL,
            "scan",
            *symbols(300),
            "--base-url",
            slow_upstream,
            "--concurrency",
            "5",
            "-F",
            fmt,
            "-o",
            str(out),
            "--metrics",
            str(metrics),
            "-q",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    # Wait (bounded) until the scan is under way: the upstream has answered some requests.
    deadline = time.monotonic() + 30
    while fetch_stats(slow_upstream)["requests"] < seen_before + 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == (143 if signum == signal.SIGTERM else 130), stderr
    assert "Traceback" not in stderr
    assert "interrupted by" in stderr and stdout == ""
    summary = json.loads(metrics.read_text())
    assert summary["interrupted"] is True and 0 < summary["total_scanned"] < 300
    text = out.read_text()
    if fmt == "jsonl":
        lines = [json.loads(line) for line in text.splitlines()]  # every line complete
        assert len(lines) == summary["total_scanned"]
    elif fmt == "json":
        doc = json.loads(text)
        assert doc["interrupted"] is True and len(doc["results"]) == summary["total_scanned"]
    else:
        assert len(text.splitlines()) == summary["total_scanned"] + 1


def test_jsonl_records_reach_the_file_while_the_scan_runs(
    slow_upstream: str, tmp_path: Path
) -> None:
    """Streaming: finished records are in the file long before the scan ends, complete lines."""
    out = tmp_path / "out.jsonl"
    names = symbols(40)  # ~0.3 s each, 2 at a time: about 6 s in all
    flags = ["--concurrency", "2", "--no-cache", "-F", "jsonl", "-o", str(out), "-q"]
    process = subprocess.Popen(
        [*SCANCTL, "scan", *names, "--base-url", slow_upstream, *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    seen: list[str] = []
    deadline = time.monotonic() + 30
    while process.poll() is None and time.monotonic() < deadline:
        text = out.read_text() if out.exists() else ""
        if text.count("\n") >= 3:
            seen = text.splitlines()[:3]
            break
        time.sleep(0.05)
    still_running = process.poll() is None
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert still_running and len(seen) == 3  # read while the scan was still going
    assert all(json.loads(line)["ok"] for line in seen)
    finished = [json.loads(line)["symbol"] for line in out.read_text().splitlines()]
    assert sorted(finished) == names


def test_stdout_closed_early_exits_quietly(fast_upstream: str) -> None:
    script = (
        f"{' '.join(SCANCTL)} scan {' '.join(symbols(500))} --base-url {fast_upstream} -F jsonl"
        ' | head -n 1; echo "status=${PIPESTATUS[0]}" >&2'
    )
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert json.loads(result.stdout)["ok"] is True
    assert "Traceback" not in result.stderr and "Error" not in result.stderr
    assert "status=141" in result.stderr


def test_nothing_listening_fails_within_seconds() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    result = run("scan", *symbols(50), "--base-url", f"http://127.0.0.1:{port}", "-F", "jsonl")
    elapsed = time.monotonic() - started
    assert result.returncode == 4
    assert len(result.stdout.splitlines()) == 50
    assert elapsed < 15  # backoff of 4 retries, not 30 s timeouts
