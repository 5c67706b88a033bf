from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scanctl.errors import SymbolError, UsageError
from scanctl.symbols import (
    Shard,
    SymbolList,
    collect_symbols,
    is_valid_symbol,
    parse_shard,
    take_shard,
)


def test_arguments_are_upper_cased_split_on_commas_and_deduplicated_in_order() -> None:
    found = collect_symbols(["btc", "eth,sol", "BTC", "doge"], None)
    assert found.symbols == ["BTC", "ETH", "SOL", "DOGE"]
    assert found.duplicates == 1


def test_file_skips_blank_lines_and_comments_and_accepts_separators(tmp_path: Path) -> None:
    path = tmp_path / "coins.txt"
    path.write_text("# header\n\nbtc\neth, sol  ada\nxrp # ripple\n   \n#BTC\n")
    assert collect_symbols([], str(path)).symbols == ["BTC", "ETH", "SOL", "ADA", "XRP"]


def test_stdin_is_read_only_with_dash() -> None:
    found = collect_symbols([], "-", stdin=io.StringIO("btc\neth\n"))
    assert found.symbols == ["BTC", "ETH"]
    with pytest.raises(UsageError, match="no symbols"):
        collect_symbols([], None, stdin=io.StringIO("btc\n"))


@pytest.mark.parametrize("bad", ["../etc", "BTC/USD", "A" * 200, "..", ".", "bt c%20", "é"])
def test_invalid_symbol_names_source_and_line(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "coins.txt"
    path.write_text(f"BTC\nETH\n{bad}\n")
    with pytest.raises(SymbolError) as info:
        collect_symbols([], str(path))
    assert f"{path}:3:" in str(info.value)
    assert "\n" not in str(info.value)


def test_skip_invalid_counts_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "coins.txt"
    path.write_text("BTC\n../etc\nETH\nBTC/USD\n")
    found = collect_symbols([], str(path), skip_invalid=True)
    assert found.symbols == ["BTC", "ETH"]
    assert [(i.line, i.text) for i in found.invalid] == [(2, "../etc"), (4, "BTC/USD")]


def test_undecodable_bytes_fail_on_their_line(tmp_path: Path) -> None:
    path = tmp_path / "coins.txt"
    path.write_bytes(b"BTC\n\xff\xfe\n")
    with pytest.raises(SymbolError, match=":2:"):
        collect_symbols([], str(path))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "No such file"),
        ("", "holds no symbols"),
        ("# only\n\n# comments\n", "holds no symbols"),
    ],
)
def test_unusable_files_name_the_file(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "coins.txt"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UsageError, match=message) as info:
        collect_symbols([], str(path))
    assert str(path) in str(info.value)


def test_a_directory_is_not_a_symbols_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="directory"):
        collect_symbols([], str(tmp_path))


def test_validity_rule() -> None:
    assert is_valid_symbol("1INCH")
    assert is_valid_symbol("BTC-PERP")
    assert is_valid_symbol("a" * 32)
    assert not is_valid_symbol("a" * 33)
    assert not is_valid_symbol("...")
    assert not is_valid_symbol("")


# -- --shard K/N --------------------------------------------------------------------------------

shard_symbols = st.lists(st.from_regex(r"[A-Z0-9]{1,8}", fullmatch=True), unique=True, max_size=60)


@given(shard_symbols, st.integers(min_value=1, max_value=8))
def test_shards_split_a_list_into_disjoint_parts_that_keep_its_order(symbols, count) -> None:  # type: ignore[no-untyped-def]
    parts = [
        take_shard(SymbolList(list(symbols)), Shard(k, count)).symbols for k in range(1, count + 1)
    ]
    assert sorted(s for part in parts for s in part) == sorted(symbols)  # each symbol once
    for part in parts:
        assert part == [s for s in symbols if s in set(part)]  # in input order


def test_shards_are_even_on_a_long_list() -> None:
    symbols = [f"C{i:06d}" for i in range(20_000)]
    sizes = [len(take_shard(SymbolList(list(symbols)), Shard(k, 4)).symbols) for k in (1, 2, 3, 4)]
    assert sum(sizes) == 20_000 and all(abs(size - 5000) < 250 for size in sizes)


def test_a_shard_is_the_same_on_every_machine_and_run() -> None:
    """Python's own hash() is salted per process; the shard must not be."""
    symbols = [f"S{i:04d}" for i in range(300)]
    here = take_shard(SymbolList(list(symbols)), Shard(2, 3)).symbols
    code = (
        "import sys; from scanctl.symbols import SymbolList, Shard, take_shard; "
        "print(' '.join(take_shard(SymbolList(sys.argv[1:]), Shard(2, 3)).symbols))"
    )
    for seed in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-c", code, *symbols],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            check=True,
        )
        assert done.stdout.split() == here


@pytest.mark.parametrize("text", ["0/4", "5/4", "2", "a/b", "1/0", "-1/3", ""])
def test_a_bad_shard_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="expected K/N with 1 <= K <= N"):
        parse_shard(text)
    assert parse_shard(" 3 / 4 ") == Shard(3, 4)


def test_the_cli_scans_only_its_shard_and_says_so(tmp_path: Path) -> None:
    coins = [f"Z{i:03d}" for i in range(40)]  # ZZ... would be 404s: these are not
    result = subprocess.run(
        [sys.executable, "-m", "scanctl", "scan", *coins, "--shard", "1/3", "--no-cache",
         "--base-url", "http://127.0.0.1:9", "--retries", "0", "-F", "jsonl"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    expected = take_shard(SymbolList(list(coins)), Shard(1, 3)).symbols
    assert sorted(json.loads(line)["symbol"] for line in result.stdout.splitlines()) == sorted(
        expected
    )
    assert f"scanctl: shard 1/3: {len(expected)} of 40 symbols" in result.stderr
    bad = subprocess.run([sys.executable, "-m", "scanctl", "scan", "BTC", "--shard", "4/3"],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.startswith("scanctl: error: bad --shard '4/3'")
