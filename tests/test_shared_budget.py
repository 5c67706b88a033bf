"""Several scanctl processes, one upstream budget (issue 14), with real processes.

Each scan runs at `--rate 20` against the simulated upstream: paced alone, two processes would
send 40 requests/s together; sharing the schedule, they send 20. Wall times say which, with
margins of whole seconds (process start is ~0.3 s each).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanctl.demo.testing import fetch_stats, running_demo_process
from tests.processes import start_scanctl

RATE = 20
PER_PROCESS = 40  # symbols: 2 s alone at RATE, 4 s for two sharing it


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with running_demo_process(["--latency-median", "0.002", "--seed", "7"]) as url:
        yield url


def scan_args(url: str, *more: str) -> list[str]:
    return ["scan", "-f", "-", "-t", "price", "--base-url", url, "-F", "jsonl", "--no-cache", "-q",
            "--rate", str(RATE), *more]  # fmt: skip


def symbols(prefix: str, count: int = PER_PROCESS) -> str:
    return "".join(f"{prefix}{i}\n" for i in range(count))


def wait_for_requests(url: str, count: int, within: float = 20.0) -> None:
    """Wait (polling the upstream's own counter, bounded) until it has seen `count` requests."""
    deadline = time.monotonic() + within
    while fetch_stats(url)["requests"] < count:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def run_together(
    url: str, envs: list[dict[str, str]], *more: str, prefixes: list[list[str]] | None = None
) -> tuple[float, list[str]]:
    """Start one scan per env at once (each run by its `prefixes` command, if any); (seconds
    until the last ended, their stderr)."""
    started = time.monotonic()
    prefixes = prefixes or [[] for _ in envs]
    procs = [
        start_scanctl(scan_args(url, *more), symbols(f"P{i}X"), env, prefix)
        for i, (env, prefix) in enumerate(zip(envs, prefixes, strict=True))
    ]
    errors = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert len(out.splitlines()) == PER_PROCESS
        assert all(json.loads(line)["ok"] for line in out.splitlines())
        errors.append(err)
    return time.monotonic() - started, errors


def test_processes_on_one_machine_share_the_rate(upstream: str, tmp_path: Path) -> None:
    """Nothing configured: two processes with one state directory send RATE together."""
    env = {"SCANCTL_STATE_DIR": str(tmp_path)}
    elapsed, errors = run_together(upstream, [env, env])
    assert errors == ["", ""]
    # 80 requests at 20/s: 3.95 s at least; paced alone each, both would end in about 2 s.
    assert elapsed >= 3.6, elapsed
    assert elapsed < 8.0, elapsed
    assert (tmp_path / "pacing.sqlite3").exists()


def test_local_keeps_each_process_to_itself(upstream: str, tmp_path: Path) -> None:
    env = {"SCANCTL_STATE_DIR": str(tmp_path), "SCANCTL_PACING_STORE": "local"}
    elapsed, errors = run_together(upstream, [env, env])
    assert errors == ["", ""]
    assert elapsed < 3.4, elapsed  # each alone at 20/s: about 2 s, process start included
    assert not (tmp_path / "pacing.sqlite3").exists()


def test_machines_share_the_rate_through_redis(
    upstream: str, tmp_path: Path, redis_url: str
) -> None:
    """Separate state directories (two machines), one Redis: still RATE together."""
    envs = [
        {"SCANCTL_STATE_DIR": str(tmp_path / name), "SCANCTL_PACING_STORE": redis_url}
        for name in ("one", "two")
    ]
    elapsed, errors = run_together(upstream, envs)
    assert errors == ["", ""]
    assert elapsed >= 3.6, elapsed
    assert not (tmp_path / "one" / "pacing.sqlite3").exists()


@pytest.mark.skipif(
    shutil.which("faketime") is None, reason="faketime is not installed (make system-deps)"
)
def test_machines_whose_clocks_differ_share_the_rate_through_redis(
    upstream: str, tmp_path: Path, redis_url: str
) -> None:
    """One machine's clock 2 s ahead (faketime): the schedule is Redis's, read from its own
    TIME, so the two still send RATE together. A schedule from the clients' clocks would be
    2 s off for one of them: it would send at once (both done in about 2 s) or wait 2 s more
    per reservation."""
    envs = [
        {"SCANCTL_STATE_DIR": str(tmp_path / name), "SCANCTL_PACING_STORE": redis_url}
        for name in ("one", "two")
    ]
    ahead = ["faketime", "-f", "+2s"]
    elapsed, errors = run_together(upstream, envs, prefixes=[[], ahead])
    assert errors == ["", ""]
    assert 3.6 <= elapsed < 6.0, elapsed


def test_an_unreachable_store_costs_one_warning(upstream: str, tmp_path: Path) -> None:
    env = {"SCANCTL_STATE_DIR": str(tmp_path)}
    proc = start_scanctl(
        [*scan_args(upstream, "--pacing-store", "redis://127.0.0.1:1/0")], symbols("U", 5), env
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert len(out.splitlines()) == 5
    (line,) = err.splitlines()
    assert line.startswith("scanctl: cannot reach the pacing store redis://127.0.0.1:1/0")
    assert line.endswith("; pacing this process alone")


def test_a_process_killed_holds_nothing_for_long(upstream: str, tmp_path: Path) -> None:
    """kill -9 one of two: the other is back at the whole rate at once (what the dead one had
    reserved ahead is a few slots; its row expires within MEMBER_TTL)."""
    env = {"SCANCTL_STATE_DIR": str(tmp_path)}
    victim = start_scanctl(scan_args(upstream), symbols("V", 1000), env)
    try:
        before = fetch_stats(upstream)["requests"]
        # The victim is sending, past its first --concurrency reservations (a learned rate
        # opens the window at once; Little's law narrows it after the first answers).
        wait_for_requests(upstream, before + 55)
        started = time.monotonic()
        survivor = start_scanctl(scan_args(upstream), symbols("S"), env)
        time.sleep(1.0)  # both sending: the survivor gets half the rate
        os.kill(victim.pid, signal.SIGKILL)
        out, err = survivor.communicate(timeout=60)
        elapsed = time.monotonic() - started
    finally:
        victim.kill()
        victim.communicate()
    assert survivor.returncode == 0, err
    assert len(out.splitlines()) == PER_PROCESS
    # Alone it takes 2 s (+ start); sharing for ~0.7 s of it costs ~0.35 s more. A dead
    # member that held the schedule (or its rate) for seconds would cost that much more.
    assert elapsed < 3.6, elapsed


def test_stats_shows_the_shared_state(upstream: str, tmp_path: Path) -> None:
    env = {"SCANCTL_STATE_DIR": str(tmp_path)}
    proc = start_scanctl(scan_args(upstream), symbols("T", 3), env)
    assert proc.communicate(timeout=60)[0].count("\n") == 3
    stats = start_scanctl(["stats", "--format", "json"], "", env)
    out, err = stats.communicate(timeout=60)
    assert stats.returncode == 0, err
    pacing = json.loads(out)["pacing"]
    assert pacing["store"] == f"sqlite {tmp_path / 'pacing.sqlite3'}"
    (shared,) = pacing["upstreams"]
    assert shared["upstream"] == upstream and len(shared["credential_sha256"]) == 16
    assert shared["processes"] == 0 and shared["ahead_seconds"] == 0.0


def test_a_process_that_joins_starts_at_its_share(upstream: str, tmp_path: Path) -> None:
    """One process runs at --rate 20; another, with nothing known of this upstream (no rate,
    no learned one), joins: it starts at its share of the rate in force, not unpaced in slow
    start, and its summary says two processes shared the budget."""
    env = {"SCANCTL_STATE_DIR": str(tmp_path)}
    first = start_scanctl(scan_args(upstream), symbols("F", 400), env)
    try:
        before = fetch_stats(upstream)["requests"]
        wait_for_requests(upstream, before + 55)  # (as above: settled)
        args = ["scan", "-f", "-", "-t", "price", "--base-url", upstream, "-F", "json", "-q",
                "--no-cache"]  # fmt: skip
        started = time.monotonic()
        joiner = start_scanctl(args, symbols("J"), env)
        out, err = joiner.communicate(timeout=60)
        elapsed = time.monotonic() - started
    finally:
        first.kill()
        first.communicate()
    assert joiner.returncode == 0, err
    summary = json.loads(out)
    assert summary["successful"] == PER_PROCESS
    assert summary["performance"]["processes_sharing"] == 2
    assert summary["performance"]["final_rate_limit"] == pytest.approx(RATE / 2, rel=0.2)
    # 40 requests: about 4 s at half of 20/s, at least 2 s at all of it; unpaced: well under 1 s
    assert elapsed >= 2.0, elapsed


BAN_SECONDS = 2.0
# 418s this close to a ban's first, and no more of them, were on their way before it was told
# (the shared schedule spaces sends 25 ms apart; each answer takes about 2 ms).
IN_FLIGHT = 0.1
MOST_PER_BAN = 3


def ban_waves(banned_at: list[float]) -> list[list[float]]:
    """The 418s grouped by ban: a wave starts with a 418 after the last wave's ban ended."""
    waves: list[list[float]] = []
    for moment in banned_at:
        if waves and moment < waves[-1][0] + BAN_SECONDS:
            waves[-1].append(moment)
        else:
            waves.append([moment])
    return waves


def test_a_ban_stops_every_process_sharing_the_store(tmp_path: Path) -> None:
    """Eight processes share --rate 40 against an upstream allowing 20/s that bans (418) after
    three 429s: once the first 418 is answered, no process sends until the ban ends (the
    upstream's own log of 418s: one per ban, bar one already on its way; pacing each process
    alone, all eight are told, over a quarter of a second). Every process stops as a single
    one does on a 418 (exit 4); those told through the store say so. (A process that starts
    after the ban ended may earn a ban of its own: another wave.)"""
    upstream_args = ["--latency-median", "0.002", "--rate-limit", "20", "--burst", "2",
                     "--ban-after", "3", "--ban-seconds", str(BAN_SECONDS)]  # fmt: skip
    env = {"SCANCTL_STATE_DIR": str(tmp_path)}
    args = ["scan", "-f", "-", "-t", "price", "-F", "jsonl", "--no-cache", "-q", "--rate", "40"]
    with running_demo_process(upstream_args) as url:
        procs = [
            start_scanctl([*args, "--base-url", url], symbols(f"B{i}X", 15), env) for i in range(8)
        ]
        results = [(*proc.communicate(timeout=60), proc.returncode) for proc in procs]
        stats = fetch_stats(url)
    codes = sorted(code for _, _, code in results)
    assert 4 in codes and set(codes) <= {0, 4}, codes
    told = [err for _, err, code in results if code == 4 and "sharing this budget" in err]
    assert told, results
    assert "upstream refused us (HTTP 418 told to a process sharing this budget; " in told[0]
    waves = ban_waves(stats["banned_at"])
    assert waves and len(stats["banned_at"]) == stats["banned"]
    for wave in waves:
        assert len(wave) <= MOST_PER_BAN and wave[-1] - wave[0] <= IN_FLIGHT, waves


def test_a_retry_after_closes_the_gate_of_every_process_sharing_the_store(tmp_path: Path) -> None:
    """Two processes share --rate 8 against an upstream allowing 12 requests per 6 s window,
    whose Retry-After (the rest of the window, over 2 s: a deliberate wait, obeyed, not
    checked) holds both: once one is told, the other sends nothing until then either (the
    upstream's own log of 429s: each wave of them, less than a second apart, refused one
    process's requests only; each pacing itself, the other sends into the closed window)."""
    upstream_args = ["--latency-median", "0.002", "--limiter", "fixed-window", "--window", "6",
                     "--rate-limit", "2"]  # fmt: skip
    env = {"SCANCTL_STATE_DIR": str(tmp_path)}
    args = ["scan", "-f", "-", "-t", "price", "-F", "jsonl", "--no-cache", "-q", "--rate", "8"]
    with running_demo_process(upstream_args) as url:
        procs = [
            start_scanctl([*args, "--base-url", url], symbols(name, 12), env)
            for name in ("GA", "GB")
        ]
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            assert len(out.splitlines()) == 12
        refused = fetch_stats(url)["throttled_at"]
    assert refused
    waves: list[list[tuple[float, str]]] = []
    for moment, path in refused:
        if waves and moment < waves[-1][-1][0] + 1.0:
            waves[-1].append((moment, path))
        else:
            waves.append([(moment, path)])
    for wave in waves:
        assert len({path.rsplit("/", 1)[-1][:2] for _, path in wave}) == 1, waves
