"""The scan: a fixed set of workers pulling symbols from one stream, over one shared client.

There are no batches and no barrier. Each of `concurrency` workers takes the next symbol, asks
the pacer for permission, sends, classifies the answer, retries what can succeed, and emits one
record per symbol the moment it is final; a slow symbol holds up only its own worker.

If the upstream refuses us (401/403/418) the scan stops at once; symbols that were not finished
still get a record saying why, so nothing is silently lost.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import anyio
import httpx

from scanctl.clock import Clock
from scanctl.config import EndpointType
from scanctl.metrics import RunMetrics
from scanctl.pacing import Pacer
from scanctl.records import ScanRecord
from scanctl.retry import Outcome, Verdict, backoff_delay, classify_exception, classify_response

RecordSink = Callable[[ScanRecord], None]


@dataclass(frozen=True, slots=True)
class ScanSettings:
    """Everything the engine needs to know about one scan."""

    endpoint: EndpointType
    base_url: str
    concurrency: int = 50
    rate: float | None = None
    timeout: float = 30.0
    retries: int = 3
    backoff_base: float = 0.5
    backoff_cap: float = 10.0
    # A 429 does not use up a retry (it says "later", not "broken"), but a symbol cannot be
    # throttled for ever either: after this many 429s in a row it fails as "HTTP 429".
    max_throttled: int = 50
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class ScanOutcome:
    """How the run ended, for the CLI to turn into an exit code."""

    refused: Verdict | None = None


class _Refused(Exception):
    """Raised inside a worker to stop the scan when the upstream refuses us."""

    def __init__(self, verdict: Verdict, record: ScanRecord) -> None:
        super().__init__(verdict.error)
        self.verdict = verdict
        self.record = record


class ScanEngine:
    """Runs one scan; records go to `sink` and `metrics` as each symbol finishes."""

    def __init__(
        self,
        settings: ScanSettings,
        client: httpx.AsyncClient,
        clock: Clock,
        sink: RecordSink,
        metrics: RunMetrics,
        *,
        pacer: Pacer | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.clock = clock
        self.sink = sink
        self.metrics = metrics
        self.pacer = pacer or Pacer(clock, settings.rate)
        self.rng = rng or random.Random()
        self._url_base = settings.base_url.rstrip("/")
        self._in_flight: dict[int, str] = {}

    async def run(self, symbols: Iterable[str]) -> ScanOutcome:
        """Scan every symbol; return how it ended. Cancellation (Ctrl-C) propagates.

        `symbols` is consumed lazily, one symbol per free worker.
        """
        stream = enumerate(symbols)
        outcome = ScanOutcome()
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(max(1, self.settings.concurrency)):
                    tg.start_soon(self._worker, stream)
        except* _Refused as group:
            first = group.exceptions[0]
            assert isinstance(first, _Refused)
            outcome.refused = first.verdict
            for refused in group.exceptions:
                assert isinstance(refused, _Refused)
                self._in_flight.pop(refused.record.index, None)
                self._emit(refused.record)
            self._record_unsent(stream, first.verdict)
        return outcome

    async def _worker(self, stream: Iterator[tuple[int, str]]) -> None:
        # Sharing one iterator is safe: tasks only switch at awaits, and next() has none.
        for index, symbol in stream:
            self._in_flight[index] = symbol
            record = await self._scan_one(index, symbol)
            del self._in_flight[index]
            self._emit(record)

    def _emit(self, record: ScanRecord) -> None:
        self.metrics.observe_record(record)
        self.sink(record)

    def _record_unsent(self, stream: Iterator[tuple[int, str]], verdict: Verdict) -> None:
        """Give every unfinished symbol a record that says the scan stopped before it."""
        reason = f"Not scanned: upstream refused us ({verdict.error})"
        unfinished = sorted(self._in_flight.items())
        self._in_flight.clear()
        for index, symbol in [*unfinished, *stream]:
            self._emit(
                ScanRecord(
                    symbol,
                    self.settings.endpoint.name,
                    False,
                    None,
                    None,
                    reason,
                    0,
                    0.0,
                    index=index,
                    error_kind="Not scanned (refused)",
                )
            )

    async def _send(self, symbol: str) -> Verdict:
        """One HTTP request, timed; any transport error becomes a verdict."""
        url = self._url_base + self.settings.endpoint.path_for(symbol)
        started = self.clock.monotonic()
        try:
            # httpx's timeout bounds each read; this bounds the whole request (slow trickles).
            with anyio.fail_after(self.settings.timeout):
                response = await self.client.get(url, params=self.settings.endpoint.params)
        except TimeoutError:
            verdict = Verdict(Outcome.RETRYABLE, None, None, "Request timeout", "Request timeout")
        except httpx.HTTPError as exc:
            verdict = classify_exception(exc)
        else:
            verdict = classify_response(
                response.status_code, response.headers, response.content, self.clock.wall()
            )
        self.metrics.observe_request((self.clock.monotonic() - started) * 1000.0)
        return verdict

    async def _scan_one(self, index: int, symbol: str) -> ScanRecord:
        settings = self.settings
        started = self.clock.monotonic()
        attempts = retries = throttled = 0
        while True:
            await self.pacer.acquire()
            attempts += 1
            verdict = await self._send(symbol)
            outcome = verdict.outcome
            if outcome is Outcome.THROTTLED:
                self.metrics.throttled += 1
                throttled += 1
                if throttled <= settings.max_throttled:
                    await self._wait_throttled(verdict, throttled)
                    continue
            elif outcome is Outcome.RETRYABLE and retries < settings.retries:
                retries += 1
                self.metrics.retries += 1
                await self._wait_retry(verdict, retries)
                continue
            elapsed_ms = round((self.clock.monotonic() - started) * 1000.0, 1)
            ok = outcome is Outcome.OK
            record = ScanRecord(
                symbol,
                settings.endpoint.name,
                ok,
                verdict.status,
                verdict.data if ok else None,
                None if ok else verdict.error,
                attempts,
                elapsed_ms,
                index=index,
                error_kind=verdict.error_kind,
            )
            if outcome is Outcome.REFUSED:
                raise _Refused(verdict, record)
            return record

    async def _wait_throttled(self, verdict: Verdict, throttled: int) -> None:
        if verdict.retry_after is not None:
            # The upstream said when: hold every worker until then, not just this one.
            self.pacer.close_gate(verdict.retry_after)
            return
        s = self.settings
        await self.clock.sleep(backoff_delay(throttled, s.backoff_base, s.backoff_cap, self.rng))

    async def _wait_retry(self, verdict: Verdict, retries: int) -> None:
        s = self.settings
        delay = backoff_delay(retries, s.backoff_base, s.backoff_cap, self.rng)
        if verdict.retry_after is not None:  # a 503 may say when to come back
            delay = max(delay, min(verdict.retry_after, s.backoff_cap * 6))
        await self.clock.sleep(delay)
