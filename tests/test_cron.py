"""Safe in cron: signals with a grace period, run locks, and resuming a killed scan."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanctl.demo.testing import fetch_stats, running_demo_process
from scanctl.errors import UsageError
from scanctl.resume import prepare_resume

SCANCTL = [sys.executable, "-m", "scanctl"]


def symbols(n: int) -> list[str]:
    return [f"R{i:05d}" for i in range(n)]


@pytest.fixture(scope="module")
def fast_upstream() -> Iterator[str]:
    with running_demo_process(["--latency-median", "0.003", "--latency-sigma", "0.2"]) as url:
        yield url


@pytest.fixture(scope="module")
def slow_upstream() -> Iterator[str]:
    with running_demo_process(["--latency-median", "0.4", "--latency-sigma", "0.05"]) as url:
        yield url


def wait_until(condition, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    """Poll (bounded) for something another process does."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def _popen(url: str, out: Path, n: int, extra: tuple[str, ...]) -> subprocess.Popen[str]:
    command = [*SCANCTL, "scan", "-f", "-", "-t", "signals", "--base-url", url, "-F", "jsonl"]
    process = subprocess.Popen(
        [*command, "-o", str(out), "--no-cache", *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None
    process.stdin.write("\n".join(symbols(n)))
    process.stdin.close()
    process.stdin = None  # written and closed: communicate() must not touch it
    return process


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# -- signals -----------------------------------------------------------------------------------


def test_sigterm_stops_sending_lets_requests_in_flight_finish_and_exits_143(
    slow_upstream: str, tmp_path: Path
) -> None:
    out, metrics = tmp_path / "out.jsonl", tmp_path / "metrics.json"
    before = fetch_stats(slow_upstream)["requests"]
    process = _popen(slow_upstream, out, 300, ("--concurrency", "5", "--metrics", str(metrics)))
    wait_until(lambda: fetch_stats(slow_upstream)["requests"] >= before + 12)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr and "interrupted by SIGTERM" in stderr
    sent = fetch_stats(slow_upstream)["requests"] - before
    records = [json.loads(line) for line in lines(out)]
    # Every request that left got its answer recorded: the ones in flight were waited for,
    # and nothing new was sent after the signal.
    assert len(records) == sent and all(r["ok"] for r in records)
    summary = json.loads(metrics.read_text())
    assert summary["interrupted"] is True and summary["total_scanned"] == sent < 300


def test_a_second_ctrl_c_exits_at_once_leaving_complete_lines(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with running_demo_process(["--latency-median", "30", "--latency-sigma", "0.01"]) as url:
        process = _popen(url, out, 50, ("--concurrency", "4", "--grace", "120"))
        wait_until(lambda: fetch_stats(url)["requests"] >= 4)
        process.send_signal(signal.SIGINT)  # waits up to 120 s for answers due in 30 s...
        assert process.stderr is not None
        notice = process.stderr.readline()
        assert "SIGINT: sending no more; waiting up to 120 s for 4 requests in flight" in notice
        process.send_signal(signal.SIGINT)  # ...unless told twice
        _, stderr = process.communicate(timeout=15)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted by SIGINT, SIGINT" in stderr
    for line in lines(out):
        json.loads(line)


# -- locks -------------------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys, time
    from scanctl.lock import held, lock_path
    with held(lock_path(sys.argv[1], sys.argv[2]), sys.argv[2]):
        print("held", flush=True)
        time.sleep(600)
    """
)


def hold(kind: str, name: str) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, kind, name], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_scan_on_the_same_output_exits_75_naming_the_holder(
    fast_upstream: str, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    holder = hold("output", str(out))
    try:
        before = fetch_stats(fast_upstream)["requests"]
        process = _popen(fast_upstream, out, 20, ())
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 75
        assert stderr.count("\n") == 1 and f"pid {holder.pid}" in stderr
        assert "holds the lock on" in stderr and "--wait-lock" in stderr
        assert fetch_stats(fast_upstream)["requests"] == before and not out.exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_shared_lock_name_keeps_different_outputs_apart(
    fast_upstream: str, tmp_path: Path
) -> None:
    holder = hold("name", "nightly")
    try:
        process = _popen(fast_upstream, tmp_path / "b.jsonl", 20, ("--lock", "nightly"))
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 75 and "--lock nightly" in stderr
        free = _popen(fast_upstream, tmp_path / "c.jsonl", 20, ("--lock", "other"))
        assert free.wait(30) == 0
    finally:
        holder.kill()
        holder.wait()


def test_wait_lock_waits_for_a_holder_killed_with_sigkill(
    fast_upstream: str, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    holder = hold("output", str(out))
    process = _popen(fast_upstream, out, 20, ("--wait-lock", "60"))
    assert process.stderr is not None
    notice = process.stderr.readline()
    assert "waiting up to 60 s for the lock" in notice and f"pid {holder.pid}" in notice
    holder.send_signal(signal.SIGKILL)  # the kernel releases the flock with the process
    holder.wait()
    assert process.wait(60) == 0
    assert len(lines(out)) == 20


def test_bad_lock_flags_are_usage_errors(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from scanctl.cli import app

    runner = CliRunner()
    for args, message in [
        (["--lock", "../etc/passwd"], "bad --lock"),
        (["--wait-lock", "-1"], "--wait-lock must be 0 or more"),
        (["--grace", "-2"], "--grace must be 0 or more"),
        (["--resume"], "--resume needs -F jsonl and -o FILE"),
        (["--resume", "-F", "jsonl"], "--resume needs -F jsonl and -o FILE"),
    ]:
        result = runner.invoke(app, ["scan", "BTC", "--base-url", "http://127.0.0.1:9", *args])
        assert result.exit_code == 2 and message in result.stderr, (args, result.stderr)


# -- resume ------------------------------------------------------------------------------------


def record(symbol: str, ok: bool = True, type_name: str = "signals") -> str:
    return json.dumps({"symbol": symbol, "type": type_name, "ok": ok, "status": 200 if ok else 503})


def test_resume_keeps_ok_records_and_drops_failed_duplicate_and_truncated_lines(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text(
        "\n".join(
            [
                record("BTC"),
                record("ETH", ok=False),
                record("BTC"),  # a duplicate
                record("SOL", type_name="price"),  # another type: kept, not counted
                record("XRP"),
            ]
        )
        + '\n{"symbol": "ADA", "type": "sig'  # cut short by a crash
    )
    state = prepare_resume(str(out), "signals")
    assert state.done == {"BTC", "XRP"}
    assert (state.dropped_failed, state.dropped_duplicates, state.dropped_broken) == (1, 1, 1)
    assert [json.loads(line)["symbol"] for line in lines(out)] == ["BTC", "SOL", "XRP"]
    assert out.read_text().endswith("\n")


def test_resume_scans_only_the_rest_and_the_summary_counts_both(
    fast_upstream: str, tmp_path: Path
) -> None:
    out, metrics = tmp_path / "out.jsonl", tmp_path / "metrics.json"
    names = symbols(40)
    out.write_text(
        "".join(record(s) + "\n" for s in names[:25]) + record(names[25], ok=False) + "\n"
    )
    before = fetch_stats(fast_upstream)["requests"]
    process = _popen(fast_upstream, out, 40, ("--resume", "--metrics", str(metrics)))
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "resuming" in stderr and "25 symbols already done, 15 to scan" in stderr
    assert fetch_stats(fast_upstream)["requests"] - before == 15
    summary = json.loads(metrics.read_text())
    assert summary["resumed"] == 25 and summary["successful"] == 40
    assert summary["total_scanned"] == 40 and summary["requested"] == 40
    assert Counter(json.loads(line)["symbol"] for line in lines(out)) == Counter(names)


def test_a_scan_killed_three_times_and_resumed_holds_every_symbol_once(
    fast_upstream: str, tmp_path: Path
) -> None:
    """SIGKILL a real scan at random points of its progress, three times, then let a resumed
    run finish: the file ends with every symbol exactly once, all ok."""
    n = 3000
    out = tmp_path / "out.jsonl"
    rng = random.Random()
    kills = []
    for _ in range(3):
        already = len(lines(out))
        target = already + rng.randint(1, (n - already) // 3)
        scan = _popen(fast_upstream, out, n, ("--resume", "-q", "--concurrency", "20"))

        def progressed(scan: subprocess.Popen[str] = scan, target: int = target) -> bool:
            return len(lines(out)) >= target or scan.poll() is not None

        wait_until(progressed, timeout=60)
        scan.send_signal(signal.SIGKILL)
        scan.wait()
        kills.append(target)
    final = _popen(fast_upstream, out, n, ("--resume", "-q"))
    _, stderr = final.communicate(timeout=120)
    assert final.returncode == 0, (kills, stderr)
    records = [json.loads(line) for line in lines(out)]
    assert Counter(r["symbol"] for r in records) == Counter(symbols(n)), kills
    assert all(r["ok"] for r in records)
    assert os.path.getsize(out) == sum(len(line) + 1 for line in lines(out))


def test_resume_refuses_a_file_that_is_not_jsonl_and_leaves_it_alone(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    text = '{\n  "scan_type": "signals",\n  "results": []\n}\n'
    out.write_text(text)
    with pytest.raises(UsageError, match="line 1 is not a scanctl jsonl record"):
        prepare_resume(str(out), "signals")
    assert out.read_text() == text


def test_resume_compares_symbols_as_the_reader_does_and_keeps_permissions(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text(record("btc") + "\n" + record("ETH", ok=False) + "\n")
    out.chmod(0o640)
    state = prepare_resume(str(out), "signals")
    assert state.done == {"BTC"} and (out.stat().st_mode & 0o777) == 0o640
