"""Exit codes and the one error tree of scanctl, mapped to exit codes in the CLI only.

    ScanctlError                 anything scanctl reports to a user in one line
     +-- UsageError              bad flags or input: exit 2
     |    +-- SymbolError        a symbol that can never be a safe URL path segment
     +-- OutputError             the output could not be written: exit 1
     +-- UpstreamRefused         401/403/418: the upstream said stop: exit 4
     +-- LockBusy                another scan holds the lock: exit 75
     +-- CacheError              the cache cannot be opened or written: a scan goes on without
                                 it (with a warning); `stats` and `cache` commands exit 1

Everything else that escapes is a bug and exits 1 with its message (no traceback unless
SCANCTL_DEBUG is set).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The documented exit codes (README, "Exit codes")."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    PARTIAL = 3
    UPSTREAM = 4
    # Another scan holds the lock on this output (or --lock NAME): sysexits' EX_TEMPFAIL.
    LOCKED = 75
    INTERRUPTED = 130  # SIGINT (Ctrl-C): 128 + 2
    TERMINATED = 143  # SIGTERM: 128 + 15
    # The reader of stdout went away (`scanctl ... | head -1`): the Unix convention 128 + SIGPIPE.
    BROKEN_PIPE = 141


class ScanctlError(Exception):
    """An error with a one-line message meant for the user."""

    exit_code: ExitCode = ExitCode.INTERNAL


class UsageError(ScanctlError):
    """The command line or the input it names is wrong; nothing was sent."""

    exit_code = ExitCode.USAGE


class SymbolError(UsageError):
    """A symbol is not `[A-Za-z0-9._-]{1,32}`; it would be unsafe in a URL path."""


class OutputError(ScanctlError):
    """Writing results failed (disk full, stdout gone wrong...)."""

    exit_code = ExitCode.INTERNAL


class UpstreamRefused(ScanctlError):
    """The upstream refused us (401, 403, 418): going on would only make it worse."""

    exit_code = ExitCode.UPSTREAM


class CacheError(ScanctlError):
    """The cache store failed (unreachable Redis, disk full, a newer schema)."""

    exit_code = ExitCode.INTERNAL


class LockBusy(ScanctlError):
    """Another scan writes the same output (or holds the same --lock NAME)."""

    exit_code = ExitCode.LOCKED
