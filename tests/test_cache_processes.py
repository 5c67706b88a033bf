"""Many scanctl processes over one cache, against the simulated upstream on a loopback port."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanctl.demo.testing import fetch_stats, running_demo_process
from tests.processes import SCANCTL, start_scanctl


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with running_demo_process(["--latency-median", "0.05", "--latency-sigma", "0.3"]) as url:
        yield url


def start(args: list[str], cache: Path, stdin: str) -> subprocess.Popen[str]:
    return start_scanctl(args, stdin, {"SCANCTL_CACHE": str(cache)})


def finish(process: subprocess.Popen[str], timeout: float = 90) -> tuple[int, str, str]:
    assert process.stdout is not None and process.stderr is not None
    process.wait(timeout)
    return process.returncode, process.stdout.read(), process.stderr.read()


def test_eight_processes_on_one_list_send_one_request_per_symbol(
    upstream: str, tmp_path: Path
) -> None:
    symbols = [f"E{i:04d}" for i in range(200)]
    before = fetch_stats(upstream)["requests"]
    args = ["scan", "-f", "-", "-t", "signals", "--base-url", upstream, "-F", "jsonl", "-q"]
    processes = [start(args, tmp_path / "cache.sqlite3", "\n".join(symbols)) for _ in range(8)]
    outputs = [finish(p) for p in processes]
    sent = fetch_stats(upstream)["requests"] - before
    for code, out, err in outputs:
        assert code == 0 and err == "", err
        records = [json.loads(line) for line in out.splitlines()]
        assert sorted(r["symbol"] for r in records) == symbols and all(r["ok"] for r in records)
    assert sent == len(symbols)  # every symbol fetched once, by whichever process got there first
    fetched = sum(
        sum(1 for line in out.splitlines() if '"cached": false' in line) for _, out, _ in outputs
    )
    assert fetched == len(symbols)


def test_sixteen_processes_scanning_and_warming_never_see_a_locked_database(
    upstream: str, tmp_path: Path
) -> None:
    """Scans and warm-cache runs over overlapping lists, with a TTL short enough that they keep
    writing, all on one SQLite file at once."""
    cache = tmp_path / "cache.sqlite3"
    processes = []
    for i in range(16):
        names = "\n".join(f"K{(i * 37 + j) % 300:04d}" for j in range(120))
        if i % 2:
            args = ["warm-cache", "-f", "-", "-t", "price,signals", "--ttl", "0.5"]
        else:
            args = ["scan", "-f", "-", "-t", "price", "--ttl", "0.5", "-F", "jsonl", "-q"]
        processes.append(start([*args, "--base-url", upstream], cache, names))
    for code, out, err in (finish(p) for p in processes):
        assert "locked" not in err and "busy" not in err, err
        assert code == 0, err
        if out and not out.startswith("{"):
            assert len(out.splitlines()) == 120
    stats = subprocess.run(
        [*SCANCTL, "stats", "--format", "json", "--cache", str(cache)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(stats.stdout)["totals"]["runs"] == 8 + 8 * 2  # warm-cache: one per type
