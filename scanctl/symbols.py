"""Reading symbol lists: arguments, a file, or stdin, validated before anything is sent.

A symbol ends up as a URL path segment, so only `[A-Za-z0-9._-]{1,32}` with at least one letter
or digit is accepted (`.` and `..` would be dot-segments that climb out of the endpoint's path).
Input may be one symbol per line, or separated by commas and whitespace; blank lines and `#`
comments are skipped. Symbols are upper-cased and de-duplicated, keeping first-seen order.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from scanctl.errors import SymbolError, UsageError

SYMBOL_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,32}")
_SEPARATORS = re.compile(r"[\s,]+")
STDIN = "-"


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


def tokens_from_lines(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """Yield (line number, token) pairs, skipping blanks and comments."""
    for number, line in enumerate(lines, start=1):
        content = line.split("#", 1)[0]
        for token in _SEPARATORS.split(content.strip()):
            if token:
                yield number, token


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
                    raise SymbolError(
                        f"{source}:{line}: invalid symbol {_shown(token)} "
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
        ((i, tok) for i, arg in enumerate(arguments, 1) for _, tok in tokens_from_lines([arg])),
    )

    if file is not None:
        before = len(result.symbols) + len(result.invalid) + result.duplicates
        if file == STDIN:
            add("<stdin>", tokens_from_lines(stdin if stdin is not None else sys.stdin))
            label = "standard input"
        else:
            add(file, tokens_from_lines(_read_lines(file)))
            label = f"symbols file {file!r}"
        if len(result.symbols) + len(result.invalid) + result.duplicates == before:
            raise UsageError(f"{label} holds no symbols (only blank lines or # comments)")
    elif not arguments:
        raise UsageError("no symbols: give them as arguments, with -f FILE, or with -f - for stdin")

    if not result.symbols:
        raise UsageError("no valid symbols left to scan")
    return result


def _read_lines(file: str) -> list[str]:
    """The file's lines; undecodable bytes become U+FFFD and then fail validation by line."""
    path = Path(file)
    try:
        if path.is_dir():
            raise UsageError(f"cannot read symbols file {file!r}: it is a directory")
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read symbols file {file!r}: {exc.strerror or exc}") from None
