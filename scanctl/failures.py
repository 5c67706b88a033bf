"""The ways a request can end without an answer, as types.

A fetcher (`fetch.Fetcher`) raises one of these instead of its client library's own errors, so
the rest of scanctl decides by type what a failure means (`retry.classify_failure`) and never
reads an exception's wording: httpx and aiohttp word the same failure differently, and a
message can change with a library's version. Each carries the short `kind` the summary counts
it under and the one-line `message` a record shows; both are published (README, "Output").
"""

from __future__ import annotations

from typing import ClassVar


class FetchFailure(Exception):
    """A request that got no usable answer. `detail` is the library's own text, cut short."""

    kind: ClassVar[str] = "Transport error"

    def __init__(self, detail: str = "", status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail[:200]
        self.status = status  # the status of an answer that came but could not be used

    @property
    def message(self) -> str:
        """The record's error text."""
        return f"{self.kind}: {self.detail}"


class TransportFailure(FetchFailure):
    """Any other failure of the connection (a proxy error, a write error...)."""


class RequestTimeout(FetchFailure):
    """No whole answer within --timeout (connecting, or reading a trickle)."""

    kind = "Request timeout"

    @property
    def message(self) -> str:
        return self.kind


class ConnectionRefused(FetchFailure):
    """Nothing listens at the upstream's address."""

    kind = "Connection refused"

    @property
    def message(self) -> str:
        return self.kind


class ConnectFailed(FetchFailure):
    """No connection for another reason: DNS, an unreachable network, a reset while opening."""

    kind = "Connection error"


class TlsFailure(FetchFailure):
    """The TLS handshake or the certificate failed: trying again will fail the same way."""

    kind = "TLS error"


class ConnectionDropped(FetchFailure):
    """The upstream closed or broke the connection mid-answer, or spoke broken HTTP."""

    kind = "Connection dropped"

    @property
    def message(self) -> str:
        return "Connection dropped by upstream"


class BadRequestUrl(FetchFailure):
    """The request's URL cannot be sent (a scheme or host the client cannot use)."""

    kind = "Bad request URL"


class RedirectLoop(FetchFailure):
    """--follow-redirects met more redirects than it follows."""

    kind = "Redirect loop"

    @property
    def message(self) -> str:
        return "Too many redirects"


class Undecodable(FetchFailure):
    """The body's Content-Encoding could not be decoded (broken gzip...)."""

    kind = "Undecodable answer"


class TooLarge(FetchFailure):
    """An answer longer than --max-body: not read."""

    kind = "Response too large"

    def __init__(self, status: int, limit: int) -> None:
        super().__init__(f"over {limit} bytes", status)
        self.limit = limit

    @property
    def message(self) -> str:
        return f"Response too large: over {self.limit} bytes (--max-body), not read"
