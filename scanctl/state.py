"""What scanctl remembers between runs about each upstream: the rate it learned, and bans.

A cron job runs scanctl every few minutes against the same API; rediscovering the limit with
429s on every run would waste time and annoy the upstream. So the rate reached at the end of a
run is kept, keyed by base URL and scan type, and the next run starts there. A 418 ban (with
its Retry-After, Binance-style) is kept per base URL, and no run sends anything until it passes.

The rate is the upstream's, not one run's share of it: runs started by cron overlap, and a run
that shared the limit with others (`overlap`) found only its share. Such a run never lowers
what is stored; it may raise it, to what all the runs got at once (`shared_pace`).

The file is JSON in the user state directory (platformdirs; `SCANCTL_STATE_DIR` overrides it),
written atomically. Runs that end at the same time each re-read it just before writing, under
a lock, and change only their own entries: one run's save never undoes another's. A damaged
file is set aside and forgotten with a warning: it only ever costs a slower start.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from scanctl.ratecontrol import LearnedPace

STATE_ENV = "SCANCTL_STATE_DIR"
FILE_NAME = "pacing.json"
LOCK_NAME = "pacing.json.lock"
# How long a save waits for another run's (a few milliseconds long) before writing anyway.
LOCK_WAIT = 2.0
# An overlapped run may raise the stored rate to this share of what all runs were admitted
# at once (over a few seconds), as a lone run keeps this far under a limit it measured.
SHARED_MARGIN = 0.95


def state_dir() -> Path:
    """Where scanctl keeps its state."""
    override = os.environ.get(STATE_ENV)
    if override:
        return Path(override)
    from platformdirs import user_state_dir

    return Path(user_state_dir("scanctl", appauthor=False))


def pacing_key(base_url: str, type_name: str) -> str:
    """What the learned rate is kept under: the upstream and the scan type."""
    return f"{base_url} {type_name}"


def shared_pace(stored: LearnedPace | None, own: LearnedPace, peak_shared: float) -> LearnedPace:
    """What a run that overlapped others keeps for the next run; it never lowers the rate.

    Its own rate was at most its share of the limit: the stored rate stays, unless its own or
    `SHARED_MARGIN` x `peak_shared` (requests/s the upstream admitted to all the runs at once)
    is higher; that evidence is capped by the stored `upper` when that is a rate that drew a
    429 to a lone run. The run's own `upper` is a share's artifact: the stored one is kept, or,
    when the shared peak set the rate, the peak itself becomes the bound, marked as an
    estimate, which a later run's higher peak raises: the first of four overlapping runs to
    finish saw the least of their peak (44.6 of a 50 requests/s limit), and the run alone after
    them, searching up to it, stayed within 5 % of it (1.19x its ideal). The burst is the
    stored one when there is one (a share of the bucket is not the bucket); `gated` stays true
    once either run saw Retry-After gates; how long a gate proved to need is the run's own
    when it learned one.
    """
    upper = stored.upper if stored is not None else None
    estimated = stored is not None and stored.upper_estimated
    evidence = SHARED_MARGIN * max(0.0, peak_shared)
    if upper is not None and not estimated:
        evidence = min(evidence, upper)
    rate = max(stored.rate if stored is not None else 0.0, own.rate, evidence)
    if (upper is None or estimated) and peak_shared > rate and evidence >= rate:
        # What all the runs got at once, each pushing against its 429s: about the limit. The
        # next run, alone, searches up to it (a few % at most) instead of probing upward
        # blind, where each rate too many costs a 429 and, gated, a second of silence.
        upper, estimated = max(peak_shared, upper or 0.0), True
    if upper is not None and rate >= upper:
        upper, estimated = None, False  # held above it: the next run searches afresh
    burst = stored.burst if stored is not None else own.burst
    gated = own.gated or (stored is not None and stored.gated)
    enough = own.gate_enough
    if enough is None and stored is not None:
        enough = stored.gate_enough
    return LearnedPace(rate, upper, gated, burst, enough, upper_estimated=estimated)


def pace_entry(pace: LearnedPace, now_wall: float) -> dict[str, Any]:
    """A learned pace in its stored form (the state file's, and the shared pacing store's)."""
    return {
        "rate": round(pace.rate, 3),
        "upper": None if pace.upper is None else round(pace.upper, 3),
        "upper_estimated": pace.upper_estimated and pace.upper is not None,
        "gated": pace.gated,
        "burst": pace.burst,
        "gate_enough": pace.gate_enough,
        "updated": round(now_wall),
    }


@dataclass(frozen=True, slots=True)
class _RateChange:
    """A learned rate this run keeps; applied again to the file as it is when saving."""

    pace: LearnedPace
    now_wall: float
    overlapped: bool
    peak_shared: float


def parse_pace(entry: Any) -> LearnedPace | None:
    """A learned pace from its stored form (None when it is not one)."""
    try:
        rate = float(entry["rate"])
        upper = entry.get("upper")
        gated = bool(entry.get("gated", False))
        learned = LearnedPace(rate, float(upper) if upper is not None else None, gated)
    except (TypeError, KeyError, ValueError, AttributeError):
        return None
    try:  # (written by newer versions only: a bad one costs the burst, not the rate)
        burst = max(1, min(int(entry.get("burst", 1)), 10_000))
    except (TypeError, ValueError, OverflowError):
        burst = 1
    enough = entry.get("gate_enough")
    if isinstance(enough, bool) or not (isinstance(enough, int | float) and 0 <= enough < 3600):
        enough = None
    estimated = entry.get("upper_estimated") is True and learned.upper is not None
    return replace(learned, burst=burst, gate_enough=enough, upper_estimated=estimated)


def _section(data: dict[str, Any], name: str) -> dict[str, Any]:
    section = data.get(name)
    if not isinstance(section, dict):
        section = data[name] = {}
    return section


class PacingMemory:
    """The state file: learned rates per (base URL, type), bans per base URL."""

    def __init__(self, directory: Path | None = None) -> None:
        self.path = (directory or state_dir()) / FILE_NAME
        self.data: dict[str, Any] = self._load()
        # This run's changes, applied to `data` at once and to the file's latest at save().
        self._rates: dict[str, _RateChange] = {}
        self._bans: dict[str, float] = {}

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            self._set_aside(exc)
            return {}
        if not isinstance(data, dict):
            self._set_aside(ValueError("not a JSON object"))
            return {}
        return data

    def _set_aside(self, exc: Exception) -> None:
        with contextlib.suppress(OSError):
            self.path.replace(self.path.with_suffix(".json.corrupt"))
        print(
            f"scanctl: warning: ignoring unreadable state file {self.path} ({exc}); "
            "pacing starts afresh",
            file=sys.stderr,
        )

    def learned(self, base_url: str, type_name: str) -> LearnedPace | None:
        rates = self.data.get("rates")
        if not isinstance(rates, dict):
            return None
        return parse_pace(rates.get(pacing_key(base_url, type_name)))

    def remember(
        self,
        base_url: str,
        type_name: str,
        pace: LearnedPace,
        now_wall: float,
        *,
        overlapped: bool = False,
        peak_shared: float = 0.0,
    ) -> None:
        """Keep what this run learned. `overlapped`: other runs sent to the same upstream
        meanwhile, so this is one share of the limit (`shared_pace` decides what is kept);
        `peak_shared`: the most all of them were admitted at once (requests/s)."""
        key = pacing_key(base_url, type_name)
        self._rates[key] = change = _RateChange(pace, now_wall, overlapped, peak_shared)
        self._apply_rate(self.data, key, change)

    @staticmethod
    def _apply_rate(data: dict[str, Any], key: str, change: _RateChange) -> None:
        rates = _section(data, "rates")
        pace = change.pace
        if change.overlapped:
            pace = shared_pace(parse_pace(rates.get(key)), pace, change.peak_shared)
        rates[key] = pace_entry(pace, change.now_wall)

    def banned_until(self, base_url: str, now_wall: float) -> float | None:
        """The end of a ban still running for this upstream (epoch seconds), else None."""
        bans = self.data.get("bans")
        until = bans.get(base_url) if isinstance(bans, dict) else None
        if isinstance(until, int | float) and until > now_wall:
            return float(until)
        return None

    def remember_ban(self, base_url: str, until_wall: float) -> None:
        self._bans[base_url] = until_wall
        self._apply_ban(self.data, base_url, until_wall)

    @staticmethod
    def _apply_ban(data: dict[str, Any], base_url: str, until_wall: float) -> None:
        bans = _section(data, "bans")
        known = bans.get(base_url)
        if isinstance(known, int | float) and known > until_wall:
            return  # another run was banned for longer
        bans[base_url] = round(until_wall, 3)

    def save(self) -> None:
        """Write this run's changes into the file as it is now, atomically, if there are any;
        failing to is a warning, not an error.

        Another run may have saved since this one read the file: it is read again, under a
        lock on a file next to it, and only this run's entries change, so concurrent runs keep
        each other's rates and bans.
        """
        if not self._rates and not self._bans:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._locked():
                data = self._load()
                for key, change in self._rates.items():
                    self._apply_rate(data, key, change)
                for base_url, until in self._bans.items():
                    self._apply_ban(data, base_url, until)
                fd, temp = tempfile.mkstemp(prefix=".pacing.", dir=self.path.parent)
                try:
                    with open(fd, "w", encoding="utf-8") as out:
                        json.dump(data, out, indent=1, sort_keys=True)
                    os.replace(temp, self.path)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(temp)
                    raise
        except OSError as exc:
            print(f"scanctl: warning: could not save {self.path}: {exc}", file=sys.stderr)
            return
        self.data = data
        self._rates.clear()
        self._bans.clear()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold an exclusive lock on the lock file; after `LOCK_WAIT` seconds (a run stopped
        while holding it), go on without it: the write itself is atomic in any case."""
        fd = os.open(self.path.with_name(LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + LOCK_WAIT
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        break
                    time.sleep(0.005)
            yield
        finally:
            os.close(fd)  # closing releases the lock
