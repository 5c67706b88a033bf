"""scanctl from Python: `scan` yields records as they finish, `run` scans to the end and returns
the summary (README, "Use from Python"; exported by scanctl/__init__.py, which keeps
`import scanctl` light by importing this module only when one of them is called).

A Python run is the command's run with no output, no display and no signal handlers (a library
must leave SIGINT to its host): the same settings model checks its keywords, the same
`ScanRun` paces, retries and caches, and its records go to a writer of ours instead of a file.
"""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator, Iterable
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from scanctl.outcome import Summary
from scanctl.records import ScanRecord
from scanctl.runner import ScanJob, ScanRun, check_cache_flags
from scanctl.settings import API, MODEL, SHARD, SKIP_INVALID, keyword_of, resolve


class _Collector:
    """The run's writer: records go on to the caller (if `forward`), the summary is kept."""

    def __init__(self, forward: MemoryObjectSendStream[ScanRecord] | None = None) -> None:
        self.forward = forward
        self.summary: Summary | None = None

    def write(self, record: ScanRecord) -> None:
        if self.forward is not None:
            self.forward.send_nowait(record)  # the buffer is unbounded: never blocks

    def finish(self, summary: Summary) -> None:
        self.summary = summary
        if self.forward is not None:
            self.forward.close()


_KINDS = {bool: "True or False", int: "a whole number", float: "a number", str: "a string"}


def _checked_type(name: str, value: Any) -> None:
    """A TypeError for a keyword whose value the flag could never have given."""
    setting = MODEL[name]
    if value is None:
        return
    kind = setting.kind
    if setting.repeatable:
        ok = isinstance(value, list | tuple) and all(isinstance(v, kind) for v in value)
        wanted = f"a list of {_KINDS[kind].removeprefix('a ')}s"
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        wanted = _KINDS[kind]
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        wanted = _KINDS[kind]
    else:
        ok = isinstance(value, kind) or (setting.parse is not None and isinstance(value, int))
        wanted = _KINDS[kind]
    if not ok:
        raise TypeError(f"{name} must be {wanted}, got {value!r}")


def prepare(
    caller: str,
    symbols: Iterable[str] | str,
    scan_type: str,
    base_url: str | None,
    profile: str | None,
    options: dict[str, Any],
) -> ScanJob:
    """The job for a Python scan: keywords checked as the command line checks its flags."""
    for name, value in options.items():
        if name not in MODEL or API not in MODEL[name].commands:
            raise TypeError(f"{caller}() got an unexpected keyword argument {name!r}")
        _checked_type(name, value)
    given = {**options, "base_url": base_url, "profile": profile}
    settings = resolve(given, os.environ, spell=keyword_of)
    endpoint = settings.profile.endpoint(scan_type)
    check_cache_flags(settings)
    from scanctl.symbols import collect_symbols, parse_shard, take_shard

    if isinstance(symbols, str):
        symbols = [symbols]  # "BTC" or "BTC,ETH", not B, T, C
    found = collect_symbols(list(symbols), None, skip_invalid=settings[SKIP_INVALID])
    shard = settings[SHARD]
    if shard is not None:
        found = take_shard(found, parse_shard(shard))
    return ScanJob.for_scan(
        settings,
        endpoint,
        found.symbols,
        skipped_invalid=len(found.invalid),
        fmt="none",
        quiet=True,
        no_progress=True,
        handle_signals=False,
    )


async def records(job: ScanJob) -> AsyncIterator[ScanRecord]:
    """Run `job` in this event loop, yielding each record the moment it is final.

    Closed early (`aclosing`, or `aclose()`), the scan is cancelled and wound up (what it
    learned kept, the cache closed) before the generator returns: the GeneratorExit must not
    reach the task group, which would wrap it in an exception group that no caller expects."""
    send, receive = anyio.create_memory_object_stream[ScanRecord](max_buffer_size=math.inf)
    job.writer = _Collector(send)
    run = ScanRun(job)  # a refusal (a remembered ban) raises here, as itself
    async with anyio.create_task_group() as group:
        group.start_soon(run.run_async)
        async with receive:
            async for record in receive:
                try:
                    yield record
                except GeneratorExit:
                    group.cancel_scope.cancel()
                    break


def run_to_end(job: ScanJob) -> Summary:
    """Run `job` to the end in an event loop of its own; its summary."""
    collector = _Collector()
    job.writer = collector
    ScanRun(job).run()
    assert collector.summary is not None  # a run that returns has written its summary
    return collector.summary
