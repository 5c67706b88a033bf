"""Pacing against the whole matrix of limiters, in trio's virtual time.

Every kind of limiter the simulated upstream has (token bucket, leaky bucket, fixed window,
sliding window), counting refused requests or not, with no hints, exact hints, hints that
overstate every reset by a second and carry Retry-After on every answer, or Retry-After alone
(in whole seconds, as HTTP has it). The pacer must work for all of them, not be tuned to one:
no cell above 1.3x its ideal, none stalls, none loses a symbol. Virtual time: 32 scans of 1000
symbols take seconds, and none sleeps for real.

The same matrix with four processes sharing one budget (`sharedpace`), as four pacers over one
`LocalPacingStore` in one event loop, each with its own engine and its quarter of 2000 symbols:
the store's round trips take no time here, but who leads, who follows, and what each hears of
the others are the code the processes run.
"""

from __future__ import annotations

import inspect
from typing import Any

import anyio
import httpx
import pytest
from trio.testing import MockClock

from scanctl.clock import LoopClock
from scanctl.demo.headers import HintStyle
from scanctl.demo.limiters import make_limiter
from scanctl.pacestore import LocalPacingStore
from scanctl.pacing import Pacer
from scanctl.resilience import CircuitBreaker
from scanctl.sharedpace import SharedMeter
from tests.engine_helpers import Handler, UpstreamCounts, limited_handler, run_engine

pytestmark = pytest.mark.anyio
N = 1000
RATE = 50.0
# (burst or per-window allowance, window seconds) per kind; ideal = (N - allowance) / RATE
KINDS = {
    "token-bucket": (10, 1.0),
    "leaky-bucket": (10, 1.0),
    "fixed-window": (50, 1.0),
    "sliding-window": (100, 2.0),
}
HINTS = {
    "none": HintStyle(frozenset()),
    "exact": HintStyle(frozenset({"x-ratelimit", "retry-after"})),
    # Only Retry-After, in whole seconds (rounded up), on every 429: the commonest hint of all.
    "retry-after": HintStyle(frozenset({"retry-after"})),
    "overstated": HintStyle(
        frozenset({"x-ratelimit-epoch", "retry-after"}),
        reset_offset=1.0,
        retry_after_always=True,
        fractional_epoch=True,
    ),
}
STALL = 300.0  # virtual seconds: far past any cell's ideal; a scan still running then stalled


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return ("trio", {"clock": MockClock(autojump_threshold=0)})


def cell_upstream(
    kind: str,
    counting: bool,
    hints: str,
    clock: LoopClock,
    shape: tuple[int, float] | None = None,
) -> tuple[Handler, UpstreamCounts]:
    """The cell's limiter behind a handler; `shape`: (allowance, window) other than KINDS'."""
    allowance, window = shape or KINDS[kind]
    limiter = make_limiter(
        kind,
        RATE,
        burst=allowance,
        window=window,
        start=clock.monotonic(),
        count_rejected=counting,
    )
    return limited_handler(clock, limiter, hints=HINTS[hints])


async def scan_cell(kind: str, counting: bool, hints: str) -> dict[str, float]:
    clock = LoopClock(wall_offset=1_764_435_600.0)
    allowance = KINDS[kind][0]
    handler, counts = cell_upstream(kind, counting, hints, clock)
    pacer = Pacer(clock, concurrency=50, breaker=CircuitBreaker())
    started = clock.monotonic()
    with anyio.move_on_after(STALL) as scope:
        run = await run_engine(
            handler, [f"S{i}" for i in range(N)], clock=clock, concurrency=50, pacer=pacer
        )
    seconds = clock.monotonic() - started
    lost = N if scope.cancelled_caught else sum(1 for r in run.records if not r.ok)
    return {
        "ratio": seconds / ((N - allowance) / RATE),
        "seconds": seconds,
        "share_429": counts.throttled / max(1, counts.requests),
        "lost": lost,
        "stalled": float(scope.cancelled_caught),
    }


# Cells that miss 1.3x (measured in this virtual time; hint epochs follow the loop's clock, so
# figures move a little from run to run, and a cell near 1.3x may pass): none since a window
# known only by its Retry-After is paced in cycles of its allowance (see
# `AdaptiveRate.gate_check_refused`); over six latency seeds of `limited_handler` its two
# sliding-window cells measured 1.07-1.09x and 1.20-1.22x (1.35x at every seed before), the
# fixed window 1.04-1.05x (1.11-1.19x). (Earlier: windows paced in cycles without hints took
# the sliding window from 1.36-1.42x to 1.12-1.14x; measuring a remembering limiter by its
# episodes from full took the buckets that count refusals from 1.33-1.64x to 1.24-1.58x and
# 1.19-1.30x: at two seeds of six, a first contact that let only the burst through leaves the
# counting token bucket without hints above 1.3x, 1.46x and 1.58x.)
MISSES: set[tuple[str, bool, str]] = set()


@pytest.mark.parametrize("hints", list(HINTS))
@pytest.mark.parametrize("counting", [False, True], ids=["rejected-free", "rejected-counted"])
@pytest.mark.parametrize("kind", list(KINDS))
async def test_no_cell_stalls_or_loses_a_symbol(kind: str, counting: bool, hints: str) -> None:
    result = await scan_cell(kind, counting, hints)
    assert not result["stalled"]
    assert result["lost"] == 0
    assert result["ratio"] <= 2.0  # (every cell is within 1.3x at this seed; see MISSES)


@pytest.mark.parametrize("hints", list(HINTS))
@pytest.mark.parametrize("counting", [False, True], ids=["rejected-free", "rejected-counted"])
@pytest.mark.parametrize("kind", list(KINDS))
async def test_every_cell_is_within_1_3x_of_its_ideal(
    kind: str, counting: bool, hints: str, request: pytest.FixtureRequest
) -> None:
    if (kind, counting, hints) in MISSES:
        request.applymarker(pytest.mark.xfail(reason="issue 13: above 1.3x in some runs"))
    result = await scan_cell(kind, counting, hints)
    assert result["ratio"] <= 1.3


PROCESSES = 4
PER_PROCESS = 500
BEAT = 0.5  # seconds between heartbeats, as the runner's
START_APART = 0.005  # seconds between one process's start and the next's


async def scan_shared_cell(
    kind: str, counting: bool, hints: str, shape: tuple[int, float] | None = None
) -> dict[str, float]:
    """`PROCESSES` pacers sharing one budget, each scanning its own `PER_PROCESS` symbols (the
    runner's part: join, beat twice a second, leave when done), all against one upstream."""
    clock = LoopClock(wall_offset=1_764_435_600.0)
    allowance = (shape or KINDS[kind])[0]
    handler, counts = cell_upstream(kind, counting, hints, clock, shape)
    store = LocalPacingStore(now=clock.monotonic)
    started = clock.monotonic()
    finished: list[float] = []
    lost = 0

    async def process(index: int) -> None:
        nonlocal lost
        # Processes start a little apart (real ones, tens of milliseconds): the first to join
        # leads. (At the very same instant, one told it leads when alone and one that sorts
        # first would both take the lead for a moment; clocks in microseconds never tie.)
        await clock.sleep(START_APART * index)
        meter = SharedMeter(store, "cell", clock, warn=pytest.fail, member=f"p{index}")
        meter.join(discover=True)
        pacer = Pacer(clock, concurrency=50, breaker=CircuitBreaker(), meter=meter)
        symbols = [f"P{index}S{i}" for i in range(PER_PROCESS)]
        async with anyio.create_task_group() as beats:

            async def beat() -> None:
                while True:
                    await clock.sleep(BEAT)
                    meter.beat(pacer.rate)

            beats.start_soon(beat)
            run = await run_engine(handler, symbols, clock=clock, concurrency=50, pacer=pacer)
            meter.close()
            beats.cancel_scope.cancel()
        lost += sum(1 for r in run.records if not r.ok)
        finished.append(clock.monotonic() - started)

    with anyio.move_on_after(STALL) as scope:
        async with anyio.create_task_group() as group:
            for index in range(PROCESSES):
                group.start_soon(process, index)
    seconds = clock.monotonic() - started
    total = PROCESSES * PER_PROCESS
    return {
        "ratio": seconds / ((total - allowance) / RATE),
        "share_429": counts.throttled / max(1, counts.requests),
        "lost": total if scope.cancelled_caught else lost,
        "stalled": float(scope.cancelled_caught),
    }


# Cells four processes sharing the budget miss 1.3x in (see `MISSES`; measured the same way).
# The token bucket counting refusals without hints measured 1.25-1.34x over 14 scheduling
# seeds (1.26-1.29x on all but one), and failed here in 1 to 2 runs of 20: each process's share
# searches up to 4-7 % over the limit, where a hold of 2 s cannot see the excess through a
# burst of 10, and each 429 there costs a pause of a second.
SHARED_MISSES = {
    ("sliding-window", False, "exact"),
    ("sliding-window", False, "retry-after"),
    ("sliding-window", False, "overstated"),
    ("sliding-window", True, "none"),
    ("token-bucket", True, "none"),
}


@pytest.mark.parametrize("hints", list(HINTS))
@pytest.mark.parametrize("counting", [False, True], ids=["rejected-free", "rejected-counted"])
@pytest.mark.parametrize("kind", list(KINDS))
async def test_four_processes_sharing_the_budget_hold_in_every_cell(
    kind: str, counting: bool, hints: str, request: pytest.FixtureRequest
) -> None:
    result = await scan_shared_cell(kind, counting, hints)
    assert not result["stalled"]
    assert result["lost"] == 0
    if (kind, counting, hints) in SHARED_MISSES:
        request.applymarker(pytest.mark.xfail(reason="issue 14: above 1.3x in some runs"))
    assert result["ratio"] <= 1.3


async def test_four_processes_on_a_long_window_counting_refusals_do_not_stall() -> None:
    """500 per 10 s, counting refused requests, no hints (the bench's row, four processes).
    The first leader sent its 500 within the window's allowance and left; the next, which had
    been admitted almost nothing, resumed after the pause at the run's admitted rate as it
    knew it, the floor of 0.1 requests/s, and crawled (20x the ideal). Every process counts
    what all of them were admitted now."""
    result = await scan_shared_cell("sliding-window", True, "none", shape=(500, 10.0))
    assert not result["stalled"] and result["lost"] == 0
    assert result["ratio"] <= 2.0  # (1.6-1.7x measured: see SHARED_MISSES for why not 1.3)


async def test_a_pause_whose_probe_gets_no_answer_probes_again() -> None:
    """A pause's probe that gets no answer at all (its connection dropped: a proxy restarting
    during the penalty; a timeout is the same) says nothing about the rate, and ends: the
    next probe goes a pause later. Waiting for that probe's 429 or admission, the pacer waited
    for ever, and the scan stalled."""
    clock = LoopClock(wall_offset=1_764_435_600.0)
    limited, _ = cell_upstream("sliding-window", True, "none", clock)
    first_429: list[float] = []
    dropped = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal dropped
        now = clock.monotonic()
        if first_429 and first_429[0] + 0.8 <= now < first_429[0] + 1.5:
            dropped += 1
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        answer = limited(request)
        response = await answer if inspect.isawaitable(answer) else answer
        if response.status_code == 429 and not first_429:
            first_429.append(now)
        return response

    pacer = Pacer(clock, concurrency=50, breaker=CircuitBreaker())
    with anyio.move_on_after(STALL) as scope:
        run = await run_engine(
            handler, [f"S{i}" for i in range(300)], clock=clock, concurrency=50, pacer=pacer
        )
    assert dropped >= 1  # (the probe's connection dropped)
    assert not scope.cancelled_caught
    assert len(run.records) == 300 and all(record.ok for record in run.records)
