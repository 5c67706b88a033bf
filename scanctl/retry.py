"""What an answer means, and how long to wait before asking again.

Every HTTP answer or transport error becomes one `Verdict`:

- OK         2xx with a JSON body
- PERMANENT  will fail the same way again (400, 404, 422, other 4xx, non-JSON 200, TLS errors):
             fail at once, never retried
- RETRYABLE  may work next time (timeouts, connection errors, 408, 500, 502, 503, 504)
- THROTTLED  429: the upstream wants us slower; waiting is the cure, not failing
- REFUSED    401, 403, 418: the upstream refuses us; going on risks a ban, so the scan stops

Backoff is exponential with full jitter (AWS Architecture Blog, "Exponential Backoff And
Jitter"): sleep a uniform random time in [0, min(cap, base * 2**n)], which spreads retries out
instead of synchronising them into waves.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any

import httpx

RETRYABLE_STATUSES = frozenset({408, 500, 502, 503, 504})
REFUSED_STATUSES = frozenset({401, 403, 418})
THROTTLED_STATUSES = frozenset({429})


class Outcome(Enum):
    OK = "ok"
    PERMANENT = "permanent"
    RETRYABLE = "retryable"
    THROTTLED = "throttled"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The meaning of one answer: outcome, status, payload or error, and any wait it asked for."""

    outcome: Outcome
    status: int | None = None
    data: Any = None
    error_kind: str | None = None
    error: str | None = None
    retry_after: float | None = None


def parse_retry_after(value: str | None, now_wall: float) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date (RFC 9110 §10.2.3).

    Returns None when absent or unparseable; a date in the past means "now" (0).
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            return None
        return max(0.0, when.timestamp() - now_wall)
    if seconds != seconds or seconds < 0:  # NaN or negative: a lying upstream
        return None
    return seconds


def _detail(body: bytes) -> str | None:
    """The `detail` of a FastAPI-style error body, when there is one, cut to one short line."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(parsed, dict) and isinstance(parsed.get("detail"), str):
        return " ".join(parsed["detail"].split())[:200]
    return None


def classify_response(status: int, headers: httpx.Headers, body: bytes, now_wall: float) -> Verdict:
    """Classify an HTTP answer."""
    if 200 <= status < 300:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return Verdict(
                Outcome.PERMANENT, status, None, "Invalid JSON", "Invalid JSON in 2xx answer"
            )
        return Verdict(Outcome.OK, status, data)
    kind = f"HTTP {status}"
    detail = _detail(body)
    message = f"{kind}: {detail}" if detail else kind
    retry_after = parse_retry_after(headers.get("retry-after"), now_wall)
    if status in THROTTLED_STATUSES:
        return Verdict(Outcome.THROTTLED, status, None, kind, message, retry_after)
    if status in REFUSED_STATUSES:
        return Verdict(Outcome.REFUSED, status, None, kind, message, retry_after)
    if status in RETRYABLE_STATUSES:
        return Verdict(Outcome.RETRYABLE, status, None, kind, message, retry_after)
    if 300 <= status < 400:
        where = headers.get("location", "?")[:200]
        return Verdict(
            Outcome.PERMANENT, status, None, kind, f"{kind}: redirect to {where} not followed"
        )
    return Verdict(Outcome.PERMANENT, status, None, kind, message)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """True when `kind` is anywhere in the exception's cause/context chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def classify_exception(exc: Exception) -> Verdict:
    """Classify a transport error (the request got no HTTP answer)."""
    text = str(exc).lower()
    if isinstance(exc, httpx.TimeoutException):
        return Verdict(Outcome.RETRYABLE, None, None, "Request timeout", "Request timeout")
    if isinstance(exc, httpx.ConnectError):
        if "ssl" in text or "certificate" in text or "tls" in text:
            return Verdict(
                Outcome.PERMANENT, None, None, "TLS error", f"TLS error: {str(exc)[:200]}"
            )
        if _caused_by(exc, ConnectionRefusedError) or "refused" in text:
            return Verdict(
                Outcome.RETRYABLE, None, None, "Connection refused", "Connection refused"
            )
        return Verdict(
            Outcome.RETRYABLE, None, None, "Connection error", f"Connection error: {str(exc)[:200]}"
        )
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return Verdict(
            Outcome.RETRYABLE, None, None, "Connection dropped", "Connection dropped by upstream"
        )
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return Verdict(
            Outcome.PERMANENT, None, None, "Bad request URL", f"Bad request URL: {str(exc)[:200]}"
        )
    if isinstance(exc, httpx.TransportError):
        return Verdict(
            Outcome.RETRYABLE, None, None, "Transport error", f"Transport error: {str(exc)[:200]}"
        )
    raise exc


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff for the n-th retry (n >= 1)."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return rng.uniform(0.0, ceiling)
