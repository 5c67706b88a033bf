"""A run refused before it starts leaves nothing behind: no output file, no temporary file.

A run opens its output before the first request (a bad path is a usage error, not a lost scan),
so every refusal that comes after that point must undo it (runner.py, `ScanRun.__init__`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scanctl.cli import app
from scanctl.state import PacingMemory

# Nothing listens there, and nothing is ever sent: every run here is refused before that.
BASE = "http://127.0.0.1:9"


def scan(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["scan", "BTC", "--base-url", BASE, "--no-cache", *args])
    return result.exit_code, result.stderr


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_an_unwritable_metrics_path_leaves_no_output_file(tmp_path: Path, fmt: str) -> None:
    output = tmp_path / f"out.{fmt}"
    code, err = scan("-F", fmt, "-o", str(output), "--metrics", str(tmp_path / "no" / "m.json"))
    assert code == 2, err
    assert "--metrics" in err and "does not exist" in err
    assert os.listdir(tmp_path) == []  # neither out.FMT nor .out.FMT.*.tmp


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_a_remembered_ban_leaves_no_output_file(tmp_path: Path, fmt: str) -> None:
    memory = PacingMemory()
    memory.remember_ban(BASE, until_wall=time.time() + 600)
    memory.save()
    output = tmp_path / f"out.{fmt}"
    code, err = scan("-F", fmt, "-o", str(output), "--metrics", str(tmp_path / "m.json"))
    assert code == 4, err
    assert "banned us until" in err
    assert os.listdir(tmp_path) == []


def test_a_refused_start_leaves_an_existing_output_as_it_was(tmp_path: Path) -> None:
    """jsonl is written in place: opening it early would have emptied yesterday's results."""
    output = tmp_path / "out.jsonl"
    output.write_text('{"symbol": "BTC"}\n')
    code, _ = scan("-F", "jsonl", "-o", str(output), "--metrics", str(tmp_path / "no" / "m"))
    assert code == 2
    assert output.read_text() == '{"symbol": "BTC"}\n'
    assert os.listdir(tmp_path) == ["out.jsonl"]
