"""`scan --changes`: each answer compared with the one before it, kept by the cache itself."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scanctl.cache.front import CacheFront, CachePolicy
from scanctl.cache.store import CacheKey, CacheStore, Entry
from scanctl.changes import NOTHING_TO_COMPARE, Change, compare
from scanctl.clock import FakeClock
from scanctl.demo.testing import move_answers, running_demo_process
from tests.engine_helpers import run_engine
from tests.summaries import summary_of

NS = "cryptosatx http://upstream.test"
SCANCTL = [sys.executable, "-m", "scanctl"]


def test_compare_names_the_top_level_fields_that_differ() -> None:
    before = {"symbol": "BTC", "score": 70.1, "signal": "LONG", "gone": 1, "nested": {"a": 1}}
    after = {"symbol": "BTC", "score": 41.0, "signal": "LONG", "nested": {"a": 2}, "new": True}
    assert compare(before, after) == Change(True, ("score", "nested", "new", "gone"))
    assert compare(after, dict(after)) == Change(False, ())
    assert compare(None, after) is NOTHING_TO_COMPARE
    assert compare([1, 2], [1, 3]) == Change(True) and compare("a", "a") == Change(False)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)


@given(st.dictionaries(st.text(max_size=4), json_values), st.data())
def test_changed_fields_are_exactly_the_keys_whose_values_differ(before, data) -> None:  # type: ignore[no-untyped-def]
    after = data.draw(st.dictionaries(st.text(max_size=4), json_values))
    change = compare(before, after)
    differing = {k for k in before.keys() | after.keys() if before.get(k, ...) != after.get(k, ...)}
    assert set(change.fields) == differing and len(change.fields) == len(differing)
    assert change.changed is (before != after)


def test_every_store_keeps_the_answer_an_entry_replaced(any_store: CacheStore) -> None:
    key = CacheKey(NS, "signals", "BTC")
    any_store.set_many([Entry(key, 200, {"score": 2}, None, 10.0, 60.0, 0.1, {"score": 1})])
    assert any_store.get_many([key])[key].previous == {"score": 1}
    claim = any_store.claim(key, "someone", 30.0, newer_than=0.0, now=20.0)
    assert claim.entry is not None and claim.entry.previous == {"score": 1}
    any_store.set_many([Entry(key, 404, None, "HTTP 404", 30.0, 60.0, 0.1, {"score": 2})])
    gone = any_store.get_many([key])[key]
    assert gone.previous == {"score": 2} and gone.last_answer == {"score": 2}
    fresh = CacheKey(NS, "signals", "ETH")
    any_store.set_many([Entry(fresh, 200, {"score": 5}, None, 10.0, 60.0)])
    assert any_store.get_many([fresh])[fresh].previous is None


class MovingUpstream:
    """Answers {"symbol", "score", "signal"}; `scores` says each symbol's score now."""

    def __init__(self) -> None:
        self.scores: dict[str, float] = {}
        self.requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        symbol = request.url.path.rsplit("/", 1)[-1]
        if symbol.startswith("ZZ"):
            return httpx.Response(404, json={"detail": "no data"})
        score = self.scores.get(symbol, 50.0)
        signal = "LONG" if score > 60 else "NEUTRAL"
        return httpx.Response(200, json={"symbol": symbol, "score": score, "signal": signal})


async def _scan(store: CacheStore, clock: FakeClock, upstream: MovingUpstream, **policy: object):  # type: ignore[no-untyped-def]
    cache = CacheFront(
        store,
        NS,
        "signals",
        CachePolicy(**{"ttl": 300.0, "changes": True, **policy}),  # type: ignore[arg-type]
        wall=clock.wall,
        rng=random.Random(3),
    )
    run = await run_engine(upstream, ["BTC", "ETH", "ZZNO"], clock=clock, cache=cache, retries=0)
    cache.close()
    return {r.symbol: r for r in run.records}


@pytest.mark.anyio
async def test_fetched_and_cached_answers_say_what_changed(shared_store: CacheStore) -> None:
    clock, upstream = FakeClock(), MovingUpstream()
    first = await _scan(shared_store, clock, upstream)
    assert [first[s].change for s in ("BTC", "ETH", "ZZNO")] == [NOTHING_TO_COMPARE] * 3

    clock.now += 10
    same = await _scan(shared_store, clock, upstream, refresh=True)
    assert same["BTC"].change == Change(False) and same["ETH"].change == Change(False)
    assert same["ZZNO"].change == NOTHING_TO_COMPARE  # a failure says nothing about the data

    upstream.scores["BTC"] = 75.0
    clock.now += 10
    moved = await _scan(shared_store, clock, upstream, refresh=True)
    assert moved["BTC"].change == Change(True, ("score", "signal"))
    assert moved["ETH"].change == Change(False)
    assert moved["BTC"].to_dict()["changed_fields"] == ["score", "signal"]

    # Served from the cache, an answer still says how it differed from the one it replaced.
    requests = upstream.requests
    clock.now += 10
    cached = await _scan(shared_store, clock, upstream)
    assert upstream.requests == requests  # the 404 too is remembered (negative TTL)
    assert cached["BTC"].cached and cached["BTC"].change == Change(True, ("score", "signal"))
    assert cached["ETH"].cached and cached["ETH"].change == Change(False)


@pytest.mark.anyio
async def test_a_record_without_changes_publishes_no_change_fields(
    shared_store: CacheStore,
) -> None:
    clock, upstream = FakeClock(), MovingUpstream()
    records = await _scan(shared_store, clock, upstream, changes=False)
    assert records["BTC"].change is None
    assert "changed" not in records["BTC"].to_dict()


@pytest.fixture(scope="module")
def moving_upstream() -> Iterator[str]:
    """Half of the symbols get a new answer each time the answers move."""
    args = ["--latency-median", "0.002", "--latency-sigma", "0.1", "--move-share", "0.5"]
    with running_demo_process(args) as url:
        yield url


def _cli(url: str, *args: str) -> tuple[int, list[dict[str, Any]]]:
    command = [*SCANCTL, "scan", "-f", "-", "-t", "signals", "--base-url", url, "-F", "jsonl"]
    result = subprocess.run(
        [*command, "-q", *args],
        input="\n".join(WATCHLIST),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, [json.loads(line) for line in result.stdout.splitlines()]


WATCHLIST = [f"W{i:03d}" for i in range(40)] + ["ZZGONE"]


def test_the_cli_marks_what_moved_and_only_changed_writes_just_that(
    moving_upstream: str,
) -> None:
    code, first = _cli(moving_upstream, "--changes")
    assert code == 3  # the 404 fails, as without --changes
    assert [r["changed"] for r in first] == [None] * len(WATCHLIST)
    assert all(r["changed_fields"] is None for r in first)

    code, unchanged = _cli(moving_upstream, "--changes", "--refresh")
    assert code == 3 and len(unchanged) == len(WATCHLIST)
    assert [r["changed"] for r in unchanged if r["ok"]] == [False] * (len(WATCHLIST) - 1)
    assert next(r for r in unchanged if not r["ok"])["changed"] is None

    move_answers(moving_upstream)
    code, moved = _cli(moving_upstream, "--changes", "--refresh")
    assert code == 3
    before = {r["symbol"]: r["data"] for r in unchanged}
    for record in (r for r in moved if r["ok"]):
        old = before[record["symbol"]]
        differ = [k for k in record["data"] if record["data"][k] != old[k]]
        assert record["changed"] is bool(differ) and record["changed_fields"] == differ
    assert 0 < sum(r["changed"] is True for r in moved) < len(WATCHLIST) - 1  # about half

    move_answers(moving_upstream)
    code, only = _cli(moving_upstream, "--only-changed", "--refresh")
    assert code == 3  # the exit code does not depend on changes
    latest = {r["symbol"]: r["data"] for r in moved}
    _, now = _cli(moving_upstream)  # within the TTL: the answers just stored, from the cache
    expected = [r["symbol"] for r in now if r["ok"] and r["data"] != latest[r["symbol"]]]
    assert expected and sorted(r["symbol"] for r in only) == sorted(expected)  # jsonl: as done
    assert all(r["changed"] is True and r["changed_fields"] for r in only)


def test_changes_need_the_cache() -> None:
    result = subprocess.run(
        [*SCANCTL, "scan", "BTC", "--changes", "--no-cache"], capture_output=True, text=True
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("scanctl: error: --changes compares with the answers kept")


def test_csv_puts_the_change_columns_after_the_record_fields() -> None:
    import io

    from scanctl.output import CsvWriter, StdoutDestination
    from scanctl.records import ScanRecord

    out = io.StringIO()
    writer = CsvWriter(StdoutDestination(out))
    moved = Change(True, ("score", "signal"))
    writer.write(ScanRecord("BTC", "signals", True, 200, {"score": 1}, None, 1, 2.0, change=moved))
    writer.write(ScanRecord("ETH", "signals", True, 200, {"score": 2}, None, 1, 2.0, index=1,
                            change=NOTHING_TO_COMPARE))  # fmt: skip
    writer.finish(summary_of())
    header, btc, eth = out.getvalue().splitlines()
    assert header == (
        "symbol,type,ok,status,error,attempts,elapsed_ms,cached,stale,changed,changed_fields,score"
    )
    assert btc.endswith(",true,score;signal,1") and eth.endswith(",,,2")
