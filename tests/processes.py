"""Starting scanctl as a process of its own, as cron or a shell would, symbols on its stdin."""

from __future__ import annotations

import os
import subprocess
import sys

SCANCTL = [sys.executable, "-m", "scanctl"]


def start_scanctl(
    args: list[str], stdin: str, env: dict[str, str], prefix: list[str] | None = None
) -> subprocess.Popen[str]:
    """`scanctl ARGS` with `env` added to this environment; its stdin written and closed.
    `prefix`: a command that runs it (`faketime -f +2s`)."""
    process = subprocess.Popen(
        [*(prefix or []), *SCANCTL, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    assert process.stdin is not None
    process.stdin.write(stdin)
    process.stdin.close()
    process.stdin = None  # (closed: `communicate` must not flush it)
    return process
