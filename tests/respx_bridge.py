"""respx's routes served over a real loopback socket, so CLI tests run the default transport.

respx mocks httpx's own transport (httpcore); scanctl's default fetcher sends through aiohttp,
which respx cannot see. Rather than pin those tests to `--transport httpx` (and so never run the
path users run), this serves whatever routes the test's `respx.mock` holds on a loopback HTTP
server, and points aiohttp's resolver at it: every host name (`upstream.test`) connects there,
and the request keeps its Host, so routes match as they would under respx itself.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiohttp
import httpx
import pytest
import respx.mocks
from aiohttp.abc import AbstractResolver


def _answer(request: httpx.Request) -> httpx.Response:
    """What the active respx router answers (as respx's own mock transport would)."""
    for mocker in respx.mocks.Mocker.registry.values():
        if mocker.routers:
            response: httpx.Response = mocker.handler(request)
            return response
    return httpx.Response(599, text="no respx router is active")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: aiohttp's pool reuses connections

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        request = httpx.Request(
            self.command,
            f"http://{self.headers.get('host')}{self.path}",
            headers=list(self.headers.items()),
            content=self.rfile.read(length) if length else b"",
        )
        response = _answer(request)
        body = response.read()
        self.send_response_only(response.status_code)
        skipped = {"content-length", "transfer-encoding", "connection"}
        for name, value in response.headers.multi_items():
            if name.lower() not in skipped:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Loopback(AbstractResolver):
    """Every host name resolves to the bridge."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[dict[str, Any]]:
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": self.port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        pass


@pytest.fixture
def respx_over_aiohttp(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Scans in this test send through the default fetcher (aiohttp) to the test's respx routes."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    connector = aiohttp.TCPConnector

    def to_the_bridge(*args: Any, **kwargs: Any) -> aiohttp.TCPConnector:
        return connector(*args, resolver=_Loopback(port), **kwargs)

    monkeypatch.setattr(aiohttp, "TCPConnector", to_the_bridge)
    monkeypatch.delenv("SCANCTL_TRANSPORT", raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
