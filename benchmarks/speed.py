"""Speed benchmark: scanctl's own overhead, latency-bound scans, 100k symbols, startup; with peers.

Every figure is measured in this one run, on loopback, against `fast_upstream.py` (a bare asyncio
server several times faster than any client here) started by this script:

1. Server ceiling: `wrk -t1 -cC` against the instant server at each concurrency C, so the table
   shows the server is not what limits the clients (the raw aiohttp loop must stay below it).
2. Instant server (latency 0), N symbols (default 5000) at concurrency 1, 10, 50, 200: scanctl
   (default transport, then `--transport httpx` and `--transport aiohttp`), the peers of
   `peers.py` (raw aiohttp, plain httpx, aiometer + httpx, httpx over httpx-aiohttp, httpx2) and,
   once at its own limits, the batch-of-50 original scanner. Reported: req/s = N / wall (wall is
   around the whole process, interpreter start included), req/s over the scan's own span, and
   CPU (user + sys) per request. Targets at c=50: scanctl >= 0.5 x raw aiohttp, >= 4 x plain httpx.
3. Latency-bound (lognormal, 100 ms median, sigma 0.5, seed 42; a fresh server per run so every
   client draws the same latencies): 1000 symbols at c=50 (target wall / ideal <= 1.10) and 5000
   at c=200 (<= 1.20), where ideal = n x mean latency / C + slowest latency, as the server drew
   them (its /_demo/stats). raw aiohttp and the original run the same for comparison.
4. Scale: 10 000 and 100 000 symbols to jsonl at c=50 against the instant server: the scanctl
   process's peak RSS (target <= 150 MB at 100k) and the wall ratio 100k / 10k (target <= 11).
5. Startup: median of 20 `scanctl --version` (hyperfine when installed; target <= 0.15 s).

Each client is its own subprocess, reaped with os.wait4 so its CPU time and peak RSS are its own
(getrusage(RUSAGE_CHILDREN) would mix in every child reaped so far, servers included). scanctl
gets an empty SCANCTL_STATE_DIR per run and `--no-cache`, so no run learns from another.

Tables go to stdout, one progress line per run to stderr; everything goes to
benchmarks/results/latest.json under "speed" (other sections are kept) and a chart to
benchmarks/results/speed.png: time / ideal per scenario (with pacing.py's ratios when its
section is in latest.json), and throughput against concurrency per client.

    python benchmarks/speed.py [--quick] [--symbols N] [--only instant,latency,...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from latest import RESULTS, save_section

from scanctl.demo.testing import fetch_stats, running_upstream

HERE = Path(__file__).resolve().parent
CHART = HERE / "results" / "speed.png"

# The clients, in table order. scanctl's variants differ only by flags; "scanctl" is whatever
# the default transport is at the time of the run.
SCANCTL_VARIANTS: dict[str, list[str]] = {
    "scanctl": [],
    "scanctl-httpx": ["--transport", "httpx"],
    "scanctl-aiohttp": ["--transport", "aiohttp"],
}
PEERS = ("raw-aiohttp", "plain-httpx", "aiometer-httpx", "httpx-aiohttp", "httpx2")
ORIGINAL = "original"  # batch-of-50 with its own limits: run once per scenario, not per C
CLIENTS = (*SCANCTL_VARIANTS, *PEERS, ORIGINAL)
SCENARIOS = ("ceiling", "instant", "latency", "scale", "startup")

# Targets from the issue.
VS_RAW_AIOHTTP = 0.5  # instant c=50: scanctl req/s / raw aiohttp req/s, at least
VS_PLAIN_HTTPX = 4.0  # instant c=50: scanctl req/s / plain httpx req/s, at least
LATENCY_TARGETS = {50: 1.10, 200: 1.20}  # latency-bound wall / ideal, at most, by concurrency
RSS_LIMIT_MB = 150.0  # scale: peak RSS of the largest run, at most
SCALE_SLACK = 1.1  # scale: wall grows at most 1.1 x as fast as the symbols (100k / 10k <= 11)
STARTUP_LIMIT_S = 0.15  # `scanctl --version`, median, at most
RATIO_AT = 50  # the concurrency the instant targets are checked at
REPORT_ONLY = "(none)"  # the target of a figure that is reported, not judged

# The sizes the issue's targets are set for (smaller runs still show them, marked).
ISSUE_SYMBOLS = 5000
ISSUE_LATENCY = [(1000, 50), (5000, 200)]
ISSUE_SCALE = [10_000, 100_000]

LATENCY_SERVER = ["--latency-median", "0.1", "--latency-sigma", "0.5", "--seed", "42"]
RUN_TIMEOUT = 600.0  # seconds before a stuck client is killed and recorded as such


# -- results ---------------------------------------------------------------------------------


@dataclass
class Run:
    """One client process over n symbols: what it took and what it got."""

    client: str
    symbols: int
    concurrency: int | None  # None: the original scanner, which has its own limits
    wall_s: float | None = None  # around the process, interpreter start included
    span_s: float | None = None  # the scan itself, as the client timed it
    cpu_s: float | None = None  # user + sys of the process
    peak_rss_mb: float | None = None
    ok: int | None = None
    exit_code: int | None = None
    error: str | None = None
    ideal_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rps(self) -> float | None:
        return _div(self.symbols, self.wall_s)

    @property
    def span_rps(self) -> float | None:
        return _div(self.symbols, self.span_s)

    @property
    def cpu_ms_per_request(self) -> float | None:
        return None if self.cpu_s is None else 1000 * self.cpu_s / self.symbols

    @property
    def ratio(self) -> float | None:
        return _div(self.wall_s, self.ideal_s)

    @property
    def span_ratio(self) -> float | None:
        return _div(self.span_s, self.ideal_s)

    def as_dict(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "symbols": self.symbols,
            "concurrency": self.concurrency,
            "wall_s": _round(self.wall_s, 3),
            "span_s": _round(self.span_s, 3),
            "req_per_s": _round(self.rps, 1),
            "span_req_per_s": _round(self.span_rps, 1),
            "cpu_s": _round(self.cpu_s, 3),
            "cpu_ms_per_request": _round(self.cpu_ms_per_request, 4),
            "peak_rss_mb": _round(self.peak_rss_mb, 1),
            "ok": self.ok,
            "exit_code": self.exit_code,
            "error": self.error,
            "ideal_s": _round(self.ideal_s, 3),
            "wall_over_ideal": _round(self.ratio, 3),
            "span_over_ideal": _round(self.span_ratio, 3),
            **self.extra,
        }


@dataclass
class Check:
    """One acceptance figure against its target; passed is None when it could not be measured."""

    name: str
    value: float | None
    target: str  # e.g. ">= 0.5"
    passed: bool | None
    note: str = ""

    def line(self) -> str:
        verdict = {True: "pass", False: "FAIL", None: "not measured"}[self.passed]
        if self.target == REPORT_ONLY:
            verdict = "reported" if self.value is not None else "not measured"
        value = "-" if self.value is None else f"{self.value:.3g}"
        note = f"  ({self.note})" if self.note else ""
        return f"  {self.name:<46} {value:>8}  target {self.target:<10} {verdict}{note}"


def check(name: str, value: float | None, op: str, limit: float, note: str = "") -> Check:
    """A figure compared with its limit (op is "<=" or ">="); None when it is missing."""
    if value is None:
        return Check(name, None, f"{op} {limit:g}", None, note)
    passed = value <= limit if op == "<=" else value >= limit
    return Check(name, value, f"{op} {limit:g}", passed, note)


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


# -- processes -------------------------------------------------------------------------------


@dataclass
class Measured:
    """A finished child process, with the resources it alone used."""

    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool


def measure_process(
    argv: Sequence[str], stdin: Path | None, env: dict[str, str], timeout: float
) -> Measured:
    """Run argv to the end; wall time around it, its CPU and peak RSS from os.wait4.

    Output goes to temporary files rather than pipes, so no reader thread shares the CPU with
    the child and the process can be reaped by wait4 (subprocess's own wait would discard the
    child's rusage).
    """
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        open(stdin or os.devnull, "rb") as given,
    ):
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdin=given, stdout=out, stderr=err, env=env)
        killer = threading.Timer(timeout, process.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:  # interrupted: leave no client running behind
            process.kill()
            process.wait()
            raise
        finally:
            killer.cancel()
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(
            wall_s=wall,
            cpu_s=usage.ru_utime + usage.ru_stime,
            peak_rss_mb=usage.ru_maxrss / 1024,  # kilobytes on Linux
            exit_code=process.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            timed_out=wall >= timeout,
        )


@contextlib.contextmanager
def fast_upstream(args: Sequence[str] = (), startup_timeout: float = 20.0) -> Iterator[str]:
    """Run benchmarks/fast_upstream.py on a free loopback port; yield its base URL."""
    script = HERE / "fast_upstream.py"
    command = [sys.executable, str(script), "--host", "127.0.0.1", "--port", "0", *args]
    with running_upstream(command, startup_timeout) as url:
        yield url


def scanctl_command() -> list[str]:
    """The installed `scanctl` script (what users run), else `python -m scanctl`."""
    script = Path(sys.executable).parent / "scanctl"
    return [str(script)] if script.exists() else [sys.executable, "-m", "scanctl"]


def clean_env(state_dir: Path | None = None) -> dict[str, str]:
    """This environment without SCANCTL_* settings, so "default" means scanctl's default."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCANCTL_")}
    if state_dir is not None:
        env["SCANCTL_STATE_DIR"] = str(state_dir)
    return env


def write_symbols(n: int, folder: Path) -> Path:
    """C000000, C000001, ... one a line; one file per size, shared by every client."""
    path = folder / f"symbols-{n}.txt"
    if not path.exists():
        path.write_text("".join(f"C{i:06d}\n" for i in range(n)))
    return path


# -- running one client ----------------------------------------------------------------------


def run_client(
    client: str, url: str, n: int, concurrency: int | None, symbols: Path, timeout: float
) -> Run:
    """One client process over the n symbols in `symbols`, against the server at url."""
    run = Run(client, n, concurrency)
    c = str(concurrency or 50)
    with tempfile.TemporaryDirectory(prefix="scanctl-speed-") as folder:
        work = Path(folder)
        out, metrics = work / "out.jsonl", work / "metrics.json"  # scanctl's
        env = clean_env()
        if client in SCANCTL_VARIANTS:
            argv = [*scanctl_command(), "scan", "-f", str(symbols), "-t", "mss"]
            argv += ["--base-url", url, "--concurrency", c, "--no-cache", "-q"]
            argv += ["-F", "jsonl", "-o", str(out), "--metrics", str(metrics)]
            argv += SCANCTL_VARIANTS[client]
            env = clean_env(work / "state")
        elif client == ORIGINAL:
            argv = [sys.executable, str(HERE / "original_scanner.py"), "--base-url", url]
            argv += ["-t", "mss"]
        else:
            argv = [sys.executable, str(HERE / "peers.py"), client, "--base-url", url]
            argv += ["--concurrency", c]
        before = fetch_stats(url)["requests"]
        done = measure_process(argv, symbols, env, timeout)
        run.extra["server_requests"] = fetch_stats(url)["requests"] - before
        run.wall_s, run.cpu_s = done.wall_s, done.cpu_s
        run.peak_rss_mb, run.exit_code = done.peak_rss_mb, done.exit_code
        if done.timed_out:
            run.error = f"killed after {timeout:g} s"
        elif done.exit_code not in (0, 3):
            run.error = (done.stderr.strip() or f"exit {done.exit_code}")[-400:]
        try:
            if client in SCANCTL_VARIANTS:
                _read_scanctl(run, metrics, out)
            else:
                _read_peer(run, done.stdout)
        except (OSError, ValueError, KeyError) as exc:
            run.error = run.error or f"no result: {type(exc).__name__}: {exc}"[:400]
    if run.ok is not None and run.ok < n:
        run.error = run.error or f"{n - run.ok} of {n} not ok"
    return run


def _read_scanctl(run: Run, metrics: Path, out: Path) -> None:
    summary = json.loads(metrics.read_text())
    run.ok = summary["successful"]
    started = datetime.fromisoformat(summary["started_at"])
    finished = datetime.fromisoformat(summary["finished_at"])
    run.span_s = (finished - started).total_seconds()
    with out.open("rb") as records:
        run.extra["records_written"] = sum(
            chunk.count(b"\n") for chunk in iter(lambda: records.read(1 << 20), b"")
        )


def _read_peer(run: Run, stdout: str) -> None:
    """peers.py prints one JSON line; original_scanner.py an indented JSON summary."""
    result = json.loads(stdout)
    if run.client == ORIGINAL:
        run.ok = result["successful"]
        run.span_s = result["total_time_seconds"]
    else:
        run.ok = result["ok"]
        run.span_s = result["seconds"]


def progress(label: str, run: Run) -> None:
    """One line per finished run on stderr, so a long benchmark shows it is alive."""
    figures = (
        f"wall {_fmt(run.wall_s, '.2f')} s ({_fmt(run.rps, '.0f')} req/s), "
        f"span {_fmt(run.span_s, '.2f')} s, CPU {_fmt(run.cpu_ms_per_request, '.3f')} ms/req, "
        f"RSS {_fmt(run.peak_rss_mb, '.0f')} MB"
    )
    if run.ideal_s is not None:
        figures += f", wall/ideal {_fmt(run.ratio, '.2f')}"
    if run.error:
        figures += f"; ERROR {run.error.strip().splitlines()[-1][:120]}"
    print(f"  {label}: {run.client} {figures}", file=sys.stderr, flush=True)


# -- 1. server ceiling -----------------------------------------------------------------------


def wrk_ceiling(url: str, concurrency: int, seconds: float) -> float | None:
    """Requests per second wrk (one thread, C connections) gets; None without wrk."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    target = f"{url}/mss/analyze/C000001?send_alert=false"
    argv = [wrk, "-t1", f"-c{concurrency}", f"-d{seconds:g}s", target]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    found = re.search(r"Requests/sec:\s*([\d.]+)", done.stdout)
    return float(found.group(1)) if found else None


# -- the benchmark ---------------------------------------------------------------------------


@dataclass
class Options:
    symbols: int
    levels: list[int]
    latency: list[tuple[int, int]]
    scale: list[int]
    wrk_seconds: float
    startup_runs: int
    clients: list[str]
    only: set[str]
    timeout: float
    quick: bool
    chart: bool


class Benchmark:
    """Runs the selected scenarios in order and keeps every figure for the table and the file."""

    def __init__(self, options: Options, work: Path) -> None:
        self.o = options
        self.work = work
        self.ceiling: dict[int, float | None] = {}
        self.instant: list[Run] = []
        self.latency: list[Run] = []
        self.scale: list[Run] = []
        self.startup: dict[str, Any] = {}
        self.checks: dict[str, list[Check]] = {s: [] for s in SCENARIOS}
        self.notes: list[str] = []

    def wants(self, client: str) -> bool:
        return client in self.o.clients

    # 1 and 2 share one instant server: the ceiling is the one the clients meet.
    def run_instant(self) -> None:
        symbols = write_symbols(self.o.symbols, self.work)
        with fast_upstream() as url:
            if "ceiling" in self.o.only:
                if shutil.which("wrk") is None:
                    self.notes.append("wrk not installed: no server ceiling measured")
                for c in self.o.levels:
                    self.ceiling[c] = wrk_ceiling(url, c, self.o.wrk_seconds)
                    rate = _fmt(self.ceiling[c], ".0f")
                    print(f"  ceiling c={c}: wrk {rate} req/s", file=sys.stderr, flush=True)
            if "instant" not in self.o.only:
                return
            for c in self.o.levels:
                for client in CLIENTS:
                    if client != ORIGINAL and self.wants(client):
                        self._instant_run(client, url, c, symbols)
            if self.wants(ORIGINAL):
                self._instant_run(ORIGINAL, url, None, symbols)

    def _instant_run(self, client: str, url: str, c: int | None, symbols: Path) -> None:
        run = run_client(client, url, self.o.symbols, c, symbols, self.o.timeout)
        ceiling = self.ceiling.get(c or RATIO_AT)
        if ceiling:  # the least time the server allows at this concurrency
            run.ideal_s = self.o.symbols / ceiling
        progress(f"instant c={c or 'own'}", run)
        self.instant.append(run)

    def run_latency(self) -> None:
        for n, c in self.o.latency:
            symbols = write_symbols(n, self.work)
            for client in ("scanctl", "raw-aiohttp", ORIGINAL):
                if not self.wants(client):
                    continue
                with fast_upstream(LATENCY_SERVER) as url:  # fresh: same draws for everyone
                    before = fetch_stats(url)
                    run = run_client(client, url, n, c, symbols, self.o.timeout)
                    after = fetch_stats(url)
                requests = after["requests"] - before["requests"]
                if requests:
                    mean = (after["latency_sum"] - before["latency_sum"]) / requests
                    run.ideal_s = n * mean / c + after["latency_max"]
                    run.extra["server_mean_latency_s"] = round(mean, 4)
                    run.extra["server_slowest_s"] = round(after["latency_max"], 3)
                progress(f"latency {n}@c{c}", run)
                self.latency.append(run)

    def run_scale(self) -> None:
        for n in self.o.scale:
            symbols = write_symbols(n, self.work)
            with fast_upstream() as url:
                run = run_client("scanctl", url, n, RATIO_AT, symbols, self.o.timeout)
            ceiling = self.ceiling.get(RATIO_AT)
            run.ideal_s = n / ceiling if ceiling else None
            progress(f"scale {n}", run)
            self.scale.append(run)
            symbols.unlink()

    def run_startup(self) -> None:
        command = [*scanctl_command(), "--version"]
        runs = self.o.startup_runs
        hyperfine = shutil.which("hyperfine")
        result: dict[str, Any] | None = None
        if hyperfine is not None:
            result = _hyperfine(hyperfine, command, runs, self.work / "hyperfine.json")
            if result is None:
                self.notes.append("hyperfine failed; startup timed by this script instead")
        else:
            self.notes.append("hyperfine not installed; startup timed by this script instead")
        if result is None:
            result = _time_startup(command, runs)
        self.startup = result
        print(
            f"  startup: median {result['median_s']:.3f} s over {runs} ({result['tool']})",
            file=sys.stderr,
            flush=True,
        )

    # -- acceptance ------------------------------------------------------------------------

    def find(self, runs: list[Run], client: str, c: int | None) -> Run | None:
        """The run of client at concurrency c (None: the original's own), if it ran."""
        return next((r for r in runs if r.client == client and r.concurrency == c), None)

    def judge(self) -> None:
        """Every target of the issue as a Check, grouped by scenario."""
        smaller = "not the issue's size"  # said of a figure measured at other sizes
        for c in self.o.levels:
            raw = self.find(self.instant, "raw-aiohttp", c)
            ceiling = self.ceiling.get(c)
            if raw is not None and ceiling is not None and raw.span_rps is not None:
                share = raw.span_rps / ceiling
                self.checks["ceiling"].append(
                    check(
                        f"c={c}: raw-aiohttp span req/s / wrk ceiling",
                        share,
                        "<=",
                        1.0,
                        f"server {ceiling:.0f} req/s, raw {raw.span_rps:.0f}",
                    )
                )
        raw = self.find(self.instant, "raw-aiohttp", RATIO_AT)
        httpx = self.find(self.instant, "plain-httpx", RATIO_AT)
        for variant in SCANCTL_VARIANTS:
            mine = self.find(self.instant, variant, RATIO_AT)
            if mine is None:
                continue
            informative = "" if variant == "scanctl" else "variant, informative"
            note = smaller if self.o.symbols != ISSUE_SYMBOLS else ""
            for peer, limit in ((raw, VS_RAW_AIOHTTP), (httpx, VS_PLAIN_HTTPX)):
                if peer is None:
                    continue
                value = _div(mine.rps, peer.rps) if not (mine.error or peer.error) else None
                span = _div(mine.span_rps, peer.span_rps)
                extra = f"by span {_fmt(span, '.2f')}"
                self.checks["instant"].append(
                    check(
                        f"c={RATIO_AT}: {variant} / {peer.client} req/s",
                        value,
                        ">=",
                        limit,
                        ", ".join(x for x in (extra, informative, note) if x),
                    )
                )
        for run in self.instant:
            if run.concurrency == RATIO_AT and run.client in SCANCTL_VARIANTS:
                self.checks["instant"].append(
                    Check(
                        f"c={RATIO_AT}: {run.client} CPU ms per request",
                        None if run.error else run.cpu_ms_per_request,
                        REPORT_ONLY,
                        None,
                        "user+sys / requests, process start included",
                    )
                )
        for run in self.latency:
            most = LATENCY_TARGETS.get(run.concurrency or 0)
            if run.client != "scanctl" or most is None:
                continue
            value = None if run.error else run.ratio
            note = "" if (run.symbols, run.concurrency) in ISSUE_LATENCY else smaller
            self.checks["latency"].append(
                check(
                    f"{run.symbols}@c{run.concurrency}: scanctl wall / ideal",
                    value,
                    "<=",
                    most,
                    ", ".join(x for x in (f"span {_fmt(run.span_ratio, '.2f')}", note) if x),
                )
            )
        if len(self.scale) >= 2:
            small, big = self.scale[0], self.scale[-1]
            note = "" if [small.symbols, big.symbols] == ISSUE_SCALE else smaller
            self.checks["scale"].append(
                check(
                    f"{big.symbols} symbols: scanctl peak RSS MB",
                    None if big.error else big.peak_rss_mb,
                    "<=",
                    RSS_LIMIT_MB,
                    note,
                )
            )
            growth = big.symbols / small.symbols
            self.checks["scale"].append(
                check(
                    f"wall {big.symbols} / wall {small.symbols}",
                    None if big.error or small.error else _div(big.wall_s, small.wall_s),
                    "<=",
                    round(SCALE_SLACK * growth, 2),
                    ", ".join(
                        x
                        for x in (f"span ratio {_fmt(_div(big.span_s, small.span_s), '.2f')}", note)
                        if x
                    ),
                )
            )
        if self.startup:
            self.checks["startup"].append(
                check(
                    f"`scanctl --version` median of {self.startup['runs']} s",
                    self.startup["median_s"],
                    "<=",
                    STARTUP_LIMIT_S,
                    self.startup["tool"],
                )
            )

    def section(self, total_s: float) -> dict[str, Any]:
        """The "speed" section of latest.json."""
        return {
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "git_commit": _git("rev-parse", "HEAD"),
            "scanctl_dirty": bool(_git("status", "--porcelain", "--", "../scanctl")),
            "quick": self.o.quick,
            "symbols": self.o.symbols,
            "concurrency_levels": self.o.levels,
            "cpus": os.cpu_count(),
            "total_seconds": round(total_s, 1),
            "server_ceiling_req_per_s": {str(c): _round(v, 0) for c, v in self.ceiling.items()},
            "instant": [r.as_dict() for r in self.instant],
            "latency": [r.as_dict() for r in self.latency],
            "scale": [r.as_dict() for r in self.scale],
            "startup": self.startup,
            "checks": {
                scenario: [vars(c) for c in checks] for scenario, checks in self.checks.items()
            },
            "notes": self.notes,
        }


def _hyperfine(binary: str, command: list[str], runs: int, export: Path) -> dict[str, Any] | None:
    """hyperfine's median; -N runs the command without a shell, whose start would be noise."""
    argv = [binary, "-N", "--runs", str(runs), "--warmup", "3", "--export-json", str(export)]
    argv += ["--style", "none", shlex.join(command)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0 or not export.exists():
        return None
    result = json.loads(export.read_text())["results"][0]
    return {
        "tool": "hyperfine -N",
        "runs": runs,
        "median_s": round(result["median"], 4),
        "mean_s": round(result["mean"], 4),
        "min_s": round(result["min"], 4),
        "max_s": round(result["max"], 4),
    }


def _time_startup(command: list[str], runs: int) -> dict[str, Any]:
    """The fallback: run it ourselves, 3 warm-ups then `runs` timed runs."""
    times = []
    for i in range(runs + 3):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=False)
        if i >= 3:
            times.append(time.perf_counter() - started)
    return {
        "tool": "own loop",
        "runs": runs,
        "median_s": round(statistics.median(times), 4),
        "mean_s": round(statistics.fmean(times), 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
    }


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True, check=False)
    return done.stdout.strip()


# -- the tables ------------------------------------------------------------------------------


def print_tables(bench: Benchmark) -> None:
    o = bench.o
    levels = o.levels
    if any(v is not None for v in bench.ceiling.values()):
        print(f"\n1. Server ceiling: wrk -t1 -cC -d{o.wrk_seconds:g}s on the instant server")
        print("   " + "".join(f"{'c=' + str(c):>10}" for c in levels))
        print(
            "   " + "".join(f"{_fmt(bench.ceiling.get(c), '.0f'):>10}" for c in levels) + "  req/s"
        )
        _print_checks(bench.checks["ceiling"])
    if bench.instant:
        print(f"\n2. Instant server, {o.symbols} symbols (original: once, at its own limits)")
        tables: list[tuple[str, Callable[[Run], str]]] = [
            ("req/s = N / wall, process start included", lambda r: _fmt(r.rps, ".0f")),
            ("req/s over the scan's own span", lambda r: _fmt(r.span_rps, ".0f")),
            (
                "CPU ms per request (user+sys of the process)",
                lambda r: _fmt(r.cpu_ms_per_request, ".3f"),
            ),
        ]
        for title, cell in tables:
            print(f"   {title}")
            print(f"   {'client':<16}" + "".join(f"{'c=' + str(c):>10}" for c in levels))
            for client in CLIENTS:
                row = [bench.find(bench.instant, client, c) for c in levels]
                if client == ORIGINAL:
                    row = [bench.find(bench.instant, client, None)] + [None] * (len(levels) - 1)
                if not any(row):
                    continue
                cells = [("ERR" if r.error else cell(r)) if r else "" for r in row]
                name = f"{client} (own)" if client == ORIGINAL else client
                print(f"   {name:<16}" + "".join(f"{c:>10}" for c in cells))
        for run in bench.instant:
            if run.error:
                last = run.error.strip().splitlines()[-1][:100]
                print(f"   ERR {run.client} c={run.concurrency or 'own'}: {last}")
        _print_checks(bench.checks["instant"])
    if bench.latency:
        print(
            "\n3. Latency-bound: lognormal 100 ms median, sigma 0.5, seed 42; fresh server per run"
        )
        header = f"   {'scenario':<12}{'client':<14}{'wall s':>8}{'span s':>8}{'ideal s':>8}"
        print(header + f"{'wall/ideal':>11}{'span/ideal':>11}{'ok':>7}")
        for run in bench.latency:
            print(
                f"   {str(run.symbols) + '@c' + str(run.concurrency):<12}{run.client:<14}"
                f"{_fmt(run.wall_s, '.2f'):>8}{_fmt(run.span_s, '.2f'):>8}"
                f"{_fmt(run.ideal_s, '.2f'):>8}{_fmt(run.ratio, '.3f'):>11}"
                f"{_fmt(run.span_ratio, '.3f'):>11}{run.ok if run.ok is not None else '-':>7}"
                + (f"  ERR {run.error.splitlines()[-1][:60]}" if run.error else "")
            )
        _print_checks(bench.checks["latency"])
    if bench.scale:
        print(f"\n4. Scale: scanctl to jsonl at c={RATIO_AT}, instant server")
        print(
            f"   {'symbols':>8}{'wall s':>9}{'span s':>9}{'req/s':>9}{'peak RSS MB':>13}{'ok':>9}"
        )
        for run in bench.scale:
            print(
                f"   {run.symbols:>8}{_fmt(run.wall_s, '.2f'):>9}{_fmt(run.span_s, '.2f'):>9}"
                f"{_fmt(run.rps, '.0f'):>9}{_fmt(run.peak_rss_mb, '.1f'):>13}"
                f"{run.ok if run.ok is not None else '-':>9}"
                + (f"  ERR {run.error.splitlines()[-1][:60]}" if run.error else "")
            )
        _print_checks(bench.checks["scale"])
    if bench.startup:
        s = bench.startup
        print(f"\n5. Startup: `scanctl --version`, {s['runs']} runs ({s['tool']})")
        print(
            f"   median {s['median_s']:.3f} s, mean {s['mean_s']:.3f}, "
            f"min {s['min_s']:.3f}, max {s['max_s']:.3f}"
        )
        _print_checks(bench.checks["startup"])
    if bench.notes:
        print()
    for note in bench.notes:
        print(f"note: {note}")


def _print_checks(checks: list[Check]) -> None:
    for c in checks:
        print(c.line())


# -- the chart -------------------------------------------------------------------------------

COLORS = {
    "scanctl": "tab:blue",
    "scanctl-httpx": "tab:cyan",
    "scanctl-aiohttp": "tab:purple",
    "raw-aiohttp": "tab:green",
    "plain-httpx": "tab:red",
    "aiometer-httpx": "tab:orange",
    "httpx-aiohttp": "tab:olive",
    "httpx2": "tab:brown",
    ORIGINAL: "tab:gray",
}


@dataclass
class Group:
    """One cluster of bars in panel 1: a scenario, each client's time / ideal, and the target."""

    label: str
    bars: dict[str, float]
    target: float | None = None


def _pacing_groups() -> list[Group]:
    """pacing.py's rows from latest.json, when it has run: its ratios belong in the same panel."""
    try:
        pacing = json.loads(RESULTS.read_text()).get("pacing") or {}
    except (OSError, ValueError):
        return []
    groups = []
    for row in pacing.get("rows", []):
        bars = {
            r["scanner"]: r["ratio"]
            for r in row.get("runs", [])
            if r.get("ratio") is not None and r.get("scanner") in ("scanctl", ORIGINAL)
        }
        found = re.search(r"<=\s*([\d.]+)x", row.get("target", ""))
        if bars:
            label = f"pacing {row.get('key', '?')}\n{row.get('scenario', '')[:20]}"
            groups.append(Group(label, bars, float(found.group(1)) if found else None))
    return groups


def ratio_groups(bench: Benchmark) -> list[Group]:
    """Panel 1's clusters, for every scenario that has an ideal time."""
    groups: list[Group] = []
    shown = ("scanctl", "scanctl-aiohttp", "raw-aiohttp", "plain-httpx", ORIGINAL)
    for c in sorted({RATIO_AT, max(bench.o.levels)} & set(bench.o.levels)):
        bars = {}
        for client in shown:
            run = bench.find(bench.instant, client, None if client == ORIGINAL else c)
            if run is not None and run.ratio is not None and not run.error:
                bars[client] = run.ratio
        if bars:
            groups.append(Group(f"instant c{c}\n(ideal: N / wrk)", bars))
    for n, c in bench.o.latency:
        runs = [r for r in bench.latency if r.symbols == n and r.concurrency == c]
        bars = {r.client: r.ratio for r in runs if r.ratio is not None and not r.error}
        if bars:
            groups.append(Group(f"latency\n{n}@c{c}", bars, LATENCY_TARGETS.get(c)))
    big = bench.scale[-1] if bench.scale else None
    if big is not None and (ratio := big.ratio) is not None and not big.error:
        groups.append(Group(f"{big.symbols} jsonl\n(ideal: N / wrk)", {"scanctl": ratio}))
    return groups + _pacing_groups()


def draw_chart(bench: Benchmark, path: Path) -> bool:
    """Two panels: time / ideal per scenario, throughput against concurrency.

    Returns False (and notes why) when matplotlib is missing: the tables do not need it.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        bench.notes.append("matplotlib not installed: no chart drawn")
        return False
    figure, (left, right) = plt.subplots(1, 2, figsize=(18, 6.5), width_ratios=[1.7, 1])
    groups = ratio_groups(bench)
    labelled: set[str] = set()
    for g, group in enumerate(groups):
        width = 0.8 / max(3, len(group.bars))  # a lone bar stays a bar, not a block
        for i, (client, value) in enumerate(group.bars.items()):
            x = g + width * (i - (len(group.bars) - 1) / 2)
            label = None if client in labelled else client
            left.bar(x, value, width, color=COLORS[client], label=label)
            labelled.add(client)
        if group.target is not None:
            left.hlines(group.target, g - 0.45, g + 0.45, colors="red", linestyles="--")
    if any(group.target is not None for group in groups):
        left.plot([], [], "r--", label="scanctl's target")
    left.set_xticks(range(len(groups)))
    left.set_xticklabels([group.label for group in groups], fontsize=7)
    left.axhline(1.0, color="black", linewidth=0.8)
    left.set_yscale("log")
    left.set_ylabel("wall time / ideal (log scale; 1 = ideal)")
    left.set_title("Time over ideal per scenario (wall includes process start)")
    left.legend(fontsize=8)
    for client in (*SCANCTL_VARIANTS, *PEERS):
        points = [
            (r.concurrency, r.rps)
            for r in bench.instant
            if r.client == client and r.rps is not None and not r.error
        ]
        if points:
            right.plot(*zip(*points, strict=True), marker="o", label=client, color=COLORS[client])
    original = bench.find(bench.instant, ORIGINAL, None)
    if original is not None and original.rps is not None:
        right.axhline(original.rps, color=COLORS[ORIGINAL], linestyle=":", label="original (own)")
    wrk = [(c, v) for c, v in sorted(bench.ceiling.items()) if v is not None]
    if wrk:
        right.plot(*zip(*wrk, strict=True), "k--", marker="s", label="server ceiling (wrk)")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xticks(bench.o.levels)
    right.set_xticklabels([str(c) for c in bench.o.levels])
    right.minorticks_off()
    right.set_xlabel("concurrency")
    right.set_ylabel("requests / s (N / wall, process start included)")
    right.set_title(f"Instant server, {bench.o.symbols} symbols")
    right.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    figure.suptitle(f"scanctl speed ({when} UTC, {os.cpu_count()} CPUs, loopback)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


# -- main ------------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _pairs(text: str) -> list[tuple[int, int]]:
    """ "1000@50,5000@200" -> [(1000, 50), (5000, 200)]"""
    pairs = []
    for item in text.split(","):
        n, _, c = item.partition("@")
        pairs.append((int(n), int(c)))
    return pairs


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        epilog="--quick: 1000 symbols, latency 1000@50,2000@200, scale 2000,20000, wrk 1 s, "
        "10 startup runs (targets are still shown, but sizes differ from the issue's).",
    )
    parser.add_argument("--quick", action="store_true", help="scaled-down run, a few minutes")
    parser.add_argument("--symbols", type=int, help="instant-server symbols (default 5000)")
    parser.add_argument("--levels", type=_ints, help="concurrency levels (default 1,10,50,200)")
    parser.add_argument("--latency", type=_pairs, help="N@C,... (default 1000@50,5000@200)")
    parser.add_argument("--scale", type=_ints, help="sizes, smallest first (default 10000,100000)")
    parser.add_argument("--wrk-seconds", type=float, help="wrk duration per level (default 3)")
    parser.add_argument("--startup-runs", type=int, help="`scanctl --version` runs (default 20)")
    parser.add_argument(
        "--only",
        type=lambda s: set(s.split(",")),
        help=f"comma-separated scenarios of {','.join(SCENARIOS)} (default all)",
    )
    parser.add_argument(
        "--clients",
        type=lambda s: s.split(","),
        help=f"comma-separated subset of {','.join(CLIENTS)} (default all)",
    )
    parser.add_argument("--skip-original", action="store_true", help="leave the original out")
    parser.add_argument("--no-chart", action="store_true", help="no PNG")
    parser.add_argument("--timeout", type=float, default=RUN_TIMEOUT, help="seconds per run")
    args = parser.parse_args(argv)
    quick = args.quick
    only = args.only or set(SCENARIOS)
    clients = args.clients or list(CLIENTS)
    unknown = (only - set(SCENARIOS)) | (set(clients) - set(CLIENTS))
    if unknown:
        parser.error(f"unknown scenario or client: {', '.join(sorted(unknown))}")
    if args.skip_original and ORIGINAL in clients:
        clients.remove(ORIGINAL)
    scale = args.scale or ([2000, 20000] if quick else ISSUE_SCALE)
    levels = args.levels or [1, 10, 50, 200]
    if RATIO_AT not in levels:
        print(f"note: c={RATIO_AT} not among the levels; its targets are not checked")
    return Options(
        symbols=args.symbols or (1000 if quick else ISSUE_SYMBOLS),
        levels=levels,
        latency=args.latency or ([(1000, 50), (2000, 200)] if quick else ISSUE_LATENCY),
        scale=sorted(scale),
        wrk_seconds=args.wrk_seconds or (1.0 if quick else 3.0),
        startup_runs=args.startup_runs or (10 if quick else 20),
        clients=clients,
        only=only,
        timeout=args.timeout,
        quick=quick,
        chart=not args.no_chart,
    )


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the servers and clients started
    # here are stopped by their `finally` blocks instead of outliving this process.
    signal.signal(signal.SIGTERM, _interrupted)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scanctl-speed-") as folder:
        bench = Benchmark(options, Path(folder))
        if options.only & {"ceiling", "instant"}:
            bench.run_instant()
        if "latency" in options.only:
            bench.run_latency()
        if "scale" in options.only:
            bench.run_scale()
        if "startup" in options.only:
            bench.run_startup()
    bench.judge()
    total = time.perf_counter() - started
    if options.chart and draw_chart(bench, CHART):
        bench.notes.append(f"chart: {CHART.relative_to(HERE.parent)}")
    print_tables(bench)
    save_section("speed", bench.section(total))
    print(f'\n{total:.0f} s in all; written to {RESULTS.relative_to(HERE.parent)} ("speed")')
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt as stop:
        print(f"interrupted ({stop or 'Ctrl-C'}); nothing written", file=sys.stderr)
        raise SystemExit(130) from None
