"""API keys and secret headers never show up in anything a scan writes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanctl.demo.testing import running_demo_process

KEY = "key-Sup3rS3cret-4417"
TOKEN = "tok-Aa9Zz8Yy7-0952"
SESSION = "sess-Qq1Ww2Ee3-7731"
SECRETS = (KEY, TOKEN, SESSION)

CONFIG = """\
[profiles.guarded]
extends = "cryptosatx"
api_key_env = "GUARDED_KEY"
headers = { Authorization = "Bearer ${GUARDED_TOKEN}" }
"""


@pytest.fixture(scope="module")
def guarded_upstream() -> Iterator[str]:
    with running_demo_process(["--latency-median", "0.002", "--require-key", KEY]) as url:
        yield url


def test_secrets_never_appear_in_output_metrics_logs_state_cache_or_errors(
    guarded_upstream: str, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    env = {
        **os.environ,
        "GUARDED_KEY": KEY,
        "GUARDED_TOKEN": TOKEN,
        "SCANCTL_CONFIG": str(config),
        "SCANCTL_PROFILE": "guarded",
        "SCANCTL_DEBUG": "1",  # tracebacks, if any, would be printed in full
    }
    base = [sys.executable, "-m", "scanctl"]
    session = ["-H", f"X-Session: {SESSION}"]
    url = ["--base-url", guarded_upstream]
    out = tmp_path / "out"
    out.mkdir()
    runs = [
        [
            *base,
            "scan",
            "BTC",
            "ZZNOPE",
            *url,
            *session,
            "-F",
            "jsonl",
            "-o",
            str(out / "a.jsonl"),
            "--metrics",
            str(out / "a.metrics.json"),
        ],
        [*base, "scan", "BTC", "ETH", *url, *session, "-F", "csv", "--refresh"],
        [*base, "scan", "BTC", *url, *session, "-F", "json", "--no-progress"],
        [*base, "warm-cache", "SOL", "-t", "price", *url, *session, "--json"],
        [*base, "config", "show", *session],
        [*base, "config", "show", "--format", "json", *session],
        [*base, "stats", "--format", "json"],
        [*base, "scan", "BTC", *url, "-H", "Authorization: nonsense\r\nX: y", *session],
    ]
    texts = []
    codes = []
    for command in runs:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
        codes.append(done.returncode)
        texts += [done.stdout, done.stderr]
    # The key was right: scans succeeded (ZZNOPE is a 404), so the headers really were sent.
    assert codes[:4] == [3, 0, 0, 0] and codes[-1] == 2, codes
    # A wrong key: refused (401), and the error names neither the key nor the header values.
    wrong = subprocess.run(
        [*base, "scan", "BTC", *url, "-F", "jsonl", "--no-cache"],
        capture_output=True,
        text=True,
        env={**env, "GUARDED_KEY": KEY[::-1]},
        timeout=60,
    )
    assert wrong.returncode == 4 and "401" in wrong.stderr
    texts += [wrong.stdout, wrong.stderr]
    for text in texts:
        for secret in SECRETS:
            assert secret not in text
            assert secret[::-1] not in text
    written = [out, Path(os.environ["SCANCTL_STATE_DIR"]), Path(os.environ["SCANCTL_CACHE"]).parent]
    files = [p for root in written for p in root.rglob("*") if p.is_file()]
    assert any(p.name.startswith("cache.sqlite3") for p in files)
    for path in files:
        data = path.read_bytes()
        for secret in SECRETS:
            assert secret.encode() not in data, path
