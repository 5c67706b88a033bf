"""Starting the simulated upstream from tests and benchmarks, and reading its counters.

The upstream runs in its own process (as a real one would), on a free loopback port that it
prints on stdout; `running_demo_process` waits for that line, yields the base URL, and stops the
process afterwards however the block ends.
"""

from __future__ import annotations

import contextlib
import json
import select
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def running_demo_process(args: list[str], startup_timeout: float = 20.0) -> Iterator[str]:
    """Run `python -m scanctl.demo --port 0 ARGS` on 127.0.0.1; yield its base URL."""
    command = [sys.executable, "-m", "scanctl.demo", "--host", "127.0.0.1", "--port", "0", *args]
    with running_upstream(command, startup_timeout) as url:
        yield url


@contextlib.contextmanager
def running_upstream(command: list[str], startup_timeout: float = 20.0) -> Iterator[str]:
    """Run a server that prints its base URL on stdout once it listens; yield that URL, and
    stop the server however the block ends (benchmarks/fast_upstream.py is one)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stderr is not None
        ready, _, _ = select.select([process.stdout], [], [], startup_timeout)
        line = process.stdout.readline().strip() if ready else ""
        if not line.startswith("http://"):
            process.kill()
            _, err = process.communicate(timeout=5)
            raise RuntimeError(f"the simulated upstream did not start: {err.strip()[-500:]}")
        yield line
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def fetch_stats(base_url: str, timeout: float = 5.0) -> dict[str, Any]:
    """The upstream's own counters (`GET /_demo/stats`)."""
    with urllib.request.urlopen(f"{base_url}/_demo/stats", timeout=timeout) as answer:
        result: dict[str, Any] = json.loads(answer.read())
    return result


def move_answers(base_url: str, timeout: float = 5.0) -> int:
    """Move the upstream's answers at once (`POST /_demo/move`); the number of moves so far."""
    request = urllib.request.Request(f"{base_url}/_demo/move", method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        moves: int = json.loads(answer.read())["moves"]
    return moves
