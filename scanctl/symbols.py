"""Reading symbol lists: arguments, a file, or stdin, validated before anything is sent.

A symbol ends up as a URL path segment, so only `[A-Za-z0-9._-]{1,32}` with at least one letter
or digit is accepted (`.` and `..` would be dot-segments that climb out of the endpoint's path).
Input may be one symbol per line, or separated by commas and whitespace; blank lines and `#`
comments are skipped. Symbols are upper-cased and de-duplicated, keeping first-seen order.

Files and stdin are untrusted bytes, so they are read in chunks and decoded as UTF-8 here (a
leading byte-order mark is dropped; any other undecodable byte becomes U+FFFD), whatever the
locale would make of stdin: a binary file, NUL bytes or Latin-1 text fail validation on their
own line with a one-line message (or are skipped with --skip-invalid) instead of crashing in a
decoder. A token longer than any symbol is kept only as far as it can be shown, so one
gigabyte-long line costs no more memory than a short one.
"""

from __future__ import annotations

import codecs
import hashlib
import itertools
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TextIO

from scanctl.errors import SymbolError, UsageError

SYMBOL_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,32}")
STDIN = "-"
# Line breaks are those of str.splitlines, so line numbers match what editors and `sed -n` show.
_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
# One piece of input: a line break, a comment up to the end of its line, or a token (whatever lies
# between separators: whitespace and commas).
_PIECES = re.compile(rf"\r\n|[{_BREAKS}]|#[^{_BREAKS}]*|[^\s,#]+")
# A carried-over token longer than this is invalid whatever follows; this much is enough to show.
_KEPT = 64
_CHUNK = 64 * 1024
_REPLACEMENT = "\ufffd"


@dataclass(frozen=True, slots=True)
class InvalidSymbol:
    """A token that was skipped, and where it came from."""

    source: str
    line: int
    text: str


@dataclass(slots=True)
class SymbolList:
    """The symbols to scan, in order, plus what was dropped on the way."""

    symbols: list[str] = field(default_factory=list)
    invalid: list[InvalidSymbol] = field(default_factory=list)
    duplicates: int = 0


def is_valid_symbol(token: str) -> bool:
    """True when the token is safe to put in a URL path as one segment."""
    return SYMBOL_PATTERN.fullmatch(token) is not None and any(c.isalnum() for c in token)


def _shown(token: str) -> str:
    """A short, printable rendering of a bad token for a one-line message."""
    text = token if len(token) <= 40 else token[:37] + "..."
    return repr(text)


def tokens_from_text(chunks: Iterable[str]) -> Iterator[tuple[int, str]]:
    """Yield (line number, token) pairs from text arriving in chunks, skipping blanks and comments.

    A piece that reaches the end of a chunk may go on in the next one, so it is carried over: a
    token cut to `_KEPT` characters, a comment as just `#`, so what is held stays small however
    long the line. Tokens are yielded cut the same way: past 32 characters one is invalid anyway,
    and the rest would only be shown as "...".
    """
    line = 1
    carry = ""
    for chunk in itertools.chain(chunks, [None]):
        final = chunk is None
        text = carry + (chunk or "")
        carry = ""
        for match in _PIECES.finditer(text):
            piece = match.group()
            if not final and match.end() == len(text):
                carry = "#" if piece.startswith("#") else piece[:_KEPT]
                break
            if piece[0] in _BREAKS:
                line += 1
            elif piece[0] != "#":
                yield line, piece[:_KEPT]


def _decoded(read: Callable[[int], bytes], label: str) -> Iterator[str]:
    """UTF-8 text from a byte reader, chunk by chunk, without a leading byte-order mark; a read
    error is the user's usage error.

    Not the "utf-8-sig" codec: its incremental decoder drops a lone b"\xef" (a BOM cut short)
    at the end of the input instead of turning it into U+FFFD.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    at_start = True
    while True:
        try:
            data = read(_CHUNK)
        except (OSError, ValueError) as exc:  # EIO, EISDIR, a closed stream...
            raise UsageError(f"cannot read {label}: {_reason(exc)}") from None
        text = decoder.decode(data, final=not data)
        if at_start and text:
            text, at_start = text.removeprefix("\ufeff"), False
        yield text
        if not data:
            return


def _text(read: Callable[[int], str], label: str) -> Iterator[str]:
    """Chunks of a text stream that has no bytes underneath (a StringIO)."""
    while True:
        try:
            data = read(_CHUNK)
        except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            raise UsageError(f"cannot read {label}: {_reason(exc)}") from None
        if not data:
            return
        yield data


def _undecodable(token: str) -> bool:
    """True when bad bytes made this token: U+FFFD from our decoder, or the lone surrogates of
    Python's surrogateescape (how undecodable bytes in command-line arguments arrive)."""
    return any(c == _REPLACEMENT or "\ud800" <= c <= "\udfff" for c in token)


def _reason(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _stdin_chunks(stdin: TextIO | None) -> Iterator[str]:
    """Standard input (`stdin`, else sys.stdin), decoded by us from its bytes when it has them.

    sys.stdin is None when the process was started with it closed (`scanctl ... <&-`).
    """
    stream: TextIO | None = stdin if stdin is not None else sys.stdin
    if stream is None:
        raise UsageError("-f -: standard input is closed; there are no symbols to read")
    binary = getattr(stream, "buffer", None)
    if binary is not None:
        return _decoded(binary.read, "standard input")
    return _text(stream.read, "standard input")


def _file_chunks(file: str) -> Iterator[str]:
    """The symbols file's text, read and decoded chunk by chunk."""
    label = f"symbols file {file!r}"
    try:
        handle = open(file, "rb")  # noqa: SIM115 (closed below, once read)
    except IsADirectoryError:
        raise UsageError(f"cannot read {label}: it is a directory") from None
    except OSError as exc:
        raise UsageError(f"cannot read {label}: {_reason(exc)}") from None
    except ValueError:  # a NUL byte in the name: no such file can exist
        raise UsageError(f"cannot read {label}: a file name cannot hold a NUL byte") from None
    with handle:
        yield from _decoded(handle.read, label)


def collect_symbols(
    arguments: Iterable[str],
    file: str | None,
    *,
    skip_invalid: bool = False,
    stdin: TextIO | None = None,
) -> SymbolList:
    """Gather, validate, normalise and de-duplicate symbols from arguments and an optional file.

    Raises UsageError when the file cannot be read or holds no symbols, and SymbolError naming
    the source and line of the first invalid symbol unless `skip_invalid` is set.
    """
    result = SymbolList()
    seen: set[str] = set()

    def add(source: str, pairs: Iterable[tuple[int, str]]) -> None:
        for line, token in pairs:
            if not is_valid_symbol(token):
                if not skip_invalid:
                    why = " (bytes that are not UTF-8 text)" if _undecodable(token) else ""
                    raise SymbolError(
                        f"{source}:{line}: invalid symbol {_shown(token)}{why} "
                        "(allowed: 1-32 of A-Z a-z 0-9 . _ -, with a letter or digit); "
                        "use --skip-invalid to skip such lines"
                    )
                result.invalid.append(InvalidSymbol(source, line, token))
                continue
            symbol = token.upper()
            if symbol in seen:
                result.duplicates += 1
                continue
            seen.add(symbol)
            result.symbols.append(symbol)

    arguments = list(arguments)
    # Arguments may themselves be comma-separated ("BTC,ETH"); each counts as its own "line".
    add(
        "argument",
        ((i, tok) for i, arg in enumerate(arguments, 1) for _, tok in tokens_from_text([arg])),
    )

    if file is not None:
        before = len(result.symbols) + len(result.invalid) + result.duplicates
        if file == STDIN:
            add("<stdin>", tokens_from_text(_stdin_chunks(stdin)))
            label = "standard input"
        else:
            add(file, tokens_from_text(_file_chunks(file)))
            label = f"symbols file {file!r}"
        if len(result.symbols) + len(result.invalid) + result.duplicates == before:
            raise UsageError(f"{label} holds no symbols (only blank lines or # comments)")
    elif not arguments:
        raise UsageError("no symbols: give them as arguments, with -f FILE, or with -f - for stdin")

    if not result.symbols:
        raise UsageError("no valid symbols left to scan")
    return result


@dataclass(frozen=True, slots=True)
class Shard:
    """One N-th of a symbol list (`--shard K/N`, K from 1): N machines split one list with no
    coordinator, each taking the symbols whose stable hash falls in its part."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, symbol: str) -> bool:
        """Whether `symbol` (normalised) is this shard's.

        SHA-256 of the symbol, not Python's `hash`, which is salted per process: every machine,
        Python version and run must put a symbol in the same shard.
        """
        digest = hashlib.sha256(symbol.encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index - 1


def parse_shard(text: str) -> Shard:
    """`K/N` with 1 <= K <= N, or a usage error."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise UsageError(f"bad --shard {text!r}: expected K/N with 1 <= K <= N, e.g. 2/4")
    return Shard(int(match.group(1)), int(match.group(2)))


def take_shard(found: SymbolList, shard: Shard) -> SymbolList:
    """The symbols of `found` that are `shard`'s, in their order (the rest are another's)."""
    found.symbols = [symbol for symbol in found.symbols if shard.holds(symbol)]
    return found
