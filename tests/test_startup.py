"""Startup stays fast: the CLI module loads nothing heavy until a command runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("httpx", "anyio", "rich.progress", "rich.console", "uvicorn", "starlette")


def loaded_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_importing_the_cli_loads_no_heavy_module() -> None:
    modules = loaded_after("import scanctl.cli")
    assert "scanctl.cli" in modules
    assert not modules & set(HEAVY), modules & set(HEAVY)


def test_version_runs_without_loading_heavy_modules() -> None:
    code = (
        "import scanctl.cli, contextlib, io\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    scanctl.cli.app(['--version'])"
    )
    assert not loaded_after(code) & set(HEAVY)


@pytest.mark.parametrize(
    "args",
    [["--help"], ["scan", "--help"], ["warm-cache", "--help"], ["demo-api", "--help"]],
)
def test_help_runs_without_loading_heavy_modules(args: list[str]) -> None:
    code = (
        "import scanctl.cli, contextlib, io\n"
        "out = io.StringIO()\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(out):\n"
        f"    scanctl.cli.app({args!r})\n"
        "assert 'Usage' in out.getvalue(), out.getvalue()"
    )
    assert not loaded_after(code) & set(HEAVY)


def test_a_completion_request_loads_no_heavy_module() -> None:
    """What the shell runs at each Tab: it must answer as fast as `--version` starts."""
    code = (
        "import os, scanctl.cli, contextlib, io\n"
        "os.environ.update(_SCANCTL_COMPLETE='complete_bash', COMP_CWORD='3',\n"
        "                  COMP_WORDS='scanctl scan -t ')\n"
        "out = io.StringIO()\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(out):\n"
        "    scanctl.cli.app([])\n"
        "assert out.getvalue().split() == ['smart_money', 'mss', 'signals', 'price']"
    )
    assert not loaded_after(code) & set(HEAVY)


def test_the_objects_of_a_finished_run_are_left_out_of_the_exit_s_last_collection() -> None:
    """Every object the run made is frozen once the command returns, however it ended (here a
    usage error): the interpreter's last collection at exit then skips them. Traversing every
    module's objects there took ~35 ms of each run, most of a one-symbol scan after its answer.
    """
    code = (
        "import gc, scanctl.cli, contextlib, io\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stderr(io.StringIO()):\n"
        "    scanctl.cli.main(['scan', '--no-such-option'])\n"
        "print('frozen', gc.get_freeze_count())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    frozen = int(out.stdout.split()[-1])
    assert frozen > 1000, out.stdout
