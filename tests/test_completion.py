"""Shell completion: the scripts for bash, zsh and fish, installing them, and the answers a shell
gets for option values (the profile's scan types, formats, transports...)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer._completion_shared
from typer.testing import CliRunner

from scanctl.cli import app

SHELLS = ("bash", "zsh", "fish")
BUILT_IN_TYPES = ["smart_money", "mss", "signals", "price"]
# What each shell's script must hold: how it registers itself, and how it asks scanctl.
REGISTERS = {
    "bash": "complete -o default -F _scanctl_completion scanctl",
    "zsh": "compdef _scanctl_completion scanctl",
    "fish": "complete --command scanctl",
}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def running_under(monkeypatch: pytest.MonkeyPatch, shell: str | None, login: str = "") -> None:
    """Pretend scanctl's nearest shell ancestor is `shell` and $SHELL is `login`."""
    monkeypatch.setattr(typer._completion_shared, "_get_shell_name", lambda: shell)
    monkeypatch.setenv("SHELL", login)


@pytest.mark.parametrize("shell", SHELLS)
def test_show_completion_prints_the_script_for_the_shell_it_runs_under(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, shell: str
) -> None:
    running_under(monkeypatch, shell)
    result = runner.invoke(app, ["--show-completion"])
    assert result.exit_code == 0, result.stderr
    assert REGISTERS[shell] in result.stdout
    assert f"_SCANCTL_COMPLETE=complete_{shell}" in result.stdout
    assert result.stderr == ""


def test_under_another_shell_the_login_shell_is_completed_for(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    running_under(monkeypatch, "sh", login="/usr/bin/fish")  # `sh -c`, make, cron...
    result = runner.invoke(app, ["--show-completion"])
    assert result.exit_code == 0 and REGISTERS["fish"] in result.stdout


def test_no_shell_to_complete_for_is_one_line_and_exit_2(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    running_under(monkeypatch, "tcsh", login="/bin/tcsh")
    result = runner.invoke(app, ["--install-completion"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("scanctl: error: completion is for bash, zsh and fish; found ")
    assert "'tcsh'" in result.stderr and "_SCANCTL_COMPLETE=source_bash" in result.stderr
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("shell", "script", "rc_file"),
    [
        ("bash", ".bash_completions/scanctl.sh", ".bashrc"),
        ("zsh", ".zfunc/_scanctl", ".zshrc"),
        ("fish", ".config/fish/completions/scanctl.fish", None),
    ],
)
def test_install_completion_writes_the_script_where_the_shell_finds_it(
    runner: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    shell: str,
    script: str,
    rc_file: str | None,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    running_under(monkeypatch, shell)
    result = runner.invoke(app, ["--install-completion"])
    assert result.exit_code == 0, result.stderr
    installed = tmp_path / script
    assert REGISTERS[shell] in installed.read_text()
    assert result.stdout == ""
    assert (
        result.stderr
        == f"scanctl: {shell} completion installed in {installed}; open a new shell to use it\n"
    )
    if rc_file is not None:  # bash and zsh read it from their rc file; fish finds it by itself
        rc = (tmp_path / rc_file).read_text()
        assert str(installed) in rc if shell == "bash" else "fpath+=~/.zfunc" in rc


# -- what the shell gets back -----------------------------------------------------------------


def complete_bash(runner: CliRunner, line: str) -> list[str]:
    """scanctl's answer to bash completing the last word of `line` (empty after a space)."""
    words = line.split(" ")
    env = {"_SCANCTL_COMPLETE": "complete_bash", "COMP_WORDS": line}
    result = runner.invoke(app, [], env={**env, "COMP_CWORD": str(len(words) - 1)})
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_type_values_are_the_built_in_profiles_types(runner: CliRunner) -> None:
    assert complete_bash(runner, "scanctl scan -t ") == BUILT_IN_TYPES
    assert complete_bash(runner, "scanctl scan BTC --type s") == ["smart_money", "signals"]
    assert complete_bash(runner, "scanctl cache clear -t p") == ["price"]


def test_warm_cache_completes_the_next_type_of_a_list(runner: CliRunner) -> None:
    assert complete_bash(runner, "scanctl warm-cache -t mss,") == [
        "mss,smart_money",
        "mss,signals",
        "mss,price",
    ]
    assert complete_bash(runner, "scanctl warm-cache -t price,mss,s") == [
        "price,mss,smart_money",
        "price,mss,signals",
    ]


CONFIG = """\
default_profile = "work"

[profiles.work]
extends = "cryptosatx"

[profiles.work.types.funding]
path = "/funding/{symbol}"

[profiles.plain.types.quote]
path = "/q/{symbol}"
"""


def test_type_values_follow_the_profile_in_force(runner: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    work = complete_bash(runner, f"scanctl scan --config {config} -t ")
    assert work == [*BUILT_IN_TYPES, "funding"]  # the file's default profile
    plain = complete_bash(runner, f"scanctl scan --config {config} --profile plain -t ")
    assert plain == ["quote"]
    from_env = runner.invoke(
        app,
        [],
        env={
            "_SCANCTL_COMPLETE": "complete_bash",
            "COMP_WORDS": "scanctl warm-cache -t ",
            "COMP_CWORD": "3",
            "SCANCTL_CONFIG": str(config),
            "SCANCTL_PROFILE": "plain",
        },
    )
    assert from_env.stdout.splitlines() == ["quote"]


def test_a_config_that_does_not_load_falls_back_to_the_built_in_types(
    runner: CliRunner, tmp_path: Path
) -> None:
    broken = tmp_path / "config.toml"
    broken.write_text("[profiles.work\n")
    assert complete_bash(runner, f"scanctl scan --config {broken} -t ") == BUILT_IN_TYPES
    missing = tmp_path / "missing.toml"
    assert complete_bash(runner, f"scanctl scan --config {missing} -t ") == BUILT_IN_TYPES


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("scanctl scan -F ", ["json", "jsonl", "csv", "table"]),
        ("scanctl scan --format js", ["json", "jsonl"]),
        ("scanctl scan --transport ", ["auto", "aiohttp", "httpx"]),
        ("scanctl warm-cache --transport a", ["auto", "aiohttp"]),
        ("scanctl scan --color ", ["auto", "always", "never"]),
        ("scanctl scan --metrics-format ", ["json", "prom"]),
        ("scanctl stats -F ", ["table", "json"]),
        ("scanctl config show --format ", ["toml", "json"]),
        (
            "scanctl demo-api --limiter ",
            ["token-bucket", "leaky-bucket", "fixed-window", "sliding-window"],
        ),
        ("scanctl demo-api --outage-mode ", ["drop", "503"]),
        (
            "scanctl demo-api --hints retry-after,x",
            ["retry-after,x-ratelimit", "retry-after,x-ratelimit-epoch"],
        ),
        ("scanctl ", ["scan", "warm-cache", "stats", "config", "cache", "demo-api"]),
        ("scanctl cache ", ["clear", "prune"]),
    ],
)
def test_choices_complete(runner: CliRunner, line: str, expected: list[str]) -> None:
    assert complete_bash(runner, line) == expected


def test_zsh_and_fish_get_the_types_with_their_requests(runner: CliRunner) -> None:
    zsh = runner.invoke(
        app,
        [],
        env={"_SCANCTL_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "scanctl scan -t m"},
    )
    assert zsh.stdout.strip() == '_arguments \'*: :(("mss":"GET /mss/analyze/{symbol}"))\''
    fish = runner.invoke(
        app,
        [],
        env={
            "_SCANCTL_COMPLETE": "complete_fish",
            "_TYPER_COMPLETE_FISH_ACTION": "get-args",
            "_TYPER_COMPLETE_ARGS": "scanctl scan -t ",
        },
    )
    assert fish.stdout.splitlines()[1] == "mss\tGET /mss/analyze/{symbol}"
    assert [line.split("\t")[0] for line in fish.stdout.splitlines()] == BUILT_IN_TYPES


# -- in real processes and real shells ------------------------------------------------------


@pytest.fixture
def scanctl_on_path(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH has a `scanctl` running this checkout, as a shell calls it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "scanctl"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m scanctl "$@"\n')
    wrapper.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def script_for(shell: str, env: dict[str, str]) -> str:
    """The script as `_SCANCTL_COMPLETE=source_SHELL scanctl` prints it: the way to get one
    for a shell that is not the current one (the README says so)."""
    result = subprocess.run(
        ["scanctl"],
        env={**env, "_SCANCTL_COMPLETE": f"source_{shell}"},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout


@pytest.mark.parametrize("shell", SHELLS)
def test_the_source_instruction_prints_each_shells_script(
    scanctl_on_path: dict[str, str], shell: str
) -> None:
    assert REGISTERS[shell] in script_for(shell, scanctl_on_path)


def test_bash_sources_the_script_and_completes_the_types(
    scanctl_on_path: dict[str, str], tmp_path: Path
) -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    script = tmp_path / "scanctl.bash"
    script.write_text(script_for("bash", scanctl_on_path))
    session = f"""
source {script}
complete -p scanctl
COMP_WORDS=(scanctl scan -t "")
COMP_CWORD=3
_scanctl_completion scanctl
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    result = subprocess.run(
        [bash, "--norc", "--noprofile", "-c", session],
        env=scanctl_on_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == REGISTERS["bash"]
    assert lines[1:] == BUILT_IN_TYPES


def test_fish_completes_the_types(scanctl_on_path: dict[str, str], tmp_path: Path) -> None:
    fish = shutil.which("fish")
    if fish is None:
        pytest.skip("fish is not installed")
    script = tmp_path / "scanctl.fish"
    script.write_text(script_for("fish", scanctl_on_path))
    result = subprocess.run(
        [fish, "--no-config", "-c", f"source {script}; complete -C 'scanctl scan -t '"],
        env=scanctl_on_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(line.split("\t")[0] for line in result.stdout.splitlines()) == sorted(
        BUILT_IN_TYPES
    )


def test_zsh_registers_the_completion_function(
    scanctl_on_path: dict[str, str], tmp_path: Path
) -> None:
    zsh = shutil.which("zsh")
    if zsh is None:
        pytest.skip("zsh is not installed")
    script = tmp_path / "_scanctl"
    script.write_text(script_for("zsh", scanctl_on_path))
    session = f"autoload -Uz compinit && compinit -u -D && source {script}"
    session += " && print -r -- $_comps[scanctl]"
    result = subprocess.run(
        [zsh, "-f", "-c", session],
        env={**scanctl_on_path, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "_scanctl_completion"
