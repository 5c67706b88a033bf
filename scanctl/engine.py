"""The scan: a fixed set of workers pulling symbols from one stream, over one shared client.

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
passes, the scan stops; symbols not finished still get a record saying why, so nothing is
silently lost.
"""

from __future__ import annotations

import contextlib
import heapq
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import anyio.lowlevel
import httpx

from scanctl.answer import Answer, TooLarge, read_capped
from scanctl.cache.front import CacheFront
from scanctl.clock import Clock
from scanctl.config import EndpointType
from scanctl.hints import QuotaHeaders, QuotaHint, WeightHeader, parse_quota
from scanctl.metrics import RunMetrics, percentile
from scanctl.pacing import Feedback, Pacer, Ticket, UpstreamDown, hedge_slots
from scanctl.ratecontrol import LearnedPace
from scanctl.records import ScanRecord
from scanctl.resilience import CircuitBreaker, RetryBudget
from scanctl.retry import Outcome, Verdict, backoff_delay, classify_exception, classify_response
from scanctl.urls import RequestUrls

RecordSink = Callable[[ScanRecord], None]


class HttpClient(Protocol):
    """What the engine needs of its client: a streamed request (httpx.AsyncClient, or lazy)."""

    def stream(
        self, method: str, url: httpx.URL
    ) -> contextlib.AbstractAsyncContextManager[httpx.Response]: ...


HEDGE_MIN_SAMPLES = 20
# A 503's Retry-After is heeded up to this many seconds for that symbol's next try.
MAX_RETRY_AFTER = 60.0


@dataclass(frozen=True, slots=True)
class ScanSettings:
    """Everything the engine needs to know about one scan."""

    endpoint: EndpointType
    base_url: str
    concurrency: int = 50
    rate: float | None = None
    timeout: float = 30.0
    retries: int = 4
    backoff_base: float = 0.5
    # Full-jitter backoff between a symbol's tries: 0.5, 1, then 2 s at most. The retry budget
    # and the breaker are what protect a struggling upstream; a longer cap only held the last
    # symbols of a run (a fifth try waited up to 0.5+1+2+4 s with a 10 s cap).
    backoff_cap: float = 2.0
    headers: dict[str, str] = field(default_factory=dict)
    deadline: float | None = None
    retry_budget: float = 0.1
    max_outage: float = 60.0
    hedge: bool = False
    adaptive: bool = True
    weight_header: WeightHeader | None = None
    quota_headers: QuotaHeaders | None = None
    upstream_bans: bool = False  # the profile says it bans: no 429 risked to check a hint
    max_body: int = 5 * 1024 * 1024  # bytes of one answer we are willing to read
    transport: str = "auto"  # "aiohttp" (scanctl.transport), "httpx" (httpcore) or "auto"
    follow_redirects: bool = False


def make_pacer(settings: ScanSettings, clock: Clock, learned: LearnedPace | None = None) -> Pacer:
    """The pacer a scan with these settings uses, starting from what an earlier run learned."""
    return Pacer(
        clock,
        concurrency=settings.concurrency,
        rate=settings.rate,
        adaptive=settings.adaptive,
        learned=learned,
        breaker=CircuitBreaker(max_outage=settings.max_outage),
        check_hints=not settings.upstream_bans,
    )


@dataclass(slots=True)
class ScanOutcome:
    """How the run ended, for the CLI to turn into an exit code."""

    refused: Verdict | None = None
    down: str | None = None  # the last error, when the upstream stayed down past --max-outage
    deadline_passed: bool = False


class _Stop(Exception):
    """Raised inside a worker to stop the whole scan."""

    def __init__(self, kind: str, message: str, record: ScanRecord | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.record = record


@dataclass(slots=True)
class _Pending:
    """A symbol that has not finished yet, and how far it got."""

    index: int
    symbol: str
    started: float | None = None
    attempts: int = 0
    retries: int = 0
    throttled: int = 0
    last_error: str | None = None
    needs_budget: bool = False  # its next try is a retry: it must draw on the budget first
    claimed: bool = False  # we hold its cache lease (or there is no cache)


class _RecentLatency:
    """The p95 of recent request latencies, recomputed now and then (for hedging)."""

    def __init__(self, size: int = 512, every: int = 32) -> None:
        self.samples: deque[float] = deque(maxlen=size)
        self.every = every
        self.added = 0  # all samples ever: the deque's length stops growing at `size`
        self.p95: float | None = None

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)
        self.added += 1
        count = self.added
        first = self.p95 is None and count == HEDGE_MIN_SAMPLES
        if first or (count >= HEDGE_MIN_SAMPLES and count % self.every == 0):
            self.p95 = percentile(sorted(self.samples), 95)


class ScanEngine:
    """Runs one scan; records go to `sink` and `metrics` as each symbol finishes."""

    def __init__(
        self,
        settings: ScanSettings,
        client: HttpClient,
        clock: Clock,
        sink: RecordSink,
        metrics: RunMetrics,
        *,
        pacer: Pacer | None = None,
        rng: random.Random | None = None,
        budget: RetryBudget | None = None,
        cache: CacheFront | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.clock = clock
        self.sink = sink
        self.metrics = metrics
        self.pacer = pacer or make_pacer(settings, clock)
        self.breaker = self.pacer.breaker
        self.budget = budget or RetryBudget(share=settings.retry_budget)
        self.rng = rng or random.Random()
        self.cache = cache
        self._url_for = RequestUrls(settings.base_url, settings.endpoint)
        # DirectClient (and the lazy client in front of it) can answer a plain GET without
        # httpx's request and response objects; any other client streams.
        self._fetch_answer = getattr(client, "fetch_answer", None)
        self._unfinished: dict[int, _Pending] = {}
        # Symbols waiting out a backoff, by when they may go again. Their workers moved on to
        # other symbols meanwhile: a backoff must not idle a worker.
        self._later: list[tuple[float, int, _Pending]] = []
        self._latency = _RecentLatency()
        self._deadline_hit = False
        self._refusal: Verdict | None = None
        self._stopping = False
        self._client_ready = False
        self._idle_scopes: set[anyio.CancelScope] = set()

    async def run(self, symbols: Iterable[str]) -> ScanOutcome:
        """Scan every symbol; return how it ended. Cancellation (Ctrl-C) propagates.

        `symbols` is consumed lazily, one symbol per free worker (with a cache, a chunk at a
        time: the fresh ones are answered from it without a request).
        """
        stream: Iterator[tuple[int, str]] = enumerate(symbols)
        if self.cache is not None:
            stream = self.cache.screen(stream, self._emit)
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
                        workers.start_soon(self._worker, stream)
                outer.cancel_scope.cancel()
        except* _Stop as group:
            stops = list(_leaves(group))
            first = stops[0]
            for stop in stops:
                if stop.record is not None:
                    self._unfinished.pop(stop.record.index, None)
                    self._emit(stop.record)
            if first.kind == "Not scanned (refused)":
                outcome.refused = self._refusal
            if first.kind == "Not scanned (upstream down)":
                outcome.down = first.message
            self._record_unfinished(stream, first.kind, f"Not scanned: {first.message}")
        if self._deadline_hit:
            outcome.deadline_passed = True
            limit = self.settings.deadline
            self._record_unfinished(stream, "Deadline passed", f"Deadline of {limit:g} s passed")
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
        self._stopping = True
        for scope in list(self._idle_scopes):
            scope.cancel()

    @contextlib.contextmanager
    def _idle(self) -> Iterator[anyio.CancelScope]:
        """A wait that `stop_sending` may cut short (nothing has been sent in it)."""
        scope = anyio.CancelScope()
        if self._stopping:
            scope.cancel()
        self._idle_scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._idle_scopes.discard(scope)

    async def _worker(self, stream: Iterator[tuple[int, str]]) -> None:
        # Sharing one iterator and one heap is safe: tasks only switch at awaits.
        while not self._stopping:
            pending = self._take(stream)
            if pending is None:
                if not self._later:
                    return  # nothing left: symbols still out come back to their own workers
                due = self._later[0][0] - self.clock.monotonic()
                with self._idle():
                    await self.clock.sleep(min(max(due, 0.0), 0.25))
                continue
            record = await self._attempt(pending)
            if record is not None:
                del self._unfinished[pending.index]
                self._emit(record)

    def _take(self, stream: Iterator[tuple[int, str]]) -> _Pending | None:
        """A symbol whose backoff is over, else the next new one, else None."""
        if self._later and self._later[0][0] <= self.clock.monotonic():
            return heapq.heappop(self._later)[2]
        for index, symbol in stream:
            pending = _Pending(index, symbol)
            self._unfinished[index] = pending
            return pending
        return None

    def _again(self, pending: _Pending, delay: float) -> None:
        """Put a symbol back in line, to be taken again after `delay` seconds."""
        due = self.clock.monotonic() + max(0.0, delay)
        heapq.heappush(self._later, (due, pending.index, pending))

    def _emit(self, record: ScanRecord) -> None:
        if self.cache is not None:
            record = self.cache.settle(record)
        self.metrics.observe_record(record)
        self.sink(record)

    def _record_unfinished(self, stream: Iterator[tuple[int, str]], kind: str, reason: str) -> None:
        """Give every symbol not finished a record that says why the scan stopped before it."""
        unfinished = sorted(self._unfinished.items())
        self._unfinished.clear()
        pending = [(i, p.symbol, p.attempts, p.last_error) for i, p in unfinished]
        pending += [(i, symbol, 0, None) for i, symbol in stream]
        for index, symbol, attempts, last_error in pending:
            error = f"{reason} (last answer: {last_error})" if last_error else reason
            self._emit(
                ScanRecord(
                    symbol,
                    self.settings.endpoint.name,
                    False,
                    None,
                    None,
                    error,
                    attempts,
                    0.0,
                    index=index,
                    error_kind=kind,
                )
            )

    async def _send(self, symbol: str) -> tuple[Verdict, QuotaHint | None]:
        """One HTTP request, timed; any transport error becomes a verdict."""
        endpoint = self.settings.endpoint
        started = self.clock.monotonic()
        quota = None
        limit = self.settings.max_body
        # httpx's timeout bounds each read; this bounds the whole request (slow trickles).
        # (anyio.fail_after, without its per-call wrapping: this runs for every request.)
        whole = anyio.CancelScope(deadline=anyio.current_time() + self.settings.timeout)
        try:
            with whole:
                url = self._url_for(symbol)
                status, headers, body = await self._fetch(endpoint.method, url)
            if whole.cancelled_caught:
                raise TimeoutError
        except TimeoutError:
            verdict = Verdict(Outcome.RETRYABLE, None, None, "Request timeout", "Request timeout")
        except TooLarge as exc:
            message = f"Response too large: over {limit} bytes (--max-body), not read"
            verdict = Verdict(Outcome.PERMANENT, exc.status, None, "Response too large", message)
        except httpx.TooManyRedirects:
            verdict = Verdict(Outcome.PERMANENT, None, None, "Redirect loop", "Too many redirects")
        except httpx.DecodingError as exc:
            message = f"Undecodable answer: {str(exc)[:200]}"
            verdict = Verdict(Outcome.PERMANENT, None, None, "Undecodable answer", message)
        except httpx.HTTPError as exc:
            verdict = classify_exception(exc)
        else:
            wall = self.clock.wall()
            verdict = classify_response(status, headers, body, wall)
            if endpoint.payload is not None and verdict.outcome is Outcome.OK:
                verdict = _payload(verdict, endpoint.payload)
            settings = self.settings
            quota = parse_quota(headers, wall, settings.weight_header, settings.quota_headers)
        elapsed = self.clock.monotonic() - started
        self.metrics.observe_request(elapsed * 1000.0)
        if self.settings.hedge:
            self._latency.add(elapsed)
        return verdict, quota

    async def _fetch(self, method: str, url: httpx.URL) -> Answer:
        """Status, headers and body, reading no more than --max-body bytes of it."""
        limit = self.settings.max_body
        if self._fetch_answer is not None:
            answer: Answer | None = await self._fetch_answer(method, url, limit)
            if answer is not None:
                return answer
        async with self.client.stream(method, url) as response:
            status = response.status_code
            body = await read_capped(status, response.headers, response.aiter_bytes(), limit)
            return Answer(status, response.headers, body)

    async def _send_hedged(self, symbol: str) -> tuple[Verdict, QuotaHint | None]:
        """Send; with --hedge, race a second copy against a request slower than the p95."""
        threshold = self._latency.p95
        if not self.settings.hedge or threshold is None:
            return await self._send(symbol)
        answers: list[tuple[Verdict, QuotaHint | None]] = []

        async def attempt(delay: float, group: anyio.abc.TaskGroup) -> None:
            ticket: Ticket | None = None
            if delay > 0:
                await self.clock.sleep(delay)
                if self._stopping:
                    return  # no copies once we are winding down
                ticket = self.pacer.try_acquire_now()
                if ticket is None:
                    return
                if not self.budget.try_spend(self.clock.monotonic(), share_of_allowance=0.25):
                    self.pacer.abandon(ticket)
                    return
                self.metrics.hedged += 1
            try:
                answer = await self._send(symbol)
            except anyio.get_cancelled_exc_class():
                if ticket is not None:
                    self.pacer.abandon(ticket)
                raise
            if ticket is not None:
                self.pacer.release(ticket, _feedback(*answer))
            answers.append(answer)
            group.cancel_scope.cancel()

        async with anyio.create_task_group() as group:
            group.start_soon(attempt, 0.0, group)
            group.start_soon(attempt, threshold, group)
        return answers[0]

    async def _attempt(self, pending: _Pending) -> ScanRecord | None:
        """One try at a symbol: its final record, or None when it went back in line."""
        settings = self.settings
        if pending.started is None:
            pending.started = self.clock.monotonic()
        if self.cache is not None and not pending.claimed:
            # Single flight: if another scan is fetching this symbol, wait for its answer.
            claim = self.cache.claim(pending.index, pending.symbol)
            if claim is False:
                self._again(pending, self.rng.uniform(0.1, 0.3))
                return None
            if claim is not True:
                return claim
            pending.claimed = True
        elif self.cache is not None and pending.attempts:
            self.cache.renew(pending.symbol)  # a retry or a throttled symbol keeps its lease
        if pending.needs_budget:
            # Over budget: ask again shortly (asking costs nothing; only granted retries send).
            if not self.budget.try_spend(self.clock.monotonic()):
                self._again(pending, self.rng.uniform(0.05, 0.25))
                return None
            pending.needs_budget = False
            self.metrics.retries += 1
        if not self._client_ready:
            # A lazy client (runner.LazyClient) is built now, before the first ticket: built on
            # the first send it would hold up the first answers while the pacer is timing them.
            self._client_ready = True
            prepare = getattr(self.client, "prepare", None)
            if prepare is not None:
                prepare()
        ticket: Ticket | None = None
        try:
            await anyio.lowlevel.checkpoint_if_cancelled()  # a cancelled scan sends nothing
            ticket = None if self._stopping else self.pacer.acquire_at_once()
            if ticket is None:
                with self._idle():
                    ticket = await self.pacer.acquire()
        except UpstreamDown as exc:
            raise _Stop("Not scanned (upstream down)", str(exc)) from None
        if ticket is None:
            return None  # stopped while waiting: nothing was sent
        pending.attempts += 1
        self.budget.note_request(ticket.sent_at)
        verdict, quota = await self._send_hedged(pending.symbol)
        self.pacer.release(ticket, _feedback(verdict, quota))
        self.metrics.pace(self.pacer.rate, self.pacer.in_flight)
        pending.last_error = verdict.error
        outcome = verdict.outcome
        if outcome is Outcome.THROTTLED:
            # Not a failure: back in line, no retry used. With Retry-After the gate holds
            # everyone; without, this symbol backs off on its own.
            self.metrics.throttled += 1
            pending.throttled += 1
            wait = 0.0 if verdict.retry_after is not None else self._backoff(pending.throttled)
            self._again(pending, wait)
            return None
        if outcome is Outcome.RETRYABLE:
            if self.breaker is not None and self.breaker.is_open:
                self._again(pending, 0.0)  # the upstream is down: the pacer holds us
                return None
            if pending.retries < settings.retries:
                pending.retries += 1
                pending.needs_budget = True
                wait = self._backoff(pending.retries)
                if verdict.retry_after is not None:  # a 503 may say when to come back
                    wait = max(wait, min(verdict.retry_after, MAX_RETRY_AFTER))
                self._again(pending, wait)
                return None
        elapsed_ms = round((self.clock.monotonic() - pending.started) * 1000.0, 1)
        ok = outcome is Outcome.OK
        record = ScanRecord(
            pending.symbol,
            settings.endpoint.name,
            ok,
            verdict.status,
            verdict.data if ok else None,
            None if ok else verdict.error,
            pending.attempts,
            elapsed_ms,
            index=pending.index,
            error_kind=verdict.error_kind,
        )
        if outcome is Outcome.REFUSED:
            self._refusal = verdict
            raise _Stop("Not scanned (refused)", f"upstream refused us ({verdict.error})", record)
        return record

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
    )
