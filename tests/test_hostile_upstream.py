"""A hostile upstream: each trick fails its own symbol with a clear error, none crash the scan.

The server is raw asyncio on a loopback port, so it can send what no framework would: bodies
far larger than declared, endless chunks, a trickle of bytes, broken gzip, bad UTF-8.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from scanctl.answer import AnswerHeaders
from scanctl.cli import app
from scanctl.failures import TooLarge
from scanctl.transport import AiohttpTransport, DirectClient

OK_BODY = json.dumps({"score": 1}).encode()


def head(status: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def answer(symbol: str, writer: asyncio.StreamWriter, port: int, request: bytes) -> None:
    def whole(body: bytes, status: str = "200 OK", **extra: str) -> bytes:
        headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), **extra}
        return head(status, headers) + body

    if symbol == "OK":
        writer.write(whole(OK_BODY))
    elif symbol == "ECHO":  # the request's header names, lower-cased
        lines = request.decode("latin-1").split("\r\n")[1:]
        names = sorted(line.split(":", 1)[0].lower() for line in lines if ":" in line)
        writer.write(whole(json.dumps(names).encode()))
    elif symbol == "GZIPOK":
        writer.write(whole(gzip.compress(OK_BODY), **{"Content-Encoding": "gzip"}))
    elif symbol == "CHUNKEDOK":  # no Content-Length: the body's length is learned by reading it
        writer.write(head("200 OK", {"Transfer-Encoding": "chunked", "X-Dup": "a"}))
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(OK_BODY), OK_BODY))
    elif symbol == "MULTI":  # one header name twice
        writer.write(
            head("200 OK", {"Content-Length": str(len(OK_BODY))}).replace(
                b"\r\n\r\n", b"\r\nX-Dup: a\r\nx-dup: b\r\n\r\n"
            )
            + OK_BODY
        )
    elif symbol == "SETCOOKIE":
        writer.write(whole(OK_BODY, **{"Set-Cookie": "session=s1; Path=/"}))
    elif symbol == "COOKIES":  # the Cookie headers the request carried
        lines = request.decode("latin-1").split("\r\n")[1:]
        cookies = [
            line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("cookie:")
        ]
        writer.write(whole(json.dumps(cookies).encode()))
    elif symbol == "AUTHS":  # the credentials the request carried, to the server or a proxy
        lines = request.decode("latin-1").split("\r\n")[1:]
        wanted = ("authorization:", "proxy-authorization:")
        seen = {
            line.split(":", 1)[0].lower(): line.split(":", 1)[1].strip()
            for line in lines
            if line.lower().startswith(wanted)
        }
        target = request.split(b" ", 2)[1].decode()
        writer.write(whole(json.dumps({"target": target, **seen}).encode()))
    elif symbol == "ELSEWHERE":  # another origin: same server, other host name
        where = f"http://localhost:{port}/smart-money/analyze/ECHO"
        writer.write(whole(b"", "302 Found", Location=where))
    elif symbol == "DECLAREDHUGE":  # says 50 MB, and would send it: refused unread
        writer.write(head("200 OK", {"Content-Length": str(50 * 1024 * 1024)}))
        writer.write(b"[" * 1000)
    elif symbol == "ENDLESS":  # chunked, never ends
        writer.write(head("200 OK", {"Transfer-Encoding": "chunked"}))
        chunk = b"x" * 65536
        for _ in range(200):
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
    elif symbol == "TRICKLE":  # one byte at a time, slower than the deadline allows
        writer.write(head("200 OK", {"Content-Length": "1000"}))
        for _ in range(1000):
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.05)
    elif symbol == "BADUTF8":
        writer.write(whole(b'{"name": "\xff\xfe\xfa"}'))
    elif symbol == "DEEP":
        writer.write(whole(b"[" * 100_000 + b"]" * 100_000))
    elif symbol == "HUGENUMBER":
        writer.write(whole(b'{"n": ' + b"9" * 100_000 + b"}"))
    elif symbol == "BADGZIP":
        writer.write(whole(b"\x1f\x8b garbage, not gzip", **{"Content-Encoding": "gzip"}))
    elif symbol == "GZIPBOMB":  # small on the wire, far over the limit once inflated
        writer.write(
            whole(gzip.compress(b"[" + b"0," * 3_000_000 + b"0]"), **{"Content-Encoding": "gzip"})
        )
    elif symbol == "AWAY":  # a redirect to another host
        writer.write(whole(b"", "302 Found", Location="http://elsewhere.invalid/steal"))
    elif symbol == "HOME":  # a redirect on the same server
        path = "/smart-money/analyze/OK"
        writer.write(whole(b"", "301 Moved Permanently", Location=f"http://127.0.0.1:{port}{path}"))
    elif symbol == "LOOP":
        writer.write(
            whole(b"", "302 Found", Location=f"http://127.0.0.1:{port}/smart-money/analyze/LOOP")
        )
    else:
        writer.write(whole(b'{"detail": "no"}', "404 Not Found"))


class HostileServer:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                first = await reader.readexactly(1)
                if first == b"\x16":  # a TLS handshake: answer as a plain HTTP server would
                    writer.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                    await writer.drain()
                    return
                request = first + await reader.readuntil(b"\r\n\r\n")
                path = request.split(b" ", 2)[1].decode()
                symbol = path.split("?")[0].rsplit("/", 1)[-1]
                await answer(symbol, writer, self.port, request)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def hostile() -> Iterator[str]:
    server = HostileServer()
    yield f"http://127.0.0.1:{server.port}"
    server.stop()


def scan(url: str, *symbols: str, extra: tuple[str, ...] = ()) -> tuple[int, dict[str, dict], str]:  # type: ignore[type-arg]
    result = CliRunner().invoke(
        app,
        [
            "scan",
            *symbols,
            "--base-url",
            url,
            "-F",
            "jsonl",
            "--no-cache",
            "--retries",
            "0",
            "--timeout",
            "2",
            "--max-body",
            "1M",
            *extra,
        ],
    )
    records = {r["symbol"]: r for r in map(json.loads, result.stdout.splitlines())}
    return result.exit_code, records, result.stderr


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_a_cookie_an_answer_sets_is_sent_back_once(hostile: str, transport: str) -> None:
    extra = ("--concurrency", "1", "--transport", transport)
    # By name: aiohttp's own jar ignores cookies from a bare IP address.
    by_name = hostile.replace("127.0.0.1", "localhost")
    code, records, stderr = scan(by_name, "SETCOOKIE", "COOKIES", extra=extra)
    assert code == 0, stderr
    assert records["COOKIES"]["data"] == ["session=s1"]


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
@pytest.mark.parametrize("follow", [False, True])
def test_credentials_in_the_base_url_become_basic_auth(
    hostile: str, transport: str, follow: bool
) -> None:
    with_user = hostile.replace("http://", "http://u:p@")
    extra = ("--transport", transport, *(["--follow-redirects"] if follow else []))
    code, records, stderr = scan(with_user, "AUTHS", extra=extra)
    assert code == 0, stderr
    assert records["AUTHS"]["data"]["authorization"] == "Basic dTpw"  # base64("u:p")


def test_a_proxy_from_the_environment_gets_its_credentials(hostile: str) -> None:
    """--transport aiohttp through HTTP_PROXY=http://user:password@proxy (here the hostile
    server plays the proxy): the request goes to the proxy, with Proxy-Authorization."""
    env = {"HTTP_PROXY": hostile.replace("http://", "http://pu:pp@"), "NO_PROXY": ""}
    result = CliRunner().invoke(
        app,
        [
            *("scan", "AUTHS", "--base-url", "http://upstream.invalid", "-F", "jsonl"),
            *("--no-cache", "--retries", "0", "--transport", "aiohttp"),
        ],
        env=env,
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)["data"]
    assert data["target"].startswith("http://upstream.invalid/")  # asked as a proxy
    assert data["proxy-authorization"] == "Basic cHU6cHA="  # base64("pu:pp")


def test_every_trick_fails_only_its_own_symbol_with_a_clear_error(hostile: str) -> None:
    tricks = [
        "OK",
        "DECLAREDHUGE",
        "ENDLESS",
        "TRICKLE",
        "BADUTF8",
        "DEEP",
        "HUGENUMBER",
        "BADGZIP",
        "GZIPBOMB",
        "AWAY",
        "LOOP",
    ]
    code, records, stderr = scan(hostile, *tricks)
    assert code == 3, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr
    assert set(records) == set(tricks)
    assert records["OK"]["ok"] and records["OK"]["data"] == {"score": 1}
    errors = {s: r["error"] for s, r in records.items() if not r["ok"]}
    assert errors["DECLAREDHUGE"].startswith("Response too large: over 1048576 bytes")
    assert errors["ENDLESS"].startswith("Response too large")
    assert errors["GZIPBOMB"].startswith("Response too large")
    assert errors["TRICKLE"] == "Request timeout"
    assert errors["BADUTF8"].startswith("Invalid JSON") and "UTF-8" in errors["BADUTF8"]
    assert errors["DEEP"].startswith("Invalid JSON")
    assert errors["HUGENUMBER"].startswith("Invalid JSON")
    assert errors["BADGZIP"].startswith("Undecodable answer")
    assert errors["AWAY"] == "HTTP 302: redirect to http://elsewhere.invalid/steal not followed"
    assert errors["LOOP"].startswith("HTTP 302")  # not followed by default either


def test_redirects_are_followed_only_when_asked(hostile: str) -> None:
    _, plain, _ = scan(hostile, "HOME")
    assert not plain["HOME"]["ok"] and "not followed" in plain["HOME"]["error"]
    code, followed, stderr = scan(hostile, "HOME", "LOOP", extra=("--follow-redirects",))
    assert followed["HOME"]["ok"] and followed["HOME"]["data"] == {"score": 1}, stderr
    assert followed["LOOP"]["error"] == "Too many redirects" and code == 3


def test_a_tls_failure_is_a_per_symbol_error(hostile: str) -> None:
    code, records, stderr = scan(hostile.replace("http://", "https://"), "OK", "BADUTF8")
    assert code == 4 and "Traceback" not in stderr
    assert all(r["error"].startswith("TLS error") for r in records.values()), records


def test_a_bad_max_body_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["scan", "BTC", "--max-body", "lots"])
    assert result.exit_code == 2 and "bad --max-body 'lots'" in result.stderr


def test_a_followed_redirect_to_another_origin_carries_none_of_our_headers(
    hostile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCANCTL_API_KEY", "k-123")
    extra = ("--follow-redirects", "-H", "X-Secret: s-456")
    _, records, stderr = scan(hostile, "ECHO", "ELSEWHERE", extra=extra)
    home, away = records["ECHO"]["data"], records["ELSEWHERE"]["data"]
    assert {"x-api-key", "x-secret"} <= set(home), stderr  # sent to the upstream itself
    assert "x-api-key" not in away and "x-secret" not in away and "user-agent" in away


def _direct(**kwargs: object) -> DirectClient:
    limits = httpx.Limits(max_connections=4)
    transport = AiohttpTransport(limits=limits, verify=False)
    return DirectClient(transport=transport, limits=limits, **kwargs)  # type: ignore[arg-type]


LIMIT = 1024 * 1024


@pytest.mark.anyio
@pytest.mark.parametrize(
    "symbol", ["OK", "ECHO", "GZIPOK", "CHUNKEDOK", "MULTI", "SETCOOKIE", "NO"]
)
async def test_the_direct_path_answers_exactly_as_httpx_streaming_does(
    hostile: str, symbol: str
) -> None:
    url = httpx.URL(f"{hostile}/smart-money/analyze/{symbol}")
    headers = {"X-Api-Key": "k", "Accept": "application/json"}
    async with _direct(headers=headers) as direct, httpx.AsyncClient(headers=headers) as plain:
        answer = await direct.fetch_answer("GET", url, LIMIT)
        async with plain.stream("GET", url) as response:
            body = await response.aread()
    assert answer is not None  # taken without httpx's objects
    assert (answer.status, answer.body) == (response.status_code, body)  # ECHO: same headers sent
    for name in ("content-type", "content-encoding", "x-dup", "set-cookie", "absent"):
        assert answer.headers.get(name.upper()) == response.headers.get(name), name


@pytest.mark.anyio
async def test_the_direct_path_leaves_to_httpx_whatever_httpx_has_work_for(hostile: str) -> None:
    def url(symbol: str, base: str = hostile) -> httpx.URL:
        return httpx.URL(f"{base}/smart-money/analyze/{symbol}")

    async with _direct() as client:
        assert await client.fetch_answer("POST", url("OK"), LIMIT) is None
        assert await client.fetch_answer("GET", url("SETCOOKIE"), LIMIT) is not None
        assert client.cookies.get("session") == "s1"  # kept, as httpx keeps them
        assert await client.fetch_answer("GET", url("COOKIES"), LIMIT) is None  # httpx sends it
        userinfo = hostile.replace("http://", "http://u:p@")
        assert await client.fetch_answer("GET", url("OK", userinfo), LIMIT) is None
    for options in ({"follow_redirects": True}, {"auth": ("u", "p")}):
        async with _direct(**options) as client:
            assert await client.fetch_answer("GET", url("OK"), LIMIT) is None
    closed = _direct()
    await closed.aclose()
    assert await closed.fetch_answer("GET", url("OK"), LIMIT) is None  # httpx's send raises


@pytest.mark.anyio
async def test_the_direct_path_stops_reading_at_the_limit_and_the_pool_recovers(
    hostile: str,
) -> None:
    async with _direct() as client:
        for symbol in ("DECLAREDHUGE", "ENDLESS", "GZIPBOMB"):
            url = httpx.URL(f"{hostile}/smart-money/analyze/{symbol}")
            with pytest.raises(TooLarge):
                await client.fetch_answer("GET", url, LIMIT)
        ok = await client.fetch_answer("GET", httpx.URL(f"{hostile}/smart-money/analyze/OK"), LIMIT)
        assert ok is not None and json.loads(ok.body) == {"score": 1}


def test_answer_headers_are_case_insensitive_and_join_repeats_as_httpx_does() -> None:
    raw = [(b"Content-Type", b"application/json"), (b"X-Dup", b"a"), (b"x-dup", b"b")]
    headers = AnswerHeaders.from_raw(raw)
    reference = httpx.Headers(raw)
    for name in ("content-type", "CONTENT-TYPE", "X-Dup", "x-dup", "missing"):
        assert headers.get(name) == reference.get(name)
        assert (name in headers) == (name in reference)
    for location in ("/café".encode(), "/caf\xe9".encode("latin-1")):  # UTF-8, then not
        with_location = [*raw, (b"Location", location)]
        expected = httpx.Headers(with_location).get("location")
        assert AnswerHeaders.from_raw(with_location).get("location") == expected
    assert headers["X-DUP"] == "a, b" and headers.get("missing", "d") == "d"
    with pytest.raises(KeyError):
        headers["missing"]
