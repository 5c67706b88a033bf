"""Profiles: which endpoint each scan type calls, as data rather than code.

A profile is a TOML table (the built-in one is `profiles/cryptosatx.toml`; users add theirs in a
config file, see `configfile.py`). Each type names a path template with a `{symbol}` placeholder,
its method, fixed query parameters, a TTL and the answer's field holding the payload, so
pointing scanctl at a new endpoint is a config entry. A profile also carries headers (values may
name environment variables as ${NAME}), the API key's header and variable, default limits and
rate-limit header names. Settings resolve flags > environment > config file > built-in.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal, TypeVar, cast, get_args
from urllib.parse import quote, urlsplit

from scanctl.errors import UsageError
from scanctl.hints import QuotaHeaders, WeightHeader
from scanctl.settings import BASE_URL, MODEL, NEGATIVE_TTL, Setting

T = TypeVar("T")

DEFAULT_PROFILE = "cryptosatx"
ALLOWED_SCHEMES = ("http", "https")


# The keys a profile may hold, per table; anything else is a typo `config check` points at.
# Besides these, a profile holds the settings that declare a profile key (scanctl/settings.py):
# `base_url` and `negative_ttl` at the top, the pacing limits under [limits].
PROFILE_KEYS = frozenset(
    {"name", "api_key_header", "api_key_env", "headers", "limits", "rate_limit", "types"}
    | {"extends"}
)
TYPE_KEYS = frozenset({"path", "ttl", "params", "method", "payload", "display"})
RATE_LIMIT_KEYS = frozenset(
    {"weight_header", "weight_budget", "weight_window"}
    | {"remaining_header", "limit_header", "reset_header", "bans", "scope"}
)
# What one shared pacing budget covers ([rate_limit] scope): every type sent to an upstream with
# one credential, or each endpoint type on its own (for an API that limits each route apart).
RateScope = Literal["upstream", "endpoint"]
RATE_SCOPES: tuple[RateScope, ...] = get_args(RateScope)
METHODS = ("GET", "POST")
# Header names whose values are secrets wherever they come from (shown masked, never logged).
_SECRET_NAME = re.compile(r"auth|token|secret|key|passw|cookie|session|signature", re.IGNORECASE)
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
API_KEY_ENV = "SCANCTL_API_KEY"


class ProfileError(UsageError):
    """A profile that cannot work; `where` names the table and key, for a line number."""

    def __init__(self, message: str, where: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.where = where


@dataclass(frozen=True, slots=True)
class EndpointType:
    """One kind of analysis: where to ask for it, how, and how long an answer stays fresh.

    `payload` names the field of the answer that holds the data (dotted for nesting, e.g.
    "data.quote"); None keeps the whole answer.
    """

    name: str
    path: str
    ttl: float
    params: dict[str, str] = field(default_factory=dict)
    method: str = "GET"
    payload: str | None = None
    # The answer's most telling top-level fields, shown as columns of the terminal table.
    display: tuple[str, ...] = ()

    def path_for(self, symbol: str) -> str:
        """The request path for a symbol, which is percent-encoded as a single segment."""
        return self.path.replace("{symbol}", quote(symbol, safe=""))


@dataclass(frozen=True, slots=True)
class Profile:
    """An upstream API: its endpoint types, headers and key, and its own values of settings
    (address, limits, the negative TTL: `settings`, read with `setting()`)."""

    name: str
    api_key_header: str
    types: dict[str, EndpointType]
    # Setting name -> the value this profile gives it (only those it sets; checked).
    settings: dict[str, Any] = field(default_factory=dict)
    # A used-weight counter header (Binance's X-MBX-USED-WEIGHT-1M) and its budget, if any.
    weight_header: WeightHeader | None = None
    # Extra request headers; a value may name environment variables as ${NAME}.
    headers: dict[str, str] = field(default_factory=dict)
    api_key_env: str = API_KEY_ENV  # the environment variable holding the API key
    quota_headers: QuotaHeaders | None = None  # rate-limit headers under names of its own
    # The upstream bans clients that draw too many 429s (Binance's 418): no 429 is risked to
    # check what its hints claim.
    bans: bool = False
    # "endpoint": each type gets its own shared budget, for an upstream that limits each route
    # apart (one budget for all would pace every type to the slowest route's share).
    rate_scope: RateScope = "upstream"

    def setting(self, setting: Setting[T]) -> T:
        """This profile's value of a setting, else the setting's built-in default."""
        if setting.name in self.settings:
            return cast(T, self.settings[setting.name])
        return setting.value_of(setting.default, setting.name)

    @property
    def base_url(self) -> str:
        return self.setting(BASE_URL)

    @property
    def negative_ttl(self) -> float:
        """How long a 404 ("no data for this symbol") is cached; 0: not at all."""
        return self.setting(NEGATIVE_TTL)

    def endpoint(self, type_name: str) -> EndpointType:
        """The endpoint type by name (in any case, see `match_type`), or a usage error that
        lists the allowed ones."""
        found = match_type(type_name, self.types)
        if found is None:
            allowed = ", ".join(sorted(self.types))
            raise UsageError(f"unknown --type {type_name!r}; allowed: {allowed}")
        return self.types[found]

    def request_headers(self, env: Mapping[str, str]) -> dict[str, str]:
        """The profile's headers with ${NAME} filled from `env`, plus the API key if set."""
        headers = {}
        for name, template in self.headers.items():
            missing = [v for v in _ENV_REF.findall(template) if v not in env]
            if missing:
                raise UsageError(
                    f"profile {self.name!r}: header {name!r} needs ${missing[0]}, which is not set"
                )
            value = _ENV_REF.sub(lambda m: env[m.group(1)], template)
            if not _header_safe(value):
                raise UsageError(
                    f"profile {self.name!r}: header {name!r} must be printable ASCII on one line"
                )
            headers[name] = value
        api_key = env.get(self.api_key_env)
        if api_key:
            if not _header_safe(api_key):
                raise UsageError(f"${self.api_key_env} must be printable ASCII on one line")
            headers[self.api_key_header] = api_key
        return headers

    def secret_header_names(self) -> frozenset[str]:
        """Lower-case names of headers whose values must never be shown."""
        names = {self.api_key_header.lower()}
        names |= {n.lower() for n, v in self.headers.items() if _ENV_REF.search(v)}
        return frozenset(names)


def match_type(given: str, known: Iterable[str]) -> str | None:
    """The name among `known` that `given` means: itself, else the one equal to it ignoring case
    (`-t MSS` is `mss`: a type name is typed by hand, often after a ticker in capitals); None
    when there is none. Names that differ only by case are allowed in a profile: the exact one
    wins, and an inexact name that fits several is a usage error naming them, not a guess."""
    names = list(known)
    if given in names:
        return given
    folded = given.casefold()
    same = sorted(name for name in names if name.casefold() == folded)
    if len(same) > 1:
        raise UsageError(
            f"--type {given!r} is ambiguous: it matches {' and '.join(map(repr, same))}, "
            "which differ only by case; give one of them exactly"
        )
    return same[0] if same else None


def _header_safe(value: str) -> bool:
    """Printable ASCII (and tabs): what an HTTP header value can carry without surprises."""
    return value.isascii() and all(c == "\t" or " " <= c <= "~" for c in value)


def is_secret_header(name: str) -> bool:
    """True for header names that usually carry credentials (Authorization, X-Api-Key...)."""
    return bool(_SECRET_NAME.search(name))


def load_builtin_profile(name: str = DEFAULT_PROFILE) -> Profile:
    """Read a profile shipped inside the package."""
    return parse_profile(builtin_profile_doc(name))


def builtin_profile_doc(name: str = DEFAULT_PROFILE) -> dict[str, Any]:
    """The parsed TOML of a built-in profile."""
    try:
        text = resources.files("scanctl.profiles").joinpath(f"{name}.toml").read_text("utf-8")
    except FileNotFoundError:
        raise UsageError(f"no profile named {name!r}") from None
    return tomllib.loads(text)


def builtin_profile_names() -> list[str]:
    return sorted(
        p.name.removesuffix(".toml")
        for p in resources.files("scanctl.profiles").iterdir()
        if p.name.endswith(".toml")
    )


def _unknown(table: Mapping[str, Any], allowed: frozenset[str], where: tuple[str, ...]) -> None:
    for key in table:
        if key not in allowed:
            shown = ".".join(where) or "the profile"
            raise ProfileError(
                f"unknown key {key!r} in [{shown}]; allowed: {', '.join(sorted(allowed))}",
                (*where, key),
            )


def _table(value: Any, where: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProfileError(f"[{'.'.join(where)}] must be a table", where)
    return value


def _number(
    value: Any, where: tuple[str, ...], *, integer: bool = False, positive: bool = False
) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and integer and not isinstance(value, int):
        ok = False
    if not ok or not value >= 0 or (positive and not value > 0) or value != value:
        kind = "a whole number" if integer else "a number"
        bound = "above 0" if positive else "0 or more"
        raise ProfileError(f"{'.'.join(where)} must be {kind} {bound}, got {value!r}", where)
    return float(value)


def _profile_settings(doc: dict[str, Any], where: tuple[str, ...]) -> dict[str, Any]:
    """The values a profile gives to settings that declare a profile key (scanctl/settings.py):
    numbers checked as a profile's (a whole number for an integer setting, above 0 unless the
    setting's range takes 0), text through the setting's own parser."""
    values: dict[str, Any] = {}
    tables = {key.rpartition(".")[0] for s in MODEL if (key := s.profile_key) is not None}
    for table in sorted(tables):
        at = (*where, *table.split(".")) if table else where
        found = _table(doc.get(table, {}), at) if table else doc
        keys = MODEL.in_profile(table)
        if table:
            _unknown(found, frozenset(keys), at)
        for key, setting in keys.items():
            if key in found:
                values[setting.name] = _setting_value(setting, found[key], (*at, key))
    return values


def _setting_value(setting: Setting[Any], value: Any, where: tuple[str, ...]) -> Any:
    if setting.kind in (int, float):
        integer = setting.kind is int
        positive = setting.check is not None and not setting.check.accepts(0)
        number = _number(value, where, integer=integer, positive=positive)
        return int(number) if integer else number
    try:
        return setting.value_of(_string(value, where), where[-1])
    except ProfileError:
        raise
    except UsageError as exc:
        raise ProfileError(str(exc), where) from None


def _string(value: Any, where: tuple[str, ...]) -> str:
    if not isinstance(value, str) or not value:
        raise ProfileError(f"{'.'.join(where)} must be a non-empty string, got {value!r}", where)
    return value


def parse_profile(doc: dict[str, Any], where: tuple[str, ...] = ()) -> Profile:
    """Build a Profile from a parsed TOML table, checking every key the engine relies on.

    `where` is the table's path in its file (("profiles", "x") in a config file), so errors
    name the key for `config check` to turn into a line number.
    """
    _unknown(doc, PROFILE_KEYS | set(MODEL.in_profile()), where)
    types = {
        name: _endpoint_type(name, spec, (*where, "types", name))
        for name, spec in _table(doc.get("types", {}), (*where, "types")).items()
    }
    if not types:
        raise ProfileError(f"profile {'.'.join(where) or ''} defines no [types]".strip(), where)
    settings = _profile_settings(doc, where)
    rate_limit = _table(doc.get("rate_limit", {}), (*where, "rate_limit"))
    _unknown(rate_limit, RATE_LIMIT_KEYS, (*where, "rate_limit"))
    weight, quota = _rate_limit_headers(rate_limit, (*where, "rate_limit"))
    bans = rate_limit.get("bans", False)
    if not isinstance(bans, bool):
        raise ProfileError(
            f"{'.'.join((*where, 'rate_limit', 'bans'))} must be true or false, got {bans!r}",
            (*where, "rate_limit", "bans"),
        )
    rate_scope = rate_limit.get("scope", "upstream")
    if rate_scope not in RATE_SCOPES:
        raise ProfileError(
            f"{'.'.join((*where, 'rate_limit', 'scope'))} must be one of "
            f"{', '.join(map(repr, RATE_SCOPES))}, got {rate_scope!r}",
            (*where, "rate_limit", "scope"),
        )
    headers = _table(doc.get("headers", {}), (*where, "headers"))
    for name, value in headers.items():
        if not isinstance(value, str) or any(c in name + value for c in "\r\n") or ":" in name:
            raise ProfileError(
                f"[{'.'.join((*where, 'headers'))}] {name!r} must be a one-line string",
                (*where, "headers", name),
            )
    return Profile(
        name=str(doc.get("name", where[-1] if where else DEFAULT_PROFILE)),
        api_key_header=_string(doc.get("api_key_header", "X-API-Key"), (*where, "api_key_header")),
        types=types,
        settings=settings,
        weight_header=weight,
        headers={str(k): str(v) for k, v in headers.items()},
        api_key_env=_string(doc.get("api_key_env", API_KEY_ENV), (*where, "api_key_env")),
        quota_headers=quota,
        bans=bans,
        rate_scope=rate_scope,
    )


def _endpoint_type(type_name: str, spec: Any, at: tuple[str, ...]) -> EndpointType:
    """One [types.NAME] table, checked: a path the symbol can only fill one segment of."""
    spec = _table(spec, at)
    _unknown(spec, TYPE_KEYS, at)
    path = _string(spec.get("path"), (*at, "path"))
    if "{symbol}" not in path or not path.startswith("/") or any(c in path for c in "?#"):
        raise ProfileError(
            f"[{'.'.join(at)}] path must start with /, hold {{symbol}}, and have no ? or # "
            f"(query parameters go in params), got {path!r}",
            (*at, "path"),
        )
    params = _table(spec.get("params", {}), (*at, "params"))
    for key, value in params.items():
        if isinstance(value, dict | list):
            raise ProfileError(
                f"[{'.'.join(at)}] params.{key} must be a string or number", (*at, "params")
            )
        if isinstance(value, bool):
            params[key] = "true" if value else "false"
    method = str(spec.get("method", "GET")).upper()
    if method not in METHODS:
        raise ProfileError(
            f"[{'.'.join(at)}] method must be one of {', '.join(METHODS)}, got {method!r}",
            (*at, "method"),
        )
    payload = spec.get("payload")
    display = spec.get("display", [])
    if not isinstance(display, list) or not all(isinstance(f, str) and f for f in display):
        raise ProfileError(
            f"[{'.'.join(at)}] display must be a list of field names, got {display!r}",
            (*at, "display"),
        )
    return EndpointType(
        type_name,
        path,
        _number(spec.get("ttl", 300), (*at, "ttl")),
        {str(k): str(v) for k, v in params.items()},
        method,
        None if payload is None else _string(payload, (*at, "payload")),
        tuple(display),
    )


def _rate_limit_headers(
    rate_limit: dict[str, Any], at: tuple[str, ...]
) -> tuple[WeightHeader | None, QuotaHeaders | None]:
    """The [rate_limit] table's header names: a used-weight counter, and a quota's own names."""
    weight = None
    if "weight_header" in rate_limit:
        if "weight_budget" not in rate_limit:
            raise ProfileError(
                "[rate_limit] weight_header needs weight_budget (and weight_window)",
                (*at, "weight_header"),
            )
        weight = WeightHeader(
            _string(rate_limit["weight_header"], (*at, "weight_header")),
            int(_number(rate_limit["weight_budget"], (*at, "weight_budget"), integer=True)),
            _number(rate_limit.get("weight_window", 60), (*at, "weight_window"), positive=True),
        )
    quota = None
    if any(k in rate_limit for k in ("remaining_header", "limit_header", "reset_header")):
        if "remaining_header" not in rate_limit:
            raise ProfileError(
                "[rate_limit] limit_header and reset_header need remaining_header", at
            )
        optional = {
            key: _string(rate_limit[key], (*at, key)) if key in rate_limit else None
            for key in ("limit_header", "reset_header")
        }
        quota = QuotaHeaders(
            _string(rate_limit["remaining_header"], (*at, "remaining_header")),
            optional["limit_header"],
            optional["reset_header"],
        )
    return weight, quota


def validate_base_url(url: str, name: str = "--base-url") -> str:
    """Accept only an absolute http(s) URL with a host; return it without a trailing slash."""
    parts = urlsplit(url)
    if parts.scheme not in ALLOWED_SCHEMES or not parts.hostname:
        raise UsageError(
            f"bad {name} {url!r}: expected an absolute URL with scheme "
            f"{' or '.join(ALLOWED_SCHEMES)} and a host, e.g. http://localhost:8000"
        )
    if "?" in url or "#" in url:  # even empty: a trailing "?" would move the path to the query
        raise UsageError(f"bad {name} {url!r}: it must not carry a query or fragment")
    return url.rstrip("/")


def parse_header(raw: str) -> tuple[str, str]:
    """Parse a `--header 'Name: value'` argument."""
    name, sep, value = raw.partition(":")
    name = name.strip()
    bad_value = any(c in value for c in "\r\n") or not _header_safe(value.strip())
    if not sep or not name or any(c in name for c in " \t\r\n") or bad_value:
        # The value may be a secret: never echo it.
        shown = name[:40] if sep else "(no colon)"
        raise UsageError(f"bad --header {shown!r}: expected 'Name: value' on one line")
    return name, value.strip()
