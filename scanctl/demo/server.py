"""The simulated upstream: the analysis API's four routes with knobs for latency, limits and faults.

`scanctl demo-api` (or `python -m scanctl.demo`) serves deterministic answers per symbol and type
(see `payloads`), with:

- latency drawn from a lognormal distribution with a given median (long-tailed, like real APIs);
- a rate limit of any of four kinds (see `limiters`), answered with 429 and, as asked, hint
  headers: `Retry-After`, `X-RateLimit-*`, the IETF draft's `RateLimit`/`RateLimit-Policy`,
  Binance's `X-MBX-USED-WEIGHT-1M`; and optionally a 418 ban after too many 429s, as Binance does;
- faults at given rates: 500, 503, hangs, dropped connections, HTML and truncated-JSON 200s;
- an outage: a window, counted from the first request, in which every request is dropped
  mid-answer or answered 503 (what a restarting upstream or its load balancer does);
- answers that move (`--move-every`, `--move-share`, or `POST /_demo/move` at once), for
  `scan --changes`;
- `GET /_demo/stats`: what it received, so tests and benchmarks count requests at the source.

`--port 0` binds a free port and prints the base URL as the only line on stdout, so a test or
script can start it and read where it is.
"""

from __future__ import annotations

import json
import logging
import math
import random
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from scanctl.demo.headers import HintStyle, hint_headers
from scanctl.demo.limiters import Limiter, make_limiter
from scanctl.demo.options import DemoConfig, Listen
from scanctl.demo.payloads import ROUTES, Payload, is_unknown, phase
from scanctl.errors import UsageError


@dataclass(slots=True)
class DemoStats:
    """What the upstream received and answered; served at /_demo/stats."""

    started: float = field(default_factory=time.monotonic)
    requests: int = 0
    throttled: int = 0
    ok: int = 0
    banned: int = 0
    # When each 418 was answered (seconds since `started`; the first thousand): tests check
    # that clients sharing a ban stop sending once the first of them was told.
    banned_at: list[float] = field(default_factory=list)
    # The same for each 429, with the path it refused (whose request it was).
    throttled_at: list[tuple[float, str]] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    latency_sum: float = 0.0
    latency_max: float = 0.0
    per_second: Counter[int] = field(default_factory=Counter)
    # The outage window in seconds since `started` (the time base of `per_second`); known once
    # the first request has come, None before that or when no outage is set.
    outage: tuple[float, float] | None = None

    def as_dict(self, now: float) -> dict[str, Any]:
        seconds = max(self.per_second, default=-1) + 1
        return {
            "requests": self.requests,
            "throttled": self.throttled,
            "ok": self.ok,
            "banned": self.banned,
            "banned_at": [round(t, 4) for t in self.banned_at],
            "throttled_at": [[round(t, 4), path] for t, path in self.throttled_at],
            "faults": dict(self.faults),
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "latency_sum": self.latency_sum,
            "latency_max": self.latency_max,
            "uptime": now - self.started,
            "per_second": [self.per_second.get(s, 0) for s in range(seconds)],
            "outage": list(self.outage) if self.outage is not None else None,
        }


class DroppedConnection:
    """Promise a body, send part of it, then stop: the server closes the connection mid-answer."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"4096")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"symbol": ', "more_body": False})


class DemoUpstream:
    """The application state: config, limiter, randomness and counters.

    `clock` is where the upstream reads time (monotonic seconds); tests pass their own, so an
    outage or a limit can be crossed without sleeping.
    """

    def __init__(self, config: DemoConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.rng = random.Random(config.seed)
        self.stats = DemoStats(started=clock())
        self.limiter: Limiter = make_limiter(
            config.limiter,
            config.rate_limit,
            burst=config.burst,
            window=config.window,
            start=self.stats.started,
            count_rejected=config.count_rejected,
        )
        self.style = HintStyle(
            config.hints, config.reset_offset, config.retry_after_always, config.fractional_epoch
        )
        self.recent_throttles: list[float] = []
        self.banned_until = 0.0
        self.moves = 0  # POST /_demo/move: answers moved by hand

    def version(self, symbol: str, now: float) -> int:
        """Which answer a symbol has now: 0 until answers first move, then one more each time
        its turn comes (a `move_share` of the symbols per move, spread by `phase`)."""
        c = self.config
        moves = self.moves
        if c.move_every is not None:
            moves += math.floor((now - self.stats.started) / c.move_every)
        return math.floor(moves * c.move_share + phase(symbol))

    def _latency(self) -> float:
        c = self.config
        if c.latency_median <= 0:
            return 0.0
        return c.latency_median * math.exp(c.latency_sigma * self.rng.gauss(0.0, 1.0))

    def _ietf_policy(self) -> tuple[int, int] | None:
        """The draft's quota policy (q per w whole seconds), true to the configured rate.

        A bucket's own window (burst / rate) is often under a second, which w cannot say, so
        buckets state their rate over a whole second (or their burst's worth of seconds);
        window limiters state their own (None: the limiter's figures).
        """
        c = self.config
        if c.rate_limit is None or c.limiter in ("fixed-window", "sliding-window"):
            return None
        window = max(1, math.ceil(c.burst / c.rate_limit))
        return round(c.rate_limit * window), window

    def _hint_headers(self, decision: Any, throttled: bool) -> dict[str, str]:
        return hint_headers(
            decision,
            self.style,
            throttled=throttled,
            wall_now=time.time(),
            policy=self._ietf_policy(),
        )

    def _note_throttle(self, now: float) -> None:
        """Count a 429; too many in a minute earn a ban, when the upstream is set to ban."""
        self.stats.throttled += 1
        if self.config.ban_after is None:
            return
        self.recent_throttles = [t for t in self.recent_throttles if t > now - 60.0]
        self.recent_throttles.append(now)
        if len(self.recent_throttles) >= self.config.ban_after:
            self.banned_until = now + self.config.ban_seconds
            self.recent_throttles.clear()

    def _in_outage(self, now: float) -> bool:
        """Whether the upstream is down at `now`.

        The window opens relative to the first request rather than to the start of the process:
        a benchmark starts the server, then the scan, and the outage must fall inside the scan.
        """
        if self.config.outage is None:
            return False
        elapsed = now - self.stats.started
        if self.stats.outage is None:
            start, duration = self.config.outage
            self.stats.outage = (elapsed + start, elapsed + start + duration)
        opens, closes = self.stats.outage
        return opens <= elapsed < closes

    def _outage_answer(self) -> Response:
        """Down: drop the connection mid-answer, or 503 without Retry-After (no one knows when)."""
        self.stats.faults["outage"] += 1
        if self.config.outage_mode == "503":
            return self._answer(503, {"detail": "Service unavailable"})
        self.stats.by_status[200] += 1
        return DroppedConnection()  # type: ignore[return-value]

    async def handle(self, request: Request, build: Any) -> Response:
        c, stats = self.config, self.stats
        now = self.clock()
        stats.requests += 1
        stats.per_second[int(now - stats.started)] += 1

        if self._in_outage(now):
            return self._outage_answer()
        if now < self.banned_until:
            stats.banned += 1
            if len(stats.banned_at) < 1000:
                stats.banned_at.append(now - stats.started)
            wait = str(math.ceil(self.banned_until - now))
            return self._answer(
                418, {"detail": "IP banned for too many requests"}, {"Retry-After": wait}
            )
        if c.require_key is not None and request.headers.get("x-api-key") != c.require_key:
            return self._answer(401, {"detail": "Invalid or missing API key"})

        decision = self.limiter.admit(now)
        if not decision.allowed:
            self._note_throttle(now)
            if len(stats.throttled_at) < 1000:
                stats.throttled_at.append((now - stats.started, request.url.path))
            headers = self._hint_headers(decision, throttled=True)
            return self._answer(429, {"detail": "Too many requests"}, headers)
        headers = self._hint_headers(decision, throttled=False)

        latency = decision.delay + self._latency()
        fault = self._draw_fault()
        if fault == "hang":
            latency += c.hang_seconds
        stats.latency_sum += latency
        stats.latency_max = max(stats.latency_max, latency)
        if latency > 0:
            await anyio.sleep(latency)

        symbol = request.path_params["symbol"].upper()
        if fault == "error":
            return self._answer(500, {"detail": f"Analysis failed for {symbol}"}, headers)
        if fault == "unavailable":
            return self._answer(503, {"detail": "Service temporarily unavailable"}, headers)
        if fault == "drop":
            stats.by_status[200] += 1
            return DroppedConnection()  # type: ignore[return-value]
        if is_unknown(symbol):
            return self._answer(404, {"detail": f"No data for {symbol}"}, headers)
        if fault == "html":
            stats.by_status[200] += 1
            html = "<html><body><h1>502 Bad Gateway</h1></body></html>"
            return Response(html, 200, headers, media_type="text/html")
        payload: Payload = build(symbol, self.version(symbol, now))
        if fault == "truncated":
            stats.by_status[200] += 1
            body = json.dumps(payload).encode()
            return Response(body[: len(body) // 2], 200, headers, media_type="application/json")
        stats.ok += 1
        return self._answer(200, payload, headers)

    def _draw_fault(self) -> str | None:
        c = self.config
        draw = self.rng.random()
        for name, share in (
            ("error", c.error_rate),
            ("unavailable", c.unavailable_rate),
            ("hang", c.hang_rate),
            ("drop", c.drop_rate),
            ("html", c.html_rate),
            ("truncated", c.truncated_rate),
        ):
            if draw < share:
                self.stats.faults[name] += 1
                return name
            draw -= share
        return None

    def _answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
        self.stats.by_status[status] += 1
        return JSONResponse(body, status, headers)


def build_app(config: DemoConfig, clock: Callable[[], float] = time.monotonic) -> Starlette:
    """The ASGI app for a config; its state is at `app.state.upstream`."""
    upstream = DemoUpstream(config, clock)

    def endpoint(build: Any) -> Any:
        async def route(request: Request) -> Response:
            return await upstream.handle(request, build)

        return route

    async def stats(request: Request) -> Response:
        return JSONResponse(upstream.stats.as_dict(upstream.clock()))

    async def move(request: Request) -> Response:
        upstream.moves += 1
        return JSONResponse({"moves": upstream.moves})

    routes = [Route(path, endpoint(build)) for path, build in ROUTES.items()]
    routes.append(Route("/_demo/stats", stats))
    routes.append(Route("/_demo/move", move, methods=["POST"]))
    app = Starlette(routes=routes)
    app.state.upstream = upstream
    return app


class _QuietDrops(logging.Filter):
    """Dropped connections are on purpose here: keep their tracebacks out of the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Exception in ASGI application")


def serve(listen: Listen, config: DemoConfig) -> int:
    """Run the simulated upstream until interrupted (`scanctl demo-api` parses its options)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in listen.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((listen.host, listen.port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot bind {listen.host}:{listen.port}: {exc.strerror}") from None
    sock.listen(2048)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"http://{shown}:{port}", flush=True)
    limit = f"{config.rate_limit} req/s {config.limiter}" if config.rate_limit else "no limit"
    print(
        f"scanctl: demo-api serving on http://{shown}:{port} ({limit}, median latency "
        f"{config.latency_median} s); Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
    server = uvicorn.Server(
        uvicorn.Config(
            build_app(config),
            log_level="warning",
            access_log=False,
            backlog=2048,
            timeout_graceful_shutdown=1,
            timeout_keep_alive=30,
        )
    )
    server.run(sockets=[sock])
    return 0
