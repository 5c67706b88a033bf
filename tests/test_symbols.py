from __future__ import annotations

import io
from pathlib import Path

import pytest

from scanctl.errors import SymbolError, UsageError
from scanctl.symbols import collect_symbols, is_valid_symbol


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
