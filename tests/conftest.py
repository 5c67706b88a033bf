"""Shared fixtures: the asyncio backend for anyio tests, and small builders."""

from __future__ import annotations

import pytest

from scanctl.config import EndpointType, load_builtin_profile
from tests.respx_bridge import respx_over_aiohttp

__all__ = ["respx_over_aiohttp"]  # a fixture: CLI tests' respx routes over the default transport


@pytest.fixture(autouse=True)
def private_state_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Learned rates, bans and the cache go to fresh places per test, never the user's own."""
    monkeypatch.setenv("SCANCTL_STATE_DIR", str(tmp_path_factory.mktemp("state")))
    monkeypatch.setenv("SCANCTL_CACHE", str(tmp_path_factory.mktemp("cache") / "cache.sqlite3"))
    # No user config file, profile or upstream from the developer's own environment.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))
    for name in ("SCANCTL_CONFIG", "SCANCTL_PROFILE", "SCANCTL_BASE_URL", "SCANCTL_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def profile():  # type: ignore[no-untyped-def]
    return load_builtin_profile()


@pytest.fixture
def signals_endpoint() -> EndpointType:
    return load_builtin_profile().endpoint("signals")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A redis-server of our own on a free loopback port, for the whole session."""
    import shutil
    import subprocess
    import time

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (make test installs it with apt)")
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 15
    while True:
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise
            time.sleep(0.05)
    client.close()
    yield url
    server.terminate()
    server.wait(10)


def _empty_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


@pytest.fixture(params=["memory", "sqlite", "redis"])
def any_store(request: pytest.FixtureRequest, tmp_path):  # type: ignore[no-untyped-def]
    """Each backend in turn, empty: the contract every store keeps."""
    yield from _make_store(request, tmp_path)


@pytest.fixture(params=["sqlite", "redis"])
def shared_store(request: pytest.FixtureRequest, tmp_path):  # type: ignore[no-untyped-def]
    """The persistent backends in turn, empty: the cache's behaviour suite runs on both."""
    yield from _make_store(request, tmp_path)


def _make_store(request: pytest.FixtureRequest, tmp_path):  # type: ignore[no-untyped-def]
    from scanctl.cache.memory_store import MemoryStore
    from scanctl.cache.sqlite_store import SqliteStore

    if request.param == "memory":
        store = MemoryStore()
    elif request.param == "sqlite":
        store = SqliteStore(tmp_path / "cache.sqlite3")
    else:
        url = request.getfixturevalue("redis_url")
        _empty_redis(url)
        from scanctl.cache.redis_store import RedisStore

        store = RedisStore(url)
    yield store
    store.close()
