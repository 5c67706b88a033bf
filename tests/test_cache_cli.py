"""The cache from the command line: scan flags, warm-cache, stats, cache clear/prune."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import httpx
import pytest
import respx
from typer.testing import CliRunner

from scanctl.cli import app
from scanctl.clock import MonotonicClock

# respx routes, served over a socket to the default transport (tests/respx_bridge.py).
pytestmark = pytest.mark.usefixtures("respx_over_aiohttp")

BASE = "http://upstream.test"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def upstream():  # type: ignore[no-untyped-def]
    """A mocked upstream counting requests per path: ZZ* are 404, the rest answer."""
    counts: Counter[str] = Counter()

    def answer(request: httpx.Request) -> httpx.Response:
        counts[request.url.path] += 1
        symbol = request.url.path.rsplit("/", 1)[-1]
        if symbol.startswith("ZZ"):
            return httpx.Response(404, json={"detail": f"No data for {symbol}"})
        return httpx.Response(200, json={"symbol": symbol, "seen": counts[request.url.path]})

    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        mock.get(path__regex=r"^/").mock(side_effect=answer)
        yield counts


def invoke(runner: CliRunner, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [*args[:1], "--base-url", BASE, *args[1:]])


def test_scan_answers_from_the_cache_on_the_second_run(
    runner: CliRunner, upstream: Counter[str]
) -> None:
    first = invoke(runner, "scan", "BTC", "ETH", "-t", "mss")
    assert first.exit_code == 0 and sum(upstream.values()) == 2
    second = invoke(runner, "scan", "BTC", "ETH", "-t", "mss")
    assert second.exit_code == 0 and sum(upstream.values()) == 2
    doc = json.loads(second.stdout)
    assert [(r["symbol"], r["cached"], r["stale"], r["data"]["seen"]) for r in doc["results"]] == [
        ("BTC", True, False, 1),
        ("ETH", True, False, 1),
    ]
    assert doc["cached"] == 2 and doc["requests_sent"] == 0
    assert doc["cache"]["hits"] == 2 and doc["cache"]["misses"] == 0
    assert "2 from cache" in second.stderr
    other_type = invoke(runner, "scan", "BTC", "-t", "signals")
    assert json.loads(other_type.stdout)["cached"] == 0 and sum(upstream.values()) == 3


def test_no_cache_neither_reads_nor_writes(
    runner: CliRunner, upstream: Counter[str], tmp_path: Path
) -> None:
    cache = tmp_path / "fresh.sqlite3"
    invoke(runner, "scan", "BTC", "--cache", str(cache), "--no-cache")
    assert not cache.exists()  # nothing written, not even created
    invoke(runner, "scan", "BTC", "--cache", str(cache))  # now stored
    result = invoke(runner, "scan", "BTC", "--cache", str(cache), "--no-cache")
    doc = json.loads(result.stdout)
    assert doc["cached"] == 0 and doc["cache"] is None and sum(upstream.values()) == 3
    stats = runner.invoke(app, ["stats", "--format", "json", "--cache", str(cache)])
    assert json.loads(stats.stdout)["totals"]["runs"] == 1  # --no-cache runs are not logged


def test_no_cache_with_refresh_is_a_usage_error(runner: CliRunner, upstream: Counter[str]) -> None:
    result = invoke(runner, "scan", "BTC", "--no-cache", "--refresh")
    assert result.exit_code == 2 and "--no-cache cannot be combined" in result.stderr
    assert sum(upstream.values()) == 0


def test_a_corrupt_cache_file_costs_a_warning_not_the_scan(
    runner: CliRunner, upstream: Counter[str], tmp_path: Path
) -> None:
    cache = tmp_path / "cache.sqlite3"
    cache.write_text("garbage, not SQLite\n" * 50)
    result = invoke(runner, "scan", "BTC", "--cache", str(cache))
    assert result.exit_code == 0 and json.loads(result.stdout)["successful"] == 1
    warnings = [line for line in result.stderr.splitlines() if "unreadable" in line]
    assert len(warnings) == 1 and "moved it to" in warnings[0]
    assert json.loads(invoke(runner, "scan", "BTC", "--cache", str(cache)).stdout)["cached"] == 1


def test_an_unreachable_redis_cache_costs_a_warning_not_the_scan(
    runner: CliRunner, upstream: Counter[str]
) -> None:
    result = invoke(runner, "scan", "BTC", "--cache", "redis://127.0.0.1:1/0")
    assert result.exit_code == 0 and json.loads(result.stdout)["successful"] == 1
    assert "scanning without the cache" in result.stderr
    stats = runner.invoke(app, ["stats", "--cache", "redis://127.0.0.1:1/0"])
    assert stats.exit_code == 1 and stats.stderr.count("\n") == 1
    assert stats.stderr.startswith("scanctl: error: cache redis://127.0.0.1:1/0")


def test_a_cache_password_is_never_shown(runner: CliRunner, upstream: Counter[str]) -> None:
    result = invoke(runner, "scan", "BTC", "--cache", "redis://:hunter2@127.0.0.1:1/0")
    assert "hunter2" not in result.stderr + result.stdout and ":***@" in result.stderr


def test_warm_cache_fetches_what_is_missing_then_finds_it_fresh(
    runner: CliRunner, upstream: Counter[str]
) -> None:
    first = invoke(runner, "warm-cache", "BTC", "ETH", "SOL", "-t", "price,signals", "--json")
    assert first.exit_code == 0, first.stderr
    counts = json.loads(first.stdout)
    assert (counts["fetched"], counts["fresh"], counts["failed"]) == (6, 0, 0)
    assert counts["types"]["price"] == {"fetched": 3, "fresh": 0, "failed": 0, "not_scanned": 0}
    assert "warm-cache price: fetched 3, already fresh 0, failed 0" in first.stderr
    second = invoke(
        runner, "warm-cache", "BTC", "ETH", "SOL", "XRP", "-t", "price,signals", "--json"
    )
    counts = json.loads(second.stdout)
    assert (counts["fetched"], counts["fresh"], counts["failed"]) == (2, 6, 0)
    assert sum(upstream.values()) == 8
    scan = invoke(runner, "scan", "BTC", "XRP", "-t", "signals")
    assert json.loads(scan.stdout)["cached"] == 2 and sum(upstream.values()) == 8


def test_warm_cache_refreshes_what_is_about_to_expire(
    runner: CliRunner, upstream: Counter[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    invoke(runner, "warm-cache", "BTC", "-t", "price", "--ttl", "10")
    # Three seconds later (on the run's clock: a test does not wait them out), 70 % of the 10 s
    # TTL is left; refresh when under 99.9 % is left: due. (On the real clock this needed 10 ms
    # between the two runs, which a fast machine does not promise.)
    later = MonotonicClock.wall
    monkeypatch.setattr(MonotonicClock, "wall", lambda clock: later(clock) + 3.0)
    again = invoke(
        runner, "warm-cache", "BTC", "-t", "price", "--ttl", "10", "--ahead", "0.999", "--json"
    )
    assert json.loads(again.stdout)["fetched"] == 1 and sum(upstream.values()) == 2


def test_warm_cache_exits_3_when_some_failed_and_checks_its_types(
    runner: CliRunner, upstream: Counter[str]
) -> None:
    result = invoke(runner, "warm-cache", "BTC", "ZZNOPE", "-t", "mss")
    assert result.exit_code == 3 and "failed 1" in result.stderr and result.stdout == ""
    bad = invoke(runner, "warm-cache", "BTC", "-t", "mss,nope")
    assert bad.exit_code == 2 and "unknown --type 'nope'" in bad.stderr


def test_warm_cache_takes_types_in_any_case_and_warms_each_once(
    runner: CliRunner, upstream: Counter[str]
) -> None:
    result = invoke(runner, "warm-cache", "BTC", "-t", "MSS,Price,price", "--json")
    assert result.exit_code == 0, result.stderr
    assert sorted(json.loads(result.stdout)["types"]) == ["mss", "price"]
    assert upstream == {"/mss/analyze/BTC": 1, "/coinapi/quote/BTC": 1}
    assert json.loads(invoke(runner, "scan", "BTC", "-t", "mss").stdout)["cached"] == 1


def test_stats_reports_entries_hit_rate_and_the_original_totals(
    runner: CliRunner, upstream: Counter[str]
) -> None:
    invoke(runner, "scan", "BTC", "ETH", "ZZX", "-t", "mss")  # 2 ok, 1 failed (404)
    invoke(runner, "scan", "BTC", "ETH", "ZZX", "-t", "mss")  # 3 from cache (one negative)
    result = runner.invoke(app, ["stats", "--format", "json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["cache"]["backend"] == "sqlite" and doc["cache"]["size_bytes"] > 0
    assert doc["cache"]["entries"]["mss"] == {"fresh": 3, "expired": 0, "negative": 1, "total": 3}
    totals = doc["totals"]
    assert totals["runs"] == 2 and totals["total_scans"] == 6
    assert (totals["successful_scans"], totals["failed_scans"]) == (4, 2)
    assert (totals["cache_hits"], totals["cache_misses"], totals["hit_rate"]) == (3, 3, 50.0)
    assert totals["requests_sent"] == 3
    assert set(totals) >= {"total_time", "avg_scan_time", "scans_per_second"}
    latest = doc["recent_runs"][0]
    assert latest["command"] == "scan" and latest["type"] == "mss" and latest["hits"] == 3
    table = runner.invoke(app, ["stats", "--format", "table"])
    assert (
        "entries" in table.stdout and "recent runs" in table.stdout and "hit_rate" in table.stdout
    )


def test_stats_is_json_when_stdout_is_not_a_terminal(runner: CliRunner) -> None:
    result = runner.invoke(app, ["stats"])
    assert result.exit_code == 0 and json.loads(result.stdout)["totals"]["runs"] == 0


def test_cache_clear_by_type_and_age(runner: CliRunner, upstream: Counter[str]) -> None:
    invoke(runner, "scan", "BTC", "-t", "mss")
    invoke(runner, "scan", "BTC", "-t", "price")
    cleared = runner.invoke(app, ["cache", "clear", "--older-than", "3600"])
    assert cleared.exit_code == 0 and "removed 0 cached entries" in cleared.stderr
    cleared = runner.invoke(app, ["cache", "clear", "--type", "PRICE"])  # any case, as scan's
    assert "removed 1 cached entries" in cleared.stderr
    assert json.loads(invoke(runner, "scan", "BTC", "-t", "price").stdout)["cached"] == 0
    assert json.loads(invoke(runner, "scan", "BTC", "-t", "mss").stdout)["cached"] == 1
    runner.invoke(app, ["cache", "clear"])
    assert json.loads(invoke(runner, "scan", "BTC", "-t", "mss").stdout)["cached"] == 0


def test_cache_prune_drops_expired_entries(runner: CliRunner, upstream: Counter[str]) -> None:
    invoke(runner, "scan", "BTC", "-t", "price", "--ttl", "0.001")
    invoke(runner, "scan", "ETH", "-t", "price")
    pruned = runner.invoke(app, ["cache", "prune"])
    assert pruned.exit_code == 0 and "pruned 1 expired entries" in pruned.stderr


def test_the_memory_cache_lives_for_one_process(runner: CliRunner, upstream: Counter[str]) -> None:
    invoke(runner, "scan", "BTC", "--cache", "memory")
    result = invoke(runner, "scan", "BTC", "--cache", "memory")
    assert json.loads(result.stdout)["cached"] == 0 and sum(upstream.values()) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["scan", "BTC", "--ttl", "0"], "--ttl must be a positive number"),
        (["scan", "BTC", "--stale-if-error", "-1"], "--stale-if-error must be 0 or more"),
        (["warm-cache", "BTC", "--ahead", "1.5"], "--ahead must be a share between 0 and 1"),
        (["stats", "--format", "xml"], "unknown --format 'xml'"),
        (["cache", "clear", "--older-than", "-5"], "--older-than must be 0 or more"),
    ],
)
def test_bad_cache_flags_exit_2_with_one_line(
    runner: CliRunner, upstream: Counter[str], args: list[str], message: str
) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1
    assert sum(upstream.values()) == 0


def test_the_default_cache_is_a_sqlite_file_in_the_user_cache_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from scanctl.cache import default_location

    monkeypatch.delenv("SCANCTL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_location() == str(tmp_path / "xdg" / "scanctl" / "cache.sqlite3")
    monkeypatch.setenv("SCANCTL_CACHE", "redis://cache.internal:6379/2")
    assert default_location() == "redis://cache.internal:6379/2"


def test_the_profile_sets_ttls_and_the_negative_ttl(
    runner: CliRunner, upstream: Counter[str]
) -> None:
    from scanctl.config import load_builtin_profile

    profile = load_builtin_profile()
    ttls = {name: t.ttl for name, t in profile.types.items()}
    assert ttls == {"smart_money": 300, "mss": 600, "signals": 300, "price": 60}
    assert profile.negative_ttl == 30
    doc = json.loads(invoke(runner, "scan", "BTC", "-t", "mss").stdout)
    assert doc["cache"]["ttl"] == 600


def test_warm_cache_exits_4_when_nothing_could_be_fetched(runner: CliRunner) -> None:
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    result = runner.invoke(
        app,
        ["warm-cache", "BTC", "ETH", "-t", "price", "--base-url", url, "--retries", "1", "--json"],
    )
    assert result.exit_code == 4
    counts = json.loads(result.stdout)
    assert counts["fetched"] == 0 and counts["failed"] + counts["not_scanned"] == 2


def test_a_malformed_or_password_carrying_redis_url_is_a_warning_not_a_leak(
    runner: CliRunner, upstream: Counter[str]
) -> None:
    bad = invoke(runner, "scan", "BTC", "--cache", "redis://h:notaport/0")
    assert bad.exit_code == 0 and "bad cache URL" in bad.stderr and "Traceback" not in bad.stderr
    query = invoke(runner, "scan", "BTC", "--cache", "redis://127.0.0.1:1/0?password=hunter2")
    assert query.exit_code == 0 and "hunter2" not in query.stderr + query.stdout
    assert "password=***" in query.stderr
