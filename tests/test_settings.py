"""The settings model: one declaration per setting reaches every place a setting appears.

A throwaway setting, declared for one test, is offered as a flag, read from its variable and
from a profile, checked against its range, listed by `config show` and accepted as a Python
keyword, with no other code written for it.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scanctl import cli
from scanctl.cache.front import CachePolicy
from scanctl.engine import ScanSettings
from scanctl.errors import UsageError
from scanctl.resilience import CircuitBreaker, RetryBudget
from scanctl.settings import (
    BASE_URL,
    MAX_OUTAGE,
    MODEL,
    NEGATIVE_TTL,
    RETRIES,
    RETRY_BUDGET,
    SHOW,
    TIMEOUT,
    UPSTREAM,
    Setting,
    between,
    keyword_of,
    resolve,
)

PROBE = Setting[int](
    name="probe_depth",
    kind=int,
    default=3,
    check=between(1, 9),
    metavar="N",
    env="SCANCTL_PROBE_DEPTH",
    profile_key="limits.probe_depth",
    show="limits",
    help="How deep to probe (default: the profile's, else {default}).",
    commands=UPSTREAM,
)


@pytest.fixture
def probe() -> Iterator[Setting[int]]:
    with MODEL.declared(PROBE):
        cli.sign_commands()
        yield PROBE
    cli.sign_commands()


def invoke(*args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli.app, list(args), env=env)


def shown(*args: str, env: dict[str, str] | None = None) -> object:
    result = invoke("config", "show", "-F", "json", *args, env=env)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["limits"].get("probe_depth")


def config_file(tmp_path: Path, depth: object) -> str:
    path = tmp_path / "config.toml"
    path.write_text(f"[profiles.cryptosatx.limits]\nprobe_depth = {depth}\n")
    return str(path)


def test_one_declaration_reaches_flag_env_profile_and_config_show(
    probe: Setting[int], tmp_path: Path
) -> None:
    config = config_file(tmp_path, 5)
    assert shown() == 3  # built-in
    assert shown("--config", config) == 5  # the profile
    env = {"SCANCTL_PROBE_DEPTH": "6"}
    assert shown("--config", config, env=env) == 6  # the variable over the profile
    assert shown("--config", config, "--probe-depth", "7", env=env) == 7  # the flag over all
    for command in (["scan"], ["warm-cache"], ["config", "show"]):
        listing = invoke(*command, "--help").stdout
        assert "--probe-depth N" in listing and "else 3" in listing, command
    # Python callers name it as a keyword.
    assert resolve({"probe_depth": 8}, {}, spell=keyword_of)[PROBE] == 8


def test_its_range_holds_on_the_flag_the_variable_and_in_a_profile(
    probe: Setting[int], tmp_path: Path
) -> None:
    result = invoke("config", "show", "--probe-depth", "12")
    assert result.exit_code == 2
    assert "--probe-depth must be between 1 and 9, got 12" in result.stderr
    result = invoke("config", "show", env={"SCANCTL_PROBE_DEPTH": "0"})
    assert "--probe-depth must be between 1 and 9, got 0" in result.stderr
    result = invoke("config", "check", config_file(tmp_path, 0))
    assert result.exit_code == 2
    assert "limits.probe_depth must be a whole number above 0, got 0" in result.stderr
    with pytest.raises(UsageError, match="probe_depth must be between 1 and 9, got 10"):
        resolve({"probe_depth": 10}, {}, spell=keyword_of)


def test_an_undeclared_profile_key_is_a_typo_again(tmp_path: Path) -> None:
    result = invoke("config", "check", config_file(tmp_path, 5))
    assert result.exit_code == 2 and "unknown key 'probe_depth'" in result.stderr
    assert "--probe-depth" not in invoke("scan", "--help").stdout


def test_help_texts_quote_the_declared_defaults() -> None:
    listing = invoke("scan", "--help").stdout
    assert RETRIES.default == 4 and "5xx (default: the profile's, else 4)" in " ".join(
        listing.split()
    )


def test_precedence_flag_over_variable_over_profile_over_default(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[profiles.cryptosatx]\nbase_url = 'http://profile:1'\n")
    env = {"SCANCTL_CONFIG": str(config)}
    assert resolve({}, {})[BASE_URL] == "http://localhost:8000"
    assert resolve({}, env)[BASE_URL] == "http://profile:1"
    assert resolve({}, {**env, "SCANCTL_BASE_URL": "http://env:2/"})[BASE_URL] == "http://env:2"
    flagged = resolve({"base_url": "http://flag:3"}, {**env, "SCANCTL_BASE_URL": "http://env:2"})
    assert flagged[BASE_URL] == "http://flag:3"


def test_the_engines_parts_take_their_defaults_from_the_model() -> None:
    """ScanSettings, CachePolicy, the retry budget and the breaker have defaults for code that
    builds them directly (tests, benchmarks): each is its setting's built-in value, read from
    the declaration, so a default changed in settings.py changes there too."""
    engine = {
        f.name: f.default
        for f in dataclasses.fields(ScanSettings)
        if f.default is not dataclasses.MISSING  # (base_url has no default there)
    }
    shared = [name for name in engine if name in MODEL]
    assert len(shared) >= 10, shared
    for name in shared:
        assert engine[name] == MODEL[name].built_in, name
    assert engine["max_body"] == 5 * 1024 * 1024  # "5M", parsed as the flag's value is
    policy = {f.name: f.default for f in dataclasses.fields(CachePolicy)}
    assert policy["negative_ttl"] == NEGATIVE_TTL.default
    assert policy["lease_seconds"] == TIMEOUT.default + 10.0  # as runner.cache_policy makes it
    breaker = inspect.signature(CircuitBreaker).parameters["max_outage"].default
    assert breaker == MAX_OUTAGE.default
    budget = inspect.signature(RetryBudget).parameters["share"].default
    assert budget == RETRY_BUDGET.default
    built_in = resolve({}, {})  # the built-in profile changes none of them
    assert all(engine[name] == built_in.values[name] for name in shared)


def test_every_setting_is_offered_somewhere_under_a_flag_of_its_own() -> None:
    flags = [s.flag for s in MODEL] + [s.short for s in MODEL if s.short]
    assert len(flags) == len(set(flags))
    for setting in MODEL:
        assert setting.commands, setting.name
        if setting.show is not None:
            assert SHOW in setting.commands, setting.name
