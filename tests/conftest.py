"""Shared fixtures: the asyncio backend for anyio tests, and small builders."""

from __future__ import annotations

import pytest

from scanctl.config import EndpointType, load_builtin_profile


@pytest.fixture(autouse=True)
def private_state_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Learned rates, bans and the cache go to fresh places per test, never the user's own."""
    monkeypatch.setenv("SCANCTL_STATE_DIR", str(tmp_path_factory.mktemp("state")))
    monkeypatch.setenv("SCANCTL_CACHE", str(tmp_path_factory.mktemp("cache") / "cache.sqlite3"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def profile():  # type: ignore[no-untyped-def]
    return load_builtin_profile()


@pytest.fixture
def signals_endpoint() -> EndpointType:
    return load_builtin_profile().endpoint("signals")
