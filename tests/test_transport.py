"""Both transports, against the simulated upstream: every failure is classified the same way."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest
from typer.testing import CliRunner

from scanctl.cli import app
from scanctl.config import load_builtin_profile
from scanctl.demo.testing import running_demo_process
from scanctl.engine import ScanSettings
from scanctl.failures import ConnectionRefused
from scanctl.fetch import HttpxFetcher, build_fetcher, chosen_transport
from scanctl.transport import AiohttpFetcher, DirectClient

TRANSPORTS = ("aiohttp", "httpx")


def scan(url: str, transport: str, *args: str) -> tuple[int, list[dict]]:  # type: ignore[type-arg]
    result = CliRunner().invoke(
        app,
        [
            *("scan", *args, "--base-url", url, "-F", "jsonl", "--no-cache"),
            *("--transport", transport, "--retries", "0", "-t", "signals"),
        ],
    )
    return result.exit_code, [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def dropping() -> Iterator[str]:
    with running_demo_process(["--drop-rate", "1", "--latency-median", "0.001"]) as url:
        yield url


@pytest.fixture(scope="module")
def hanging() -> Iterator[str]:
    args = ["--hang-rate", "1", "--hang-seconds", "30", "--latency-median", "0.001"]
    with running_demo_process(args) as url:
        yield url


@pytest.fixture(scope="module")
def healthy() -> Iterator[str]:
    with running_demo_process(["--latency-median", "0.001", "--truncated-rate", "0"]) as url:
        yield url


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_answers_arrive_whole_with_params_and_in_order(healthy: str, transport: str) -> None:
    code, records = scan(healthy, transport, *(f"S{i:03d}" for i in range(60)), "ZZNONE")
    assert code == 3
    by_symbol = {r["symbol"]: r for r in records}
    assert all(by_symbol[f"S{i:03d}"]["ok"] for i in range(60))
    assert by_symbol["S007"]["data"]["symbol"] == "S007"
    assert by_symbol["ZZNONE"]["status"] == 404 and by_symbol["ZZNONE"]["error"].startswith(
        "HTTP 404"
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_dropped_connection_is_a_dropped_connection(dropping: str, transport: str) -> None:
    _, records = scan(dropping, transport, "BTC", "--max-outage", "1")
    assert records[0]["error"].startswith(("Connection dropped", "Not scanned")), records


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_hanging_answer_is_a_timeout(hanging: str, transport: str) -> None:
    _, records = scan(hanging, transport, "BTC", "--timeout", "0.5")
    assert records[0]["error"] == "Request timeout"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_nothing_listening_is_connection_refused(transport: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, records = scan(f"http://127.0.0.1:{port}", transport, "BTC")
    assert code == 4 and records[0]["error"] == "Connection refused"


def test_an_unknown_transport_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["scan", "BTC", "--transport", "carrier-pigeon"])
    assert result.exit_code == 2 and "unknown --transport 'carrier-pigeon'" in result.stderr


def _direct_client(handler: object, **kwargs: object) -> httpx.AsyncClient:
    return DirectClient(transport=httpx.MockTransport(handler), **kwargs)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_the_direct_client_sends_straight_through_and_keeps_cookies() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        headers = {"set-cookie": "session=abc; Path=/"} if len(seen) == 1 else {}
        return httpx.Response(200, headers=headers, json={"n": len(seen)})

    async with _direct_client(handler, headers={"X-Api-Key": "k"}) as client:
        bodies = []
        for _ in range(2):
            async with client.stream("GET", httpx.URL("http://api.test/x?a=1")) as response:
                bodies.append(json.loads(await response.aread()))
                assert response.request is seen[-1]
    assert bodies == [{"n": 1}, {"n": 2}]
    assert [r.headers.get("x-api-key") for r in seen] == ["k", "k"]
    assert "cookie" not in seen[0].headers and seen[1].headers["cookie"] == "session=abc"


@pytest.mark.anyio
async def test_the_direct_client_leaves_redirects_and_auth_to_httpx() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/old":
            return httpx.Response(302, headers={"location": "/new"})
        return httpx.Response(200, json={"auth": request.headers.get("authorization")})

    client = _direct_client(handler, follow_redirects=True, auth=("u", "p"))
    async with client, client.stream("GET", "http://api.test/old") as response:
        body = json.loads(await response.aread())
    assert response.url.path == "/new" and len(response.history) == 1
    assert body["auth"] == "Basic dTpw"  # base64("u:p")


@pytest.mark.parametrize(
    ("env", "chosen"),
    [
        ({}, "aiohttp"),
        ({"HTTPS_PROXY": "https://proxy.test:3128"}, "httpx"),
        ({"http_proxy": "http://proxy.test:3128"}, "httpx"),
        ({"ALL_PROXY": "socks5://proxy.test:1080"}, "httpx"),
    ],
)
def test_auto_leaves_proxied_runs_to_httpx(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], chosen: str
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("all_proxy", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert chosen_transport("auto") == chosen
    assert chosen_transport("aiohttp") == "aiohttp" and chosen_transport("httpx") == "httpx"


def _settings(base_url: str, transport: str) -> ScanSettings:
    endpoint = load_builtin_profile().endpoint("signals")
    return ScanSettings(endpoint=endpoint, base_url=base_url, transport=transport, timeout=5)


@pytest.mark.parametrize(
    ("transport", "kind"),
    [("auto", AiohttpFetcher), ("aiohttp", AiohttpFetcher), ("httpx", HttpxFetcher)],
)
def test_the_fetcher_is_chosen_in_one_place(
    monkeypatch: pytest.MonkeyPatch, transport: str, kind: type
) -> None:
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    fetcher = build_fetcher(_settings("http://upstream.test", transport))
    assert type(fetcher) is kind


@pytest.mark.anyio
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_each_fetcher_answers_or_raises_a_classified_failure(
    healthy: str, transport: str
) -> None:
    """The seam's contract, on both fetchers over a real socket: an Answer with its body read,
    or a FetchFailure of the right type (never the library's own exception)."""
    fetcher = build_fetcher(_settings(healthy, transport))
    try:
        answer = await fetcher.fetch("GET", httpx.URL(f"{healthy}/signals/BTC"))
    finally:
        await fetcher.aclose()
    assert answer.status == 200 and json.loads(answer.body)["symbol"] == "BTC"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    nowhere = f"http://127.0.0.1:{port}"
    fetcher = build_fetcher(_settings(nowhere, transport))
    try:
        with pytest.raises(ConnectionRefused):
            await fetcher.fetch("GET", httpx.URL(f"{nowhere}/signals/BTC"))
    finally:
        await fetcher.aclose()
