"""The HTTP transports scanctl can send through, behind one `httpx.AsyncClient`.

httpx stays the interface (requests, responses, timeouts, redirects, decoding, respx in tests),
but its default transport, httpcore, gets slower as concurrency grows: its pool re-scans every
waiting request on every change (encode/httpx#3215), so CPU per request grows with the number
in flight (README, "Speed"). `AiohttpTransport` hands the connection work to aiohttp's pool
and parser instead, and maps aiohttp's errors onto httpx's so that `fetch.failure_of`
classifies them the same way (by type, and by the exception underneath: an `ssl.SSLError`, a
`ConnectionRefusedError`):

    refused / DNS / unreachable      -> httpx.ConnectError   ("Connection refused", ...)
    TLS handshake or certificate     -> httpx.ConnectError   (from an ssl.SSLError: "TLS error")
    connect timeout                  -> httpx.ConnectTimeout
    read timeout                     -> httpx.ReadTimeout
    server closed / reset / bad body -> httpx.ReadError      ("Connection dropped")
    malformed HTTP from the server   -> httpx.RemoteProtocolError

aiohttp's own decompression is off: httpx decodes Content-Encoding itself, so a gzip bomb is
still counted at its inflated size against --max-body.

It is the default (`--transport auto`, unless the environment sets a proxy: see
`fetch.chosen_transport`): at 50 requests in flight against an instant upstream it takes about
a quarter of httpcore's CPU per request, and that share does not grow with concurrency. (An
earlier version let aiohttp look up netrc and proxies in a thread on every request, which made
it pace worse against rate limits; see `_proxy_for`.) `--transport httpx` selects httpcore.
`DirectClient` is the client that goes with it; its `fetch_answer` takes a plain GET from
aiohttp to the engine as status, headers and body, without httpx's request and response
objects (`answer.Answer`). `AiohttpFetcher` is the engine's side of it (`fetch.Fetcher`).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import aiohttp
import httpx
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from scanctl.answer import Answer, AnswerHeaders, read_capped
from scanctl.fetch import HttpxFetcher, raise_failure

CHUNK = 64 * 1024


@contextlib.contextmanager
def _as_httpx_errors(request: httpx.Request | None) -> Iterator[None]:
    """Re-raise aiohttp's exceptions as the httpx ones that mean the same."""
    try:
        yield
    except (aiohttp.ClientSSLError, aiohttp.ClientConnectorCertificateError) as exc:
        raise httpx.ConnectError(f"SSL: {exc}", request=request) from exc
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx.ConnectTimeout(str(exc) or "connect timeout", request=request) from exc
    except aiohttp.ClientConnectorError as exc:
        # Its text always says "ssl:default"; the OS error underneath says what happened.
        reason = exc.os_error
        raise httpx.ConnectError(f"{exc.host}:{exc.port}: {reason}", request=request) from reason
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise httpx.ReadTimeout(str(exc) or "read timeout", request=request) from exc
    except aiohttp.ClientResponseError as exc:  # a response aiohttp could not parse
        raise httpx.RemoteProtocolError(str(exc), request=request) from exc
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
        raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc
    except (aiohttp.InvalidURL, ValueError) as exc:
        raise httpx.UnsupportedProtocol(str(exc), request=request) from exc


class _Body(httpx.AsyncByteStream):
    """An aiohttp response body, read as httpx reads streams; closing early drops the line."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request | None) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors(self._request):
            async for chunk in self._response.content.iter_chunked(CHUNK):
                yield chunk

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()  # read to the end: the connection goes back to the pool
        else:
            self._response.close()  # cut short (--max-body): do not read the rest


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx requests over one aiohttp session and its connection pool."""

    def __init__(
        self,
        *,
        limits: httpx.Limits,
        verify: bool | ssl.SSLContext = True,
        trust_env: bool = True,
    ) -> None:
        self._limits = limits
        self._ssl: ssl.SSLContext | bool = (
            verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify)
        )
        self._trust_env = trust_env
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str, int | None], tuple[URL | None, dict[str, str]]] = {}
        self._timeouts: dict[tuple[float | None, float | None], aiohttp.ClientTimeout] = {}

    def _timeout(self, timeouts: dict[str, float | None]) -> aiohttp.ClientTimeout:
        """httpx's connect and read timeouts as aiohttp's (one object per distinct pair)."""
        key = (timeouts.get("connect"), timeouts.get("read"))
        if key not in self._timeouts:
            self._timeouts[key] = aiohttp.ClientTimeout(
                total=None, sock_connect=key[0], sock_read=key[1]
            )
        return self._timeouts[key]

    def _proxy_for(self, url: httpx.URL) -> tuple[URL | None, dict[str, str]]:
        """HTTP(S)_PROXY / NO_PROXY for this origin, and the proxy's credentials (from its URL
        or netrc) as a header; looked up once per origin (httpx does not apply environment
        proxies to a transport it is given, so this one must). `--transport auto` leaves
        proxied runs to httpx's transport; this serves `--transport aiohttp` with a proxy."""
        origin = (url.scheme, url.host, url.port)
        if origin not in self._proxies:
            proxy, headers = None, {}
            if self._trust_env:
                with contextlib.suppress(LookupError):
                    proxy, auth = get_env_proxy_for_url(URL(str(url)))
                    if auth is not None:
                        headers = {"Proxy-Authorization": auth.encode()}
            self._proxies[origin] = (proxy, headers)
        return self._proxies[origin]

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._limits.max_connections or 0,
            limit_per_host=0,
            keepalive_timeout=self._limits.keepalive_expiry or 5.0,
            ssl=self._ssl,
        )
        return aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            # httpx keeps the cookies (the Cookie header arrives with the request); a second jar
            # here would only be filtered on every request.
            cookie_jar=aiohttp.DummyCookieJar(),
            # aiohttp's own trust_env looks up netrc and the proxy variables in a thread, twice
            # per request; `_proxy_for` does the proxy lookup once per origin instead.
            trust_env=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def _request(
        self,
        method: str,
        url: httpx.URL,
        headers: Sequence[tuple[str, str]],
        timeouts: dict[str, float | None],
        content: bytes | None = None,
        request: httpx.Request | None = None,
    ) -> aiohttp.ClientResponse:
        """Send one request; its response's headers are in, its body not read yet."""
        if self._session is None:
            self._session = self._open()
        if url.userinfo:  # httpx made it the Authorization header; aiohttp refuses both at once
            url = url.copy_with(username=None, password=None)
        proxy, proxy_headers = self._proxy_for(url)
        if proxy_headers and url.scheme == "http":
            # A plain request goes to the proxy as it is: its credentials ride along. (aiohttp
            # sends proxy_headers only on the CONNECT of a tunnel, for https.)
            headers = [*headers, *proxy_headers.items()]
            proxy_headers = {}
        with _as_httpx_errors(request):
            return await self._session.request(
                method,
                URL(str(url), encoded=True),
                headers=headers,
                data=content,
                allow_redirects=False,
                timeout=self._timeout(timeouts),
                proxy=proxy,
                proxy_headers=proxy_headers or None,
            )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._request(
            request.method,
            request.url,
            request.headers.multi_items(),
            request.extensions.get("timeout", {}),
            await request.aread() or None,
            request,
        )
        return httpx.Response(
            response.status,
            headers=response.raw_headers,  # bytes: httpx keeps them raw and decodes on read
            stream=_Body(response, request),
            request=request,
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode(),
            },
        )

    async def fetch_answer(
        self,
        method: str,
        url: httpx.URL,
        headers: Sequence[tuple[str, str]],
        timeouts: dict[str, float | None],
        limit: int,
    ) -> tuple[Answer, Sequence[tuple[bytes, bytes]]]:
        """One body-less request, answered as status, headers and body (up to `limit` bytes),
        with no httpx object made on the way; and the raw headers, for cookies.

        A body with a Content-Encoding is decoded by httpx, as on the streamed path.
        """
        response = await self._request(method, url, headers, timeouts)
        raw = response.raw_headers
        answer_headers = AnswerHeaders.from_raw(raw)
        status = response.status
        try:
            encoded = (answer_headers.get("content-encoding") or "").strip().lower()
            declared = answer_headers.get("content-length") or ""
            stream = _Body(response, None)
            if encoded not in ("", "identity"):
                chunks = httpx.Response(status, headers=raw, stream=stream).aiter_bytes()
                body = await read_capped(status, answer_headers, chunks, limit)
            elif declared.isdigit() and int(declared) <= limit:
                with _as_httpx_errors(None):
                    body = await response.read()  # (aiohttp reads no more than declared)
            else:
                body = await read_capped(status, answer_headers, stream.__aiter__(), limit)
        except BaseException:
            response.close()  # cut short (--max-body, an error, a cancel): do not read the rest
            raise
        response.release()
        return Answer(status, answer_headers, body), raw

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class DirectClient(httpx.AsyncClient):
    """An `httpx.AsyncClient` that hands a request straight to its one transport when nothing
    between the two has work to do.

    For each request `AsyncClient.send` runs an auth flow, a redirect loop, a stream wrapper
    that times the body, cookie extraction (a urllib request built per answer) and a log call:
    about 75 µs a request, as much as the rest of scanctl's own work per symbol. A scan sets
    none of that up (no auth, no hooks, redirects off), so `send` skips it; cookies are still
    kept when an answer sets one. Anything else (redirects followed, auth, credentials in the
    URL, a non-streamed send) goes through httpx's own `send`, unchanged; so does a closed
    client, which raises there.
    """

    def __init__(self, *, transport: httpx.AsyncBaseTransport, **kwargs: Any) -> None:
        super().__init__(transport=transport, **kwargs)
        self._direct = transport

    def _nothing_between(self, auth: Any, follow_redirects: Any, url: httpx.URL) -> bool:
        """True when httpx's `send` would only hand the request to the transport."""
        hooks = self.event_hooks
        return (
            not self.follow_redirects
            and self.auth is None
            and not (hooks["request"] or hooks["response"])
            and auth is httpx.USE_CLIENT_DEFAULT
            and follow_redirects is httpx.USE_CLIENT_DEFAULT
            and not url.userinfo  # httpx turns it into an Authorization header
            and not self.is_closed  # (httpx's own send raises for a closed client)
        )

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = httpx.USE_CLIENT_DEFAULT,
        follow_redirects: Any = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        if not (stream and self._nothing_between(auth, follow_redirects, request.url)):
            return await super().send(
                request, stream=stream, auth=auth, follow_redirects=follow_redirects
            )
        response = await self._direct.handle_async_request(request)
        response.request = request
        if "set-cookie" in response.headers:
            self.cookies.extract_cookies(response)
        return response

    async def fetch_answer(self, method: str, url: httpx.URL, limit: int) -> Answer | None:
        """A GET answered without an httpx Request or Response (about 60 µs of a request's
        CPU at thousands a second); None when httpx has work to do for this request: the
        caller then streams it the usual way.

        What httpx would add is added here: the client's headers and timeouts. A request that
        would carry cookies, or anything `send` would not pass straight through, is left to
        httpx; cookies an answer sets are kept.
        """
        transport = self._direct
        if (
            method != "GET"
            or not isinstance(transport, AiohttpTransport)
            or not self._nothing_between(httpx.USE_CLIENT_DEFAULT, httpx.USE_CLIENT_DEFAULT, url)
            or self.cookies
        ):
            return None
        answer, raw = await transport.fetch_answer(
            method, url, self.headers.multi_items(), self.timeout.as_dict(), limit
        )
        if "set-cookie" in answer.headers:
            response = httpx.Response(answer.status, headers=raw)
            response.request = httpx.Request(method, url)
            self.cookies.extract_cookies(response)
        return answer


class AiohttpFetcher(HttpxFetcher):
    """The default fetcher: a plain GET answered by aiohttp directly (`DirectClient.fetch_answer`);
    anything httpx has work to do for (cookies to send, redirects to follow, credentials in the
    URL, another method) streams through the same client, as `HttpxFetcher` does."""

    def __init__(self, client: DirectClient, max_body: int) -> None:
        super().__init__(client, max_body)
        self._direct = client

    async def fetch(self, method: str, url: httpx.URL) -> Answer:
        try:
            answer = await self._direct.fetch_answer(method, url, self.max_body)
        except httpx.HTTPError as exc:
            raise_failure(exc)
        if answer is None:
            return await super().fetch(method, url)
        return answer
