"""Every setting of a scan, declared once: its type, built-in default, allowed range, flag,
environment variable, profile key and help, and the one place they are resolved.

    flag  >  environment variable  >  the profile (config file, else built-in)  >  built-in default

The commands are generated from these declarations (cli.py gives `scan`, `warm-cache` and
`config show` their options from `MODEL`), `config show` prints what `resolve` gives, the profile
keys a config file may hold under `[limits]` are the ones declared here, and the Python API
(`scanctl.scan`, `scanctl.run`) takes the same settings as keywords and checks the same ranges.
Adding a setting is one `MODEL.declare(...)` below plus the code that uses its value; the
value reaches `ScanSettings` or `ScanJob` by itself when they have a field of the same name
(docs/architecture.md, "Settings").

This module stays light (the CLI imports it at startup): it imports nothing of scanctl but the
errors at load time; profiles are read only when `resolve` runs.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from scanctl.errors import UsageError
from scanctl.terminal import COLOR_CHOICES

if TYPE_CHECKING:
    from scanctl.config import Profile

T = TypeVar("T")

# Where a setting is offered. Every setting is resolved for every command (a scan needs its
# profile's negative TTL even where there is no flag for it); these say who may *set* it.
SCAN = "scan"
WARM = "warm-cache"
SHOW = "config show"
API = "python"  # scanctl.scan / scanctl.run keywords
CACHE_COMMANDS = frozenset({"stats", "cache clear", "cache prune"})
UPSTREAM = frozenset({SCAN, WARM, SHOW, API})  # where and how fast to ask
RUN = frozenset({SCAN, WARM, API})  # how one scan runs


@dataclass(frozen=True, slots=True)
class Check:
    """An allowed range, as the error states it: "--rate must be a positive number, got 0".

    `accepts` must be False for NaN (a comparison is)."""

    accepts: Callable[[float], bool]
    phrase: str


POSITIVE = Check(lambda v: v > 0, "a positive number")
NON_NEGATIVE = Check(lambda v: v >= 0, "0 or more")
SECONDS = Check(lambda v: v >= 0, "0 or more seconds")
SHARE = Check(lambda v: 0 <= v <= 1, "a share between 0 and 1")


def between(low: int, high: int) -> Check:
    return Check(lambda v: low <= v <= high, f"between {low} and {high}")


@dataclass(frozen=True, kw_only=True)  # no slots: `Setting[int](...)` sets __orig_class__
class Setting(Generic[T]):
    """One setting. `T` is the type of its resolved value (`resolved[SETTING]` is typed).

    `kind` is what the flag reads (bool for an on/off flag; str items for a `repeatable` one);
    `parse` turns that text into the value (a size from "5M"), raising UsageError in words that
    name `spelled` (the flag, or the keyword in Python). `help` may say `{default}`: the help
    then cannot drift from the default. `profile_key` is a dotted key of a profile
    ("limits.timeout"); `show` names the table of `config show` that lists the value.
    """

    name: str  # the Python keyword; the flag is --name-with-dashes
    kind: type[Any]
    default: Any = None
    help: str
    metavar: str | None = None
    short: str | None = None
    env: str | None = None
    profile_key: str | None = None
    check: Check | None = None
    parse: Callable[[Any, str], T] | None = None
    choices: tuple[str, ...] = ()
    repeatable: bool = False
    commands: frozenset[str] = RUN
    show: str | None = None
    none_means: str | None = None  # how `config show` says None ("adaptive" for --rate)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def help_text(self) -> str:
        return self.help.format(default=self.default)

    @property
    def from_flag_alone(self) -> bool:
        """True when nothing but the flag can set it (no variable, no profile key): its flag
        then carries the default itself, as `--help` shows it."""
        return self.env is None and self.profile_key is None

    @property
    def built_in(self) -> T:
        """The built-in default as a value ("5M" as bytes): the default of the engine's own
        parts (`ScanSettings`, `CachePolicy`, the breaker), so none keeps a copy of it."""
        return self.value_of(self.default, self.flag)

    def value_of(self, raw: Any, spelled: str) -> T:
        """The value from a flag's, a variable's, a keyword's or the default's raw value,
        checked against the range; None stays None (not set)."""
        if raw is None:
            return cast(T, None)
        value = self.parse(raw, spelled) if self.parse is not None else raw
        if self.choices and value not in self.choices:
            raise UsageError(f"unknown {spelled} {value!r}; allowed: {', '.join(self.choices)}")
        self.check_range(value, spelled)
        return cast(T, value)

    def check_range(self, value: Any, spelled: str) -> None:
        if self.check is not None and value is not None and not self.check.accepts(value):
            raise UsageError(f"{spelled} must be {self.check.phrase}, got {value:g}")


class SettingsModel:
    """The declared settings, in the order `--help` lists them."""

    def __init__(self) -> None:
        self._settings: dict[str, Setting[Any]] = {}

    def declare(self, setting: Setting[T]) -> Setting[T]:
        if setting.name in self._settings:
            raise ValueError(f"setting {setting.name!r} is declared twice")
        self._settings[setting.name] = setting
        return setting

    @contextlib.contextmanager
    def declared(self, setting: Setting[Any]) -> Iterator[Setting[Any]]:
        """`setting` declared for the block only (a test's throwaway setting)."""
        self.declare(setting)
        try:
            yield setting
        finally:
            del self._settings[setting.name]

    def __iter__(self) -> Iterator[Setting[Any]]:
        return iter(list(self._settings.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._settings

    def __getitem__(self, name: str) -> Setting[Any]:
        return self._settings[name]

    def offered(self, command: str) -> list[Setting[Any]]:
        """The settings `command` takes, in declaration order."""
        return [s for s in self if command in s.commands]

    def in_profile(self, table: str = "") -> dict[str, Setting[Any]]:
        """Profile key (within `table`, "" for the top level) -> setting."""
        found = {}
        for setting in self:
            if setting.profile_key is None:
                continue
            where, _, key = setting.profile_key.rpartition(".")
            if where == table:
                found[key] = setting
        return found


MODEL = SettingsModel()


# -- parsers (each raises UsageError naming the flag or keyword it was given as) -----------------


def parse_size(text: Any, spelled: str) -> int:
    """A size in bytes from "5242880", "512K" or "5M" (binary multiples)."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:I?B)?\s*", str(text), re.IGNORECASE)
    if not match or int(match.group(1)) == 0:
        raise UsageError(f"bad {spelled} {text!r}: expected a size such as 5M, 512K or 100000")
    power = " KMG".index(match.group(2).upper() or " ")
    return int(match.group(1)) * int(1024**power)


def _base_url(text: Any, spelled: str) -> str:
    from scanctl.config import validate_base_url

    return validate_base_url(str(text), spelled)


def _headers(raw: Any, spelled: str) -> list[tuple[str, str]]:
    from scanctl.config import parse_header

    return [parse_header(item) for item in raw]


# -- the declarations: the order is `--help`'s ---------------------------------------------------

FILE = MODEL.declare(
    Setting[str | None](
        name="file",
        kind=str,
        short="-f",
        metavar="PATH|-",
        help="Read symbols from PATH, one per line; '-' for stdin.",
        commands=frozenset({SCAN, WARM}),
    )
)
BASE_URL = MODEL.declare(
    Setting[str](
        name="base_url",
        kind=str,
        default="http://localhost:8000",
        parse=_base_url,
        metavar="URL",
        env="SCANCTL_BASE_URL",
        profile_key="base_url",
        help="Upstream API address (default: the profile's, else {default}).",
        commands=UPSTREAM,
    )
)
CONFIG = MODEL.declare(
    Setting[str | None](
        name="config",
        kind=str,
        metavar="PATH",
        env="SCANCTL_CONFIG",
        help="Config file with profiles.",
        commands=UPSTREAM,
    )
)
PROFILE = MODEL.declare(
    Setting[str | None](
        name="profile",
        kind=str,
        metavar="NAME",
        env="SCANCTL_PROFILE",
        help="Profile from the config file.",
        commands=UPSTREAM,
    )
)
OUTPUT = MODEL.declare(
    Setting[str | None](
        name="output",
        kind=str,
        short="-o",
        metavar="PATH",
        help="Write to PATH instead of stdout.",
        commands=frozenset({SCAN}),
    )
)
METRICS = MODEL.declare(
    Setting[str | None](
        name="metrics",
        kind=str,
        metavar="PATH",
        help="Also write the run's figures to PATH (JSON; Prometheus text for a .prom PATH).",
        commands=frozenset({SCAN}),
    )
)
METRICS_FORMAT = MODEL.declare(
    Setting[str | None](
        name="metrics_format",
        kind=str,
        choices=("json", "prom"),
        metavar="json|prom",
        help="What --metrics writes (default: prom for a PATH ending in .prom, else json).",
        commands=frozenset({SCAN}),
    )
)
CONCURRENCY = MODEL.declare(
    Setting[int](
        name="concurrency",
        kind=int,
        default=50,
        check=between(1, 10_000),
        metavar="N",
        profile_key="limits.concurrency",
        show="limits",
        help="Most requests in flight (default: the profile's, else {default}).",
        commands=UPSTREAM,
    )
)
RATE = MODEL.declare(
    Setting[float | None](
        name="rate",
        kind=float,
        check=POSITIVE,
        metavar="R",
        profile_key="limits.rate",
        show="limits",
        none_means="adaptive",
        help="Most requests per second (default: the profile's, else no ceiling).",
        commands=UPSTREAM,
    )
)
TIMEOUT = MODEL.declare(
    Setting[float](
        name="timeout",
        kind=float,
        default=30.0,
        check=POSITIVE,
        metavar="S",
        profile_key="limits.timeout",
        show="limits",
        help="Seconds one request may take in all (default: the profile's, else {default:g}).",
        commands=UPSTREAM,
    )
)
# Against an upstream where one request in six fails for a moment (the faults benchmark), 3
# retries still lose ~0.7 symbols per 1000 (0.16 ** 4); 4 lose ~0.1. The retry budget, not
# this, is what keeps an outage from being multiplied.
RETRIES = MODEL.declare(
    Setting[int](
        name="retries",
        kind=int,
        default=4,
        check=NON_NEGATIVE,
        metavar="N",
        profile_key="limits.retries",
        show="limits",
        help=(
            "Retries after timeouts, connection errors and 5xx (default: the profile's, "
            "else {default})."
        ),
        commands=UPSTREAM,
    )
)
HEADER = MODEL.declare(
    Setting[list[tuple[str, str]]](
        name="header",
        kind=str,
        repeatable=True,
        parse=_headers,
        short="-H",
        metavar="'NAME: VALUE'",
        help="Extra request header (repeatable).",
        commands=UPSTREAM,
    )
)
SKIP_INVALID = MODEL.declare(
    Setting[bool](
        name="skip_invalid",
        kind=bool,
        default=False,
        help="Warn about and skip invalid symbols instead of stopping.",
    )
)
SHARD = MODEL.declare(
    Setting[str | None](
        name="shard",
        kind=str,
        metavar="K/N",
        help="Scan only shard K of N (1 <= K <= N): a stable hash of each symbol picks one.",
    )
)
QUIET = MODEL.declare(
    Setting[bool](
        name="quiet",
        kind=bool,
        default=False,
        short="-q",
        help="Nothing on stderr but errors.",
        commands=frozenset({SCAN, WARM}),
    )
)
NO_PROGRESS = MODEL.declare(
    Setting[bool](
        name="no_progress",
        kind=bool,
        default=False,
        help="No progress bar (status lines instead).",
        commands=frozenset({SCAN, WARM}),
    )
)
DEADLINE = MODEL.declare(
    Setting[float | None](
        name="deadline",
        kind=float,
        check=POSITIVE,
        metavar="S",
        help="Stop after S seconds; symbols not finished (throttled ones too) fail.",
    )
)
RETRY_BUDGET = MODEL.declare(
    Setting[float](
        name="retry_budget",
        kind=float,
        default=0.1,
        check=SHARE,
        metavar="SHARE",
        help="Retries may be at most this share of recent requests.",
    )
)
MAX_OUTAGE = MODEL.declare(
    Setting[float](
        name="max_outage",
        kind=float,
        default=60.0,
        check=POSITIVE,
        metavar="S",
        help="Give up (exit 4) when the upstream is down this long.",
    )
)
HEDGE = MODEL.declare(
    Setting[bool](
        name="hedge",
        kind=bool,
        default=False,
        help="Send a second copy of requests slower than the p95 so far.",
        commands=frozenset({SCAN, API}),
    )
)
RELEARN = MODEL.declare(
    Setting[bool](
        name="relearn",
        kind=bool,
        default=False,
        help="Ignore the rate learned on earlier runs; find it again.",
    )
)
NO_ADAPT = MODEL.declare(
    Setting[bool](
        name="no_adapt",
        kind=bool,
        default=False,
        help="Pace only by --rate and --concurrency: no discovery, no learning.",
    )
)
CACHE = MODEL.declare(
    Setting[str | None](
        name="cache",
        kind=str,
        metavar="PATH|URL",
        env="SCANCTL_CACHE",
        help="Cache: a SQLite file (default: the user cache dir), redis://host:port/db, or memory.",
        commands=UPSTREAM | CACHE_COMMANDS,
    )
)
PACING_STORE = MODEL.declare(
    Setting[str | None](
        name="pacing_store",
        kind=str,
        metavar="local|PATH|URL",
        env="SCANCTL_PACING_STORE",
        help=(
            "Where the send schedule is shared: a SQLite file (default: pacing.sqlite3 in the "
            "state dir, all of this user's processes), redis://host:port/db (many machines), "
            "or local (this process alone)."
        ),
        commands=RUN | frozenset({"stats"}),
    )
)
NO_CACHE = MODEL.declare(
    Setting[bool](
        name="no_cache",
        kind=bool,
        default=False,
        help="Neither read nor write the cache.",
        commands=frozenset({SCAN, API}),
    )
)
REFRESH = MODEL.declare(
    Setting[bool](
        name="refresh",
        kind=bool,
        default=False,
        help="Ignore cached answers; fetch all and store them.",
        commands=frozenset({SCAN, API}),
    )
)
TTL = MODEL.declare(
    Setting[float | None](
        name="ttl",
        kind=float,
        check=POSITIVE,
        metavar="S",
        help="Answers stay fresh S seconds (default: the type's TTL).",
    )
)
AHEAD = MODEL.declare(
    Setting[float](
        name="ahead",
        kind=float,
        default=0.2,
        check=Check(lambda v: 0 <= v < 1, "a share between 0 and 1"),
        metavar="SHARE",
        help="Also refresh entries with less than this share of TTL left.",
        commands=frozenset({WARM}),
    )
)
STALE_IF_ERROR = MODEL.declare(
    Setting[float | None](
        name="stale_if_error",
        kind=float,
        check=SECONDS,
        metavar="S",
        help="When a fetch fails, serve a cached answer expired less than S seconds ago.",
        commands=frozenset({SCAN, API}),
    )
)
NEGATIVE_TTL = MODEL.declare(
    Setting[float](
        name="negative_ttl",
        kind=float,
        default=30.0,
        check=SECONDS,
        metavar="S",
        profile_key="negative_ttl",
        help="Remember a 404 for S seconds (0: never; default: the profile's, else {default:g}).",
    )
)
RESUME = MODEL.declare(
    Setting[bool](
        name="resume",
        kind=bool,
        default=False,
        help="With -F jsonl -o FILE: keep FILE's ok records, scan the rest, append.",
        commands=frozenset({SCAN}),
    )
)
CHANGES = MODEL.declare(
    Setting[bool](
        name="changes",
        kind=bool,
        default=False,
        help="Add changed / changed_fields: how each answer differs from the one before it.",
        commands=frozenset({SCAN, API}),
    )
)
ONLY_CHANGED = MODEL.declare(
    Setting[bool](
        name="only_changed",
        kind=bool,
        default=False,
        help="Write only records whose answer changed (--changes).",
        commands=frozenset({SCAN, API}),
    )
)
LOCK = MODEL.declare(
    Setting[str | None](
        name="lock",
        kind=str,
        metavar="NAME",
        help="No two runs with this lock name at once (exit 75).",
        commands=frozenset({SCAN, WARM}),
    )
)
WAIT_LOCK = MODEL.declare(
    Setting[float](
        name="wait_lock",
        kind=float,
        default=0.0,
        check=SECONDS,
        metavar="S",
        help="Wait up to S seconds for a held lock instead of exiting 75.",
        commands=frozenset({SCAN, WARM}),
    )
)
GRACE = MODEL.declare(
    Setting[float](
        name="grace",
        kind=float,
        default=5.0,
        check=SECONDS,
        metavar="S",
        help="After Ctrl-C/SIGTERM, give requests in flight S seconds to finish.",
        commands=frozenset({SCAN, WARM}),
    )
)
MAX_BODY = MODEL.declare(
    Setting[int](
        name="max_body",
        kind=str,
        default="5M",
        parse=parse_size,
        metavar="SIZE",
        help="Fail an answer longer than SIZE bytes (K/M suffixes) unread.",
    )
)
FOLLOW_REDIRECTS = MODEL.declare(
    Setting[bool](
        name="follow_redirects",
        kind=bool,
        default=False,
        help="Follow redirects (up to 5), even to another host.",
    )
)
TRANSPORTS = ("auto", "aiohttp", "httpx")
TRANSPORT = MODEL.declare(
    Setting[str](
        name="transport",
        kind=str,
        default="auto",
        choices=TRANSPORTS,
        metavar="auto|aiohttp|httpx",
        env="SCANCTL_TRANSPORT",
        help=(
            "HTTP transport under httpx: aiohttp (a quarter of the CPU) or httpx's own; auto "
            "(default): aiohttp, unless a proxy is set in the environment."
        ),
    )
)
COLOR = MODEL.declare(
    Setting[str](
        name="color",
        kind=str,
        default="auto",
        choices=COLOR_CHOICES,
        metavar="auto|always|never",
        help="Colour in the table and progress bar (auto: on a terminal; NO_COLOR off).",
        commands=frozenset({SCAN}),
    )
)


# -- resolution --------------------------------------------------------------------------------


@dataclass(slots=True)
class Resolved:
    """Every setting's value for one run, with the profile it was resolved against.

    `resolved[TIMEOUT]` is typed by the declaration; `values` holds them by name, for filling
    dataclasses whose fields are named after settings. `headers` are the request headers in
    force: the profile's (with the API key) overlaid with --header.
    """

    values: dict[str, Any]
    profile: Profile
    source: str  # the config file the profile came from, or "built-in (no config file)"
    headers: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, setting: Setting[T]) -> T:
        return cast(T, self.values[setting.name])

    def fill(self, names: Iterable[str]) -> dict[str, Any]:
        """The values of the settings among `names` (a dataclass's field names, say)."""
        return {name: self.values[name] for name in names if name in self.values}


def flag_of(setting: Setting[Any]) -> str:
    return setting.flag


def keyword_of(setting: Setting[Any]) -> str:
    return setting.name


def _from_env(setting: Setting[Any], text: str, spelled: str) -> Any:
    """A variable's text as the flag's kind would read it."""
    if setting.kind is str or setting.parse is not None:
        return text
    try:
        return setting.kind(text)
    except ValueError:
        raise UsageError(f"bad ${setting.env} {text!r} for {spelled}") from None


def resolve(
    given: Mapping[str, Any],
    env: Mapping[str, str],
    *,
    spell: Callable[[Setting[Any]], str] = flag_of,
    model: SettingsModel = MODEL,
) -> Resolved:
    """Every setting's value: `given` (flags or keywords; None, False or empty: not given) >
    `env` > the profile > the built-in default, each checked against its range.

    `spell` names a setting in errors: its flag on the command line, its keyword in Python.
    The config file and profile are found first (from the same precedence), since the profile
    supplies the third layer.
    """
    raw: dict[str, Any] = {}
    for setting in model:
        value = given.get(setting.name)
        if value is None or value is False or (setting.repeatable and not value):
            value = None
            if setting.env and env.get(setting.env):
                value = _from_env(setting, env[setting.env], spell(setting))
        raw[setting.name] = value

    from scanctl.configfile import load_config, resolve_profile

    loaded = load_config(raw.get("config"))
    profile = resolve_profile(loaded, raw.get("profile"))
    values: dict[str, Any] = {}
    for setting in model:
        spelled = spell(setting)
        value = raw[setting.name]
        if value is not None:
            values[setting.name] = setting.value_of(value, spelled)
        elif setting.name in profile.settings:
            values[setting.name] = profile.settings[setting.name]  # checked when it was read
            setting.check_range(values[setting.name], spelled)
        else:
            values[setting.name] = setting.value_of(setting.default, spelled)
    headers = profile.request_headers(env)
    for name, value in values.get("header") or []:
        for same in [n for n in headers if n.lower() == name.lower()]:
            del headers[same]  # header names are case-insensitive: the flag wins
        headers[name] = value
    source = str(loaded.path) if loaded.path else "built-in (no config file)"
    return Resolved(values, profile, source, headers)


def shown(setting: Setting[Any], value: Any) -> Any:
    """A value as `config show` prints it."""
    if value is None and setting.none_means is not None:
        return setting.none_means
    return value
