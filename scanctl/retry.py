"""What an answer means, and how long to wait before asking again.

Every HTTP answer or transport error becomes one `Verdict`:

- OK         2xx with a JSON body
- PERMANENT  will fail the same way again (400, 404, 422, other 4xx, non-JSON 200, TLS errors,
             answers too large):
             fail at once, never retried
- RETRYABLE  may work next time (timeouts, connection errors, 408, 500, 502, 503, 504)
- THROTTLED  429: the upstream wants us slower; waiting is the cure, not failing
- REFUSED    401, 403, 418: the upstream refuses us; going on risks a ban, so the scan stops

A body is hostile input: a 2xx body is OK only when it is JSON that every writer and the cache can
take back out, i.e. UTF-8 (RFC 8259 §8.1), nested at most `MAX_JSON_DEPTH` deep, with no NaN or
Infinity, no number too large for a float or an int, and no string that is not valid Unicode
(a lone surrogate escape such as "\\ud800" cannot be written as UTF-8). Anything else is
PERMANENT with error kind "Invalid JSON" and a message naming what was wrong. An error body is
only searched for a `detail`, never trusted. A Retry-After is None or a finite number >= 0.

Backoff is exponential with full jitter (AWS Architecture Blog, "Exponential Backoff And
Jitter"): sleep a uniform random time in [0, min(cap, base * 2**n)], which spreads retries out
instead of synchronising them into waves.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any

from scanctl.failures import (
    BadRequestUrl,
    ConnectFailed,
    ConnectionDropped,
    ConnectionRefused,
    FetchFailure,
    RedirectLoop,
    RequestTimeout,
    TlsFailure,
    TooLarge,
    TransportFailure,
    Undecodable,
)

RETRYABLE_STATUSES = frozenset({408, 500, 502, 503, 504})
REFUSED_STATUSES = frozenset({401, 403, 418})
THROTTLED_STATUSES = frozenset({429})
# Far deeper than any real answer, far shallower than the ~1000 frames that json.dumps (writers,
# cache) may recurse into: a payload that was read can always be written again.
MAX_JSON_DEPTH = 200
INVALID_JSON = "Invalid JSON"
# delta-seconds (RFC 9110: 1*DIGIT), with a decimal part tolerated; float() alone would also take
# "inf", "nan", "1e3", "1_0" and non-ASCII digits.
_DELTA_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]*)?")


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
    if _DELTA_SECONDS.fullmatch(value):
        seconds = float(value)  # digits only: never NaN or negative, but 400 of them are inf
        return seconds if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            return None
        wait = when.timestamp() - now_wall
    except (TypeError, ValueError, IndexError, OverflowError):  # year 0, offsets of 10**20 s...
        return None
    return max(0.0, wait) if math.isfinite(wait) else None


class UnusableJson(ValueError):
    """A body that is not JSON scanctl can keep; the message says why, in a few words."""


def _json_constant(text: str) -> Any:
    raise UnusableJson(f"{text} is not JSON")  # NaN, Infinity, -Infinity: Python extensions


# What a JSON text must contain to hold a lone surrogate: an escape \ud800-\udfff (raw
# surrogates cannot survive the UTF-8 decode).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _finite_float(text: str) -> float:
    """json.loads' float parser, refusing what overflows to infinity (1e999, 400 digits)."""
    value = float(text)
    if math.isinf(value):
        raise UnusableJson("number too large")
    return value


# One decoder for every answer: json.loads with options builds a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_json_constant, parse_float=_finite_float)


def _check_tree(value: Any, text: str) -> None:
    """Raise UnusableJson when parsed JSON is nested too deeply or holds a string that is not
    valid Unicode (a lone surrogate escape). (Overflowing floats are refused while parsing.)

    The depth is measured iteratively, so a deep value cannot exhaust the stack here; the
    Unicode check is left to the C encoder, which is what the writers will run on it anyway.
    Both run only when the text could hold what they look for (more brackets than the depth
    limit; a surrogate escape): at thousands of answers a second, most need neither.
    """
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH:
        _check_depth(value)
    if _SURROGATE_ESCAPE.search(text) is None:
        return
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise UnusableJson("a string is not valid Unicode (lone surrogate)") from None


def _check_depth(value: Any) -> None:
    """Raise UnusableJson when containers nest deeper than MAX_JSON_DEPTH (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, list | dict) else []
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise UnusableJson("nested too deeply")
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, list | dict):
                stack.append((child, depth + 1))


def parse_json_body(body: bytes) -> Any:
    """The JSON value of a body, or UnusableJson (a ValueError) saying briefly what is wrong.

    Plain syntax errors raise json.JSONDecodeError, also a ValueError.
    """
    if not body.strip():
        raise UnusableJson("empty body")
    try:
        text = body.decode("utf-8-sig")  # a leading byte-order mark is tolerated (RFC 8259 §8.1)
    except UnicodeDecodeError:
        raise UnusableJson("not UTF-8") from None
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise UnusableJson("nested too deeply") from None
    except UnusableJson:
        raise
    except ValueError:  # the only other one: more digits than int() takes (4300 by default)
        raise UnusableJson("number too large") from None
    _check_tree(value, text)
    return value


def _invalid_json(status: int, exc: ValueError) -> Verdict:
    """A 2xx body that cannot be used; every such case counts as "Invalid JSON" in summaries."""
    message = f"{INVALID_JSON} in 2xx answer"
    if isinstance(exc, UnusableJson):
        message = f"{message}: {exc}"
    return Verdict(Outcome.PERMANENT, status, None, INVALID_JSON, message)


def _one_line(text: str, limit: int = 200) -> str:
    """Upstream text for a one-line message: whitespace runs (newlines too) become one space."""
    return " ".join(text.split())[:limit]


def _detail(body: bytes) -> str | None:
    """The `detail` of a FastAPI-style error body, when there is one, cut to one short line."""
    try:
        parsed = parse_json_body(body)
    except ValueError:
        return None
    if isinstance(parsed, dict) and isinstance(parsed.get("detail"), str):
        return _one_line(parsed["detail"]) or None
    return None


def classify_response(
    status: int, headers: Mapping[str, str], body: bytes, now_wall: float
) -> Verdict:
    """Classify an HTTP answer; whatever the status, headers and body, this never raises.

    `headers` must look names up case-insensitively (httpx.Headers, answer.AnswerHeaders)."""
    if 200 <= status < 300:
        try:
            data = parse_json_body(body)
        except ValueError as exc:
            return _invalid_json(status, exc)
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
        where = _one_line(headers.get("location", "")) or "?"
        return Verdict(
            Outcome.PERMANENT, status, None, kind, f"{kind}: redirect to {where} not followed"
        )
    return Verdict(Outcome.PERMANENT, status, None, kind, message)


# What each kind of failed request means (README, "How it paces and retries"): a timeout or a
# broken connection may work next time; a TLS failure, a bad URL, an answer too large or
# undecodable, or a redirect loop will fail the same way again.
_FAILURE_OUTCOMES: dict[type[FetchFailure], Outcome] = {
    RequestTimeout: Outcome.RETRYABLE,
    ConnectionRefused: Outcome.RETRYABLE,
    ConnectFailed: Outcome.RETRYABLE,
    ConnectionDropped: Outcome.RETRYABLE,
    TransportFailure: Outcome.RETRYABLE,
    TlsFailure: Outcome.PERMANENT,
    BadRequestUrl: Outcome.PERMANENT,
    RedirectLoop: Outcome.PERMANENT,
    Undecodable: Outcome.PERMANENT,
    TooLarge: Outcome.PERMANENT,
}


def classify_failure(failure: FetchFailure) -> Verdict:
    """Classify a request that got no usable answer, by the failure's type alone."""
    outcome = _FAILURE_OUTCOMES.get(type(failure), Outcome.RETRYABLE)
    return Verdict(outcome, failure.status, None, failure.kind, failure.message)


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff for the n-th retry (n >= 1)."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return rng.uniform(0.0, ceiling)
