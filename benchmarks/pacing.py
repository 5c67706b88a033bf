"""Pacing benchmark: scanctl and the original scanner against rate limits, faults and an outage.

Each scenario starts its own simulated upstream on 127.0.0.1 (`scanctl.demo.testing`), scans N
symbols (C000000, C000001, ...) with `scanctl scan -t signals` as a subprocess, then does the same
with the re-implemented original scanner (`original_scanner.py`) against a second, fresh upstream
with the same knobs, so neither inherits the other's limiter state. Every figure is measured in
this one run; requests and 429s are counted by the upstream itself.

    ideal  = the least time the scenario allows, e.g. (N - burst) / rate under a rate limit
    ratio  = wall / ideal
    lost   = symbols without an ok record

Rows a-g are issue 4's (a, b: token buckets at first contact; c: their second runs, which
start from the learned rate; d: faults, with and without --hedge; e: an outage; f: X-RateLimit
on a fixed window; g: three more limiters, without targets). Rows h are issue 13's, limiters
and hint headers as widely used server-side libraries really behave:

    sliding-counting  sliding window 500 per 10 s that also counts refused requests
                      (--count-rejected: sending into a full window keeps it full), bare 429s;
                      ideal n / 50, as the issue states it
    overstated-reset  fixed window 50/s whose X-RateLimit-Reset (a fractional epoch) and
                      Retry-After are a second late, with Retry-After on every answer, 200s
                      included; ideal (n - 50) / 50
    moving-window     sliding log, 250 per 5 s, X-RateLimit and Retry-After; (n - 250) / 50
    fixed-no-headers  fixed window 60/s, bare 429s; (n - 60) / 60
    overlapping-runs  four scanctl processes started together (2n symbols split four ways,
                      disjoint) on one token bucket 50/s burst 10 and ONE state directory, as
                      overlapping cron jobs on one machine, nothing configured: they share one
                      send schedule (the state directory's pacing.sqlite3, issue 14); together
                      <= 1.10x (2n - 10) / 50. Once all four are done, one more run alone (n
                      fresh symbols, same upstream, same state directory) has its own target,
                      against (n - 10) / 50. No original-scanner run: it keeps no state.
    overlapping-local the same with --pacing-store local: each process paces itself (before
                      issue 14), for comparison; informational.
    machines-redis    two machines through one Redis: two scanctl processes started together
                      (2n symbols split in two, disjoint) on one token bucket 50/s burst 10,
                      each with its OWN state directory, both with SCANCTL_PACING_STORE set to
                      a redis-server this benchmark starts on a free loopback port; the second
                      runs under `faketime -f +2s`, its clock 2 s ahead, as another machine's.
                      together <= 1.10x (2n - 10) / 50, 0 lost, 429s <= 2%. One row, no run
                      alone after, no original-scanner run. Skipped, with the reason, when
                      redis-server or faketime is missing.

scanctl keeps what it learns about an upstream in SCANCTL_STATE_DIR, keyed by base URL: every
scanctl run gets a fresh empty one, except scenario c, whose second run shares the first run's
against the same upstream process, and overlapping-runs, whose five runs share one
(machines-redis's two runs get one each, and share only the Redis server). The table
goes to stdout; everything also goes to benchmarks/results/latest.json under "pacing" (other
keys in that file are kept).

    python benchmarks/pacing.py [--symbols N] [--only a|...|h|SLUG] [--skip-original]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from latest import RESULTS, save_section
from original_scanner import scan_original  # benchmarks/ is on sys.path when run as a script
from pacing_store import redis_server

from scanctl.demo.testing import fetch_stats, running_demo_process

HERE = Path(__file__).resolve().parent
CONCURRENCY = 50  # scanctl's default, which the benchmark leaves alone
RUN_TIMEOUT = 600.0  # seconds before a stuck run is killed and recorded as such


@dataclass
class Run:
    """One scan of N symbols by one scanner, with what the upstream saw of it."""

    scanner: str
    wall_s: float | None = None
    ideal_s: float | None = None
    lost: int | None = None
    requests: int | None = None
    throttled: int | None = None
    exit_code: int | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    passed: bool | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if self.wall_s is None or not self.ideal_s:
            return None
        return self.wall_s / self.ideal_s

    @property
    def throttled_share(self) -> float | None:
        if self.throttled is None or not self.requests:
            return None
        return self.throttled / self.requests

    def as_dict(self) -> dict[str, Any]:
        return {
            "scanner": self.scanner,
            "wall_s": _round(self.wall_s, 3),
            "ideal_s": _round(self.ideal_s, 3),
            "ratio": _round(self.ratio, 3),
            "lost": self.lost,
            "requests": self.requests,
            "throttled": self.throttled,
            "throttled_share": _round(self.throttled_share, 4),
            "exit_code": self.exit_code,
            "error": self.error,
            "passed": self.passed,
            "failures": self.failures,
            **self.extra,
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


# -- targets: each returns the reasons a run misses it (empty: met) ---------------------------


def limits(
    ratio: float | None = None,
    lost: int | None = None,
    share: float | None = None,
    requests_per_symbol: float | None = None,
    outage_rate: float | None = None,
) -> Callable[[Run, int], list[str]]:
    """A target as a check over a run of n symbols; None leaves that figure free."""

    def check(run: Run, n: int) -> list[str]:
        if run.wall_s is None:
            return ["no result"]
        misses = []
        if ratio is not None and (run.ratio is None or run.ratio > ratio):
            misses.append(f"ratio {_fmt(run.ratio, '.2f')} > {ratio}")
        if lost is not None and (run.lost is None or run.lost > lost * n / 1000):
            misses.append(f"{run.lost} lost")
        if share is not None and (run.throttled_share is None or run.throttled_share > share):
            misses.append(f"429s {_fmt(run.throttled_share, '.1%')}")
        if requests_per_symbol is not None and (run.requests or 0) > requests_per_symbol * n:
            misses.append(f"{run.requests} requests > {requests_per_symbol} x n")
        if outage_rate is not None:
            rate = run.extra.get("outage_requests_per_s")
            if rate is None or rate > outage_rate:
                misses.append(f"outage req/s > {outage_rate}")
        return misses

    return check


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


# -- scenarios ------------------------------------------------------------------------------


def rate_ideal(rate: float, burst: int) -> Callable[[int, dict[str, Any]], float]:
    """Under a rate limit: the burst goes at once, the rest at the rate."""
    return lambda n, delta: (n - burst) / rate


def latency_ideal(n: int, delta: dict[str, Any]) -> float | None:
    """Latency-bound with faults: N x mean server latency over 50 slots, plus one 3 s hang."""
    if not delta["requests"]:
        return None
    return n * (delta["latency_sum"] / delta["requests"]) / CONCURRENCY + 3.0


def knobs(line: str) -> list[str]:
    """The simulated upstream's arguments, written as on a command line."""
    return line.split()


@dataclass
class Scenario:
    key: str  # the letter in the brief (g for issue 4's extra rows, h for issue 13's)
    slug: str
    name: str
    server: list[str]
    ideal: Callable[[int, dict[str, Any]], float | None] | None
    target: str
    check: Callable[[Run, int], list[str]] | None
    scanctl_args: list[str] = field(default_factory=list)
    # scenario c: a second scanctl run against the same upstream, sharing the state directory
    second_run: bool = False
    # False for a row that only varies scanctl's flags: the original's run would be the same
    with_original: bool = True
    # overlapping-runs: this many scanctl runs at once on one state directory, then one alone
    overlapping: int = 0
    # ...and the target of those runs together (None: informational)
    together: tuple[str, Callable[[Run, int], list[str]]] | None = None
    # machines-redis: two runs at once, each its own state dir, sharing one Redis pacing
    # store, the second with its clock this many seconds ahead (faketime); 0: not this row
    machines_clock_ahead: int = 0


RATE_LIMITED = [
    Scenario(
        "a",
        "retry-after",
        "limit 50/s burst 10, Retry-After: 1",
        knobs("--rate-limit 50 --burst 10 --hints retry-after"),
        rate_ideal(50, 10),
        "<=1.12x, 0 lost, 429s <=2%",
        limits(ratio=1.12, lost=0, share=0.02),
        second_run=True,
    ),
    Scenario(
        "b",
        "no-headers",
        "limit 120/s, 429 without headers",
        knobs("--rate-limit 120 --burst 10 --hints none"),
        rate_ideal(120, 10),
        "<=1.20x, 0 lost, 429s <=5%",
        limits(ratio=1.20, lost=0, share=0.05),
        second_run=True,
    ),
]
SECOND_RUN_TARGET = ("<=1.05x, 0 lost, 429s <=1%", limits(ratio=1.05, lost=0, share=0.01))
FAULTS = knobs(
    "--error-rate 0.10 --unavailable-rate 0.05 --hang-rate 0.02 --hang-seconds 3 --drop-rate 0.01"
    " --seed 7 --latency-median 0.1"
)
OTHERS = [
    Scenario(
        "d",
        "faults",
        "faults",
        FAULTS,
        latency_ideal,
        "<=1.3x, <=1 lost/1000, requests <=1.25 n",
        limits(ratio=1.3, lost=1, requests_per_symbol=1.25),
    ),
    Scenario(
        "d",
        "faults-hedge",
        "faults + --hedge",
        FAULTS,
        latency_ideal,
        "<=1.3x, <=1 lost/1000, requests <=1.25 n",
        limits(ratio=1.3, lost=1, requests_per_symbol=1.25),
        scanctl_args=["--hedge"],
        with_original=False,
    ),
    Scenario(
        "e",
        "outage",
        "outage 20 s",
        knobs("--rate-limit 40 --burst 10 --hints retry-after --outage 5:20"),
        None,
        "0 lost, <=1 req/s in outage",
        limits(lost=0, outage_rate=1.0),
        scanctl_args=["--max-outage", "60"],
    ),
    Scenario(
        "f",
        "x-ratelimit",
        "X-RateLimit 100 per 2 s window",
        knobs("--limiter fixed-window --rate-limit 50 --window 2 --hints x-ratelimit"),
        rate_ideal(50, 100),
        # (one 429 allowed: the one request that checks an advertised reset before it)
        "<=1.05x, <=1 429",
        limits(ratio=1.05, share=0.001),
    ),
    Scenario(
        "g",
        "leaky-bucket",
        "leaky bucket 50/s burst 10, Retry-After",
        knobs("--limiter leaky-bucket --rate-limit 50 --burst 10 --hints retry-after"),
        rate_ideal(50, 10),
        "(none)",
        None,
    ),
    Scenario(
        "g",
        "sliding-window",
        "sliding window 100 per 2 s, no headers",
        knobs("--limiter sliding-window --rate-limit 50 --window 2 --hints none"),
        rate_ideal(50, 100),
        "(none)",
        None,
    ),
    Scenario(
        "g",
        "ietf",
        "token bucket 80/s, IETF RateLimit headers",
        knobs("--rate-limit 80 --burst 20 --hints ietf"),
        rate_ideal(80, 20),
        "(none)",
        None,
    ),
]
ISSUE_13 = [
    Scenario(
        "h",
        "sliding-counting",
        "sliding window counting rejected, 500/10 s, bare 429",
        knobs("--limiter sliding-window --rate-limit 50 --window 10 --count-rejected --hints none"),
        rate_ideal(50, 0),  # as the issue states it: n / 50, the window's 500 not counted
        "<=1.15x, 0 lost, 429s <=5%",
        limits(ratio=1.15, lost=0, share=0.05),
    ),
    Scenario(
        "h",
        "overstated-reset",
        "fixed window 50/s, reset overstated by 1 s, Retry-After on every answer",
        knobs(
            "--limiter fixed-window --rate-limit 50 --window 1"
            " --hints x-ratelimit-epoch,retry-after"
            " --reset-offset 1 --retry-after-always --fractional-epoch"
        ),
        rate_ideal(50, 50),
        "<=1.15x, 0 lost, 429s <=2%",
        limits(ratio=1.15, lost=0, share=0.02),
    ),
    Scenario(
        "h",
        "moving-window",
        "moving (sliding log) window, 250 per 5 s, with headers",
        knobs(
            "--limiter sliding-window --rate-limit 50 --window 5 --hints x-ratelimit,retry-after"
        ),
        rate_ideal(50, 250),
        "<=1.20x, 0 lost",
        limits(ratio=1.20, lost=0),
    ),
    Scenario(
        "h",
        "fixed-no-headers",
        "fixed window 60/s, no headers",
        knobs("--limiter fixed-window --rate-limit 60 --window 1 --hints none"),
        rate_ideal(60, 60),
        "<=1.20x, 0 lost, 429s <=5%",
        limits(ratio=1.20, lost=0, share=0.05),
    ),
    Scenario(
        "h",
        "overlapping-runs",
        "four overlapping runs on one 50 r/s limit, then one alone",
        knobs("--rate-limit 50 --burst 10 --hints retry-after"),
        rate_ideal(50, 10),
        "alone: <=1.10x, 0 lost",  # the four together: informational, no target
        limits(ratio=1.10, lost=0),
        with_original=False,
        overlapping=4,
        together=("together: <=1.10x, 0 lost, 429s <=2%", limits(ratio=1.10, lost=0, share=0.02)),
    ),
    Scenario(
        "h",
        "overlapping-local",
        "four overlapping runs pacing themselves (--pacing-store local), then one alone",
        knobs("--rate-limit 50 --burst 10 --hints retry-after"),
        rate_ideal(50, 10),
        "alone: <=1.10x, 0 lost",
        limits(ratio=1.10, lost=0),
        scanctl_args=["--pacing-store", "local"],
        with_original=False,
        overlapping=4,
    ),
    Scenario(
        "h",
        "machines-redis",
        "two machines through one Redis, one clock 2 s ahead, on one 50 r/s limit",
        knobs("--rate-limit 50 --burst 10 --hints retry-after"),
        rate_ideal(50, 10),  # over the 2n symbols of both: (2n - 10) / 50
        "together: <=1.10x, 0 lost, 429s <=2%",
        limits(ratio=1.10, lost=0, share=0.02),
        with_original=False,
        machines_clock_ahead=2,
    ),
]
SCENARIOS = [*RATE_LIMITED, *OTHERS, *ISSUE_13]
LARGEST_BURST = 250  # moving-window's: --symbols must be more


# -- running the scanners -------------------------------------------------------------------


def symbols(n: int, first: int = 0) -> list[str]:
    return [f"C{i:06d}" for i in range(first, first + n)]


def stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {
        "requests": after["requests"] - before["requests"],
        "throttled": after["throttled"] - before["throttled"],
        "latency_sum": after["latency_sum"] - before["latency_sum"],
    }


def outage_rate(stats: dict[str, Any]) -> dict[str, Any]:
    """Requests per second the upstream received while it was down.

    Counted over the whole seconds of `per_second` that lie inside the outage window, so a
    second that is partly before or after it (when sending at full rate is right) never counts.
    """
    if stats.get("outage") is None:
        return {"outage_window_s": None, "outage_requests_per_s": None}
    opens, closes = stats["outage"]
    seconds = range(math.ceil(opens), math.floor(closes))
    counts = [stats["per_second"][s] if s < len(stats["per_second"]) else 0 for s in seconds]
    return {
        "outage_window_s": [round(opens, 2), round(closes, 2)],
        "outage_requests": sum(counts),
        "outage_requests_per_s": round(sum(counts) / max(1, len(counts)), 2),
    }


def measure(run: Run, scenario: Scenario, n: int, before: dict[str, Any], url: str) -> None:
    """Fill in what the upstream counted, the ideal and the verdict."""
    after = fetch_stats(url)
    delta = stats_delta(before, after)
    run.requests, run.throttled = delta["requests"], delta["throttled"]
    if scenario.ideal is not None:
        run.ideal_s = scenario.ideal(n, delta)
    if delta["requests"]:
        run.extra["server_mean_latency_s"] = round(delta["latency_sum"] / delta["requests"], 4)
    if "--outage" in scenario.server:
        run.extra.update(outage_rate(after))


def run_scanctl(
    url: str,
    names: list[str],
    extra: list[str],
    state_dir: str,
    prefix: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> Run:
    """`python -m scanctl scan` over `names` on stdin; lost counted from its jsonl output.
    `prefix`: a command that runs it (`faketime -f +2s`); `env`: added to the environment."""
    run = Run("scanctl")
    with tempfile.TemporaryDirectory(prefix="scanctl-bench-") as work:
        out, metrics = Path(work) / "out.jsonl", Path(work) / "metrics.json"
        command = [*(prefix or []), sys.executable, "-m", "scanctl", "scan", "-f", "-"]
        command += [
            "-t",
            "signals",
            "--base-url",
            url,
            "-F",
            "jsonl",
            "-o",
            str(out),
            "--metrics",
            str(metrics),
        ]
        command += ["-q", "--no-cache", *extra]  # pacing is measured here, not the cache
        environment = {**os.environ, **(env or {}), "SCANCTL_STATE_DIR": state_dir}
        started = time.perf_counter()
        try:
            done = subprocess.run(
                command,
                input="\n".join(names) + "\n",
                capture_output=True,
                text=True,
                env=environment,
                timeout=RUN_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            run.error = f"killed after {RUN_TIMEOUT:.0f} s"
            return run
        run.wall_s = time.perf_counter() - started
        run.exit_code = done.returncode
        if done.returncode not in (0, 3):
            run.error = done.stderr.strip()[-400:] or f"exit {done.returncode}"
        ok: set[str] = set()
        if out.exists():
            for line in out.read_text().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("ok"):
                    ok.add(record.get("symbol"))
        run.lost = len(names) - len(ok & set(names))
        if metrics.exists():
            summary = json.loads(metrics.read_text())
            run.extra["scanctl_requests_sent"] = summary.get("requests_sent")
            run.extra["scanctl_errors"] = summary.get("errors")
    return run


def run_original(url: str, n: int) -> Run:
    run = Run("original")
    started = time.perf_counter()
    try:
        result = asyncio.run(
            asyncio.wait_for(scan_original(symbols(n), url, "signals"), RUN_TIMEOUT)
        )
    except Exception as exc:  # a peer's crash is a result to record, not a reason to stop
        run.error = f"{type(exc).__name__}: {exc}"[:400]
        return run
    run.wall_s = time.perf_counter() - started
    run.lost = n - result.ok
    run.extra["original_errors"] = result.errors
    run.extra["original_limits"] = result.limits
    return run


def judge(run: Run, check: Callable[[Run, int], list[str]] | None, n: int) -> Run:
    """Pass or fail against the target; a run that crashed or was refused never passes."""
    if check is not None:
        run.failures = check(run, n)
        if run.error is not None:
            crashed = f"exit {run.exit_code}" if run.exit_code is not None else run.error[:80]
            run.failures.insert(0, crashed)
        run.passed = not run.failures
    return run


def scanctl_runs(scenario: Scenario, n: int, twice: bool) -> list[Run]:
    """scanctl against a fresh upstream; with `twice`, again against the same one (scenario c)."""
    runs = []
    with (
        running_demo_process(scenario.server) as url,
        tempfile.TemporaryDirectory(prefix="scanctl-state-") as state,
    ):
        for _ in range(2 if twice else 1):
            before = fetch_stats(url)
            run = run_scanctl(url, symbols(n), scenario.scanctl_args, state)
            measure(run, scenario, n, before, url)
            runs.append(run)
    return runs


def together(parts: list[Run], wall_s: float | None) -> Run:
    """Several scanctl runs made at once, as one run: their wall time together, the sum of
    what they lost, the first error; each one's own figures kept under "runs"."""
    run = Run("scanctl", wall_s=wall_s)
    lost = [p.lost for p in parts]
    run.lost = sum(x for x in lost if x is not None) if None not in lost else None
    codes = [p.exit_code for p in parts]
    worst = [c for c in codes if c not in (0, 3)]  # a crash (or a kill: None) first, then 3
    run.exit_code = worst[0] if worst else max(c for c in codes if c is not None)
    errors = [f"run {i + 1}: {p.error}" for i, p in enumerate(parts) if p.error is not None]
    run.error = "; ".join(errors)[-400:] if errors else None
    sent = [p.extra.get("scanctl_requests_sent") for p in parts]
    run.extra["scanctl_requests_sent"] = sum(sent) if None not in sent else None
    run.extra["runs"] = [
        {
            "symbols": p.extra.get("symbols"),
            "wall_s": _round(p.wall_s, 3),
            "lost": p.lost,
            "exit_code": p.exit_code,
            "error": p.error,
            "scanctl_requests_sent": p.extra.get("scanctl_requests_sent"),
        }
        for p in parts
    ]
    return run


def overlapping_rows(scenario: Scenario, n: int) -> list[dict[str, Any]]:
    """overlapping-runs: `scenario.overlapping` scanctl runs started together over 2n symbols
    (disjoint shares), all on one upstream and one state directory, as cron jobs that overlap
    on one machine; then, once all have finished, one run alone over n fresh symbols. Two rows:
    the runs together (against the one limit shared: `scenario.together`), and the one alone."""
    k, total = scenario.overlapping, 2 * n
    names = symbols(total)
    shares = [names[i * total // k : (i + 1) * total // k] for i in range(k)]
    with (
        running_demo_process(scenario.server) as url,
        tempfile.TemporaryDirectory(prefix="scanctl-state-") as state,
    ):
        before = fetch_stats(url)
        started = time.perf_counter()

        def one(share: list[str]) -> Run:
            return run_scanctl(url, share, scenario.scanctl_args, state)

        with ThreadPoolExecutor(max_workers=k) as pool:  # each thread waits on its process
            parts = list(pool.map(one, shares))
        wall = time.perf_counter() - started
        for part, share in zip(parts, shares, strict=True):
            part.extra["symbols"] = len(share)
        crowd = together(parts, None if any(p.wall_s is None for p in parts) else wall)
        shared = "local" not in scenario.scanctl_args
        crowd.extra["note"] = f"{k} runs of {total // k} at once, one state dir" + (
            ", one schedule" if shared else ", each pacing itself"
        )
        measure(crowd, scenario, total, before, url)
        progress(f"{scenario.name}: {k} together", crowd)

        before = fetch_stats(url)
        alone = run_scanctl(url, symbols(n, first=total), scenario.scanctl_args, state)
        alone.extra["note"] = "alone, after the others"
        measure(alone, scenario, n, before, url)
        progress(f"{scenario.name}: alone", alone)
    return [
        row(
            scenario.key,
            f"{k} overlapping runs on one 50 r/s limit, together",
            scenario,
            scenario.together[0] if scenario.together else "(none: informational)",
            [judge(crowd, scenario.together[1] if scenario.together else None, total)],
        ),
        row(
            scenario.key,
            "then one run alone, same upstream and state dir",
            scenario,
            scenario.target,
            [judge(alone, scenario.check, n)],
        ),
    ]


def machines_missing() -> str | None:
    """Why machines-redis cannot run here, or None when it can."""
    for program in ("redis-server", "faketime"):
        if shutil.which(program) is None:
            return f"{program} not installed"
    if importlib.util.find_spec("redis") is None:
        return "the redis package is not installed (pip install -e '.[redis]')"
    return None


def machines_rows(scenario: Scenario, n: int) -> list[dict[str, Any]]:
    """machines-redis: two scanctl runs started together over 2n symbols (disjoint halves),
    one upstream, each with its own state directory (two machines), both pacing through one
    Redis server started here; the second under `faketime`, its clock ahead. One row, against
    the one limit shared: `scenario.check` over the 2n symbols."""
    ahead = scenario.machines_clock_ahead
    label = f"two machines, one Redis, one clock {ahead} s ahead, together"
    total = 2 * n
    names = symbols(total)
    halves = [names[:n], names[n:]]
    note = f"2 runs of {n}, separate state dirs, one Redis, run 2 under faketime +{ahead}s"
    reason = machines_missing()
    if reason is not None:
        skipped = Run("scanctl", extra={"note": note, "skipped": reason})
        print(f"  {scenario.name}: skipped: {reason}", file=sys.stderr, flush=True)
        return [row(scenario.key, label, scenario, scenario.target, [skipped])]
    prefixes = [None, ["faketime", "-f", f"+{ahead}s"]]
    with (
        running_demo_process(scenario.server) as url,
        redis_server() as redis_url,
        tempfile.TemporaryDirectory(prefix="scanctl-state-") as one,
        tempfile.TemporaryDirectory(prefix="scanctl-state-") as two,
    ):
        assert redis_url is not None  # redis-server was found above
        env = {"SCANCTL_PACING_STORE": redis_url}
        before = fetch_stats(url)
        started = time.perf_counter()

        def machine(half: list[str], state: str, prefix: list[str] | None) -> Run:
            return run_scanctl(url, half, scenario.scanctl_args, state, prefix=prefix, env=env)

        with ThreadPoolExecutor(max_workers=2) as pool:  # each thread waits on its process
            parts = list(pool.map(machine, halves, [one, two], prefixes))
        wall = time.perf_counter() - started
        for part, half in zip(parts, halves, strict=True):
            part.extra["symbols"] = len(half)
        crowd = together(parts, None if any(p.wall_s is None for p in parts) else wall)
        crowd.extra["note"] = note
        measure(crowd, scenario, total, before, url)
        progress(f"{scenario.name}: 2 together", crowd)
    return [
        row(scenario.key, label, scenario, scenario.target, [judge(crowd, scenario.check, total)])
    ]


def original_run(scenario: Scenario, n: int) -> Run:
    with running_demo_process(scenario.server) as url:
        before = fetch_stats(url)
        run = run_original(url, n)
        measure(run, scenario, n, before, url)
    return run


def row(key: str, label: str, scenario: Scenario, target: str, runs: list[Run]) -> dict[str, Any]:
    return {
        "key": key,
        "scenario": label,
        "server_args": scenario.server,
        "scanctl_args": scenario.scanctl_args,
        "target": target,
        "runs": [r.as_dict() for r in runs],
    }


def progress(label: str, run: Run) -> None:
    """One line on stderr per finished run, so a long benchmark shows it is alive."""
    figures = f"{_fmt(run.wall_s, '.1f')} s, ratio {_fmt(run.ratio, '.2f')}, {run.lost} lost"
    print(f"  {label}: {run.scanner} {figures}", file=sys.stderr, flush=True)


def run_all(n: int, wanted: set[str], skip_original: bool) -> list[dict[str, Any]]:
    """Run every selected scenario; rows come back in the brief's order (a, b, c, d, ...)."""
    rows: list[dict[str, Any]] = []
    second_runs: list[dict[str, Any]] = []
    for scenario in SCENARIOS:
        selected = scenario.key in wanted or scenario.slug in wanted
        twice = scenario.second_run and "c" in wanted
        if not (selected or twice):
            continue
        if scenario.overlapping:
            rows += overlapping_rows(scenario, n)
            continue
        if scenario.machines_clock_ahead:
            rows += machines_rows(scenario, n)
            continue
        first, *again = scanctl_runs(scenario, n, twice=twice)
        progress(scenario.name, first)
        original = None
        if scenario.with_original and not skip_original:
            original = original_run(scenario, n)
        if original is not None:
            progress(scenario.name, original)
        if selected:
            runs = [judge(first, scenario.check, n)]
            if original is not None:
                runs.append(judge(original, scenario.check, n))
            rows.append(row(scenario.key, scenario.name, scenario, scenario.target, runs))
        if again:
            label = f"second run, learned rate (as {scenario.key})"
            progress(label, again[0])
            target, check = SECOND_RUN_TARGET
            again[0].extra["first_run"] = first.as_dict()
            runs = [judge(again[0], check, n)]
            if original is not None:  # no memory: its one run stands for a second run too
                note = {**original.extra, "note": f"its one run of {scenario.key}"}
                runs.append(judge(replace(original, extra=note, failures=[]), check, n))
            second_runs.append(row("c", label, scenario, target, runs))
    first_two = [r for r in rows if r["key"] in ("a", "b")]
    return first_two + second_runs + [r for r in rows if r["key"] not in ("a", "b")]


# -- the table ------------------------------------------------------------------------------

COLUMNS = (
    ("scenario", 44),
    ("scanner", 8),
    ("wall s", 7),
    ("ideal s", 7),
    ("ratio", 6),
    ("lost", 5),
    ("requests", 8),
    ("429s", 5),
    ("429 %", 6),
    ("target", 38),
    ("result", 0),
)


def _cells(run: dict[str, Any]) -> list[str]:
    share = run["throttled"] / run["requests"] if run["requests"] else None
    if run.get("skipped"):
        verdict = f"skipped: {run['skipped']}"
    elif run["passed"] is None:
        verdict = "-"
    else:
        verdict = "pass" if run["passed"] else "FAIL: " + "; ".join(run["failures"])
    notes = [run["note"]] if run.get("note") else []
    if run.get("outage_requests_per_s") is not None:
        notes.append(f"outage {run['outage_requests_per_s']} req/s")
    if run["exit_code"] not in (None, 0, 3):
        notes.append(f"exit {run['exit_code']}")
    if run["error"] and run["wall_s"] is not None:
        notes.append(run["error"].strip().splitlines()[-1][:70])
    return [
        _fmt(run["wall_s"], ".1f"),
        _fmt(run["ideal_s"], ".1f"),
        _fmt(run["ratio"], ".2f"),
        "-" if run["lost"] is None else str(run["lost"]),
        "-" if run["requests"] is None else str(run["requests"]),
        "-" if run["throttled"] is None else str(run["throttled"]),
        _fmt(share, ".1%"),
        verdict + (f" ({', '.join(notes)})" if notes else ""),
    ]


def print_rows(rows: list[dict[str, Any]]) -> None:
    labels = [f"{r['key']}. {r['scenario']}" for r in rows]
    # The scenario column fits the longest name (some of issue 13's are long), never less.
    columns = [(n, max([w, *map(len, labels)]) if n == "scenario" else w) for n, w in COLUMNS]

    def line(cells: list[str]) -> str:
        parts = []
        for (name, width), cell in zip(columns, cells, strict=True):
            right = name not in ("scenario", "scanner", "target", "result")
            parts.append(cell.rjust(width) if right else cell.ljust(width))
        return " ".join(parts).rstrip()

    print(line([name for name, _ in columns]))
    print(line(["-" * (width or 6) for _, width in columns]))
    for r, label in zip(rows, labels, strict=True):
        for i, run in enumerate(r["runs"]):
            target = r["target"] if i == 0 else ""
            cells = _cells(run)
            first = label if i == 0 else ""
            print(line([first, run["scanner"], *cells[:7], target, cells[7]]), flush=True)


# -- main -----------------------------------------------------------------------------------


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def main() -> int:
    slugs = [s.slug for s in SCENARIOS]
    letters = "abcdefgh"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1000, help="symbols per run (default 1000)")
    parser.add_argument(
        "--only",
        choices=[*letters, *slugs, "second-run"],
        help="run one scenario (a letter: g = issue 4's three extra rows, h = issue 13's and the"
        " shared-schedule ones; or a name)",
    )
    parser.add_argument("--skip-original", action="store_true", help="run scanctl only")
    args = parser.parse_args()
    if args.symbols <= LARGEST_BURST:
        parser.error(
            f"--symbols must be more than {LARGEST_BURST} (the largest burst in the scenarios)"
        )
    only = {"second-run": "c"}.get(args.only, args.only)
    wanted = {only} if only else set(letters)

    started = time.perf_counter()
    rows = run_all(args.symbols, wanted, args.skip_original)
    print_rows(rows)
    total = time.perf_counter() - started
    print(f"\n{args.symbols} symbols per run; {total:.0f} s in all", flush=True)
    save_section(
        "pacing",
        {
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "symbols": args.symbols,
            "concurrency": CONCURRENCY,
            "git_commit": _git("rev-parse", "HEAD"),
            "scanctl_dirty": bool(_git("status", "--porcelain", "--", "../scanctl")),
            "total_seconds": round(total, 1),
            "rows": rows,
        },
    )
    print(f'written to {RESULTS.relative_to(HERE.parent)} ("pacing")')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
