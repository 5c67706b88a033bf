"""Which scanctl runs on this machine send to the same upstream at the same time.

Cron jobs overlap: four runs started together against one 50 req/s limit each find their own
share of it (21, 15, 8.5, 7.3 req/s), and the rate a run learned is then one run's share, not
the upstream's. Stored as the upstream's rate, the last of them made the next run, alone, take
four times as long. So each run says here that it is running, and what it sees, and learns
whether others were running too: the state file then takes its rate only when it ran alone
(see `state.shared_pace` for what an overlapped run stores).

The registry is a directory of small JSON files (`runs/` in the state directory), one per run:
its pid, key (base URL and scan type), start and heartbeat times (wall clock: the files are
shared between processes) and the rate at which the upstream admitted its requests lately. A
run writes its file when it starts, again about twice a second, and removes it when it ends.
Another run's file counts while its pid is alive and its heartbeat is recent: a run killed with
-9 leaves a file that stops counting within `STALE_AFTER` seconds, and is deleted by whoever
sees it next. A run that sees another one also leaves it a flag file (`<its name>.seen`), which
that run reads when it ends: a short run that started and finished between two heartbeats of a
long one is then known to both.

Cheap and harmless: a few small files twice a second, and any failure (an unwritable state
directory) is one warning, after which the registry does nothing and the run counts as alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

RUNS_DIR = "runs"
# A heartbeat older than this (seconds) is a run that is gone, or stuck: it no longer counts.
# Runs beat every half second; a few missed beats (a busy machine) are not an absence.
STALE_AFTER = 3.0
# Seconds over which each run reports its admitted rate: long enough to smooth a burst.
SHARED_SPAN = 5.0


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one of another user's counts: EPERM)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True  # cannot tell: let the heartbeat decide
    return True


def _default_warn(message: str) -> None:
    print(f"scanctl: {message}", file=sys.stderr, flush=True)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Peer:
    """Another run's entry, as read from its file."""

    name: str
    pid: int
    started: float
    beat: float
    admitted: float
    sending: bool

    def share_of_span(self, span: float) -> float:
        """Its admitted rate as if counted over a whole `span`: a run younger than the span
        reports answers over its short life, which a burst at its start would inflate."""
        young = max(0.0, self.beat - self.started)
        return self.admitted * min(1.0, young / span) if span > 0 else self.admitted


class RunRegistry:
    """This run's entry in the registry of runs against one upstream key, and what it saw.

    `start()` when the run starts, `beat(admitted, sending)` about twice a second, `finish(...)`
    at the end; then `overlapped` says whether any other run sent to the same key meanwhile, and
    `peak_shared` the highest sum of all live runs' admitted rates (requests/s) seen while
    others were sending (0.0 when never measured).

    `admitted`: the rate at which the upstream admitted this run's requests over the last
    `SHARED_SPAN` seconds; `sending`: whether this run has sent any request yet (a run answered
    entirely from the cache competes with nobody).
    """

    def __init__(
        self,
        key: str,
        directory: Path | None = None,
        *,
        wall: Callable[[], float] = time.time,
        pid: int | None = None,
        alive: Callable[[int], bool] = pid_alive,
        warn: Callable[[str], None] = _default_warn,
        stale_after: float = STALE_AFTER,
        span: float = SHARED_SPAN,
    ) -> None:
        if directory is None:
            from scanctl.state import state_dir

            directory = state_dir() / RUNS_DIR
        self.key = key
        self.directory = directory
        self.pid = os.getpid() if pid is None else pid
        self._prefix = f"{_digest(key)}-"
        self.name = f"{self._prefix}{self.pid}-{secrets.token_hex(4)}"
        self._wall = wall
        self._alive = alive
        self._warn = warn
        self.stale_after = stale_after
        self.span = span
        self.overlapped = False
        self.peak_shared = 0.0
        self._started: float | None = None
        self._off = False  # after a failure: do nothing more
        self._marked: set[str] = set()  # peers already flagged as overlapped
        self._finished = False

    @property
    def entry_path(self) -> Path:
        return self.directory / f"{self.name}.json"

    @property
    def flag_path(self) -> Path:
        return self.directory / f"{self.name}.seen"

    @property
    def active(self) -> bool:
        """Registered and not finished (nor switched off by a failure)."""
        return self._started is not None and not self._off and not self._finished

    # -- the run's side ------------------------------------------------------------------------

    def start(self, admitted: float = 0.0, sending: bool = False) -> None:
        """Register this run, clear out entries of runs that are gone, look at the others."""
        if self._started is not None or self._off:
            return
        now = self._wall()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._write(now, now, admitted, sending)
        except OSError as exc:
            self._give_up(exc)
            return
        self._started = now
        self._look(now, admitted, sending, everyone=True)

    def beat(self, admitted: float, sending: bool) -> None:
        """Refresh this run's entry and look at the others (call about every half second)."""
        if not self.active:
            return
        assert self._started is not None
        now = self._wall()
        try:
            self._write(self._started, now, admitted, sending)
        except OSError as exc:
            self._give_up(exc)
            return
        self._look(now, admitted, sending)
        if not self.overlapped:
            self._read_flag()

    def finish(self, admitted: float, sending: bool) -> None:
        """A last look at the others, then remove this run's entry."""
        if not self.active:
            return
        self._look(self._wall(), admitted, sending)
        self._finished = True
        with contextlib.suppress(OSError):
            self.entry_path.unlink(missing_ok=True)
        # (After the entry is gone: a run that saw it before has flagged us by now.)
        self._read_flag()
        with contextlib.suppress(OSError):
            self.flag_path.unlink(missing_ok=True)

    # -- the files -----------------------------------------------------------------------------

    def _write(self, started: float, now: float, admitted: float, sending: bool) -> None:
        entry = {
            "pid": self.pid,
            "key": self.key,
            "started": round(started, 3),
            "beat": round(now, 3),
            "admitted": round(max(0.0, admitted), 3),
            "sending": sending,
        }
        temp = self.directory / f".{self.name}.tmp"
        temp.write_text(json.dumps(entry), "utf-8")
        os.replace(temp, self.entry_path)  # readers never see half a file

    def _give_up(self, exc: OSError) -> None:
        self._off = True
        with contextlib.suppress(OSError):  # (an entry left behind goes stale in seconds anyway)
            self.entry_path.unlink(missing_ok=True)
        self._warn(
            f"warning: cannot keep track of concurrent runs in {self.directory} ({exc}); "
            "this run's learned rate counts as a lone run's"
        )

    def _read_flag(self) -> None:
        try:
            if self.flag_path.exists():
                self.overlapped = True
        except OSError:
            pass

    def _look(self, now: float, admitted: float, sending: bool, everyone: bool = False) -> None:
        """Read the other live runs for this key (dropping what is gone); note the overlap, flag
        them, and fold the shared admitted rate into the peak. `everyone`: clean out stale
        entries of every key, not only this one (once per run is enough)."""
        try:
            peers = self._peers(now, everyone)
        except OSError:
            return  # a read that failed this time costs one look, nothing more
        others = [p for p in peers if p.sending]
        if not others:
            return
        self.overlapped = True
        if sending:  # we compete with them: tell them, in case they never see us
            for peer in others:
                if peer.name not in self._marked:
                    with contextlib.suppress(OSError):
                        (self.directory / f"{peer.name}.seen").touch()
                    self._marked.add(peer.name)
        assert self._started is not None
        if now - self._started >= self.span:
            # (Not sooner: our own rate would be counted over less than the span.)
            shared = admitted + sum(p.share_of_span(self.span) for p in others)
            self.peak_shared = max(self.peak_shared, shared)

    def _peers(self, now: float, everyone: bool) -> list[Peer]:
        peers: list[Peer] = []
        entries: set[str] = set()
        flags: list[str] = []
        with os.scandir(self.directory) as listing:
            names = [e.name for e in listing]
        for name in names:
            ours = name.startswith(self._prefix)
            if name.endswith(".seen"):
                if ours:
                    flags.append(name[: -len(".seen")])
                continue
            if not name.endswith(".json") or not (ours or everyone):
                continue
            stem = name[: -len(".json")]
            entries.add(stem)
            if stem == self.name:
                continue
            peer = self._read_peer(stem)
            if peer is None or now - peer.beat > self.stale_after or not self._alive(peer.pid):
                if peer is not None or self._older_than_stale(name):
                    self._remove(stem)
                continue
            if ours:
                peers.append(peer)
        for stem in flags:  # a flag left for a run that had already gone
            if stem not in entries and stem != self.name and self._older_than_stale(f"{stem}.seen"):
                with contextlib.suppress(OSError):
                    (self.directory / f"{stem}.seen").unlink(missing_ok=True)
        return peers

    def _read_peer(self, stem: str) -> Peer | None:
        try:
            data = json.loads((self.directory / f"{stem}.json").read_text("utf-8"))
            return Peer(
                name=stem,
                pid=int(data["pid"]),
                started=float(data["started"]),
                beat=float(data["beat"]),
                admitted=max(0.0, float(data.get("admitted", 0.0))),
                sending=bool(data.get("sending", True)),
            )
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None

    def _older_than_stale(self, name: str) -> bool:
        """By the file's own time (the filesystem's clock, not the injected one)."""
        try:
            return time.time() - (self.directory / name).stat().st_mtime > self.stale_after
        except OSError:
            return False

    def _remove(self, stem: str) -> None:
        for suffix in (".json", ".seen"):
            with contextlib.suppress(OSError):
                (self.directory / f"{stem}{suffix}").unlink(missing_ok=True)
