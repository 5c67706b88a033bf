"""A fast simulated upstream for the overhead benchmarks.

The bundled demo upstream (starlette on uvicorn) tops out near 1100 requests a second on this
machine, so it cannot measure a client's own overhead: the client would wait on the server. This
one answers the same routes with the same payloads from a bare asyncio protocol (HTTP/1.1,
keep-alive, GET only), on uvloop when it is installed, and reaches several times that (its
ceiling is printed by `benchmarks/speed.py`, measured with wrk when wrk is installed).

It can add a lognormal latency (median, sigma) per answer for the latency-bound scenarios, and
counts what it served at `GET /_demo/stats` (requests, latency_sum, latency_max), like the demo.

    python benchmarks/fast_upstream.py --port 0 [--latency-median 0.1 --latency-sigma 0.5]

prints its base URL on stdout once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
from typing import Any
from urllib.parse import unquote

from scanctl.demo.payloads import ROUTES


class Stats:
    """What the server answered, for the benchmark's ideal time."""

    def __init__(self) -> None:
        self.requests = 0
        self.latency_sum = 0.0
        self.latency_max = 0.0

    def as_json(self) -> bytes:
        return json.dumps(
            {
                "requests": self.requests,
                "latency_sum": self.latency_sum,
                "latency_max": self.latency_max,
            }
        ).encode()


def _route(path: str) -> tuple[Any, str] | None:
    """The payload builder and symbol for a request path, or None for an unknown route."""
    for template, build in ROUTES.items():
        prefix = template.split("{", 1)[0]
        if path.startswith(prefix) and "/" not in path[len(prefix) :]:
            return build, unquote(path[len(prefix) :]).upper()
    return None


def _response(status: int, body: bytes) -> bytes:
    reason = {200: "OK", 404: "Not Found", 400: "Bad Request"}[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class UpstreamProtocol(asyncio.Protocol):
    """One client connection: parse request heads, answer each after its drawn latency.

    Clients here never pipeline, so answers leave in request order without a queue.
    """

    def __init__(self, stats: Stats, latency: Any) -> None:
        self.stats = stats
        self.latency = latency
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            self._answer(head)

    def _answer(self, head: bytes) -> None:
        parts = head.split(b" ", 2)
        target = parts[1].decode("latin-1") if len(parts) == 3 else ""
        path = target.split("?", 1)[0]
        if path == "/_demo/stats":
            self._send(_response(200, self.stats.as_json()))
            return
        found = _route(path)
        if found is None:
            self._send(_response(404, b'{"detail": "Not Found"}'))
            return
        build, symbol = found
        self.stats.requests += 1
        body = json.dumps(build(symbol)).encode()
        delay = self.latency()
        self.stats.latency_sum += delay
        self.stats.latency_max = max(self.stats.latency_max, delay)
        answer = _response(200, body)
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._send, answer)
        else:
            self._send(answer)

    def _send(self, answer: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(answer)


async def serve(host: str, port: int, median: float, sigma: float, seed: int | None) -> None:
    rng = random.Random(seed)
    stats = Stats()

    def latency() -> float:
        return median * math.exp(sigma * rng.gauss(0.0, 1.0)) if median > 0 else 0.0

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: UpstreamProtocol(stats, latency), host, port, backlog=4096
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"http://{host}:{bound}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-median", type=float, default=0.0)
    parser.add_argument("--latency-sigma", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    runner: Any = asyncio.run
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        pass
    try:
        runner(serve(args.host, args.port, args.latency_median, args.latency_sigma, args.seed))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
