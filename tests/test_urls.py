"""Request URLs built from the parsed base are the URLs httpx would have parsed from the text."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scanctl.config import EndpointType
from scanctl.urls import RequestUrls

SYMBOLS = st.from_regex(r"[A-Za-z0-9._-]{0,31}[A-Za-z0-9]", fullmatch=True)


def endpoint(path: str = "/mss/analyze/{symbol}", **params: str) -> EndpointType:
    return EndpointType("mss", path, 600.0, params=params)


def same(url: httpx.URL, text: str) -> bool:
    parsed = httpx.URL(text)
    return (
        url == parsed
        and str(url) == str(parsed)
        and url.raw_path == parsed.raw_path
        and (url.host, url.port, url.scheme, url.userinfo)
        == (parsed.host, parsed.port, parsed.scheme, parsed.userinfo)
        and url.params == parsed.params
    )


@pytest.mark.parametrize(
    "base",
    [
        "http://127.0.0.1:8000",
        "https://api.example.com/v2/",
        "http://user:secret@localhost:9000/prefix",
        "http://[::1]:8080",
        "https://EXAMPLE.com",
    ],
)
@pytest.mark.parametrize("params", [{}, {"send_alert": "false"}, {"a b": "c&d=é", "x": "1+1"}])
@given(symbols=st.lists(SYMBOLS, min_size=2, max_size=5))
def test_built_urls_equal_parsed_ones(
    base: str, params: dict[str, str], symbols: list[str]
) -> None:
    urls = RequestUrls(base, endpoint(**params))
    for symbol in symbols:
        assert same(urls(symbol), urls.text(symbol)), (base, params, symbol)
    assert urls._parts is not None  # after the first URL, the rest were built, not parsed


def test_a_template_httpx_would_rewrite_falls_back_to_parsing() -> None:
    # A query in the path template (not something a profile allows): the built URL would
    # differ from the parsed one, so every URL is parsed.
    urls = RequestUrls("http://localhost:8000", endpoint("/q/{symbol}?x=1", y="2"))
    for symbol in ("BTC", "ETH", "1INCH"):
        assert same(urls(symbol), urls.text(symbol))
        assert str(urls(symbol)).endswith(f"/q/{symbol}?x=1&y=2")
    assert urls._parts is None
