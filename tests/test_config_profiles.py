"""Config files with named profiles: precedence, new endpoint types, checks with line numbers."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import respx
from typer.testing import CliRunner

from scanctl.cli import app
from scanctl.clock import FakeClock
from scanctl.config import load_builtin_profile
from scanctl.configfile import load_config, resolve_profile
from scanctl.engine import ScanSettings, make_pacer
from scanctl.hints import QuotaHeaders, parse_quota

# respx routes, served over a socket to the default transport (tests/respx_bridge.py).
pytestmark = pytest.mark.usefixtures("respx_over_aiohttp")

CONFIG = """\
default_profile = "work"

[profiles.work]
extends = "cryptosatx"
base_url = "http://file.test"
api_key_env = "WORK_API_KEY"
headers = { Authorization = "Bearer ${WORK_TOKEN}", "X-Team" = "quant" }

[profiles.work.limits]
concurrency = 20
timeout = 12

[profiles.work.rate_limit]
remaining_header = "X-Quota-Left"
reset_header = "X-Quota-Reset"

[profiles.work.types.funding]
path = "/funding/v2/{symbol}"
method = "POST"
ttl = 45
params = { venue = "binance" }
payload = "data.funding"

[profiles.plain]
base_url = "http://plain.test"

[profiles.plain.types.quote]
path = "/q/{symbol}"
"""


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    return path


def show(runner: CliRunner, *args: str, env: dict[str, str] | None = None) -> dict:  # type: ignore[type-arg]
    result = runner.invoke(app, ["config", "show", "--format", "json", *args], env=env)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_precedence_is_flags_then_environment_then_file_then_built_in(
    runner: CliRunner, config: Path
) -> None:
    env = {"WORK_TOKEN": "t"}
    built_in = show(runner, env=env)
    assert built_in["profile"] == "cryptosatx" and built_in["base_url"] == "http://localhost:8000"
    assert built_in["limits"]["concurrency"] == 50 and built_in["limits"]["timeout"] == 30.0
    from_file = show(runner, "--config", str(config), env=env)
    assert from_file["profile"] == "work" and from_file["base_url"] == "http://file.test"
    assert from_file["limits"]["concurrency"] == 20 and from_file["limits"]["timeout"] == 12.0
    assert from_file["limits"]["retries"] == 4  # not in the file: built-in
    from_env = show(
        runner, env={**env, "SCANCTL_CONFIG": str(config), "SCANCTL_BASE_URL": "http://env.test"}
    )
    assert from_env["base_url"] == "http://env.test" and from_env["limits"]["concurrency"] == 20
    flags = show(
        runner,
        "--base-url",
        "http://flag.test",
        "--concurrency",
        "7",
        env={**env, "SCANCTL_CONFIG": str(config), "SCANCTL_BASE_URL": "http://env.test"},
    )
    assert flags["base_url"] == "http://flag.test" and flags["limits"]["concurrency"] == 7
    other = show(runner, "--config", str(config), "--profile", "plain", env=env)
    assert other["base_url"] == "http://plain.test" and list(other["types"]) == ["quote"]
    by_env = show(runner, env={**env, "SCANCTL_CONFIG": str(config), "SCANCTL_PROFILE": "plain"})
    assert by_env["profile"] == "plain"


def test_the_user_config_dir_is_read_when_nothing_names_a_file(
    runner: CliRunner, config: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home = tmp_path / "xdg"
    (home / "scanctl").mkdir(parents=True)
    (home / "scanctl" / "config.toml").write_text(CONFIG)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    assert show(runner, env={"WORK_TOKEN": "t"})["profile"] == "work"


def test_a_new_endpoint_type_is_a_config_entry(runner: CliRunner, config: Path) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        symbol = request.url.path.rsplit("/", 1)[-1]
        return httpx.Response(
            200,
            json={"data": {"funding": {"rate": 0.0001, "symbol": symbol}}, "meta": {"v": 2}},
            headers={"X-Quota-Left": "99", "X-Quota-Reset": "30"},
        )

    with respx.mock(base_url="http://file.test", assert_all_called=False) as mock:
        mock.route(path__regex=r"^/").mock(side_effect=answer)
        result = runner.invoke(
            app,
            ["scan", "BTC", "ETH", "-t", "funding", "--config", str(config), "--no-cache"],
            env={"WORK_TOKEN": "tok-123", "WORK_API_KEY": "key-456"},
        )
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [r["data"] for r in doc["results"]] == [
        {"rate": 0.0001, "symbol": "BTC"},
        {"rate": 0.0001, "symbol": "ETH"},
    ]
    # (Over a socket, BTC's and ETH's requests may arrive in either order.)
    request = next(r for r in seen if r.url.path.endswith("/BTC"))
    assert request.method == "POST" and request.url.path == "/funding/v2/BTC"
    assert request.url.params["venue"] == "binance"
    assert request.headers["authorization"] == "Bearer tok-123"
    assert request.headers["x-api-key"] == "key-456" and request.headers["x-team"] == "quant"


def test_a_missing_payload_field_fails_that_symbol_clearly(runner: CliRunner, config: Path) -> None:
    with respx.mock(base_url="http://file.test", assert_all_called=False) as mock:
        mock.route(path__regex=r"^/").mock(return_value=httpx.Response(200, json={"data": {}}))
        result = runner.invoke(
            app,
            ["scan", "BTC", "-t", "funding", "--config", str(config), "--no-cache", "-F", "jsonl"],
            env={"WORK_TOKEN": "t"},
        )
    record = json.loads(result.stdout)
    assert result.exit_code == 4 and record["error"] == "Answer has no field 'data.funding'"


def test_a_header_naming_an_unset_variable_is_a_usage_error(
    runner: CliRunner, config: Path
) -> None:
    result = runner.invoke(app, ["scan", "BTC", "--config", str(config)])
    assert result.exit_code == 2
    assert "header 'Authorization' needs $WORK_TOKEN, which is not set" in result.stderr


@pytest.mark.parametrize(
    ("change", "line", "message"),
    [
        (("concurrency = 20", "concurency = 20"), 10, "unknown key 'concurency'"),
        (
            ('path = "/funding/v2/{symbol}"', 'path = "/funding/v2"'),
            18,
            "must start with /, hold {symbol}",
        ),
        (("ttl = 45", 'ttl = "soon"'), 20, "ttl must be a number 0 or more"),
        (('method = "POST"', 'method = "PATCH"'), 19, "method must be one of GET, POST"),
        (("timeout = 12", "timeout = -1"), 11, "timeout must be a number above 0"),
        (('base_url = "http://plain.test"', 'base_url = "ftp://plain.test"'), 25, "bad base_url"),
        (("[profiles.work.limits]", "[profiles.work.limits"), 9, "invalid TOML"),
        (('default_profile = "work"', 'default_profile = "nope"'), 1, "is not a profile"),
    ],
)
def test_config_check_names_the_line_of_an_error(
    runner: CliRunner, tmp_path: Path, change: tuple[str, str], line: int, message: str
) -> None:
    path = tmp_path / "config.toml"
    assert change[0] in CONFIG
    path.write_text(CONFIG.replace(change[0], change[1]))
    result = runner.invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 2, result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert f"line {line}" in result.stderr, result.stderr


def test_config_check_passes_a_good_file(runner: CliRunner, config: Path) -> None:
    result = runner.invoke(app, ["config", "check", str(config)])
    assert result.exit_code == 0 and "ok (work, plain)" in result.stderr


def test_config_show_masks_every_secret(runner: CliRunner, config: Path) -> None:
    env = {"WORK_TOKEN": "tok-SECRET-1", "WORK_API_KEY": "key-SECRET-2"}
    for fmt in ("toml", "json"):
        result = runner.invoke(
            app,
            [
                *("config", "show", "--config", str(config), "--format", fmt),
                *("-H", "X-Api-Token: hdr-SECRET-3", "-H", "X-Plain: visible"),
            ],
            env=env,
        )
        assert result.exit_code == 0, result.stderr
        assert "SECRET" not in result.stdout + result.stderr
        assert "******" in result.stdout and "visible" in result.stdout


def test_profile_rate_limit_headers_are_read_first() -> None:
    names = QuotaHeaders("X-Quota-Left", "X-Quota-Max", "X-Quota-Reset")
    headers = httpx.Headers(
        {
            "x-quota-left": "7",
            "x-quota-max": "100",
            "x-quota-reset": "12",
            "x-ratelimit-remaining": "1",
        }
    )
    hint = parse_quota(headers, 1_800_000_000.0, custom=names)
    assert hint is not None and (hint.remaining, hint.limit, hint.reset) == (7, 100, 12.0)
    fallback = parse_quota(headers, 1_800_000_000.0)
    assert fallback is not None and fallback.remaining == 1


def test_profiles_cannot_extend_each_other_in_a_circle(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[profiles.a]\nextends = "b"\n[profiles.b]\nextends = "a"\n')
    result = runner.invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 2 and "in a circle: a -> b -> a" in result.stderr


def test_the_example_config_is_valid_and_complete(runner: CliRunner) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "config.toml"
    result = runner.invoke(app, ["config", "check", str(example)])
    assert result.exit_code == 0 and "ok (cryptosatx, production, binance)" in result.stderr
    shown = show(runner, "--config", str(example), env={"CRYPTOSATX_TOKEN": "x"})
    assert shown["profile"] == "production" and shown["limits"]["concurrency"] == 40
    assert {"smart_money", "mss", "signals", "price", "funding_rate"} <= set(shown["types"])
    assert shown["types"]["price"]["params"] == {"exchange": "COINBASE"}
    assert shown["types"]["price"]["path"] == "/coinapi/quote/{symbol}"  # from the built-in
    assert shown["headers"]["Authorization"] == "******"


def test_a_header_flag_replaces_a_profile_header_whatever_its_case(
    runner: CliRunner, config: Path
) -> None:
    shown = show(
        runner,
        "--config",
        str(config),
        "-H",
        "x-team: flag",
        env={"WORK_TOKEN": "t"},
    )
    assert shown["headers"] == {"Authorization": "******", "x-team": "flag"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORK_TOKEN": "café"}, "header 'Authorization' must be printable ASCII"),
        ({"WORK_TOKEN": "t", "WORK_API_KEY": "clé"}, "$WORK_API_KEY must be printable ASCII"),
    ],
)
def test_non_ascii_header_values_are_usage_errors(
    runner: CliRunner, config: Path, env: dict[str, str], message: str
) -> None:
    result = runner.invoke(app, ["scan", "BTC", "--config", str(config)], env=env)
    assert result.exit_code == 2 and message in result.stderr


def test_profile_values_of_the_wrong_kind_fail_the_check(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.replace('reset_header = "X-Quota-Reset"', "reset_header = 5"))
    result = runner.invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 2 and "reset_header must be a non-empty string" in result.stderr
    path.write_text(CONFIG.replace('params = { venue = "binance" }', "params = { venue = [1] }"))
    result = runner.invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 2 and "params.venue must be a string or number" in result.stderr
    path.write_text(CONFIG.replace('reset_header = "X-Quota-Reset"', 'bans = "yes"'))
    result = runner.invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 2 and "rate_limit.bans must be true or false" in result.stderr
    path.write_text(CONFIG.replace('reset_header = "X-Quota-Reset"', 'scope = "route"'))
    result = runner.invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 2
    assert (
        "profiles.work.rate_limit.scope must be one of 'upstream', 'endpoint', got 'route'"
        in result.stderr
    )


def test_an_upstream_the_profile_says_bans_risks_no_429_to_check_a_hint(runner: CliRunner) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "config.toml"
    shown = show(runner, "--config", str(example), "--profile", "binance")
    assert shown["rate_limit"]["bans"] is True
    binance = resolve_profile(load_config(str(example)), "binance")
    assert binance.bans and not load_builtin_profile().bans
    endpoint = load_builtin_profile().endpoint("signals")
    for bans in (False, True):
        scan = ScanSettings(endpoint=endpoint, base_url="http://x.test", upstream_bans=bans)
        assert make_pacer(scan, FakeClock()).quota.early_ok is not bans


def test_a_profile_can_give_each_endpoint_type_its_own_budget(
    runner: CliRunner, config: Path
) -> None:
    """[rate_limit] scope = "endpoint", for an API that limits each route apart: a scan of
    each type paces on a budget of its own in the shared store; by default, every type sent
    with one credential to one upstream shares one."""

    def budgets() -> list[tuple[str, str]]:
        """Scan two types, then the upstreams (and types: "" for all) `stats` finds in the
        shared store."""
        with respx.mock(base_url="http://file.test", assert_all_called=False) as mock:
            mock.route(path__regex=r"^/").mock(
                return_value=httpx.Response(200, json={"data": {"funding": 1}})
            )
            for type_name in ("funding", "price"):
                args = ["scan", "BTC", "-t", type_name, "--config", str(config), "--no-cache"]
                result = runner.invoke(app, [*args, "--rate", "50"], env={"WORK_TOKEN": "t"})
                assert result.exit_code == 0, result.stderr
        result = runner.invoke(app, ["stats", "--format", "json"])
        assert result.exit_code == 0, result.stderr
        found = json.loads(result.stdout)["pacing"]["upstreams"]
        assert all(len(up["credential_sha256"]) == 16 for up in found)
        return sorted((up["upstream"], up["type"] or "") for up in found)

    assert show(runner, "--config", str(config), env={"WORK_TOKEN": "t"})["rate_limit"] == {
        "remaining_header": "X-Quota-Left",
        "limit_header": None,
        "reset_header": "X-Quota-Reset",
    }
    assert budgets() == [("http://file.test", "")]
    assert load_builtin_profile().rate_scope == "upstream"
    config.write_text(
        CONFIG.replace('reset_header = "X-Quota-Reset"', 'reset_header = "X-Quota-Reset"\n'
                       'scope = "endpoint"')
    )  # fmt: skip
    assert resolve_profile(load_config(str(config)), "work").rate_scope == "endpoint"
    shown = show(runner, "--config", str(config), env={"WORK_TOKEN": "t"})
    assert shown["rate_limit"]["scope"] == "endpoint"
    assert budgets() == [
        ("http://file.test", ""),  # (the runs above: one budget for both types)
        ("http://file.test", "funding"),
        ("http://file.test", "price"),
    ]
