"""The fetch seam: how the engine sends one request and gets an answer or a classified failure.

In the style of httpx's transports, one small protocol stands between the engine and any HTTP
library: `Fetcher.fetch(method, url)` returns an `answer.Answer` (status, headers, body read up
to --max-body) or raises a `failures.FetchFailure`. The engine has one path for every request;
which library carries it is decided here, in `open_fetcher`, and nowhere else:

- `transport.AiohttpFetcher` (the default, `--transport auto|aiohttp`): aiohttp's pool and
  parser, with httpx only where it has work to do (cookies, redirects, credentials);
- `HttpxFetcher` (`--transport httpx`, or whenever a proxy is set with `auto`): httpx's own
  transport, httpcore, which applies proxy variables in full.

Tests give the engine a fetcher of their own (tests/engine_helpers.py), which is then the only
path the engine has: what they exercise is what runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NoReturn, Protocol

import httpx

from scanctl import __version__
from scanctl.answer import Answer, read_capped
from scanctl.failures import (
    BadRequestUrl,
    ConnectFailed,
    ConnectionDropped,
    ConnectionRefused,
    FetchFailure,
    RedirectLoop,
    RequestTimeout,
    TlsFailure,
    TransportFailure,
    Undecodable,
)


class Fetcher(Protocol):
    """Sends one request for a symbol; what the engine needs of any HTTP library."""

    def prepare(self) -> None:
        """Get ready to send (build the client): called once, before the first request is
        paced, so that building it never delays an answer the pacer is timing."""

    async def fetch(self, method: str, url: httpx.URL) -> Answer:
        """The answer (its body read up to --max-body), or a FetchFailure saying why none came.

        Timeouts of the whole request are the caller's (it cancels); anything else that
        escapes is a bug, not an upstream's failure."""
        ...

    async def aclose(self) -> None:
        """Close connections; the fetcher is not used again."""


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """True when `kind` is in the exception's cause/context chain; inside an exception group
    (anyio's "all connection attempts failed"), when every attempt failed that way."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        if isinstance(current, BaseExceptionGroup):
            return all(_caused_by(inner, kind) for inner in current.exceptions)
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def failure_of(exc: httpx.HTTPError) -> FetchFailure | None:
    """The failure an httpx error means, by its type and the exception it was raised from
    (None: not an upstream's failure, e.g. a misused client: a bug, re-raised by the caller).

    TLS failures are `ssl.SSLError`s underneath (aiohttp's certificate and SSL errors are
    subclasses of it), refused connections `ConnectionRefusedError`s."""
    import ssl

    detail = str(exc)
    if isinstance(exc, httpx.TimeoutException):
        return RequestTimeout(detail)
    if isinstance(exc, httpx.ConnectError):
        if _caused_by(exc, ssl.SSLError):
            return TlsFailure(detail)
        if _caused_by(exc, ConnectionRefusedError):
            return ConnectionRefused(detail)
        return ConnectFailed(detail)
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return ConnectionDropped(detail)
    if isinstance(exc, httpx.UnsupportedProtocol):
        return BadRequestUrl(detail)
    if isinstance(exc, httpx.TransportError):
        return TransportFailure(detail)
    if isinstance(exc, httpx.TooManyRedirects):
        return RedirectLoop(detail)
    if isinstance(exc, httpx.DecodingError):
        return Undecodable(detail)
    return None


def raise_failure(exc: httpx.HTTPError) -> NoReturn:
    """Raise the failure `exc` means, from it; `exc` itself when it is a bug (`failure_of`).
    Each fetcher calls this in its `except httpx.HTTPError`, so both map errors alike."""
    failure = failure_of(exc)
    if failure is None:
        raise exc
    raise failure from exc


class HttpxFetcher:
    """Any `httpx.AsyncClient` (any transport: httpcore, a mock, aiohttp's), streamed."""

    def __init__(self, client: httpx.AsyncClient, max_body: int) -> None:
        self.client = client
        self.max_body = max_body

    def prepare(self) -> None:
        pass

    async def fetch(self, method: str, url: httpx.URL) -> Answer:
        try:
            async with self.client.stream(method, url) as response:
                status = response.status_code
                chunks = response.aiter_bytes()
                body = await read_capped(status, response.headers, chunks, self.max_body)
                return Answer(status, response.headers, body)
        except httpx.HTTPError as exc:
            raise_failure(exc)

    async def aclose(self) -> None:
        await self.client.aclose()


class LazyFetcher:
    """A fetcher built when it is first needed.

    Building one loads httpcore or aiohttp's connector and the TLS setup: ~0.08 s that a run
    answered entirely from the cache never needs to pay.
    """

    def __init__(self, factory: Callable[[], Fetcher]) -> None:
        self._factory = factory
        self._fetcher: Fetcher | None = None

    def prepare(self) -> None:
        if self._fetcher is None:
            self._fetcher = self._factory()

    async def fetch(self, method: str, url: httpx.URL) -> Answer:
        fetcher = self._fetcher
        if fetcher is None:
            self.prepare()
            fetcher = self._fetcher
            assert fetcher is not None
        return await fetcher.fetch(method, url)

    async def aclose(self) -> None:
        if self._fetcher is not None:
            await self._fetcher.aclose()


class _Settings(Protocol):
    """What choosing and building a fetcher reads of a scan's settings (engine.ScanSettings)."""

    @property
    def base_url(self) -> str: ...
    @property
    def concurrency(self) -> int: ...
    @property
    def timeout(self) -> float: ...
    @property
    def headers(self) -> dict[str, str]: ...
    @property
    def max_body(self) -> int: ...
    @property
    def transport(self) -> str: ...
    @property
    def follow_redirects(self) -> bool: ...


def open_fetcher(settings: _Settings) -> Fetcher:
    """The fetcher a scan sends through: the one place the transport is chosen. Lazy: nothing
    is built before the engine's first request."""
    return LazyFetcher(lambda: build_fetcher(settings))


def build_fetcher(
    settings: _Settings, transport: httpx.AsyncBaseTransport | None = None
) -> Fetcher:
    """The fetcher for these settings, built now; `transport` replaces the network (tests)."""
    if transport is None and chosen_transport(settings.transport) == "aiohttp":
        from scanctl.transport import AiohttpFetcher, AiohttpTransport, DirectClient

        limits = _limits(settings)
        aiohttp = AiohttpTransport(limits=limits, verify=_verify(settings))
        client = make_client(settings, aiohttp, client_class=DirectClient)
        assert isinstance(client, DirectClient)
        return AiohttpFetcher(client, settings.max_body)
    return HttpxFetcher(make_client(settings, transport), settings.max_body)


def _limits(settings: _Settings) -> httpx.Limits:
    return httpx.Limits(
        max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency
    )


def _verify(settings: _Settings) -> bool:
    return settings.follow_redirects or _needs_tls(settings.base_url)


def make_client(
    settings: _Settings,
    transport: httpx.AsyncBaseTransport | None = None,
    *,
    client_class: type[httpx.AsyncClient] = httpx.AsyncClient,
) -> httpx.AsyncClient:
    """The one shared client: a pool as large as the concurrency, redirects not followed
    unless asked; when followed, our headers (API key, profile and -H headers) go only to the
    upstream's own origin."""
    headers = {"User-Agent": f"scanctl/{__version__}", "Accept": "application/json"}
    headers.update(settings.headers)
    hooks: dict[str, list[Callable[..., Any]]] = {}
    if settings.follow_redirects:
        hooks["request"] = [_only_home_gets_secrets(settings)]
    return client_class(
        # The engine bounds every whole request by --timeout (reading included), so a timer
        # per read would only repeat it: aiohttp re-arms one on every chunk received.
        timeout=httpx.Timeout(settings.timeout, read=None),
        limits=_limits(settings),
        headers=headers,
        follow_redirects=settings.follow_redirects,
        max_redirects=5,
        transport=transport,
        verify=_verify(settings),
        event_hooks=hooks,
    )


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, url.port or default


def _only_home_gets_secrets(settings: _Settings) -> Callable[[httpx.Request], Any]:
    """A request hook: a redirect to another origin goes without our own headers."""
    home = _origin(httpx.URL(settings.base_url))
    names = list(settings.headers)

    async def strip(request: httpx.Request) -> None:
        if _origin(request.url) != home:
            for name in names:
                request.headers.pop(name, None)

    return strip


def chosen_transport(name: str) -> str:
    """The transport `--transport NAME` means here: auto is aiohttp, unless the environment
    names a proxy. httpx applies proxy variables as users expect of it (ALL_PROXY, https://
    and socks proxies, NO_PROXY entries with a port); aiohttp only some of them, and an
    https:// proxy it cannot use would be skipped, sending requests direct."""
    if name != "auto":
        return name
    from urllib.request import getproxies

    return "httpx" if {"http", "https", "all"} & set(getproxies()) else "aiohttp"


def _needs_tls(base_url: str) -> bool:
    """Whether this client can ever speak TLS: to an https upstream, or through an https proxy.

    Redirects are not followed, so a plain-http upstream never needs certificates, and loading
    the CA bundle costs ~0.1 s: a fully cached run would spend a quarter of its time on it.
    """
    if base_url.startswith("https://"):
        return True
    proxies = ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
    return any(os.environ.get(name, "").startswith("https://") for name in proxies)
