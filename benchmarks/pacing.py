"""Pacing benchmark: scanctl and the original scanner against rate limits, faults and an outage.

Each scenario starts its own simulated upstream on 127.0.0.1 (`scanctl.demo.testing`), scans N
symbols (C000000, C000001, ...) with `scanctl scan -t signals` as a subprocess, then does the same
with the re-implemented original scanner (`original_scanner.py`) against a second, fresh upstream
with the same knobs, so neither inherits the other's limiter state. Every figure is measured in
this one run; requests and 429s are counted by the upstream itself.

    ideal  = the least time the scenario allows, e.g. (N - burst) / rate under a rate limit
    ratio  = wall / ideal
    lost   = symbols without an ok record

scanctl keeps what it learns about an upstream in SCANCTL_STATE_DIR, keyed by base URL: every
scanctl run gets a fresh empty one, except scenario c, whose second run shares the first run's
against the same upstream process. The table goes to stdout; everything also goes to
benchmarks/results/latest.json under "pacing" (other keys in that file are kept).

    python benchmarks/pacing.py [--symbols N] [--only a|...|g|SLUG] [--skip-original]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from latest import RESULTS, save_section
from original_scanner import scan_original  # benchmarks/ is on sys.path when run as a script

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
    key: str  # the letter in the brief (g for the extra rows)
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


RATE_LIMITED = [
    Scenario(
        "a",
        "retry-after",
        "limit 50/s burst 10, Retry-After: 1",
        knobs("--rate-limit 50 --burst 10 --hints retry-after"),
        rate_ideal(50, 10),
        "<=1.05x, 0 lost, 429s <=2%",
        limits(ratio=1.05, lost=0, share=0.02),
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
        "<=1.05x, 0 429s",
        limits(ratio=1.05, share=0.0),
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


# -- running the scanners -------------------------------------------------------------------


def symbols(n: int) -> list[str]:
    return [f"C{i:06d}" for i in range(n)]


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


def run_scanctl(url: str, n: int, extra: list[str], state_dir: str) -> Run:
    """`python -m scanctl scan` over n symbols on stdin; lost counted from its jsonl output."""
    run = Run("scanctl")
    with tempfile.TemporaryDirectory(prefix="scanctl-bench-") as work:
        out, metrics = Path(work) / "out.jsonl", Path(work) / "metrics.json"
        command = [sys.executable, "-m", "scanctl", "scan", "-f", "-", "-t", "signals"]
        command += ["--base-url", url, "-F", "jsonl", "-o", str(out), "--metrics", str(metrics)]
        command += ["-q", "--no-cache", *extra]  # pacing is measured here, not the cache
        env = {**os.environ, "SCANCTL_STATE_DIR": state_dir}
        started = time.perf_counter()
        try:
            done = subprocess.run(
                command,
                input="\n".join(symbols(n)) + "\n",
                capture_output=True,
                text=True,
                env=env,
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
        run.lost = n - len(ok & set(symbols(n)))
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
            run = run_scanctl(url, n, scenario.scanctl_args, state)
            measure(run, scenario, n, before, url)
            runs.append(run)
    return runs


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
    for scenario in [*RATE_LIMITED, *OTHERS]:
        selected = scenario.key in wanted or scenario.slug in wanted
        twice = scenario.second_run and "c" in wanted
        if not (selected or twice):
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
    if run["passed"] is None:
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
    def line(cells: list[str]) -> str:
        parts = []
        for (name, width), cell in zip(COLUMNS, cells, strict=True):
            right = name not in ("scenario", "scanner", "target", "result")
            parts.append(cell.rjust(width) if right else cell.ljust(width))
        return " ".join(parts).rstrip()

    print(line([name for name, _ in COLUMNS]))
    print(line(["-" * (width or 6) for _, width in COLUMNS]))
    for r in rows:
        for i, run in enumerate(r["runs"]):
            label = f"{r['key']}. {r['scenario']}" if i == 0 else ""
            target = r["target"] if i == 0 else ""
            cells = _cells(run)
            print(line([label[:44], run["scanner"], *cells[:7], target, cells[7]]), flush=True)


# -- main -----------------------------------------------------------------------------------


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def main() -> int:
    slugs = [s.slug for s in [*RATE_LIMITED, *OTHERS]]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1000, help="symbols per run (default 1000)")
    parser.add_argument(
        "--only",
        choices=["a", "b", "c", "d", "e", "f", "g", *slugs, "second-run"],
        help="run one scenario (a letter, g = the three extra rows, or a name)",
    )
    parser.add_argument("--skip-original", action="store_true", help="run scanctl only")
    args = parser.parse_args()
    if args.symbols <= 100:
        parser.error("--symbols must be more than 100 (the largest burst in the scenarios)")
    only = {"second-run": "c"}.get(args.only, args.only)
    wanted = {only} if only else set("abcdefg")

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
