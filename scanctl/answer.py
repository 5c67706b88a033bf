"""An HTTP answer as the engine reads it: status, headers, and a body read up to --max-body.

Every fetcher (`fetch.Fetcher`) returns one: `fetch.HttpxFetcher` from httpx's streamed
response, `transport.AiohttpFetcher` straight from aiohttp when httpx has nothing to do for the
request. Both read the body with `read_capped`, so the limit means the same on either.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from typing import NamedTuple

from scanctl.failures import TooLarge


class Answer(NamedTuple):
    status: int
    headers: Mapping[str, str]  # looked up case-insensitively
    body: bytes


class AnswerHeaders(dict[str, str]):
    """Response headers by lower-case name, repeated names joined with ", " (as httpx does).

    Built once per answer from the raw byte pairs: the classifier and the hint parsers look up
    a dozen names per answer, and httpx.Headers decodes and scans every header on each lookup.
    """

    @classmethod
    def from_raw(cls, raw: Iterable[tuple[bytes, bytes]]) -> AnswerHeaders:
        """Decoded as httpx decodes them: UTF-8 when every header is UTF-8, else Latin-1."""
        pairs = list(raw)
        try:
            return cls._decoded(pairs, "utf-8")
        except UnicodeDecodeError:
            return cls._decoded(pairs, "latin-1")

    @classmethod
    def _decoded(cls, pairs: list[tuple[bytes, bytes]], encoding: str) -> AnswerHeaders:
        headers = cls()
        for key, value in pairs:
            name, text = key.decode(encoding).lower(), value.decode(encoding)
            seen = dict.get(headers, name)
            dict.__setitem__(headers, name, text if seen is None else f"{seen}, {text}")
        return headers

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return dict.get(self, key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, key.lower())


async def read_capped(
    status: int, headers: Mapping[str, str], chunks: AsyncIterator[bytes], limit: int
) -> bytes:
    """The whole body, or TooLarge as soon as it is known to pass `limit` bytes.

    A declared Content-Length over the limit fails before reading; otherwise the chunks (decoded,
    so a small gzip bomb counts at its real size) are counted as they arrive, and the caller
    drops the connection rather than read the rest.
    """
    declared = headers.get("content-length") or ""
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(status, limit)
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise TooLarge(status, limit)
        parts.append(chunk)
    return b"".join(parts)
