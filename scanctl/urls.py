"""Each symbol's request URL, as the `httpx.URL` a request needs, built cheaply.

`httpx.URL(text)` checks every character and normalises every part of the text: ~10 µs in a
tight loop and ~25 µs inside a scan (a run with a null client: 101 -> 74 µs of scanctl's own work
a symbol), the largest single cost of that work. From one symbol to the next only the path
changes, and it is already percent-encoded here (`EndpointType.path_for`), so `RequestUrls`
parses the base URL once and builds each URL from its parsed parts with the path and query
put in.

That reaches into `httpx.URL`'s parsed form (`_uri_reference`, a NamedTuple) which httpx does
not promise to keep. So the first URL is built both ways and compared, part by part; on any
difference (an httpx whose URL is built otherwise, a path template that httpx would normalise)
every URL is parsed from its text instead, as before.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import httpx

from scanctl.config import EndpointType


class RequestUrls:
    """`urls(symbol)`: the request URL for a symbol of one endpoint on one upstream."""

    def __init__(self, base_url: str, endpoint: EndpointType) -> None:
        self._base = base_url.rstrip("/")
        self._endpoint = endpoint
        self._query = urlencode(endpoint.params) if endpoint.params else None
        self._parts: Any = None  # the base URL's parsed parts, once the first URL checked out
        self._checked = False

    def text(self, symbol: str) -> str:
        """The URL as text: the base, the endpoint's path for the symbol, its params."""
        url = self._base + self._endpoint.path_for(symbol)
        if self._query:
            url += ("&" if "?" in url else "?") + self._query
        return url

    def __call__(self, symbol: str) -> httpx.URL:
        if self._parts is not None:
            return self._built(self._parts, symbol)
        parsed = httpx.URL(self.text(symbol))
        if not self._checked:
            self._checked = True
            self._parts = self._parts_if_equivalent(parsed, symbol)
        return parsed

    def _built(self, parts: Any, symbol: str) -> httpx.URL:
        """The URL from the base URL's parsed `parts`, with the symbol's path and the query."""
        url = httpx.URL.__new__(httpx.URL)
        url._uri_reference = parts._replace(
            path=parts.path + self._endpoint.path_for(symbol), query=self._query
        )
        return url

    def _parts_if_equivalent(self, parsed: httpx.URL, symbol: str) -> Any:
        """The base URL's parsed parts when building from them gives exactly `parsed`."""
        try:
            parts = httpx.URL(self._base)._uri_reference
            built = self._built(parts, symbol)
            same = (
                built._uri_reference == parsed._uri_reference
                and str(built) == str(parsed)
                and built.raw_path == parsed.raw_path
            )
        except (AttributeError, TypeError, ValueError):
            return None
        return parts if same else None
