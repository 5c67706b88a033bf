"""scanctl from Python: `scanctl.scan` and `scanctl.run` against the simulated upstream."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import scanctl
from scanctl.cli import app
from scanctl.demo.testing import fetch_stats, running_demo_process
from scanctl.records import RECORD_FIELDS

ROOT = Path(__file__).resolve().parent.parent
EXPORTED = ["Record", "ScanctlError", "Summary", "UpstreamRefused", "UsageError"]
EXPORTED += ["__version__", "run", "scan"]


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with running_demo_process(["--latency-median", "0.002", "--seed", "3"]) as url:
        yield url


def test_all_lists_the_public_names_and_each_is_there() -> None:
    assert sorted(scanctl.__all__) == sorted(EXPORTED)
    for name in scanctl.__all__:
        assert getattr(scanctl, name) is not None, name
    assert scanctl.Record.__name__ == "ScanRecord"
    assert issubclass(scanctl.UsageError, scanctl.ScanctlError)
    with pytest.raises(AttributeError):
        _ = scanctl.ScanEngine  # type: ignore[attr-defined]


def test_importing_scanctl_stays_light() -> None:
    # The summary's type is exported too, and loading it loads nothing of the scan.
    probe = "import sys, scanctl\nscanctl.Summary\nprint('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    heavy = {"httpx", "anyio", "aiohttp", "rich.console", "scanctl.api", "scanctl.runner"}
    assert not loaded & heavy, loaded & heavy


@pytest.mark.anyio
async def test_scan_yields_one_record_per_symbol_for_a_thousand(upstream: str) -> None:
    symbols = [f"S{i:04d}" for i in range(995)] + [f"ZZ{i}" for i in range(5)]
    before = fetch_stats(upstream)["requests"]
    seen = [r async for r in scanctl.scan(symbols, type="price", base_url=upstream, no_cache=True)]
    assert sorted(r.symbol for r in seen) == sorted(symbols)
    assert fetch_stats(upstream)["requests"] - before >= 1000
    first = next(r for r in seen if r.symbol == "S0000")
    assert {field: getattr(first, field) for field in RECORD_FIELDS} == first.to_dict()
    assert first.ok and first.status == 200 and first.type == "price" and first.attempts == 1
    assert first.data["symbol"] == "S0000" and first.error is None
    assert not first.cached and not first.stale and first.elapsed_ms > 0
    missing = [r for r in seen if not r.ok]
    assert sorted(r.symbol for r in missing) == [f"ZZ{i}" for i in range(5)]
    assert all(r.status == 404 and r.error.startswith("HTTP 404") for r in missing)  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_a_scan_stopped_early_closes_cleanly(upstream: str) -> None:
    symbols = [f"E{i:03d}" for i in range(300)]
    taken = []
    async with contextlib.aclosing(
        scanctl.scan(symbols, base_url=upstream, no_cache=True, concurrency=4)
    ) as records:
        async for record in records:
            taken.append(record)
            if len(taken) == 3:
                break
    assert len(taken) == 3


def test_run_returns_the_summary_the_command_prints(upstream: str) -> None:
    symbols = ["BTC", "ETH", "SOL", "ZZNOPE", "ZZGONE"]
    summary = scanctl.run(symbols, type="mss", base_url=upstream, no_cache=True, rate=500)
    assert summary.successful == 3 and summary.failed == 2 and summary.total_scanned == 5
    assert summary.errors == {"HTTP 404": 2} and sorted(summary.failed_symbols) == [
        "ZZGONE",
        "ZZNOPE",
    ]
    assert isinstance(summary, scanctl.Summary)
    assert summary.performance.batches_processed == 1 and summary.interrupted is False
    assert summary.performance.latency_ms.p50 is not None and summary.cache is None
    cli = CliRunner().invoke(
        app, ["scan", *symbols, "-t", "mss", "--base-url", upstream, "--no-cache", "-F", "json"]
    )
    printed = json.loads(cli.stdout)
    del printed["results"]
    document = summary.to_dict()
    assert list(document) == list(printed)  # the same keys in the same order
    assert list(document["performance"]) == list(printed["performance"])
    assert document["performance"]["batches_processed"] == summary.performance.batches_processed
    document["errors"]["changed by the caller"] = 1
    assert summary.to_dict()["errors"] == {"HTTP 404": 2}  # a copy each time
    document = summary.to_dict()
    volatile = {"performance", "started_at", "finished_at", "rate_history", "requests_sent"}
    for either in (printed, document):
        either["failed_symbols"].sort()  # in finishing order
    for key in set(printed) - volatile:
        assert document[key] == printed[key], key
    assert "Summary(scan_type='mss', total_scanned=5, successful=3" in repr(summary)
    with pytest.raises(AttributeError):
        _ = summary.no_such_key


def test_run_uses_and_fills_the_cache_as_the_command_does(upstream: str) -> None:
    first = scanctl.run(["BTC", "ETH"], type="signals", base_url=upstream)
    again = scanctl.run(["BTC", "ETH"], type="signals", base_url=upstream)
    assert first.cached == 0 and again.cached == 2 and again.requests_sent == 0
    fresh = scanctl.run(["BTC"], type="signals", base_url=upstream, refresh=True)
    assert fresh.cached == 0 and fresh.successful == 1


def test_an_unknown_option_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'concurency'"):
        scanctl.run(["BTC"], concurency=5)
    with pytest.raises(TypeError, match="'quiet'"):  # a command-line matter, not a scan's
        scanctl.run(["BTC"], quiet=True)
    with pytest.raises(TypeError, match="unexpected keyword argument 'no_cach'"):
        scanctl.scan(["BTC"], no_cach=True)  # at the call, not at the first record


def test_values_are_checked_as_the_command_line_checks_them() -> None:
    with pytest.raises(scanctl.UsageError, match="concurrency must be between 1 and 10000, got 0"):
        scanctl.run(["BTC"], concurrency=0)
    with pytest.raises(scanctl.UsageError, match="rate must be a positive number, got -1"):
        scanctl.run(["BTC"], rate=-1)
    with pytest.raises(scanctl.UsageError, match="unknown transport 'carrier-pigeon'"):
        scanctl.run(["BTC"], transport="carrier-pigeon")
    with pytest.raises(scanctl.UsageError, match="bad max_body '0'"):
        scanctl.run(["BTC"], max_body="0")
    with pytest.raises(TypeError, match="concurrency must be a whole number, got '20'"):
        scanctl.run(["BTC"], concurrency="20")
    with pytest.raises(TypeError, match="no_cache must be True or False"):
        scanctl.run(["BTC"], no_cache="yes")
    with pytest.raises(scanctl.UsageError, match="unknown --type 'nope'"):
        scanctl.run(["BTC"], type="nope")
    with pytest.raises(scanctl.UsageError, match="invalid symbol"):
        scanctl.run(["../etc"])


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text("utf-8")
    section = text.split("## Use from Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert blocks, "the README's 'Use from Python' has no python example"
    return blocks[0]


def test_the_readme_example_runs(upstream: str, tmp_path: Path) -> None:
    code = _readme_example().replace("http://localhost:8000", upstream)
    script = tmp_path / "example.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "3 of 4 ok; failed: ['ZZNOPE']", lines
    assert lines[1:] and all(line.endswith("200") or "404" in line for line in lines[1:]), lines


@pytest.mark.anyio
async def test_a_remembered_ban_refuses_before_anything_is_sent() -> None:
    from scanctl.state import PacingMemory

    base = "http://127.0.0.1:9"
    memory = PacingMemory()
    memory.remember_ban(base, until_wall=time.time() + 600)
    memory.save()
    with pytest.raises(scanctl.UpstreamRefused, match="banned us until"):
        scanctl.run(["BTC"], base_url=base)
    with pytest.raises(scanctl.UpstreamRefused, match="banned us until"):
        async for _ in scanctl.scan(["BTC"], base_url=base):
            pass
