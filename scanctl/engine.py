"""The scan: a fixed set of workers pulling symbols from one stream, through one fetcher.

There are no batches and no barrier. Each of `concurrency` workers takes the next symbol, asks
the pacer for permission, sends, classifies the answer, retries what can succeed, and emits one
record per symbol the moment it is final; a slow symbol holds up only its own worker.

- A 429 is throttling, not failure: the symbol goes back in line without using a retry; it
  fails only when `--deadline` passes.
- Retries of timeouts, connection errors and 5xx draw on a shared retry budget; while the
  circuit breaker is open (the upstream looks down) a failure uses no retry at all: it is the
  upstream's outage, not the symbol's fault.
- With `--hedge`, a request slower than the p95 so far gets a second copy when the budget and
  the pacer allow one at once; the first answer wins.

If the upstream refuses us (401/403/418), stays down past `--max-outage`, or the deadline
passes, the scan stops (`outcome.StopReason`); symbols not finished still get a record saying
why, so nothing is silently lost.

Each try at a symbol is three steps (`_attempt`): admit (its cache lease, and the retry budget
for a retry), send (the pacer's ticket, one request through the fetcher, hedged with --hedge),
decide (back in line, or its final record). Requests go through one `fetch.Fetcher`, whatever
library carries them; what happens is told to one `ScanObserver` (the run's metrics, writer and
display), which the engine never reads back (docs/architecture.md, "The flow of one symbol").
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import anyio.lowlevel

from scanctl.cache.front import CacheFront
from scanctl.clock import Clock
from scanctl.config import EndpointType, RateScope
from scanctl.failures import FetchFailure, RequestTimeout
from scanctl.fetch import Fetcher
from scanctl.hedge import Hedger
from scanctl.hints import QuotaHeaders, QuotaHint, WeightHeader, parse_quota
from scanctl.line import Pending, SymbolLine
from scanctl.outcome import UNFINISHED_KIND, StopReason
from scanctl.pacing import Feedback, Meter, Pacer, UpstreamBanned, UpstreamDown, hedge_slots
from scanctl.ratecontrol import LearnedPace
from scanctl.records import ScanRecord
from scanctl.resilience import CircuitBreaker, RetryBudget
from scanctl.retry import Outcome, Verdict, backoff_delay, classify_failure, classify_response
from scanctl.settings import (
    CONCURRENCY,
    DEADLINE,
    FOLLOW_REDIRECTS,
    HEDGE,
    MAX_BODY,
    MAX_OUTAGE,
    RATE,
    RETRIES,
    RETRY_BUDGET,
    TIMEOUT,
    TRANSPORT,
)
from scanctl.urls import RequestUrls


class ScanObserver(Protocol):
    """What watches a scan: told of every final record and every request, never read back by
    the engine. The runner's observer hands records to its metrics, writer and display
    (`runner.RunObserver`); `metrics.RunMetrics` is one on its own."""

    def observe_record(self, record: ScanRecord) -> None:
        """A symbol is finished: its one record."""

    def observe_request(self, latency_ms: float) -> None:
        """A request got its answer (or failed) after this long."""

    def observe_throttled(self) -> None:
        """An answer was a 429: the symbol went back in line."""

    def observe_retry(self) -> None:
        """The retry budget granted a symbol another try."""

    def observe_hedge(self) -> None:
        """A second copy of a slow request was sent."""


# A 503's Retry-After is heeded up to this many seconds for that symbol's next try.
MAX_RETRY_AFTER = 60.0


@dataclass(frozen=True, slots=True)
class ScanSettings:
    """Everything the engine needs to know about one scan.

    A field named after a setting takes its value in a run (`runner.scan_settings`); its
    default here is that setting's built-in one, for code that builds a scan directly (tests,
    benchmarks), so the settings model is the one place a default is written."""

    endpoint: EndpointType
    base_url: str
    concurrency: int = CONCURRENCY.built_in
    rate: float | None = RATE.built_in
    timeout: float = TIMEOUT.built_in
    retries: int = RETRIES.built_in
    backoff_base: float = 0.5
    # Full-jitter backoff between a symbol's tries: 0.5, 1, then 2 s at most. The retry budget
    # and the breaker are what protect a struggling upstream; a longer cap only held the last
    # symbols of a run (a fifth try waited up to 0.5+1+2+4 s with a 10 s cap).
    backoff_cap: float = 2.0
    headers: dict[str, str] = field(default_factory=dict)
    deadline: float | None = DEADLINE.built_in
    retry_budget: float = RETRY_BUDGET.built_in
    max_outage: float = MAX_OUTAGE.built_in
    hedge: bool = HEDGE.built_in
    adaptive: bool = True
    weight_header: WeightHeader | None = None
    quota_headers: QuotaHeaders | None = None
    upstream_bans: bool = False  # the profile says it bans: no 429 risked to check a hint
    rate_scope: RateScope = "upstream"  # "endpoint": this type's own shared budget (`scope_key`)
    max_body: int = MAX_BODY.built_in  # bytes of one answer we are willing to read
    transport: str = TRANSPORT.built_in  # "aiohttp" (scanctl.transport), "httpx" or "auto"
    follow_redirects: bool = FOLLOW_REDIRECTS.built_in


def make_pacer(
    settings: ScanSettings,
    clock: Clock,
    learned: LearnedPace | None = None,
    meter: Meter | None = None,
) -> Pacer:
    """The pacer a scan with these settings uses, starting from what an earlier run learned;
    `meter`: a send schedule shared with other processes (`sharedpace`), else its own."""
    return Pacer(
        clock,
        concurrency=settings.concurrency,
        rate=settings.rate,
        adaptive=settings.adaptive,
        learned=learned,
        breaker=CircuitBreaker(max_outage=settings.max_outage),
        check_hints=not settings.upstream_bans,
        meter=meter,
    )


@dataclass(slots=True)
class ScanOutcome:
    """How the scan ended, for the runner to turn into a summary and an exit code."""

    stop: StopReason | None = None  # None: every symbol was tried
    message: str | None = None  # the stop in words ("upstream unavailable for 60 s (...)")
    refused: Verdict | None = None  # the answer that refused us (a 418's Retry-After is kept)
    unfinished: int = 0  # symbols the stop left without an answer


class _Stop(Exception):
    """Raised inside a worker to stop the whole scan."""

    def __init__(self, reason: StopReason, message: str, record: ScanRecord | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.record = record


class _Brake:
    """Stopping to send: once pulled, idle waits (for the pacer, or for a backoff to pass) end
    at once, and none starts; a request already sent is left to finish."""

    def __init__(self) -> None:
        self.pulled = False
        self._idle: set[anyio.CancelScope] = set()

    def pull(self) -> None:
        self.pulled = True
        for scope in list(self._idle):
            scope.cancel()

    @contextlib.contextmanager
    def idle(self) -> Iterator[anyio.CancelScope]:
        """A wait that pulling the brake cuts short (nothing has been sent in it)."""
        scope = anyio.CancelScope()
        if self.pulled:
            scope.cancel()
        self._idle.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._idle.discard(scope)


class ScanEngine:
    """Runs one scan through `fetcher`; each finished symbol's record goes to `observer`."""

    def __init__(
        self,
        settings: ScanSettings,
        fetcher: Fetcher,
        clock: Clock,
        observer: ScanObserver,
        *,
        pacer: Pacer | None = None,
        rng: random.Random | None = None,
        budget: RetryBudget | None = None,
        cache: CacheFront | None = None,
    ) -> None:
        self.settings = settings
        self.fetcher = fetcher
        self.clock = clock
        self.observer = observer
        self.pacer = pacer or make_pacer(settings, clock)
        self.breaker = self.pacer.breaker
        self.budget = budget or RetryBudget(share=settings.retry_budget)
        self.rng = rng or random.Random()
        self.cache = cache
        self._url_for = RequestUrls(settings.base_url, settings.endpoint)
        self._line = SymbolLine(iter(()), clock)  # `run` gives it the symbols
        self._hedger: Hedger[tuple[Verdict, QuotaHint | None]] | None = None
        if settings.hedge:
            self._hedger = Hedger(
                self.pacer,
                self.budget,
                clock,
                feedback=lambda answer: _feedback(*answer),
                stopping=lambda: self._brake.pulled,
                sent_copy=observer.observe_hedge,
            )
        self._deadline_hit = False
        self._refusal: Verdict | None = None
        self._fetcher_ready = False
        self._brake = _Brake()

    async def run(self, symbols: Iterable[str]) -> ScanOutcome:
        """Scan every symbol; return how it ended. Cancellation (Ctrl-C) propagates.

        `symbols` is consumed lazily, one symbol per free worker (with a cache, a chunk at a
        time: the fresh ones are answered from it without a request).
        """
        stream: Iterator[tuple[int, str]] = enumerate(symbols)
        if self.cache is not None:
            stream = self.cache.screen(stream, self._emit)
        self._line = SymbolLine(stream, self.clock)
        outcome = ScanOutcome()
        try:
            async with anyio.create_task_group() as outer:
                if self.settings.deadline is not None:
                    outer.start_soon(self._watch_deadline, self.settings.deadline, outer)
                concurrency = max(1, self.settings.concurrency)
                if self.settings.hedge:
                    concurrency -= hedge_slots(concurrency)  # room for copies in the ceiling
                async with anyio.create_task_group() as workers:
                    for _ in range(concurrency):
                        workers.start_soon(self._worker)
                outer.cancel_scope.cancel()
        except* _Stop as group:
            stops = list(_leaves(group))
            for stop in stops:
                if stop.record is not None:
                    self._line.finished(stop.record.index)
                    self._emit(stop.record)
            first = stops[0]
            outcome.stop, outcome.message = first.reason, first.message
            if first.reason is StopReason.REFUSED:
                outcome.refused = self._refusal
            text = f"Not scanned: {first.message}"
            outcome.unfinished = self._record_unfinished(first.reason, text)
        if self._deadline_hit:
            text = f"Deadline of {self.settings.deadline:g} s passed"
            unfinished = self._record_unfinished(StopReason.DEADLINE, text)
            if outcome.stop is None:
                outcome = ScanOutcome(StopReason.DEADLINE, text, unfinished=unfinished)
        return outcome

    async def _watch_deadline(self, seconds: float, group: anyio.abc.TaskGroup) -> None:
        await self.clock.sleep(seconds)
        self._deadline_hit = True
        group.cancel_scope.cancel()

    def stop_sending(self) -> None:
        """Take no new symbol and send nothing more; requests already in flight get their answer.

        The first Ctrl-C or SIGTERM calls this: workers waiting for permission to send, or for a
        backoff to pass, stop at once; the symbols they held stay unfinished (no record), so
        `--resume` scans them next time.
        """
        self._brake.pull()

    async def _worker(self) -> None:
        line = self._line
        while not self._brake.pulled:
            pending = line.take()
            if pending is None:
                wait = line.waiting_for()
                if wait is None:
                    return  # nothing left: symbols still out come back to their own workers
                with self._brake.idle():
                    await self.clock.sleep(min(wait, 0.25))
                continue
            record = await self._attempt(pending)
            if record is not None:
                line.finished(pending.index)
                self._emit(record)

    def _emit(self, record: ScanRecord) -> ScanRecord:
        """Hand a final record on (the cache may answer a failure stale); return what went."""
        if self.cache is not None:
            record = self.cache.settle(record)
        self.observer.observe_record(record)
        return record

    def _record_unfinished(self, stop: StopReason, reason: str) -> int:
        """Give every symbol not finished a record that says why the scan stopped before it;
        return how many of them the cache did not answer either."""
        kind = UNFINISHED_KIND[stop]
        unanswered = 0
        for pending in self._line.drain():
            last = pending.last_error
            record = ScanRecord(
                pending.symbol,
                self.settings.endpoint.name,
                False,
                None,
                None,
                f"{reason} (last answer: {last})" if last else reason,
                pending.attempts,
                0.0,
                index=pending.index,
                error_kind=kind,
            )
            unanswered += not self._emit(record).ok  # (--stale-if-error may answer it)
        return unanswered

    async def _send(self, symbol: str) -> tuple[Verdict, QuotaHint | None]:
        """One HTTP request, timed; a failure of any kind becomes a verdict."""
        endpoint = self.settings.endpoint
        started = self.clock.monotonic()
        quota = None
        # This bounds the whole request, reading included (slow trickles); the client has no
        # timer per read. (anyio.fail_after, without its per-call wrapping: this runs for
        # every request.)
        whole = anyio.CancelScope(deadline=anyio.current_time() + self.settings.timeout)
        try:
            with whole:
                status, headers, body = await self.fetcher.fetch(
                    endpoint.method, self._url_for(symbol)
                )
            if whole.cancelled_caught:
                raise RequestTimeout
        except FetchFailure as failure:
            verdict = classify_failure(failure)
        except TimeoutError:  # a library's own timer, where its fetcher did not map it
            verdict = classify_failure(RequestTimeout())
        else:
            wall = self.clock.wall()
            verdict = classify_response(status, headers, body, wall)
            if endpoint.payload is not None and verdict.outcome is Outcome.OK:
                verdict = _payload(verdict, endpoint.payload)
            settings = self.settings
            quota = parse_quota(headers, wall, settings.weight_header, settings.quota_headers)
        elapsed = self.clock.monotonic() - started
        self.observer.observe_request(elapsed * 1000.0)
        if self._hedger is not None:
            self._hedger.latency.add(elapsed)
        return verdict, quota

    async def _attempt(self, pending: Pending) -> ScanRecord | None:
        """One try at a symbol, admit -> send -> decide: its final record, or None when it went
        back in line (or the scan stopped before anything was sent)."""
        if pending.started is None:
            pending.started = self.clock.monotonic()
        admitted = self._admit(pending)
        if admitted is not True:
            return None if admitted is False else admitted
        verdict = await self._send_paced(pending)
        if verdict is None:
            return None  # stopped while waiting for the pacer: nothing was sent
        return self._decide(pending, verdict)

    def _admit(self, pending: Pending) -> ScanRecord | bool:
        """May this symbol be sent now? True: yes. False: not yet, it went back in line. A
        record: another scan fetched it meanwhile, and this is that answer.

        The cache's single flight decides first (a symbol another scan is fetching waits for
        that answer), then the retry budget, for a try that is a retry: over budget, the retry
        waits rather than fails (asking again costs nothing; only granted retries send)."""
        cache = self.cache
        if cache is not None and not pending.claimed:
            claim = cache.claim(pending.index, pending.symbol)
            if claim is False:
                self._line.again(pending, self.rng.uniform(0.1, 0.3))
            if claim is not True:
                return claim
            pending.claimed = True
        elif cache is not None and pending.attempts:
            cache.renew(pending.symbol)  # a retry or a throttled symbol keeps its lease
        if pending.needs_budget:
            if not self.budget.try_spend(self.clock.monotonic()):
                self._line.again(pending, self.rng.uniform(0.05, 0.25))
                return False
            pending.needs_budget = False
            self.observer.observe_retry()
        return True

    async def _send_paced(self, pending: Pending) -> Verdict | None:
        """Wait for the pacer's ticket, send (a hedged pair with --hedge), and give the pacer
        what the answer said. None: the scan stopped sending while this waited."""
        if not self._fetcher_ready:
            # Built now, before the first ticket: built on the first send it would hold up the
            # first answers while the pacer is timing them.
            self._fetcher_ready = True
            self.fetcher.prepare()
        try:
            await anyio.lowlevel.checkpoint_if_cancelled()  # a cancelled scan sends nothing
            ticket = None if self._brake.pulled else self.pacer.acquire_at_once()
            if ticket is None:
                with self._brake.idle():
                    ticket = await self.pacer.acquire()
        except UpstreamDown as exc:
            raise _Stop(StopReason.UPSTREAM_DOWN, str(exc)) from None
        except UpstreamBanned as exc:
            # Another process sharing the budget was told (or this one, and another worker
            # stops first): the same stop as a 418 of our own, and the ban is remembered alike.
            error = f"HTTP 418 told to a process sharing this budget; {exc}"
            if self._refusal is None:
                self._refusal = Verdict(Outcome.REFUSED, 418, None, "HTTP 418", error, exc.seconds)
            raise _Stop(StopReason.REFUSED, f"upstream refused us ({error})") from None
        if ticket is None:
            return None
        pending.attempts += 1
        self.budget.note_request(ticket.sent_at)
        if self._hedger is None:
            verdict, quota = await self._send(pending.symbol)
        else:
            verdict, quota = await self._hedger.send(lambda: self._send(pending.symbol))
        self.pacer.release(ticket, _feedback(verdict, quota))
        return verdict

    def _decide(self, pending: Pending, verdict: Verdict) -> ScanRecord | None:
        """What an answer means for its symbol: back in line (a 429 uses no retry; a retryable
        failure uses one, unless the upstream is down), or its final record. A refusal stops
        the whole scan."""
        pending.last_error = verdict.error
        outcome = verdict.outcome
        if outcome is Outcome.THROTTLED:
            # With Retry-After the gate holds everyone; without, this symbol backs off alone.
            self.observer.observe_throttled()
            pending.throttled += 1
            wait = 0.0 if verdict.retry_after is not None else self._backoff(pending.throttled)
            self._line.again(pending, wait)
            return None
        if outcome is Outcome.RETRYABLE and self._retry_later(pending, verdict):
            return None
        record = self._record(pending, verdict)
        if outcome is Outcome.REFUSED:
            self._refusal = verdict
            message = f"upstream refused us ({verdict.error})"
            raise _Stop(StopReason.REFUSED, message, record)
        return record

    def _retry_later(self, pending: Pending, verdict: Verdict) -> bool:
        """Put a failed symbol back in line for another try, if it has one left."""
        if self.breaker is not None and self.breaker.is_open:
            # The upstream is down: the pacer holds everyone back, and no retry is used.
            self._line.again(pending, 0.0)
            return True
        if pending.retries >= self.settings.retries:
            return False
        pending.retries += 1
        pending.needs_budget = True
        wait = self._backoff(pending.retries)
        if verdict.retry_after is not None:  # a 503 may say when to come back
            wait = max(wait, min(verdict.retry_after, MAX_RETRY_AFTER))
        self._line.again(pending, wait)
        return True

    def _record(self, pending: Pending, verdict: Verdict) -> ScanRecord:
        """The symbol's final record, from its last answer."""
        ok = verdict.outcome is Outcome.OK
        assert pending.started is not None  # set by its first attempt
        return ScanRecord(
            pending.symbol,
            self.settings.endpoint.name,
            ok,
            verdict.status,
            verdict.data if ok else None,
            None if ok else verdict.error,
            pending.attempts,
            round((self.clock.monotonic() - pending.started) * 1000.0, 1),
            index=pending.index,
            error_kind=verdict.error_kind,
        )

    def _backoff(self, attempt: int) -> float:
        s = self.settings
        return backoff_delay(attempt, s.backoff_base, s.backoff_cap, self.rng)


def _leaves(group: BaseExceptionGroup[_Stop]) -> Iterator[_Stop]:
    """The stops inside a (possibly nested) exception group."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def _payload(verdict: Verdict, field_path: str) -> Verdict:
    """The part of an answer the profile says holds the payload ("data", "data.quote")."""
    value = verdict.data
    for part in field_path.split("."):
        if not isinstance(value, dict) or part not in value:
            message = f"Answer has no field {field_path!r}"
            return Verdict(Outcome.PERMANENT, verdict.status, None, "Missing payload", message)
        value = value[part]
    return Verdict(Outcome.OK, verdict.status, value)


def _feedback(verdict: Verdict, quota: QuotaHint | None) -> Feedback:
    """What an answer tells the pacer."""
    outcome = verdict.outcome
    return Feedback(
        admitted=verdict.status is not None and outcome is not Outcome.THROTTLED,
        throttled=outcome is Outcome.THROTTLED,
        unavailable=outcome is Outcome.RETRYABLE,
        retry_after=verdict.retry_after,
        quota=quota,
        error=verdict.error_kind,
        banned=verdict.status == 418,
    )
