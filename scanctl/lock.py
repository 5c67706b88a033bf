"""Run locks: two scans writing the same output (or sharing `--lock NAME`) never run at once.

A cron job that runs every five minutes and sometimes takes seven must not start a second copy
writing the same file. The lock is `fcntl.flock` on a file in the user state dir: the kernel
releases it when the holder exits, however it exits (kill -9 included), so there is never a stale
lock to clean up. The holder writes its pid into the file, so the one turned away can say who
holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from scanctl.errors import LockBusy, UsageError
from scanctl.state import state_dir

POLL = 0.1  # seconds between tries while waiting for a lock


def lock_path(kind: str, name: str) -> Path:
    """The lock file for an output path (kind "output") or a --lock name (kind "name")."""
    if kind == "output":
        real = os.path.realpath(name)
        label = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(real))[:40]
        digest = hashlib.sha256(real.encode()).hexdigest()[:16]
        return state_dir() / "locks" / f"output-{label}-{digest}.lock"
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name):
        raise UsageError(f"bad --lock {name!r}: use 1 to 64 of A-Z a-z 0-9 . _ -")
    return state_dir() / "locks" / f"name-{name}.lock"


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        return "another scan"
    return f"another scan (pid {pid})" if pid.isdigit() else "another scan"


@contextlib.contextmanager
def held(
    path: Path, what: str, wait: float = 0.0, notify: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold the lock at `path` for the block; LockBusy when it stays taken for `wait` seconds."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UsageError(f"cannot create the lock file {path}: {exc.strerror}") from None
    try:
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if wait > 0 and not told and notify is not None:
                    notify(
                        f"waiting up to {wait:g} s for the lock on {what}: {_holder(path)} has it"
                    )
                    told = True
                if time.monotonic() >= deadline:
                    waited = f" after waiting {wait:g} s" if wait > 0 else ""
                    hint = "" if wait > 0 else "; --wait-lock SECONDS waits for it"
                    raise LockBusy(
                        f"{_holder(path)} holds the lock on {what}{waited}{hint}"
                    ) from None
                time.sleep(POLL)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # closing releases the flock


@contextlib.contextmanager
def run_locks(
    output: str | None,
    name: str | None,
    wait: float = 0.0,
    notify: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """The locks a scan needs: one on its output file, one on --lock NAME (either may be absent)."""
    with contextlib.ExitStack() as stack:
        if output is not None and output != "-":
            stack.enter_context(held(lock_path("output", output), output, wait, notify))
        if name is not None:
            stack.enter_context(held(lock_path("name", name), f"--lock {name}", wait, notify))
        yield
