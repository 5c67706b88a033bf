"""The HTTP transports scanctl can send through, behind one `httpx.AsyncClient`.

httpx stays the interface (requests, responses, timeouts, redirects, decoding, respx in tests),
but its default transport, httpcore, gets slower as concurrency grows: its pool re-scans every
waiting request on every change (encode/httpx#3215), so CPU per request grows with the number
in flight (design.md §7). `AiohttpTransport` hands the connection work to aiohttp's pool and
parser instead, and maps aiohttp's errors onto httpx's so that the outcome classifier
(`retry.classify_exception`) reads them the same way:

    refused / DNS / unreachable      -> httpx.ConnectError   ("Connection refused", ...)
    TLS handshake or certificate     -> httpx.ConnectError   (message starts "SSL:": "TLS error")
    connect timeout                  -> httpx.ConnectTimeout
    read timeout                     -> httpx.ReadTimeout
    server closed / reset / bad body -> httpx.ReadError      ("Connection dropped")
    malformed HTTP from the server   -> httpx.RemoteProtocolError

aiohttp's own decompression is off: httpx decodes Content-Encoding itself, so a gzip bomb is
still counted at its inflated size against --max-body.

It is opt-in (`--transport aiohttp`): it takes a quarter of the CPU per request at 50 in flight
and keeps its speed at 200, but against the rate-limited benchmark scenario b it found the limit
less well than httpx's transport (ratio 1.36-1.66 against 1.24-1.36 over five runs each), and
until that is understood the default stays the transport the pacing was measured with.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator

import aiohttp
import httpx
from yarl import URL

CHUNK = 64 * 1024


@contextlib.contextmanager
def _as_httpx_errors(request: httpx.Request) -> Iterator[None]:
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

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
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
            trust_env=self._trust_env,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._session is None:
            self._session = self._open()
        timeouts = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=timeouts.get("connect"),
            sock_read=timeouts.get("read"),
        )
        with _as_httpx_errors(request):
            response = await self._session.request(
                request.method,
                URL(str(request.url), encoded=True),
                headers=list(request.headers.multi_items()),
                data=await request.aread() or None,
                allow_redirects=False,
                timeout=timeout,
            )
        return httpx.Response(
            response.status,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers],
            stream=_Body(response, request),
            request=request,
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode(),
            },
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
