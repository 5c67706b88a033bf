"""Hostile input: any bytes as symbols, any answer from the upstream, formulas in CSV cells, and a
full disk. Property tests (hypothesis, bounded) check what must hold for every input; the plain
tests pin the bugs they found."""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import re
import stat
import subprocess
import sys
import tempfile
import threading
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from scanctl.config import load_builtin_profile
from scanctl.demo.testing import running_demo_process
from scanctl.errors import OutputError, SymbolError, UsageError
from scanctl.output import (
    SpecialFileDestination,
    StdoutDestination,
    is_special_file,
    make_writer,
    open_destination,
    write_json_file,
)
from scanctl.records import ScanRecord
from scanctl.retry import (
    MAX_JSON_DEPTH,
    Outcome,
    classify_response,
    parse_retry_after,
)
from scanctl.symbols import collect_symbols, tokens_from_text
from tests.summaries import summary_of

ROOT = Path(__file__).resolve().parent.parent
SCANCTL = [sys.executable, "-m", "scanctl"]
BOUNDED = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- 1a. symbols --------------------------------------------------------------------------------

# Characters that matter to the reader: separators, every kind of line break, comments, NUL, the
# replacement character, a byte-order mark, path and URL syntax, non-ASCII letters.
TRICKY = list("aZ09._-,# \t\r\n\v\f\x1c\x1f\x85\u2028\xa0\x00\ufffd\ufeff/?%é")
tricky_text = st.text(alphabet=st.sampled_from(TRICKY) | st.characters(), max_size=120)
tricky_bytes = st.lists(
    st.binary(max_size=6)
    | st.sampled_from(
        [
            *(b"BTC", b"eth", b"\n", b"\r\n", b"\r", b",", b" ", b"#", b"\x00", b"\xff"),
            *(b"\xc3", b"\xef\xbb\xbf", b"../", b"%2e%2e", b".", b"..", b"a" * 40, "é".encode()),
        ]
    ),
    max_size=40,
).map(b"".join)
SAFE_SYMBOL = re.compile(r"[A-Za-z0-9._-]{1,32}")


def reference_tokens(text: str) -> list[tuple[int, str]]:
    """The reader's rule, written the simple way (whole lines in memory): per line of
    str.splitlines, drop a `#` comment, split on whitespace and commas; tokens cut to 64."""
    return [
        (number, token[:64])
        for number, line in enumerate(text.splitlines(), 1)
        for token in re.split(r"[\s,]+", line.split("#", 1)[0])
        if token
    ]


def safe(token: str) -> bool:
    return SAFE_SYMBOL.fullmatch(token) is not None and re.search("[A-Za-z0-9]", token) is not None


def expected_reading(
    tokens: list[tuple[int, str]], source: str, skip_invalid: bool
) -> list[str] | str:
    """The symbols the reader must return, or the start of the usage error it must raise."""
    if not tokens:
        return "holds no symbols"
    invalid = [number for number, token in tokens if not safe(token)]
    if invalid and not skip_invalid:
        return f"{source}:{invalid[0]}: invalid symbol"
    kept = list(dict.fromkeys(token.upper() for _, token in tokens if safe(token)))
    return kept or "no valid symbols left to scan"


def assert_stays_in_the_template(symbol: str) -> None:
    """The request path is each endpoint's template with exactly one segment filled in."""
    assert re.fullmatch(r"[A-Z0-9._-]{1,32}", symbol) and symbol not in (".", "..")
    for endpoint in load_builtin_profile().types.values():
        before, after = endpoint.path.split("{symbol}")
        path = endpoint.path_for(symbol)
        assert path == before + symbol + after
        segments = path.split("/")
        assert len(segments) == len(endpoint.path.split("/"))
        assert segments[endpoint.path.split("/").index("{symbol}")] == symbol
        assert not set(path) & set("?#%\\") and ".." not in segments and "." not in segments


def check_reading(read: Any, source: str, tokens: list[tuple[int, str]], skip: bool) -> None:
    expected = expected_reading(tokens, source, skip)
    try:
        found = read()
    except UsageError as exc:  # SymbolError is one
        assert isinstance(expected, str), f"refused {exc} but should give {expected}"
        assert expected in str(exc) and "\n" not in str(exc)
        assert isinstance(exc, SymbolError) == ("invalid symbol" in expected)
        return
    assert found.symbols == expected
    for symbol in found.symbols:
        assert_stays_in_the_template(symbol)
    assert all(len(i.text) <= 64 for i in found.invalid)


@BOUNDED
@given(data=tricky_bytes | st.binary(max_size=300), skip=st.booleans())
def test_any_bytes_as_a_symbols_file(data: bytes, skip: bool) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "coins.txt")
        Path(path).write_bytes(data)
        tokens = reference_tokens(data.decode("utf-8-sig", errors="replace"))
        check_reading(lambda: collect_symbols([], path, skip_invalid=skip), path, tokens, skip)


@BOUNDED
@given(data=tricky_bytes | st.binary(max_size=300), skip=st.booleans())
def test_any_bytes_on_a_strict_utf8_stdin(data: bytes, skip: bool) -> None:
    """sys.stdin under a UTF-8 locale decodes strictly; the reader must not depend on that."""
    stdin = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="strict")
    tokens = reference_tokens(data.decode("utf-8-sig", errors="replace"))
    check_reading(
        lambda: collect_symbols([], "-", skip_invalid=skip, stdin=stdin), "<stdin>", tokens, skip
    )


class TrickleStdin:
    """A stdin whose bytes come a few at a time, as from a slow pipe: UTF-8 sequences, a BOM,
    CRLF and tokens get cut between reads."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.buffer = self
        self.data, self.sizes = data, sizes or [1]
        self.reads = 0

    def read(self, limit: int) -> bytes:
        size = min(limit, self.sizes[self.reads % len(self.sizes)])
        self.reads += 1
        piece, self.data = self.data[:size], self.data[size:]
        return piece


@BOUNDED
@given(
    data=tricky_bytes | st.binary(max_size=100),
    sizes=st.lists(st.integers(1, 7), max_size=5),
    skip=st.booleans(),
)
@example(data=b"\xef", sizes=[], skip=False)  # a BOM cut short: utf-8-sig's decoder dropped it
def test_bytes_arriving_a_few_at_a_time(data: bytes, sizes: list[int], skip: bool) -> None:
    stdin: Any = TrickleStdin(data, sizes)
    tokens = reference_tokens(data.decode("utf-8-sig", errors="replace"))
    check_reading(
        lambda: collect_symbols([], "-", skip_invalid=skip, stdin=stdin), "<stdin>", tokens, skip
    )


surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)  # argv's undecodable bytes


@BOUNDED
@given(
    arguments=st.lists(st.text(alphabet=st.sampled_from(TRICKY) | surrogates), max_size=5),
    skip=st.booleans(),
)
def test_any_text_as_arguments(arguments: list[str], skip: bool) -> None:
    tokens = [(i, tok) for i, arg in enumerate(arguments, 1) for _, tok in reference_tokens(arg)]
    if not arguments:
        with pytest.raises(UsageError, match="no symbols"):
            collect_symbols(arguments, None, skip_invalid=skip)
        return
    expected = expected_reading(tokens, "argument", skip)
    if expected == "holds no symbols":  # arguments that hold only blanks and comments
        with pytest.raises(UsageError, match="no valid symbols"):
            collect_symbols(arguments, None, skip_invalid=skip)
        return
    check_reading(
        lambda: collect_symbols(arguments, None, skip_invalid=skip), "argument", tokens, skip
    )


@BOUNDED
@given(pieces=st.lists(tricky_text, max_size=8))
def test_chunk_boundaries_change_nothing(pieces: list[str]) -> None:
    """Text read in chunks (cut anywhere, even inside a token, a comment or a CRLF) yields
    exactly the tokens, and line numbers, of the same text read whole, line by line."""
    assert list(tokens_from_text(pieces)) == reference_tokens("".join(pieces))


def test_tokens_and_crlf_cut_by_chunks_are_joined_again() -> None:
    assert list(tokens_from_text(["bt", "c,e", "th\r", "\nsol #x", "x\r", "ada"])) == [
        (1, "btc"),
        (1, "eth"),
        (2, "sol"),
        (3, "ada"),
    ]


def test_undecodable_bytes_on_a_strict_stdin_are_a_usage_error_not_a_crash() -> None:
    """Found by the property test: sys.stdin under a UTF-8 locale raised UnicodeDecodeError."""
    stdin = io.TextIOWrapper(io.BytesIO(b"BTC\n\xff\xfe\n"), encoding="utf-8", errors="strict")
    with pytest.raises(SymbolError, match=r"<stdin>:2: .*not UTF-8") as info:
        collect_symbols([], "-", stdin=stdin)
    assert "\n" not in str(info.value)
    stdin = io.TextIOWrapper(io.BytesIO(b"BTC\n\xff\xfe\n"), encoding="utf-8", errors="strict")
    found = collect_symbols([], "-", stdin=stdin, skip_invalid=True)
    assert found.symbols == ["BTC"] and [i.line for i in found.invalid] == [2]


def test_undecodable_stdin_through_the_cli_exits_2_in_one_line() -> None:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}  # as under en_US.UTF-8
    result = subprocess.run(
        [*SCANCTL, "scan", "-f", "-", "--base-url", "http://127.0.0.1:9"],
        input=b"BTC\n\xff\xfe\n",
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert (
        stderr.startswith("scanctl: error: <stdin>:2: invalid symbol") and stderr.count("\n") == 1
    )


def test_closed_stdin_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """`scanctl scan -f - <&-` starts with sys.stdin None; it raised TypeError."""
    monkeypatch.setattr(sys, "stdin", None)
    with pytest.raises(UsageError, match="standard input is closed"):
        collect_symbols([], "-")


def test_a_nul_byte_in_the_file_name_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="NUL byte"):
        collect_symbols([], "coins\x00.txt")


def test_a_byte_order_mark_is_not_part_of_the_first_symbol(tmp_path: Path) -> None:
    path = tmp_path / "coins.txt"
    path.write_bytes("BTC\r\nETH\r\n".encode("utf-8-sig"))  # Notepad's "UTF-8 with BOM"
    assert collect_symbols([], str(path)).symbols == ["BTC", "ETH"]


def test_nul_bytes_and_binary_junk_fail_on_their_own_line(tmp_path: Path) -> None:
    path = tmp_path / "coins.txt"
    path.write_bytes(b"BTC\nET\x00H\n")
    with pytest.raises(SymbolError, match=r":2: invalid symbol 'ET\\x00H'"):
        collect_symbols([], str(path))


def test_a_huge_line_is_read_in_bounded_pieces(tmp_path: Path) -> None:
    path = tmp_path / "coins.txt"
    with path.open("wb") as out:
        out.write(b"BTC\n")
        for _ in range(64):  # 4 MiB without a separator: one token
            out.write(b"\x00x" * 32768)
        out.write(b"\neth # fine\n")
    tracemalloc.start()
    try:
        found = collect_symbols([], str(path), skip_invalid=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found.symbols == ["BTC", "ETH"]
    assert [(i.line, len(i.text)) for i in found.invalid] == [(2, 64)]
    assert peak < 1_000_000  # a few 64 KiB chunks, not the 4 MiB token
    with pytest.raises(SymbolError, match=r":2: invalid symbol '\\x00x.*\.\.\.'"):
        collect_symbols([], str(path))


# -- 1b. the outcome classifier -----------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
json_texts = json_values.map(json.dumps)
bodies = st.one_of(
    json_texts.map(str.encode),
    json_texts.flatmap(lambda s: st.integers(0, len(s)).map(lambda i: s[:i].encode())),
    json_texts.flatmap(
        lambda s: st.tuples(
            st.integers(0, len(s)), st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])
        ).map(lambda cut: s[: cut[0]].encode() + cut[1] + s[cut[0] :].encode())
    ),
    st.binary(max_size=200),
    st.integers(1, 3000).map(lambda n: b"[" * n),
    st.integers(1, 400).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 400).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.integers(1, 6000).map(lambda n: b"1" * n),
    st.integers(300, 400).map(lambda n: f"[1e{n}, -2E+{n}, 0.5e-{n}]".encode()),
    st.sampled_from(
        [
            *(b"", b" \n", b"NaN", b"[Infinity]", b'{"a": -Infinity}', b"1e999", b"-1e999"),
            *(b'"\\ud800"', b'{"\\udc00": 1}', b'"\\ud83d\\ude00"', b"\xef\xbb\xbf{}", b"\x00[]"),
            *(b"[" * 100000, b"1" * 100000, b'{"detail": "x\\ny"}', b"\xff\xfe[\x001\x00]\x00"),
        ]
    ),
)
retry_after_values = st.one_of(
    st.text(max_size=40),
    st.integers(-(10**30), 10**30).map(str),
    st.floats().map(repr),
    st.integers(300, 500).map(lambda n: "9" * n),
    st.sampled_from(["nan", "inf", "-inf", "Infinity", "1e999", "-0", "1_0", "٣", " 7 ", "0x10"]),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)).map(
        lambda d: format_datetime(d.replace(tzinfo=UTC), usegmt=True)
    ),
    st.from_regex(
        r"\A(Mon, )?\d{1,12} (Jan|Feb|Xyz) -?\d{1,12} \d{1,3}:\d{1,3}(:\d{1,3})? "
        r"(GMT|UT|EST|[+-]\d{1,25}|-0000)?\Z"
    ),
)
header_lists = st.lists(
    st.tuples(
        st.sampled_from(["retry-after", "location", "content-type", "x-junk"]),
        retry_after_values | st.text(max_size=300),
    ),
    max_size=4,
)


def headers_of(pairs: list[tuple[str, str]]) -> httpx.Headers:
    """Raw header bytes, as they come off the wire (any byte but CR, LF and NUL)."""
    raw = [
        (name.encode(), re.sub(rb"[\r\n\x00]", b"", value.encode("utf-8", "surrogatepass")))
        for name, value in pairs
    ]
    return httpx.Headers(raw)


def strict_json(body: bytes) -> tuple[bool, Any]:
    """Is this body JSON by RFC 8259 (UTF-8, no NaN/Infinity) that can be written back out
    (finite numbers, real Unicode strings) and nested at most MAX_JSON_DEPTH deep?"""

    def refuse(name: str) -> Any:
        raise ValueError(name)

    try:
        value = json.loads(body.decode("utf-8-sig"), parse_constant=refuse)
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):  # UnicodeError and JSONDecodeError are ValueErrors
        return False, None
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, list | dict):
            deepest = max(deepest, depth)
            stack.extend(
                (child, depth + 1) for child in (item.values() if isinstance(item, dict) else item)
            )
    return deepest <= MAX_JSON_DEPTH, value


def expected_outcome(status: int) -> Outcome:
    if status == 429:
        return Outcome.THROTTLED
    if status in (401, 403, 418):
        return Outcome.REFUSED
    if status in (408, 500, 502, 503, 504):
        return Outcome.RETRYABLE
    return Outcome.PERMANENT  # other 1xx, 3xx, 4xx, 5xx (a 2xx depends on the body)


@BOUNDED
@given(
    status=st.integers(100, 599) | st.sampled_from([200, 204, 429, 401, 403, 418, 500, 503]),
    pairs=header_lists,
    body=bodies,
    now=st.floats(0, 1e10),
)
@example(status=200, pairs=[], body=b"[" * 100000, now=0.0)
@example(status=404, pairs=[], body=b"[" * 100000, now=0.0)
@example(status=429, pairs=[("retry-after", "inf")], body=b"", now=0.0)
def test_any_answer_is_classified_without_raising(
    status: int, pairs: list[tuple[str, str]], body: bytes, now: float
) -> None:
    headers = headers_of(pairs)
    verdict = classify_response(status, headers, body, now)
    assert verdict.status == status
    assert verdict.retry_after is None or (
        math.isfinite(verdict.retry_after) and verdict.retry_after >= 0
    )
    if 200 <= status < 300:
        valid, value = strict_json(body)
        if valid:
            assert verdict.outcome is Outcome.OK and verdict.data == value and verdict.error is None
        else:
            assert verdict.outcome is Outcome.PERMANENT and verdict.data is None
            assert verdict.error_kind == "Invalid JSON"
            assert verdict.error is not None
            assert verdict.error.startswith("Invalid JSON in 2xx answer")
        return
    assert verdict.outcome is expected_outcome(status)
    assert verdict.data is None and verdict.error_kind == f"HTTP {status}"
    assert verdict.error is not None and verdict.error.startswith(f"HTTP {status}")
    assert "\n" not in verdict.error and "\r" not in verdict.error and len(verdict.error) < 300
    if verdict.outcome is not Outcome.PERMANENT:
        assert verdict.retry_after == parse_retry_after(headers.get("retry-after"), now)


@BOUNDED
@given(value=retry_after_values | st.text(), now=st.floats(0, 1e10))
@example(value="1e999", now=0.0)
@example(value="Mon, 01 Jan 2024 00:00:00 +99999999999999999999", now=0.0)
def test_retry_after_is_none_or_a_finite_wait(value: str, now: float) -> None:
    wait = parse_retry_after(value, now)
    assert wait is None or (math.isfinite(wait) and wait >= 0)
    if re.fullmatch(r"\s*[0-9]{1,300}\s*", value):  # delta-seconds: taken as they are
        assert wait == float(value)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe[\x001\x00]\x00", "not UTF-8"),
        (b'{"score": "caf\xe9"}', "not UTF-8"),
        (b"[" * 100000, "nested too deeply"),
        (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), "nested too deeply"),
        (b"1" * 100000, "number too large"),
        (b'{"price": 1e999}', "number too large"),
        (b'{"price": 2E+400}', "number too large"),
        (b'{"price": ' + b"9" * 320 + b".5}", "number too large"),  # no exponent at all
        (b"[1" + b"0" * 250 + b"E+60]", "number too large"),  # many digits, a small exponent
        (b"-1" + b"1" * 230 + b"e80", "number too large"),
        (b'{"score": NaN}', "NaN is not JSON"),
        (b"[-Infinity]", "-Infinity is not JSON"),
        (b'{"name": "\\ud800"}', "a string is not valid Unicode (lone surrogate)"),
        (b'["ok", {"name": "\\uDFFF"}]', "a string is not valid Unicode (lone surrogate)"),
        (b"", "empty body"),
    ],
)
def test_unusable_2xx_bodies_say_why(body: bytes, reason: str) -> None:
    verdict = classify_response(200, httpx.Headers(), body, 0.0)
    assert verdict.outcome is Outcome.PERMANENT and verdict.error_kind == "Invalid JSON"
    assert verdict.error == f"Invalid JSON in 2xx answer: {reason}"


@pytest.mark.parametrize(
    ("body", "data"),
    [
        (b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, None),
        (b"1" * 4300, int("1" * 4300)),
        (b"\xef\xbb\xbf{}", {}),
        (b'"\\ud83d\\ude00"', "\U0001f600"),  # a surrogate pair is one real character
        (b"[1e308, -0.0]", [1e308, -0.0]),
    ],
)
def test_usable_2xx_bodies_at_the_limits_are_ok(body: bytes, data: Any) -> None:
    verdict = classify_response(200, httpx.Headers(), body, 0.0)
    assert verdict.outcome is Outcome.OK, verdict.error
    if data is not None:
        assert verdict.data == data


def test_a_deep_error_body_does_not_crash_the_classifier() -> None:
    """Found by the property test: a 4xx/5xx body "[" * 100000 raised RecursionError."""
    for status in (404, 429, 503):
        verdict = classify_response(status, httpx.Headers(), b"[" * 100000, 0.0)
        assert verdict.error == f"HTTP {status}"


@pytest.mark.parametrize(
    "value",
    [
        *("inf", "Infinity", "1e999", "9" * 400, "nan", "1e3", "1_0", "٣", "+5", "-0", "0x10"),
        "Mon, 01 Jan 2024 00:00:00 +99999999999999999999",
        "Mon, 01 Jan 99999999 00:00:00 GMT",
    ],
)
def test_retry_after_garbage_is_no_hint(value: str) -> None:
    """float() took "inf", "1e999" and 400 nines as an endless wait, "1_0" and "٣" as 10 and 3."""
    assert parse_retry_after(value, 1_700_000_000.0) is None


def test_retry_after_far_dates_are_finite() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now) == 253402300799.0 - now
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now) == 0.0


def test_a_redirect_location_stays_on_one_line() -> None:
    headers = httpx.Headers([(b"location", b"http://evil.test/\x0b\x0cnext line\t" + b"x" * 500)])
    verdict = classify_response(302, headers, b"", 0.0)
    assert verdict.error is not None and verdict.error.startswith(
        "HTTP 302: redirect to http://evil.test/ next line x"
    )
    assert verdict.error.endswith(" not followed") and len(verdict.error) < 260


# -- 2. CSV formula injection ----------------------------------------------------------------------


def csv_rows(*records: ScanRecord) -> list[dict[str, str]]:
    out = io.StringIO()
    writer = make_writer("csv", StdoutDestination(out))
    for record in records:
        writer.write(record)
    writer.finish(summary_of())
    return list(csv.DictReader(io.StringIO(out.getvalue())))


def test_formula_cells_are_neutralised_and_numbers_kept() -> None:
    data = {
        "note": '=HYPERLINK("http://evil")',
        "delta": -3.5,
        "count": -7,
        "tag": "@SUM(A1)",
        "plus": "+1+1",
        "minus": "-2+3",
        "tab": "\t=1",
        "cr": "\r=1",
        "inside": "a=b-c",
        "=cmd|' /C calc'!A0": "key as header",
    }
    ok = ScanRecord("-1INCH", "signals", True, 200, data, None, 1, 12.5, index=0)
    failed = ScanRecord("BTC", "signals", False, None, None, "-ERR =1+1", 2, 3.0, index=1)
    first, second = csv_rows(ok, failed)
    assert first["symbol"] == "'-1INCH"
    assert first["note"] == '\'=HYPERLINK("http://evil")'
    assert first["delta"] == "-3.5" and first["count"] == "-7"  # numbers, not text
    assert first["tag"] == "'@SUM(A1)" and first["plus"] == "'+1+1" and first["minus"] == "'-2+3"
    assert first["tab"] == "'\t=1" and first["cr"] == "'\r=1"
    assert first["inside"] == "a=b-c"
    assert first["'=cmd|' /C calc'!A0"] == "key as header"  # header names are cells too
    assert second["error"] == "'-ERR =1+1" and second["elapsed_ms"] == "3.0"


def test_a_carriage_return_cannot_start_a_row_of_its_own() -> None:
    """csv.writer with "\n" line ends left a lone "\r" unquoted: spreadsheets split the row
    there, and the new row began with the upstream's formula."""
    out = io.StringIO()
    writer = make_writer("csv", StdoutDestination(out))
    data = {"note": "x\r=HYPERLINK(1)", "other": "a\nb", "q": 'say "hi", then go'}
    writer.write(ScanRecord("BTC", "signals", True, 200, data, None, 1, 1.0))
    writer.finish(summary_of())
    text = out.getvalue()
    assert ',"x\r=HYPERLINK(1)","a\nb","say ""hi"", then go"\n' in text
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len(rows) == 2 and rows[1][-3:] == [data["note"], data["other"], data["q"]]


@BOUNDED
@given(
    value=st.text(alphabet=st.sampled_from(list("=+-@\t\r\n'\",a1 ")) | st.characters())
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
)
def test_no_string_cell_ever_starts_a_formula(value: str | int | float) -> None:
    record = ScanRecord("BTC", "signals", True, 200, {"value": value}, None, 1, 1.0)
    (row,) = csv_rows(record)
    cell = row["value"]
    if isinstance(value, str):
        dangerous = value[:1] in ("=", "+", "-", "@", "\t", "\r")
        assert cell == ("'" + value if dangerous else value)
    else:
        assert cell == str(value)  # a negative number stays a number


# -- 3. a full disk, a device, a FIFO --------------------------------------------------------------


class FullDisk(io.StringIO):
    """A stream on a full disk: every flush fails with ENOSPC."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_jsonl_on_a_full_disk_fails_once_at_the_end_not_inside_the_scan() -> None:
    """write() runs inside the engine's task group: raising there became an ExceptionGroup and
    "internal error"; the first failure is kept and raised by finish() as an OutputError."""
    stream = FullDisk()
    writer = make_writer("jsonl", StdoutDestination(stream))
    record = ScanRecord("BTC", "signals", True, 200, {}, None, 1, 1.0)
    writer.write(record)
    writer.write(record)  # not even tried: the output is already known to be lost
    assert stream.flushes == 1
    with pytest.raises(OutputError, match=r"^cannot write standard output: No space left"):
        writer.finish(summary_of())


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path, fmt: str) -> None:
    target = tmp_path / f"out.{fmt}"
    destination = open_destination(str(target), fmt)

    def no_space(text: str) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    destination.stream.write = no_space  # type: ignore[method-assign]
    writer = make_writer(fmt, destination)
    writer.write(ScanRecord("BTC", "signals", True, 200, {}, None, 1, 1.0))
    with pytest.raises(OutputError, match=f"cannot write {re.escape(str(target))}: No space"):
        writer.finish(summary_of(success_rate=100.0))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_a_fifo_is_written_into_and_stays_a_fifo(tmp_path: Path, fmt: str) -> None:
    """Any user could lose a FIFO (or, as root, /dev/full) to the temporary file renamed over it."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    destination = open_destination(str(fifo), fmt)  # opening waits for the reader
    assert isinstance(destination, SpecialFileDestination)
    writer = make_writer(fmt, destination)
    writer.write(ScanRecord("BTC", "signals", True, 200, {"score": 1}, None, 1, 1.0))
    writer.finish(summary_of(success_rate=100.0))
    reader.join(10)
    assert b"BTC" in received[0]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and sorted(os.listdir(tmp_path)) == ["pipe"]


def test_jsonl_to_dev_null_is_fine() -> None:
    """InPlaceFileDestination fsynced /dev/null at the end: EINVAL, "cannot write /dev/null"."""
    writer = make_writer("jsonl", open_destination(os.devnull, "jsonl"))
    writer.write(ScanRecord("BTC", "signals", True, 200, {}, None, 1, 1.0))
    writer.finish(summary_of())


needs_dev_full = pytest.mark.skipif(
    not os.path.exists("/dev/full") or not stat.S_ISCHR(os.stat("/dev/full").st_mode),
    reason="/dev/full (a device on which every write fails with ENOSPC) does not exist here",
)


@needs_dev_full
def test_metrics_to_a_full_device_is_an_output_error(tmp_path: Path) -> None:
    link = tmp_path / "metrics.json"  # through a symlink: a regression replaces the link only
    link.symlink_to("/dev/full")
    with pytest.raises(OutputError, match="No space left on device"):
        write_json_file(str(link), {"ok": 1})
    assert link.is_symlink() and sorted(os.listdir(tmp_path)) == ["metrics.json"]


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with running_demo_process(["--latency-median", "0.005"]) as url:
        yield url


def run_to_full_disk(url: str, fmt: str, *, via_stdout: bool) -> subprocess.CompletedProcess[str]:
    command = [*SCANCTL, "scan", "BTC", "ETH", "--base-url", url, "-F", fmt, "--no-cache"]
    if via_stdout:
        with open("/dev/full", "w") as full:
            return subprocess.run(
                command, stdout=full, stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=60
            )
    return subprocess.run(
        [*command, "-o", "/dev/full"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )


@needs_dev_full
@pytest.mark.parametrize("via_stdout", [False, True], ids=["-o /dev/full", "> /dev/full"])
@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_a_full_disk_is_exit_1_with_one_error_line(
    upstream: str, fmt: str, via_stdout: bool
) -> None:
    if not via_stdout:
        # Before the fix, a root run renamed its temporary file over /dev/full; refuse to run the
        # scan at all unless the device would be written into.
        assert is_special_file("/dev/full")
        destination = open_destination("/dev/full", fmt)
        destination.discard()
        assert isinstance(destination, SpecialFileDestination)
    result = run_to_full_disk(upstream, fmt, via_stdout=via_stdout)
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode), "/dev/full is no longer a device"
    errors = [line for line in result.stderr.splitlines() if line.startswith("scanctl: error:")]
    where = "standard output" if via_stdout else "/dev/full"
    assert result.returncode == 1, result.stderr
    assert errors == [f"scanctl: error: cannot write {where}: No space left on device"]
    assert result.stderr.splitlines() == errors  # one line: no summary of output that was lost
    assert "Traceback" not in result.stderr and "Exception" not in result.stderr
