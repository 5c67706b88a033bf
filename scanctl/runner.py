"""Runs one scan command: wires symbols, engine, writer, metrics and display, and decides the exit.

The CLI parses and validates; this module does the work, and is imported only when a scan
actually runs (it pulls in httpx, anyio and rich).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import anyio

from scanctl.cache import namespace_for, open_store
from scanctl.cache.front import CacheFront, CachePolicy
from scanctl.changes import NOTHING_TO_COMPARE
from scanctl.clock import Clock, MonotonicClock
from scanctl.config import EndpointType
from scanctl.engine import ScanEngine, ScanOutcome, ScanSettings, make_pacer
from scanctl.errors import (
    CacheError,
    ExitCode,
    OutputError,
    ScanctlError,
    UpstreamRefused,
    UsageError,
)
from scanctl.fetch import Fetcher, open_fetcher
from scanctl.lock import run_locks
from scanctl.metrics import RunMetrics, iso_time
from scanctl.outcome import CacheFigures, StopReason, Summary, exit_code
from scanctl.output import (
    Destination,
    NullWriter,
    RecordWriter,
    check_writable,
    is_special_file,
    make_writer,
    open_destination,
    write_json_file,
)
from scanctl.overlap import SHARED_SPAN, RunRegistry
from scanctl.pacestore import PacingStoreError, open_pacing_store, scope_key
from scanctl.pacing import DEFAULT_BAN_SECONDS
from scanctl.progress import Display, choose_display, summary_line
from scanctl.promfile import write_prom_file
from scanctl.ratecontrol import LearnedPace
from scanctl.records import ScanRecord
from scanctl.resume import prepare_resume
from scanctl.settings import (
    AHEAD,
    BASE_URL,
    CHANGES,
    NEGATIVE_TTL,
    NO_ADAPT,
    NO_CACHE,
    ONLY_CHANGED,
    REFRESH,
    STALE_IF_ERROR,
    TIMEOUT,
    TTL,
    Resolved,
)
from scanctl.sharedpace import SharedMeter
from scanctl.state import (
    SHARED_MARGIN,
    PacingMemory,
    pace_entry,
    pacing_key,
    parse_pace,
    state_dir,
)
from scanctl.terminal import wants_color


@dataclass(slots=True)
class ScanJob:
    """One scan to run: its symbols, the engine's settings, and what to do around the scan.

    A field named after a setting (scanctl/settings.py), or marked with one in its metadata,
    takes that setting's value in `for_scan` / `for_warming`: a new setting the run needs is a
    declaration and a field here, nothing in between.
    """

    symbols: list[str]
    settings: ScanSettings
    fmt: str = "json"
    output: str | None = None
    metrics_path: str | None = field(default=None, metadata={"setting": "metrics"})
    # "json" or "prom" (Prometheus' text format, scanctl/promfile.py): decided from --metrics
    # and --metrics-format together, so not taken from the setting of that name.
    metrics_format: str = field(default="json", metadata={"setting": None})
    quiet: bool = False
    no_progress: bool = False
    skipped_invalid: int = 0
    relearn: bool = False
    # The cache: where it is (None: the default) and what this run may do (None: --no-cache).
    cache_location: str | None = field(default=None, metadata={"setting": "cache"})
    cache_policy: CachePolicy | None = None
    # Where the send schedule is shared with other processes (None: the state dir's file).
    pacing_store: str | None = None
    namespace: str = ""  # profile and base URL: whose answers these are
    command: str = "scan"  # or "warm-cache" (fmt "none": the cache is the product)
    grace: float = 5.0  # seconds requests in flight get after the first Ctrl-C / SIGTERM
    resume: bool = False  # -F jsonl -o FILE: keep FILE's ok records, scan the rest, append
    # --lock NAME: no two scans with this name at once
    lock_name: str | None = field(default=None, metadata={"setting": "lock"})
    wait_lock: float = 0.0  # seconds to wait for a held lock before giving up (exit 75)
    only_changed: bool = False  # write only records whose answer changed (--only-changed)
    color: str = "auto"  # --color: auto, always or never
    # Whether SIGINT and SIGTERM stop the run gracefully (the CLI); a library leaves them be.
    handle_signals: bool = True
    # Where records go when there is no output format (fmt "none"): the Python API's own.
    writer: RecordWriter | None = None

    @classmethod
    def for_scan(
        cls,
        options: Resolved,
        endpoint: EndpointType,
        symbols: list[str],
        **fields: Any,
    ) -> ScanJob:
        """A `scan` job: the cache as --no-cache, --refresh, --stale-if-error and --changes
        say (check them first with `check_cache_flags`); `fields` set the rest."""
        policy = None
        if not options[NO_CACHE]:
            policy = cache_policy(
                options,
                endpoint,
                refresh=options[REFRESH],
                stale_if_error=options[STALE_IF_ERROR],
                changes=options[CHANGES] or options[ONLY_CHANGED],
            )
        return cls._made(options, endpoint, symbols, cache_policy=policy, **fields)

    @classmethod
    def for_warming(
        cls, options: Resolved, endpoint: EndpointType, symbols: list[str], **fields: Any
    ) -> ScanJob:
        """A `warm-cache` job: no output, the cache refreshed --ahead of expiry."""
        policy = cache_policy(options, endpoint, refresh_ahead=options[AHEAD])
        return cls._made(
            options,
            endpoint,
            symbols,
            fmt="none",
            command="warm-cache",
            cache_policy=policy,
            **fields,
        )

    @classmethod
    def _made(
        cls, options: Resolved, endpoint: EndpointType, symbols: list[str], **fields: Any
    ) -> ScanJob:
        named = {f.name: f.metadata.get("setting", f.name) for f in dataclasses.fields(cls)}
        taken = {name: options.values[key] for name, key in named.items() if key in options.values}
        return cls(
            symbols=symbols,
            settings=scan_settings(options, endpoint),
            namespace=namespace_for(options.profile.name, options[BASE_URL], endpoint),
            **{**taken, **fields},
        )


def scan_settings(options: Resolved, endpoint: EndpointType) -> ScanSettings:
    """The engine's settings: every field named after a setting takes its value."""
    profile = options.profile
    return ScanSettings(
        endpoint=endpoint,
        headers=options.headers,
        weight_header=profile.weight_header,
        quota_headers=profile.quota_headers,
        upstream_bans=profile.bans,
        rate_scope=profile.rate_scope,
        adaptive=not options[NO_ADAPT],
        **options.fill([f.name for f in dataclasses.fields(ScanSettings)]),
    )


def cache_policy(options: Resolved, endpoint: EndpointType, **more: Any) -> CachePolicy:
    """How long answers stay fresh (--ttl, else the type's), 404s (--negative-ttl, else the
    profile's), and how long a lease on a symbol lasts (its request's timeout, and some)."""
    return CachePolicy(
        ttl=options[TTL] or endpoint.ttl,
        negative_ttl=options[NEGATIVE_TTL],
        lease_seconds=options[TIMEOUT] + 10.0,
        **more,
    )


def check_cache_flags(options: Resolved) -> None:
    """Usage errors for cache flags that contradict --no-cache."""
    if not options[NO_CACHE]:
        return
    if options[REFRESH] or options[STALE_IF_ERROR] is not None:
        raise UsageError("--no-cache cannot be combined with --refresh or --stale-if-error")
    if options[CHANGES] or options[ONLY_CHANGED]:
        flag = "--only-changed" if options[ONLY_CHANGED] else "--changes"
        raise UsageError(f"{flag} compares with the answers kept in the cache: drop --no-cache")


@dataclass(slots=True)
class _RunState:
    outcome: ScanOutcome | None = None
    interrupted: bool = False
    signals: list[int] = field(default_factory=list)


class RunObserver:
    """What watches a run's engine (`engine.ScanObserver`): each finished record goes to the
    metrics first, then to `then` (the writer and the display); request events go to the
    metrics alone, bound directly, since they come once per request."""

    def __init__(self, metrics: RunMetrics, then: Callable[[ScanRecord], None]) -> None:
        self._metrics = metrics
        self._then = then
        self.observe_request = metrics.observe_request
        self.observe_throttled = metrics.observe_throttled
        self.observe_retry = metrics.observe_retry
        self.observe_hedge = metrics.observe_hedge

    def observe_record(self, record: ScanRecord) -> None:
        self._metrics.observe_record(record)
        self._then(record)


def warn(message: str) -> None:
    print(f"scanctl: {message}", file=sys.stderr, flush=True)


class ScanRun:
    """One run of `scanctl scan`."""

    def __init__(self, job: ScanJob, clock: Clock | None = None) -> None:
        """Assemble the run, refusing before anything is opened when it can (a bad --metrics
        path, a remembered ban); whatever was opened when a later step refuses is undone, so a
        refused start leaves no file behind (docs/architecture.md, "Assembling a run")."""
        self.job = job
        self.clock = clock or MonotonicClock()
        self.symbols = job.symbols
        resumed = 0
        if job.resume and job.output is not None:
            state = prepare_resume(job.output, job.settings.endpoint.name)
            self.symbols = [s for s in job.symbols if s not in state.done]
            resumed = len(job.symbols) - len(self.symbols)
            if not job.quiet and (resumed or state.changed):
                warn(
                    f"resuming {job.output}: {resumed} symbols already done, "
                    f"{len(self.symbols)} to scan; dropped {state.dropped_failed} failed, "
                    f"{state.dropped_duplicates} duplicate and {state.dropped_broken} broken lines"
                )
        if job.fmt != "none" and job.output not in (None, "-") and not is_special_file(job.output):
            # Usage errors first, in the order they always came (the output, then --metrics).
            path = job.output
            check_writable(os.path.realpath(path) if os.path.islink(path) else path)
        if job.metrics_path:
            check_writable(job.metrics_path, "--metrics")
        settings = job.settings
        self.memory = PacingMemory()
        banned = self.memory.banned_until(settings.base_url, self.clock.wall())
        if banned is not None:
            raise UpstreamRefused(
                f"{settings.base_url} banned us until {iso_time(banned)} (HTTP 418); "
                "not sending anything before then"
            )
        with contextlib.ExitStack() as undo:
            self._assemble(undo, resumed)
            undo.pop_all()  # assembled: from here on, the run's own end closes what it opened

    def _assemble(self, undo: contextlib.ExitStack, resumed: int) -> None:
        """Open the output (before the first request: a bad path is a usage error, not a lost
        scan), then the pacing and the cache; `undo` removes the output should a step fail."""
        job = self.job
        self.writer: RecordWriter = job.writer or NullWriter()
        if job.fmt != "none":
            existed = job.output is not None and os.path.lexists(job.output)
            destination = open_destination(job.output, job.fmt, append=job.resume)
            undo.callback(_forget_output, destination, None if existed else job.output)
            color = wants_color(job.color, os.environ, is_terminal=destination.is_terminal)
            display = job.settings.endpoint.display
            self.writer = make_writer(job.fmt, destination, display=display, color=color)
        self.metrics = RunMetrics(job.settings.endpoint.name, total=len(job.symbols))
        self._compares = job.cache_policy is not None and job.cache_policy.changes
        if self._compares:
            self.metrics.changed = 0  # counted, and in the summary
        self.metrics.resume(resumed)
        self.display: Display = choose_display(
            self.clock,
            quiet=job.quiet,
            no_progress=job.no_progress,
            color=wants_color(job.color, os.environ, is_terminal=sys.stderr.isatty()),
        )
        self.state = _RunState()
        settings = job.settings
        learned = None
        if settings.adaptive and not job.relearn:
            learned = self.memory.learned(settings.base_url, settings.endpoint.name)
        self.meter = self._shared_meter()
        if self.meter is not None:
            undo.callback(self.meter.close)
            learned = self._joined(self.meter, learned)
        self.pacer = make_pacer(settings, self.clock, learned, meter=self.meter)
        # Other runs against this upstream at the same time: what this one learns is a share.
        self.overlap = RunRegistry(
            pacing_key(settings.base_url, settings.endpoint.name), wall=self.clock.wall, warn=warn
        )
        self.cache = self._open_cache()

    def _shared_meter(self) -> SharedMeter | None:
        """The meter over the shared send schedule (`pacestore`), or None to pace alone: with
        `--pacing-store local`, or after one warning when the store cannot be opened."""
        settings = self.job.settings
        try:
            # (SQLite reads the run's own wall clock: virtual in tests, time.time() otherwise)
            store = open_pacing_store(self.job.pacing_store, state_dir(), now=self.clock.wall)
        except PacingStoreError as exc:
            warn(f"{exc}; pacing this process alone")
            return None
        if store is None:
            return None
        per_type = settings.rate_scope == "endpoint"
        scope = scope_key(
            settings.base_url,
            settings.headers,
            endpoint=settings.endpoint.name if per_type else None,
        )
        return SharedMeter(store, scope, self.clock, warn=warn, cap=settings.rate)

    def _learned_key(self) -> str:
        assert self.meter is not None
        return f"{self.meter.scope} {self.job.settings.endpoint.name}"

    def _joined(self, meter: SharedMeter, learned: LearnedPace | None) -> LearnedPace | None:
        """Where this run starts when it shares the budget: its share of the rate in force
        among the processes already running (no slow start, no burst of its own: the bucket is
        theirs too); else what it learned (this machine's state file, else what the store
        keeps from an earlier run, another machine's), which becomes the rate in force."""
        settings = self.job.settings
        if not settings.adaptive:
            meter.join()
            return learned
        if learned is None and not self.job.relearn:
            try:
                kept = meter.store.learned(self._learned_key()) if meter.store else None
            except PacingStoreError:
                kept = None
            learned = parse_pace(kept) if kept is not None else None
        discover = settings.rate is None  # (a slow start: the others wait for its rate)
        rate = meter.join(learned.rate if learned is not None else None, discover=discover)
        if rate is None or (learned is not None and rate == learned.rate):
            return learned
        base = learned or LearnedPace(rate)
        upper = base.upper if base.upper is not None and base.upper > rate else None
        return replace(base, rate=rate, upper=upper, burst=1)

    def _open_cache(self) -> CacheFront | None:
        """The cache front for this run; a cache that cannot be opened is a warning only."""
        job = self.job
        if job.cache_policy is None:
            return None
        try:
            store = open_store(job.cache_location, warn=warn)
        except CacheError as exc:
            warn(f"{exc}; scanning without the cache")
            return None
        return CacheFront(
            store,
            job.namespace or job.settings.base_url,
            job.settings.endpoint.name,
            job.cache_policy,
            wall=self.clock.wall,
            warn=warn,
        )

    def _sink(self, record: ScanRecord) -> None:
        """A finished record, to the writer (and the display): after the metrics counted it."""
        if record.change is None and self._compares:
            record = replace(record, change=NOTHING_TO_COMPARE)  # no usable cache
        if not self.job.only_changed or (record.change is not None and record.change.changed):
            self.writer.write(record)
        self._pace()
        self.display.update(self.metrics)

    async def _watch_signals(self, group: anyio.abc.TaskGroup, engine: ScanEngine) -> None:
        """First SIGINT/SIGTERM: stop sending, give requests in flight `--grace` seconds, then
        stop. A second one: stop at once. Either way what finished is written."""
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
            async for signum in received:
                self.state.interrupted = True
                self.state.signals.append(signum)
                if len(self.state.signals) > 1 or self.job.grace <= 0:
                    group.cancel_scope.cancel()
                    return
                engine.stop_sending()
                group.start_soon(self._end_of_grace, group)
                if not self.job.quiet:
                    name = signal.Signals(signum).name
                    warn(
                        f"{name}: sending no more; waiting up to {self.job.grace:g} s for "
                        f"{self.pacer.in_flight} requests in flight (again to stop at once)"
                    )

    async def _end_of_grace(self, group: anyio.abc.TaskGroup) -> None:
        await self.clock.sleep(self.job.grace)
        group.cancel_scope.cancel()

    async def _tick(self) -> None:
        while True:
            await self.clock.sleep(0.5)
            if self.meter is not None:
                self.meter.beat(self.pacer.rate)
            self._pace()
            self.display.update(self.metrics)
            if self.cache is not None:
                self.cache.flush_if_due()
            self.overlap.beat(*self._overlap_report())

    def _pace(self) -> None:
        """The pacing in force, for the display: the rate shared by every process when the
        budget is shared, else this run's own."""
        rate, processes = self.pacer.rate, 1
        meter = self.meter
        if meter is not None and meter.shared:
            processes = meter.processes
            if rate is not None and meter.shared_rate is not None:
                rate = meter.shared_rate  # (this run's own rate is its share of it)
        self.metrics.pace(rate, self.pacer.in_flight, processes)

    def _overlap_report(self) -> tuple[float, bool]:
        """What this run tells the others: the rate the upstream admitted its requests at over
        the last few seconds, and whether it has sent any (a run served from the cache alone
        shares nothing)."""
        admitted = self.pacer.control.admitted_rate(self.clock.monotonic(), SHARED_SPAN)
        return admitted, self.metrics.requests_sent > 0 or self.pacer.in_flight > 0

    async def _main(self, fetcher: Fetcher | None) -> None:
        fetcher = fetcher or open_fetcher(self.job.settings)
        try:
            engine = ScanEngine(
                self.job.settings,
                fetcher,
                self.clock,
                RunObserver(self.metrics, self._sink),
                pacer=self.pacer,
                cache=self.cache,
            )
            async with anyio.create_task_group() as tg:
                if self.job.handle_signals:
                    tg.start_soon(self._watch_signals, tg, engine)
                tg.start_soon(self._tick)
                self.state.outcome = await engine.run(self.symbols)
                tg.cancel_scope.cancel()
        finally:
            await fetcher.aclose()

    def _start(self) -> tuple[float, float]:
        """Show the display, register with runs overlapping this one; when it started (wall
        and monotonic), which the summary reports."""
        started_wall, started = self.clock.wall(), self.clock.monotonic()
        self.display.start(len(self.job.symbols))
        self.overlap.start()
        return started_wall, started

    def run(self, fetcher: Fetcher | None = None) -> ExitCode:
        """Scan, write everything that finished, and return the exit code."""
        started_wall, started = self._start()
        escaped: BaseException | None = None
        try:
            try:
                anyio.run(self._main, fetcher)
            except BaseException as exc:
                escaped = exc
                raise
            finally:
                code, why = self._wrap_up(started_wall, started, escaped)
        except BaseException as exc:
            if not _is_broken_pipe(exc):
                raise
            # The reader went away (`| head -1`): stop quietly, like other Unix tools.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return ExitCode.BROKEN_PIPE
        if why is not None:
            warn(why)
        return code

    async def run_async(self) -> ExitCode:
        """`run` inside an event loop that is already running (the Python API): the same
        scan and wrap-up, through the fetcher `run` would open; an exception that ends it
        propagates, after the wrap-up."""
        started_wall, started = self._start()
        escaped: BaseException | None = None
        try:
            await self._main(None)
        except BaseException as exc:
            escaped = exc
            raise
        finally:
            code, _ = self._wrap_up(started_wall, started, escaped)
        return code

    def _wrap_up(
        self, started_wall: float, started: float, escaped: BaseException | None
    ) -> tuple[ExitCode, str | None]:
        """After the scan, however it ended: keep what was learned, write the output and the
        metrics, log the run. Returns the exit code and the warning that explains it, decided
        before anything is written, since the metrics file records the exit code (an exception
        that escaped the scan decides it: `escaped`)."""
        self.display.stop(self.metrics)
        self._remember()
        self._cache_figures()
        stop = self._stop()
        summary = self._summary(started_wall, started, stop)
        if escaped is None:
            code = exit_code(
                stop,
                scanned=summary.total_scanned,
                successful=summary.successful,
                failed=summary.failed,
            )
            why = self._explain(code, stop, summary)
        else:
            code, why = _exit_code_of(escaped), None
        try:
            self._finish(summary, code)  # the output first: it is what the user waits for
        finally:
            self._close_cache(summary)
        return code, why

    def _remember(self) -> None:
        """Keep the rate reached, and any ban, for the next run against this upstream.

        A run that overlapped others found only its share of the limit: it never lowers the
        rate kept (see `state.shared_pace`)."""
        settings = self.job.settings
        overlap = self.overlap
        overlap.finish(*self._overlap_report())
        pace = self.pacer.learned()
        meter = self.meter
        shared = meter is not None and self.metrics.processes_peak > 1
        if pace is not None and meter is not None and shared:
            # Its own rate was a share of the schedule, and grew unchecked while the schedule
            # held it back: not evidence. On this machine, what all the runs were admitted
            # together is (`overlap`); across machines, the rate the processes shared.
            if overlap.overlapped and overlap.peak_shared > 0:
                rate = min(pace.rate, SHARED_MARGIN * overlap.peak_shared)
            else:
                rate = meter.shared_rate or pace.rate
            upper = pace.upper if pace.upper is not None and pace.upper > rate else None
            pace = replace(pace, rate=rate, upper=upper)
        if settings.adaptive and pace is not None:
            self.memory.remember(
                settings.base_url,
                settings.endpoint.name,
                pace,
                self.clock.wall(),
                overlapped=overlap.overlapped,
                peak_shared=overlap.peak_shared,
            )
        if meter is not None:
            if settings.adaptive and pace is not None and meter.store is not None:
                # (what the state file keeps, after `shared_pace` weighed the overlap)
                kept = self.memory.learned(settings.base_url, settings.endpoint.name) or pace
                try:
                    meter.store.remember(self._learned_key(), pace_entry(kept, self.clock.wall()))
                except PacingStoreError as exc:
                    warn(f"{exc}; the rate learned is kept on this machine only")
            meter.close()
        refused = self.state.outcome.refused if self.state.outcome else None
        if refused is not None and refused.status == 418:
            wait = refused.retry_after if refused.retry_after is not None else DEFAULT_BAN_SECONDS
            self.memory.remember_ban(settings.base_url, self.clock.wall() + wait)
        self.memory.save()

    def _cache_figures(self) -> None:
        """Put what the cache did in the metrics (no I/O: the output is written first)."""
        front = self.cache
        if front is None:
            return
        counts = front.counts
        self.metrics.cache = CacheFigures(
            backend=front.store.backend,
            location=front.store.location,
            hits=counts.hits,
            misses=counts.misses,
            refreshed_early=counts.refreshed_early,
            stale_served=counts.stale_served,
            waited_for_other_flight=counts.waited,
            ttl=front.policy.ttl,
            usable=not front.broken,
        )

    def _close_cache(self, summary: Summary) -> None:
        """Write what is still batched, give back leases, log the run (for `scanctl stats`),
        prune, close. After the output: a busy cache must not hold up or lose the results."""
        front = self.cache
        if front is None:
            return
        try:
            front.close()
            if not front.broken:
                front.store.add_run(run_entry(self.job.command, summary))
                front.store.prune(self.clock.wall())
        except CacheError as exc:
            warn(f"{exc}; this run is not in the run log")
        finally:
            front.store.close()

    def _stop(self) -> StopReason | None:
        """Why the run ended early, if it did: a signal first (the first one received says
        which), then whatever stopped the engine."""
        if self.state.interrupted:
            first = self.state.signals[0] if self.state.signals else signal.SIGINT
            return StopReason.TERMINATED if first == signal.SIGTERM else StopReason.INTERRUPTED
        return self.state.outcome.stop if self.state.outcome else None

    def _stop_text(self, stop: StopReason | None) -> str | None:
        """The summary's `stopped_reason`: the stop in words."""
        outcome = self.state.outcome
        if stop in (StopReason.INTERRUPTED, StopReason.TERMINATED):
            names = ", ".join(signal.Signals(s).name for s in self.state.signals)
            return f"interrupted by {names}"
        if stop is StopReason.REFUSED and outcome is not None and outcome.refused is not None:
            return f"upstream refused us: {outcome.refused.error}"
        if stop is StopReason.UPSTREAM_DOWN and outcome is not None:
            return outcome.message
        if stop is StopReason.DEADLINE:
            return f"deadline of {self.job.settings.deadline:g} s passed"
        return None

    def _summary(self, started_wall: float, started: float, stop: StopReason | None) -> Summary:
        elapsed = self.clock.monotonic() - started
        self.metrics.breaker_opened = self.pacer.breaker.times_opened if self.pacer.breaker else 0
        self.metrics.rate_history = [
            {"at": c.at, "rate": c.rate, "reason": c.reason} for c in self.pacer.control.history
        ]
        rate = self.pacer.rate
        return self.metrics.summary(
            started_wall=started_wall,
            finished_wall=started_wall + elapsed,
            elapsed=elapsed,
            final_rate_limit=None if rate is None else round(rate, 2),
            interrupted=self.state.interrupted,
            stopped_reason=self._stop_text(stop),
        )

    def _finish(self, summary: Summary, code: ExitCode) -> None:
        """Complete the output and the metrics file; a failure of one does not skip the other.

        `code` is the exit code the run ends with, unless the output fails: then the metrics
        file records the failure's (1, or 141 for a closed pipe), which is what the run exits.
        """
        error: OutputError | BrokenPipeError | None = None
        try:
            self.writer.finish(summary)
        except (OutputError, BrokenPipeError) as exc:
            error = exc
            code = _exit_code_of(exc)
        if self.job.metrics_path:
            self._write_metrics(self.job.metrics_path, summary, code)
        if not self.job.quiet and error is None:  # else the one line is the error's
            print(summary_line(summary), file=sys.stderr, flush=True)
        if error is not None:
            raise error

    def _write_metrics(self, path: str, summary: Summary, code: ExitCode) -> None:
        """The summary as JSON, or the run's figures in Prometheus' text format (--metrics)."""
        if self.job.metrics_format == "prom":
            write_prom_file(path, summary, exit_code=int(code))
        else:
            write_json_file(path, summary.to_dict())

    def _explain(self, code: ExitCode, stop: StopReason | None, summary: Summary) -> str | None:
        """The warning that explains an exit code (None: none needed). Prints nothing: the code
        goes into the metrics file before the warning is shown."""
        outcome = self.state.outcome
        unfinished = outcome.unfinished if outcome else 0
        if stop in (StopReason.INTERRUPTED, StopReason.TERMINATED):
            return f"{summary.stopped_reason}: {summary.not_scanned} symbols not scanned"
        if stop is StopReason.REFUSED and outcome is not None and outcome.refused is not None:
            error = outcome.refused.error
            return f"upstream refused us ({error}); stopped, {unfinished} symbols not scanned"
        if stop is StopReason.UPSTREAM_DOWN and outcome is not None:
            return f"gave up: {outcome.message}; {unfinished} symbols not scanned"
        if code is ExitCode.UPSTREAM:  # nothing succeeded
            kind, count = next(iter(summary.errors.items()))
            return (
                f"nothing succeeded ({kind} for {count} of {summary.total_scanned}); "
                f"is the upstream at {self.job.settings.base_url} up and right?"
            )
        return None


def _forget_output(destination: Destination, created: str | None) -> None:
    """Undo opening an output: its temporary file goes, and so does a file this run created
    (`created`; None when the path was there before, or is stdout)."""
    destination.discard()
    if created is not None and created != "-" and not is_special_file(created):
        with contextlib.suppress(OSError):
            os.unlink(created)


def run_entry(command: str, summary: Summary) -> dict[str, Any]:
    """What the run log keeps of one run (shown by `scanctl stats`)."""
    perf = summary.performance
    cache = summary.cache
    return {
        "at": summary.started_at,
        "command": command,
        "type": summary.scan_type,
        "symbols": summary.total_scanned,
        "successful": summary.successful,
        "failed": summary.failed,
        "success_rate": summary.success_rate,
        "total_time": perf.total_time_seconds,
        "scans_per_second": perf.scans_per_second,
        "throttled": summary.throttled,
        "final_rate": perf.final_rate_limit,
        "requests": summary.requests_sent,
        "hits": cache.hits if cache else 0,
        "misses": cache.misses if cache else 0,
        "stale_served": cache.stale_served if cache else 0,
        "interrupted": summary.interrupted,
    }


def _exit_code_of(exc: BaseException) -> ExitCode:
    """The exit code an exception ends a run with (as the CLI maps it), for the metrics file."""
    if _is_broken_pipe(exc):
        return ExitCode.BROKEN_PIPE
    if isinstance(exc, ScanctlError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    return ExitCode.INTERNAL


def _is_broken_pipe(exc: BaseException) -> bool:
    """True for a BrokenPipeError, alone or as the only kind inside an exception group."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_broken_pipe(e) for e in exc.exceptions)
    return isinstance(exc, BrokenPipeError)


def run_scan(job: ScanJob) -> ExitCode:
    """Entry point for the CLI: take the run's locks, then scan."""
    if job.skipped_invalid and not job.quiet:
        warn(f"skipped {job.skipped_invalid} invalid symbols")
    notify = None if job.quiet else warn
    with run_locks(job.output, job.lock_name, job.wait_lock, notify):
        return ScanRun(job).run()


def run_warm(
    jobs: list[ScanJob],
    *,
    as_json: bool = False,
    lock_name: str | None = None,
    wait_lock: float = 0,
) -> ExitCode:
    """`scanctl warm-cache`: one cache-only scan per type; counts on stderr (or JSON on stdout).

    The exit code is the worst of the types' (4 over 3 over 0); an interrupt stops at once.
    """
    notify = None if jobs and jobs[0].quiet else warn
    with run_locks(None, lock_name, wait_lock, notify):
        return _warm(jobs, as_json)


def _warm(jobs: list[ScanJob], as_json: bool) -> ExitCode:
    worst = ExitCode.OK
    counts: dict[str, dict[str, int]] = {}
    for index, job in enumerate(jobs):
        if index == 0 and job.skipped_invalid and not job.quiet:
            warn(f"skipped {job.skipped_invalid} invalid symbols")
        run = ScanRun(job)
        code = run.run()
        metrics = run.metrics
        figures = {
            "fetched": metrics.successful - metrics.cached,
            "fresh": metrics.cached,
            "failed": metrics.failed,
            "not_scanned": metrics.total - metrics.done,
        }
        counts[job.settings.endpoint.name] = figures
        if not job.quiet:
            warn(
                f"warm-cache {job.settings.endpoint.name}: fetched {figures['fetched']}, "
                f"already fresh {figures['fresh']}, failed {figures['failed']}"
            )
        if code in (ExitCode.INTERRUPTED, ExitCode.TERMINATED):
            worst = code
            break
        if code is ExitCode.UPSTREAM or (code is ExitCode.PARTIAL and worst is ExitCode.OK):
            worst = code
    if as_json:
        document: dict[str, Any] = {
            key: sum(c[key] for c in counts.values())
            for key in ("fetched", "fresh", "failed", "not_scanned")
        }
        document["types"] = counts
        print(json.dumps(document), flush=True)
    return worst
