"""Profiles: which endpoint each scan type calls, as data rather than code.

A profile is a TOML document (the built-in one is `profiles/cryptosatx.toml`). Each type names a
path template with a `{symbol}` placeholder, fixed query parameters and a TTL, so pointing
scanctl at a new endpoint is a config line. Settings resolve flags > environment > profile.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import quote, urlsplit

from scanctl.errors import UsageError
from scanctl.hints import WeightHeader

DEFAULT_PROFILE = "cryptosatx"
ALLOWED_SCHEMES = ("http", "https")


@dataclass(frozen=True, slots=True)
class EndpointType:
    """One kind of analysis: where to ask for it and how long an answer stays fresh."""

    name: str
    path: str
    ttl: float
    params: dict[str, str] = field(default_factory=dict)

    def path_for(self, symbol: str) -> str:
        """The request path for a symbol, which is percent-encoded as a single segment."""
        return self.path.replace("{symbol}", quote(symbol, safe=""))


@dataclass(frozen=True, slots=True)
class Profile:
    """An upstream API: its default address, its endpoint types and how it takes a key."""

    name: str
    base_url: str
    api_key_header: str
    types: dict[str, EndpointType]
    # A used-weight counter header (Binance's X-MBX-USED-WEIGHT-1M) and its budget, if any.
    weight_header: WeightHeader | None = None
    # How long a 404 ("no data for this symbol") is cached; 0: not at all.
    negative_ttl: float = 30.0

    def endpoint(self, type_name: str) -> EndpointType:
        """The endpoint type by name, or a usage error that lists the allowed ones."""
        try:
            return self.types[type_name]
        except KeyError:
            allowed = ", ".join(sorted(self.types))
            raise UsageError(f"unknown --type {type_name!r}; allowed: {allowed}") from None


def load_builtin_profile(name: str = DEFAULT_PROFILE) -> Profile:
    """Read a profile shipped inside the package."""
    text = resources.files("scanctl.profiles").joinpath(f"{name}.toml").read_text("utf-8")
    return parse_profile(tomllib.loads(text))


def parse_profile(doc: dict[str, Any]) -> Profile:
    """Build a Profile from a parsed TOML document, checking what the engine relies on."""
    types: dict[str, EndpointType] = {}
    for type_name, spec in doc.get("types", {}).items():
        path = str(spec["path"])
        if "{symbol}" not in path or not path.startswith("/"):
            raise UsageError(
                f"profile type {type_name!r}: path must start with / and hold {{symbol}}"
            )
        params = {str(k): str(v) for k, v in spec.get("params", {}).items()}
        ttl = _seconds(spec.get("ttl", 300), f"[types.{type_name}] ttl")
        types[type_name] = EndpointType(type_name, path, ttl, params)
    if not types:
        raise UsageError("profile defines no [types]")
    limits = doc.get("rate_limit", {})
    weight = None
    if "weight_header" in limits:
        try:
            weight = WeightHeader(
                str(limits["weight_header"]),
                int(limits["weight_budget"]),
                float(limits.get("weight_window", 60)),
            )
        except (KeyError, TypeError, ValueError):
            raise UsageError(
                "profile [rate_limit]: weight_header needs weight_budget (and weight_window)"
            ) from None
    return Profile(
        name=str(doc.get("name", DEFAULT_PROFILE)),
        base_url=str(doc.get("base_url", "http://localhost:8000")),
        api_key_header=str(doc.get("api_key_header", "X-API-Key")),
        types=types,
        weight_header=weight,
        negative_ttl=_seconds(doc.get("negative_ttl", 30), "negative_ttl"),
    )


def _seconds(value: Any, name: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not seconds >= 0:
        raise UsageError(f"profile {name} must be 0 or more seconds, got {value!r}")
    return seconds


def validate_base_url(url: str) -> str:
    """Accept only an absolute http(s) URL with a host; return it without a trailing slash."""
    parts = urlsplit(url)
    if parts.scheme not in ALLOWED_SCHEMES or not parts.hostname:
        raise UsageError(
            f"bad --base-url {url!r}: expected an absolute URL with scheme "
            f"{' or '.join(ALLOWED_SCHEMES)} and a host, e.g. http://localhost:8000"
        )
    if parts.query or parts.fragment:
        raise UsageError(f"bad --base-url {url!r}: it must not carry a query or fragment")
    return url.rstrip("/")


def parse_header(raw: str) -> tuple[str, str]:
    """Parse a `--header 'Name: value'` argument."""
    name, sep, value = raw.partition(":")
    name = name.strip()
    if not sep or not name or any(c in name for c in " \t\r\n") or any(c in value for c in "\r\n"):
        # The value may be a secret: never echo it.
        shown = name[:40] if sep else "(no colon)"
        raise UsageError(f"bad --header {shown!r}: expected 'Name: value' on one line")
    return name, value.strip()
