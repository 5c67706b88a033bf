"""scanctl: push thousands of symbols through a rate-limited HTTP analysis API, losing none.

From Python (README, "Use from Python"):

    summary = scanctl.run(["BTC", "ETH"], type="mss", base_url="http://localhost:8000")
    async for record in scanctl.scan(symbols, type="signals", concurrency=20): ...

Importing scanctl stays as light as the command's start (the CLI imports this package): the
functions import the scan machinery when they are called, and the names below that live
elsewhere are loaded on first use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scanctl.errors import ScanctlError, UpstreamRefused, UsageError
    from scanctl.outcome import Summary
    from scanctl.records import ScanRecord as Record

__version__ = "0.1.0"

__all__ = [
    "Record",
    "ScanctlError",
    "Summary",
    "UpstreamRefused",
    "UsageError",
    "__version__",
    "run",
    "scan",
]


def scan(
    symbols: Iterable[str] | str,
    *,
    type: str = "smart_money",  # the --type of the command line
    base_url: str | None = None,
    profile: str | None = None,
    **options: Any,
) -> AsyncIterator[Record]:
    """Scan `symbols`, yielding one record per symbol as it finishes (not in input order).

    `options` are the long options of `scanctl scan` with underscores (`concurrency=20`,
    `no_cache=True`, `header=["X-Team: a"]`), checked as the command checks them: an unknown
    one is a TypeError naming it, a value out of range a `UsageError`. Settings resolve as on
    the command line: keyword > SCANCTL_* variable > profile > built-in default. Stop early
    with `contextlib.aclosing(scanctl.scan(...))`, so the scan is closed where it runs.
    """
    from scanctl.api import prepare, records

    return records(prepare("scan", symbols, type, base_url, profile, options))


def run(
    symbols: Iterable[str] | str,
    *,
    type: str = "smart_money",  # the --type of the command line
    base_url: str | None = None,
    profile: str | None = None,
    **options: Any,
) -> Summary:
    """Scan `symbols` to the end from synchronous code (it runs its own event loop) and return
    the summary: `.successful`, `.failed`, `.errors`... as the JSON summary names them, and
    `.to_dict()`. Options as for `scan`."""
    from scanctl.api import prepare, run_to_end

    return run_to_end(prepare("run", symbols, type, base_url, profile, options))


def __getattr__(name: str) -> Any:
    """The exported names that live in other modules, imported on first use."""
    if name == "Summary":
        from scanctl.outcome import Summary

        return Summary
    if name == "Record":
        from scanctl.records import ScanRecord

        return ScanRecord
    if name in ("ScanctlError", "UpstreamRefused", "UsageError"):
        from scanctl import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'scanctl' has no attribute {name!r}")
