"""The user's config file: named profiles in TOML, found, merged, checked and shown.

Where: `--config PATH`, else `SCANCTL_CONFIG`, else `config.toml` in the user config dir
(platformdirs; optional there). Which profile: `--profile NAME`, else `SCANCTL_PROFILE`, else the
file's `default_profile`, else the built-in `cryptosatx`. A file profile named like a built-in
one (or with `extends = "NAME"`) is laid over it key by key, so a user changes only what differs.

    default_profile = "work"

    [profiles.work]
    extends = "cryptosatx"
    base_url = "https://analysis.internal"
    api_key_env = "WORK_API_KEY"
    headers = { Authorization = "Bearer ${WORK_TOKEN}" }

    [profiles.work.limits]
    concurrency = 20

    [profiles.work.types.funding_rate]
    path = "/funding/{symbol}"
    ttl = 60
    payload = "data"

Errors name the file and line (`config check`), because a config edited at 3 a.m. must say
where it is wrong.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scanctl.config import (
    DEFAULT_PROFILE,
    Profile,
    ProfileError,
    builtin_profile_doc,
    builtin_profile_names,
    is_secret_header,
    parse_profile,
)
from scanctl.errors import UsageError

CONFIG_ENV = "SCANCTL_CONFIG"
PROFILE_ENV = "SCANCTL_PROFILE"
TOP_KEYS = frozenset({"default_profile", "profiles"})
MASK = "******"


@dataclass(slots=True)
class ConfigFile:
    """A config file's text and parsed document (empty when there is no file)."""

    path: Path | None = None
    text: str = ""
    doc: dict[str, Any] = field(default_factory=dict)

    def where(self, keys: tuple[str, ...]) -> str:
        """ "FILE line N" for a key path, or "FILE" when the line cannot be told."""
        line = line_of(self.text, keys) if self.text else None
        name = str(self.path) if self.path else "config"
        return f"{name} line {line}" if line else name


def default_config_path() -> Path:
    from platformdirs import user_config_dir

    return Path(user_config_dir("scanctl", appauthor=False)) / "config.toml"


def load_config(explicit: str | None = None) -> ConfigFile:
    """Read the config file: `explicit` (flag or SCANCTL_CONFIG) must exist; the default may not."""
    chosen = explicit or os.environ.get(CONFIG_ENV)
    path = Path(chosen).expanduser() if chosen else default_config_path()
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        if chosen:
            raise UsageError(f"config file {str(path)!r} does not exist") from None
        return ConfigFile()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read config file {str(path)!r}: {exc}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: invalid TOML: {exc}") from None
    config = ConfigFile(path, text, doc)
    for key in doc:
        if key not in TOP_KEYS:
            raise UsageError(
                f"{config.where((key,))}: unknown key {key!r}; allowed: "
                f"{', '.join(sorted(TOP_KEYS))} (profiles go in [profiles.NAME])"
            )
    if not isinstance(doc.get("profiles", {}), dict):
        raise UsageError(f"{config.where(('profiles',))}: profiles must be a table")
    return config


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _profile_doc(config: ConfigFile, name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The profile's table with what it extends laid underneath."""
    if name in seen:
        raise UsageError(f"profiles extend each other in a circle: {' -> '.join((*seen, name))}")
    profiles = config.doc.get("profiles", {})
    own = profiles.get(name)
    if own is None:
        if name in builtin_profile_names():
            return builtin_profile_doc(name)
        known = sorted({*profiles, *builtin_profile_names()})
        raise UsageError(f"no profile named {name!r}; known: {', '.join(known)}")
    if not isinstance(own, dict):
        raise UsageError(f"{config.where(('profiles', name))}: a profile must be a table")
    base_name = own.get("extends")
    if base_name is None and name in builtin_profile_names():
        base_name = name
    if base_name is None:
        return dict(own)
    if base_name == name:
        base = builtin_profile_doc(name)
    else:
        base = _profile_doc(config, str(base_name), (*seen, name))
    merged = _merge(base, own)
    merged.pop("extends", None)
    merged["name"] = name
    return merged


def profile_name(config: ConfigFile, explicit: str | None = None) -> str:
    chosen = explicit or os.environ.get(PROFILE_ENV) or config.doc.get("default_profile")
    return str(chosen) if chosen else DEFAULT_PROFILE


def resolve_profile(config: ConfigFile, explicit: str | None = None) -> Profile:
    """The profile in force, checked; a mistake names its line in the file."""
    name = profile_name(config, explicit)
    doc = _profile_doc(config, name)
    try:
        return parse_profile(doc, ("profiles", name) if config.path else ())
    except ProfileError as exc:
        where = config.where(exc.where) if config.path and exc.where else None
        raise UsageError(f"{where}: {exc}" if where else str(exc)) from None


def check_config(path: str | None) -> tuple[Path | None, list[str]]:
    """Load and check every profile of a config file; return its path and profile names."""
    config = load_config(path)
    names = list(config.doc.get("profiles", {}))
    default = config.doc.get("default_profile")
    if default is not None and default not in names and default not in builtin_profile_names():
        raise UsageError(
            f"{config.where(('default_profile',))}: default_profile {default!r} is not a profile"
        )
    for name in names:
        resolve_profile(config, name)
    return config.path, names


# -- line numbers ------------------------------------------------------------------------------

_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(
    r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*="""
)
_PART = re.compile(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""")


def _parts(dotted: str) -> tuple[str, ...]:
    return tuple(p.strip("\"'") for p in _PART.findall(dotted))


def line_of(text: str, keys: tuple[str, ...]) -> int | None:
    """The line (1-based) where a key path is set, else the closest table that holds it."""
    table: tuple[str, ...] = ()
    best, best_length = None, 0
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            table = _parts(header.group(1))
            path = table
        else:
            key = _KEY.match(line)
            if not key:
                continue
            path = (*table, *_parts(key.group(1)))
        if path == keys[: len(path)] and len(path) > best_length:
            best, best_length = number, len(path)
            if len(path) == len(keys):
                return number
    return best


# -- config show -------------------------------------------------------------------------------


def effective(
    profile: Profile,
    source: str,
    env: dict[str, str],
    headers: dict[str, str],
    **resolved: Any,
) -> dict[str, Any]:
    """The settings a scan would use, secrets masked (for `config show`): `headers` are the
    request headers in force (profile and -H), masked where they carry a secret."""
    secret = profile.secret_header_names()
    headers = {
        name: MASK if name.lower() in secret or is_secret_header(name) else value
        for name, value in headers.items()
    }
    api_key = env.get(profile.api_key_env)
    return {
        "profile": profile.name,
        "source": source,
        **resolved,
        "api_key_header": profile.api_key_header,
        "api_key_env": profile.api_key_env,
        "api_key": f"{MASK} (set)" if api_key else "(not set)",
        "negative_ttl": profile.negative_ttl,
        "headers": headers,
        "rate_limit": {
            **(
                {
                    "weight_header": profile.weight_header.name,
                    "weight_budget": profile.weight_header.budget,
                    "weight_window": profile.weight_header.window,
                }
                if profile.weight_header
                else {}
            ),
            **(
                {
                    "remaining_header": profile.quota_headers.remaining,
                    "limit_header": profile.quota_headers.limit,
                    "reset_header": profile.quota_headers.reset,
                }
                if profile.quota_headers
                else {}
            ),
            **({"bans": True} if profile.bans else {}),
            **({"scope": profile.rate_scope} if profile.rate_scope != "upstream" else {}),
        },
        "types": {
            t.name: {
                "path": t.path,
                "method": t.method,
                "ttl": t.ttl,
                "params": t.params,
                "payload": t.payload,
                "display": list(t.display),
            }
            for t in profile.types.values()
        },
    }


def to_toml(document: dict[str, Any]) -> str:
    """Our settings document as TOML (scalars first, then tables; None is left out)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, dict):
            if not v:
                return "{}"
            return "{ " + ", ".join(f"{key(k)} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(str(v), ensure_ascii=False)

    def key(k: str) -> str:
        return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)

    lines: list[str] = []

    def table(prefix: tuple[str, ...], doc: dict[str, Any]) -> None:
        scalars = {k: v for k, v in doc.items() if v is not None and not _is_table(k, v)}
        if prefix and scalars:
            lines.append(f"\n[{'.'.join(key(p) for p in prefix)}]")
        lines.extend(f"{key(k)} = {value(v)}" for k, v in scalars.items())
        for k, v in doc.items():
            if _is_table(k, v):
                table((*prefix, k), v)

    table((), document)
    return "\n".join(lines).lstrip("\n") + "\n"


def _is_table(name: str, value: Any) -> bool:
    return isinstance(value, dict) and name not in ("params",)
