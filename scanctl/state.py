"""What scanctl remembers between runs about each upstream: the rate it learned, and bans.

A cron job runs scanctl every few minutes against the same API; rediscovering the limit with
429s on every run would waste time and annoy the upstream. So the rate reached at the end of a
run is kept, keyed by base URL and scan type, and the next run starts there. A 418 ban (with
its Retry-After, Binance-style) is kept per base URL, and no run sends anything until it passes.

The file is JSON in the user state directory (platformdirs; `SCANCTL_STATE_DIR` overrides it),
written atomically. A damaged file is set aside and forgotten with a warning: it only ever
costs a slower start.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from scanctl.ratecontrol import LearnedPace

STATE_ENV = "SCANCTL_STATE_DIR"
FILE_NAME = "pacing.json"


def state_dir() -> Path:
    """Where scanctl keeps its state."""
    override = os.environ.get(STATE_ENV)
    if override:
        return Path(override)
    from platformdirs import user_state_dir

    return Path(user_state_dir("scanctl", appauthor=False))


class PacingMemory:
    """The state file: learned rates per (base URL, type), bans per base URL."""

    def __init__(self, directory: Path | None = None) -> None:
        self.path = (directory or state_dir()) / FILE_NAME
        self.data: dict[str, Any] = self._load()
        self._changed = False

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

    @staticmethod
    def _key(base_url: str, type_name: str) -> str:
        return f"{base_url} {type_name}"

    def learned(self, base_url: str, type_name: str) -> LearnedPace | None:
        entry = self.data.get("rates", {}).get(self._key(base_url, type_name))
        try:
            rate = float(entry["rate"])
            upper = entry.get("upper")
            gated = bool(entry.get("gated", False))
            learned = LearnedPace(rate, float(upper) if upper is not None else None, gated)
        except (TypeError, KeyError, ValueError):
            return None
        try:  # (written by newer versions only: a bad one costs the burst, not the rate)
            burst = max(1, min(int(entry.get("burst", 1)), 10_000))
        except (TypeError, ValueError, OverflowError):
            burst = 1
        return replace(learned, burst=burst)

    def remember(self, base_url: str, type_name: str, pace: LearnedPace, now_wall: float) -> None:
        rates = self.data.setdefault("rates", {})
        rates[self._key(base_url, type_name)] = {
            "rate": round(pace.rate, 3),
            "upper": None if pace.upper is None else round(pace.upper, 3),
            "gated": pace.gated,
            "burst": pace.burst,
            "updated": round(now_wall),
        }
        self._changed = True

    def banned_until(self, base_url: str, now_wall: float) -> float | None:
        """The end of a ban still running for this upstream (epoch seconds), else None."""
        until = self.data.get("bans", {}).get(base_url)
        if isinstance(until, int | float) and until > now_wall:
            return float(until)
        return None

    def remember_ban(self, base_url: str, until_wall: float) -> None:
        self.data.setdefault("bans", {})[base_url] = round(until_wall, 3)
        self._changed = True

    def save(self) -> None:
        """Write the file atomically, if anything changed; failing to is a warning, not an error."""
        if not self._changed:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=".pacing.", dir=self.path.parent)
            with open(fd, "w", encoding="utf-8") as out:
                json.dump(self.data, out, indent=1, sort_keys=True)
            os.replace(temp, self.path)
        except OSError as exc:
            print(f"scanctl: warning: could not save {self.path}: {exc}", file=sys.stderr)
