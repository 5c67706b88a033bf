"""Reading what an upstream says about its own rate limit, whatever dialect it speaks.

Hints beat guesses: a server that tells us its quota lets us pace to it exactly instead of
probing with 429s. Dialects understood:

- IETF httpapi draft -07 and later: `RateLimit-Policy: "burst";q=100;w=60` (quota q per w
  seconds) and `RateLimit: "burst";r=50;t=30` (r remaining, t seconds until more);
- drafts up to -06 and many servers: `RateLimit-Limit/-Remaining/-Reset`;
- GitHub and most others: `X-RateLimit-Limit/-Remaining/-Reset`;
- used-weight counters such as Binance's `X-MBX-USED-WEIGHT-1M`, when the profile names the
  header, the budget and the window (the header says only what is used).

Hints are evidence, not law, and servers send all sorts. A reset is read as (see `_reset`):

- delta seconds, integer or fractional ("30", "0.5");
- epoch seconds, integer or fractional ("1764435600", "1764435600.734"), told from a delta by
  size: no window lasts 30 years;
- epoch milliseconds ("1764435600734"), told from epoch seconds by size the same way: 10**12
  epoch seconds is the year 33658, 10**12 ms is September 2001;
- an HTTP date (RFC 9110 §5.6.7: "Sun, 29 Nov 2026 18:00:00 GMT", or the obsolete RFC 850 and
  asctime forms, GMT all three).

A reset in the past is 0 ("now"), never negative. A reset that is none of these (garbage:
"soon", "", "NaN", "inf", "-5", "1e400", "12abc") keeps the hint's `remaining` with the reset
*unknown*, which is the same as no reset header at all: `DEFAULT_RESET` seconds (the window,
when the IETF policy names one). The remaining count is the valuable half of a hint, and the
pacer (`quota.Quota`) takes a short reset as "ask again then": once the quota is spent, one
request goes after it to learn what the upstream has, which costs at most one 429. Any finite
reset would do as "unknown" there; infinity or a guess of hours would stall the scan instead.

Counts are stricter: a garbage or negative remaining, limit or window drops the whole hint
(a hint with a bogus count is worse than none: the pacer would spend, or wait for, slots that
are not there). Numbers are plain decimals only; Python's float() alone would also take "inf",
"nan", "1e3", "1_000" and non-ASCII digits.

Retry-After is read by `retry.parse_retry_after`; it always wins over these.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

# An epoch timestamp is larger than any plausible delta (about 31 years)...
_EPOCH_THRESHOLD = 1e9
# ...and one in milliseconds larger than any epoch in seconds (the year 33658).
_EPOCH_MS_THRESHOLD = 1e12
# The reset when the upstream gives none we can read: ask again in a second.
DEFAULT_RESET = 1.0
_DECIMAL = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
# One parameter of an RFC 8941 structured-field item: ;key or ;key=value (a string may hold ;).
_ITEM_PARAM = re.compile(r';\s*([A-Za-z*][A-Za-z0-9_.*-]*)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*))?')


@dataclass(frozen=True, slots=True)
class QuotaHint:
    """A snapshot of the upstream's quota: `remaining` requests until `reset` seconds from now.

    `remaining` >= 0 and `reset` >= 0, finite (`DEFAULT_RESET` when the upstream's was absent or
    unreadable). `limit` and `window` are the quota per window when the upstream says so (None
    otherwise).
    """

    remaining: int
    reset: float
    limit: int | None = None
    window: float | None = None
    # The reset was written with a fraction of a second: a server that keeps time that finely
    # is late, if at all, by a constant, which checks converge on; one in whole seconds is
    # rounded by a different amount each time.
    precise: bool = False


@dataclass(frozen=True, slots=True)
class WeightHeader:
    """A used-weight counter header: `budget` units per `window` seconds (from the profile)."""

    name: str
    budget: int
    window: float = 60.0


@dataclass(frozen=True, slots=True)
class QuotaHeaders:
    """Rate-limit headers under names of the upstream's own (from the profile)."""

    remaining: str
    limit: str | None = None
    reset: str | None = None  # delta, epoch (s or ms) or HTTP date, as X-RateLimit-Reset


class _Garbage(ValueError):
    """A header is there but says nothing we can use."""


def _number(value: str | None) -> float | None:
    """A plain non-negative decimal; None when absent; _Garbage when present but not one."""
    if value is None:
        return None
    text = value.strip()
    if not _DECIMAL.fullmatch(text):
        raise _Garbage(value)
    number = float(text)  # digits only: never NaN or negative, but 400 of them are inf
    if not math.isfinite(number):
        raise _Garbage(value)
    return number


def _count(value: str | None) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def _http_date(text: str, now_wall: float) -> float:
    """Seconds from now until an HTTP date; _Garbage when it is not one."""
    try:
        when = parsedate_to_datetime(text)
        if when.tzinfo is None:  # asctime carries no zone; RFC 9110 dates are all GMT
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now_wall
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        raise _Garbage(text) from None
    if not math.isfinite(seconds):
        raise _Garbage(text)
    return max(0.0, seconds)


def _reset(value: str | None, now_wall: float, default: float = DEFAULT_RESET) -> float:
    """A reset header as seconds from now (>= 0, finite); `default` when absent or garbage."""
    if value is None:
        return default
    try:
        number = _number(value)
    except _Garbage:
        try:
            return _http_date(value.strip(), now_wall)
        except _Garbage:
            return default
    assert number is not None
    if number >= _EPOCH_MS_THRESHOLD:
        return max(0.0, number / 1000.0 - now_wall)
    if number >= _EPOCH_THRESHOLD:
        return max(0.0, number - now_wall)
    return number


_FRACTION = re.compile(r"\s*[0-9]*\.[0-9]+\s*")


def _fractional(value: str | None) -> bool:
    """Whether a reset header is a decimal with a fraction ("0.5", "1764435600.734")."""
    return value is not None and _FRACTION.fullmatch(value) is not None


def _structured_params(value: str | None) -> dict[str, str]:
    """The parameters of the first item of an IETF structured-field list, as text."""
    if not value:
        return {}
    first = value.split(",", 1)[0]
    return {key.lower(): raw or "" for key, raw in _ITEM_PARAM.findall(first)}


def _ietf(headers: Mapping[str, str], now_wall: float) -> QuotaHint | None:
    state = _structured_params(headers.get("ratelimit"))
    if "r" not in state:
        return None
    policy = _structured_params(headers.get("ratelimit-policy"))
    remaining = _count(state["r"])
    quota, window = _count(policy.get("q")), _number(policy.get("w"))
    assert remaining is not None
    return QuotaHint(
        remaining=remaining,
        reset=_reset(state.get("t"), now_wall, window if window is not None else DEFAULT_RESET),
        limit=quota,
        window=window,
        precise=_fractional(state.get("t")),
    )


def _triple(headers: Mapping[str, str], names: QuotaHeaders, now_wall: float) -> QuotaHint | None:
    remaining = _count(headers.get(names.remaining))
    if remaining is None:
        return None
    limit = _count(headers.get(names.limit)) if names.limit else None
    raw_reset = headers.get(names.reset) if names.reset else None
    reset = _reset(raw_reset, now_wall) if names.reset else DEFAULT_RESET
    return QuotaHint(remaining=remaining, reset=reset, limit=limit, precise=_fractional(raw_reset))


def _weight(headers: Mapping[str, str], weight: WeightHeader, now_wall: float) -> QuotaHint | None:
    used = _number(headers.get(weight.name.lower()))
    if used is None:
        return None
    # Binance-style counters reset on the clock's window boundaries (each whole minute).
    reset = weight.window - (now_wall % weight.window)
    return QuotaHint(
        remaining=max(0, weight.budget - int(used)),
        reset=reset,
        limit=weight.budget,
        window=weight.window,
    )


def _prefixed(prefix: str) -> QuotaHeaders:
    return QuotaHeaders(f"{prefix}-remaining", f"{prefix}-limit", f"{prefix}-reset")


_DRAFT_06 = _prefixed("ratelimit")
_X_RATELIMIT = _prefixed("x-ratelimit")


def _read(reader: Callable[..., QuotaHint | None], *args: object) -> QuotaHint | None:
    """A dialect's hint; None when absent, or when a count it gives is garbage."""
    try:
        return reader(*args)
    except _Garbage:
        return None


def parse_quota(
    headers: Mapping[str, str],
    now_wall: float,
    weight: WeightHeader | None = None,
    custom: QuotaHeaders | None = None,
) -> QuotaHint | None:
    """The quota hint of a response, or None when it carries none we can trust; never raises.

    `headers` must look names up case-insensitively (httpx.Headers does). Headers the profile
    names come first; then the IETF form, the older RateLimit-*, and X-RateLimit-*. A dialect
    whose counts are garbage is passed over as if absent (the next one may still be readable).
    """
    hint = _read(_triple, headers, custom, now_wall) if custom is not None else None
    if hint is None:
        hint = _read(_ietf, headers, now_wall)
    if hint is None:
        hint = _read(_triple, headers, _DRAFT_06, now_wall)
    if hint is None:
        hint = _read(_triple, headers, _X_RATELIMIT, now_wall)
    if hint is None and weight is not None:
        hint = _read(_weight, headers, weight, now_wall)
    return hint
