"""Reading what an upstream says about its own rate limit, whatever dialect it speaks.

Hints beat guesses: a server that tells us its quota lets us pace to it exactly instead of
probing with 429s. Dialects understood (design.md §5):

- IETF httpapi draft -07 and later: `RateLimit-Policy: "burst";q=100;w=60` (quota q per w
  seconds) and `RateLimit: "burst";r=50;t=30` (r remaining, t seconds until more);
- drafts up to -06 and many servers: `RateLimit-Limit/-Remaining/-Reset`;
- GitHub and most others: `X-RateLimit-Limit/-Remaining/-Reset`, reset as delta seconds or as
  epoch seconds (told apart by size: no window lasts 30 years);
- used-weight counters such as Binance's `X-MBX-USED-WEIGHT-1M`, when the profile names the
  header, the budget and the window (the header says only what is used).

Retry-After is read by `retry.parse_retry_after`; it always wins over these.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

# An epoch timestamp is larger than any plausible delta (about 31 years).
_EPOCH_THRESHOLD = 1e9
_ITEM_PARAM = re.compile(r";\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*([0-9.]+)")


@dataclass(frozen=True, slots=True)
class QuotaHint:
    """A snapshot of the upstream's quota: `remaining` requests until `reset` seconds from now.

    `limit` and `window` are the quota per window when the upstream says so (None otherwise).
    """

    remaining: int
    reset: float
    limit: int | None = None
    window: float | None = None


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
    reset: str | None = None  # delta seconds or epoch, told apart like X-RateLimit-Reset


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if number != number or number < 0 or number == float("inf"):
        return None
    return number


def _delta(value: float, now_wall: float) -> float:
    """A reset value as seconds from now, whether it came as a delta or an epoch."""
    return max(0.0, value - now_wall) if value >= _EPOCH_THRESHOLD else value


def _structured_params(value: str | None) -> dict[str, float]:
    """The numeric parameters of the first item of an IETF structured-field list."""
    if not value:
        return {}
    first = value.split(",", 1)[0]
    return {k.lower(): float(v) for k, v in _ITEM_PARAM.findall(first)}


def _ietf(headers: Mapping[str, str]) -> QuotaHint | None:
    state = _structured_params(headers.get("ratelimit"))
    if "r" not in state:
        return None
    policy = _structured_params(headers.get("ratelimit-policy"))
    quota, window = policy.get("q"), policy.get("w")
    return QuotaHint(
        remaining=int(state["r"]),
        reset=state.get("t", window if window is not None else 1.0),
        limit=int(quota) if quota is not None else None,
        window=window,
    )


def _triple(headers: Mapping[str, str], names: QuotaHeaders, now_wall: float) -> QuotaHint | None:
    remaining = _number(headers.get(names.remaining))
    if remaining is None:
        return None
    limit = _number(headers.get(names.limit)) if names.limit else None
    reset = _number(headers.get(names.reset)) if names.reset else None
    return QuotaHint(
        remaining=int(remaining),
        reset=_delta(reset, now_wall) if reset is not None else 1.0,
        limit=int(limit) if limit is not None else None,
    )


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


def parse_quota(
    headers: Mapping[str, str],
    now_wall: float,
    weight: WeightHeader | None = None,
    custom: QuotaHeaders | None = None,
) -> QuotaHint | None:
    """The quota hint of a response, or None when it carries none.

    `headers` must look names up case-insensitively (httpx.Headers does). Headers the profile
    names come first; then the IETF form, the older RateLimit-*, and X-RateLimit-*.
    """
    hint = _triple(headers, custom, now_wall) if custom is not None else None
    if hint is None:
        hint = _ietf(headers)
    if hint is None:
        hint = _triple(headers, _DRAFT_06, now_wall)
    if hint is None:
        hint = _triple(headers, _X_RATELIMIT, now_wall)
    if hint is None and weight is not None:
        hint = _weight(headers, weight, now_wall)
    return hint
