"""The `scanctl` command line: parse, validate, hand over to the runner, map errors to exit codes.

Startup stays fast: this module imports neither httpx, anyio nor rich; the commands import what
they need when they run (a test and ruff's TID253 keep it so). Every error a user can cause is
reported as one line on stderr, `scanctl: error: ...`, with the exit code of `ExitCode`; that
mapping happens here and nowhere else. Shell completion is answered here too: Typer's scripts
and shell protocols, scanctl's own options to show and install them (see `_install_completion`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer._click.exceptions import ClickException
from typer._completion_classes import completion_init
from typer.core import TyperGroup

from scanctl import __version__
from scanctl.completion import Completed, choices, comma_list
from scanctl.errors import ExitCode, OutputError, ScanctlError, UsageError
from scanctl.terminal import COLOR_CHOICES, check_color

if TYPE_CHECKING:
    from collections.abc import MutableMapping

    from typer._click import Command, Context

    from scanctl.cache.front import CachePolicy
    from scanctl.config import EndpointType, Profile
    from scanctl.engine import ScanSettings
    from scanctl.symbols import SymbolList

FORMAT_CHOICES = ("json", "jsonl", "csv", "table")
METRICS_FORMATS = ("json", "prom")
TRANSPORTS = ("auto", "aiohttp", "httpx")


def _fail(message: str, code: ExitCode) -> NoReturn:
    print(f"scanctl: error: {message}", file=sys.stderr, flush=True)
    sys.exit(int(code))


class _OneLineErrors(TyperGroup):
    """Runs commands with every error as one line on stderr and a documented exit code; answers
    the shell's completion requests; builds `demo-api` only when it is asked for."""

    def main(self, *args: Any, **kwargs: Any) -> NoReturn:
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except ScanctlError as exc:
            _fail(str(exc), exc.exit_code)
        except ClickException as exc:
            hint = " (see --help)"
            _fail(" ".join(exc.format_message().split()) + hint, ExitCode.USAGE)
        except (KeyboardInterrupt, typer.Abort):
            _fail("interrupted", ExitCode.INTERRUPTED)
        except Exception as exc:  # a bug: say so in one line, traceback only when asked
            if os.environ.get("SCANCTL_DEBUG"):
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc}", ExitCode.INTERNAL)
        sys.exit(int(code or 0))

    def _main_shell_completion(
        self, ctx_args: MutableMapping[str, Any], prog_name: str, complete_var: str | None = None
    ) -> None:
        """Answer a completion request (`_SCANCTL_COMPLETE=complete_bash`, ...) and exit; on a
        normal run (the variable unset) return at once.

        Typer registers its shell protocols only for apps with its own completion options,
        which scanctl replaces (see `_install_completion`), so they are registered here: a few
        dictionary entries, from modules Typer has already imported. The program name is fixed
        because the installed scripts call `scanctl`, however this process was started.
        """
        completion_init()
        super()._main_shell_completion(ctx_args, PROG, complete_var or COMPLETE_VAR)

    # `demo-api` has some thirty options, and Typer builds every command's options on every run
    # (about 60 us each): it is made only when asked for, or listed (--help, completion).

    def list_commands(self, ctx: Context) -> list[str]:
        return [*super().list_commands(ctx), "demo-api"]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name == "demo-api":
            from scanctl.demo.options import demo_api_command

            return demo_api_command()
        return super().get_command(ctx, cmd_name)


PROG = "scanctl"
COMPLETE_VAR = "_SCANCTL_COMPLETE"
COMPLETION_SHELLS = ("bash", "zsh", "fish")


def _completion_shell() -> str:
    """The shell to complete for: the one scanctl runs under (its nearest shell ancestor, as
    Typer finds it), else the login shell ($SHELL), e.g. when run from `sh -c` or make."""
    from typer._completion_shared import _get_shell_name

    running = _get_shell_name()
    login = os.path.basename(os.environ.get("SHELL", ""))
    for name in (running, login):
        if name in COMPLETION_SHELLS:
            return name
    found = ", ".join(repr(n) for n in dict.fromkeys((running, login)) if n) or "none"
    raise UsageError(
        f"completion is for bash, zsh and fish; found {found}: run this from one of them, or "
        f"print a script for one with {COMPLETE_VAR}=source_bash|source_zsh|source_fish {PROG}"
    )


def _show_completion(ctx: typer.Context, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from typer._completion_shared import get_completion_script

    shell = _completion_shell()
    print(get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=shell))
    raise typer.Exit(0)


def _install_completion(ctx: typer.Context, value: bool) -> None:
    """Typer's installer (a script under ~, sourced from the shell's rc file), with scanctl's
    shell detection and messages; not Typer's own options, whose errors are not one line."""
    if not value or ctx.resilient_parsing:
        return
    from typer._completion_shared import install

    shell = _completion_shell()
    try:
        _, path = install(shell=shell, prog_name=PROG, complete_var=COMPLETE_VAR)
    except OSError as exc:
        raise OutputError(f"cannot install {shell} completion: {exc}") from None
    print(
        f"scanctl: {shell} completion installed in {path}; open a new shell to use it",
        file=sys.stderr,
    )
    raise typer.Exit(0)


app = typer.Typer(
    cls=_OneLineErrors,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Scan thousands of symbols through a rate-limited HTTP analysis API, losing none.",
)


def _version(ctx: typer.Context, value: bool) -> None:
    if value and not ctx.resilient_parsing:  # resilient: completing a command line
        print(f"scanctl {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    install_completion: Annotated[
        bool,
        typer.Option(
            "--install-completion",
            callback=_install_completion,
            is_eager=True,
            help="Install completion for the current shell (bash, zsh or fish).",
        ),
    ] = False,
    show_completion: Annotated[
        bool,
        typer.Option(
            "--show-completion",
            callback=_show_completion,
            is_eager=True,
            help="Print the completion script for the current shell.",
        ),
    ] = False,
) -> None:
    """scanctl: a batch scanner for rate-limited analysis APIs."""


# -- completion of option values (see scanctl/completion.py) ---------------------------------


def _profile_types(ctx: Context) -> list[tuple[str, str]]:
    """The scan types of the profile in force, each with its request as help.

    --config and --profile count when typed before the word being completed (else their
    variables and the config file's default, as for a scan). A config that does not load falls
    back to the built-in profile: a completion must never print an error into the prompt.
    """
    from scanctl.config import load_builtin_profile
    from scanctl.configfile import load_config, resolve_profile

    try:
        config = load_config(ctx.params.get("config"))
        profile = resolve_profile(config, ctx.params.get("profile_name"))
    except Exception:
        profile = load_builtin_profile()
    return [(t.name, f"{t.method} {t.path}") for t in profile.types.values()]


TYPE_VALUES = Completed(lambda ctx, incomplete: _profile_types(ctx))
TYPE_LISTS = Completed(lambda ctx, incomplete: comma_list(_profile_types(ctx), incomplete))


# Options shared by `scan` and `warm-cache` (one definition, one help text).
SymbolsArg = Annotated[
    list[str] | None,
    typer.Argument(metavar="SYMBOL", help="Symbols to scan (also comma-separated)."),
]
FileOpt = Annotated[
    str | None,
    typer.Option(
        "--file",
        "-f",
        metavar="PATH|-",
        help="Read symbols from PATH, one per line; '-' for stdin.",
    ),
]
BaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        envvar="SCANCTL_BASE_URL", metavar="URL", help="Upstream API address (default: profile's)."
    ),
]
ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config", envvar="SCANCTL_CONFIG", metavar="PATH", help="Config file with profiles."
    ),
]
ProfileOpt = Annotated[
    str | None,
    typer.Option(
        "--profile", envvar="SCANCTL_PROFILE", metavar="NAME", help="Profile from the config file."
    ),
]
ConcurrencyOpt = Annotated[
    int | None, typer.Option(metavar="N", help="Most requests in flight (default 50).")
]
RateOpt = Annotated[
    float | None,
    typer.Option(metavar="R", help="Most requests per second (default: no ceiling)."),
]
TimeoutOpt = Annotated[
    float | None, typer.Option(metavar="S", help="Seconds one request may take in all (30).")
]
RetriesOpt = Annotated[
    int | None,
    typer.Option(metavar="N", help="Retries after timeouts, connection errors and 5xx (4)."),
]
HeaderOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--header", "-H", metavar="'NAME: VALUE'", help="Extra request header (repeatable)."
    ),
]
ShardOpt = Annotated[
    str | None,
    typer.Option(
        metavar="K/N",
        help="Scan only shard K of N (1 <= K <= N): a stable hash of each symbol picks one.",
    ),
]
SkipInvalidOpt = Annotated[
    bool,
    typer.Option("--skip-invalid", help="Warn about and skip invalid symbols instead of stopping."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Nothing on stderr but errors.")]
NoProgressOpt = Annotated[
    bool, typer.Option("--no-progress", help="No progress bar (status lines instead).")
]
DeadlineOpt = Annotated[
    float | None,
    typer.Option(
        metavar="S", help="Stop after S seconds; symbols not finished (throttled ones too) fail."
    ),
]
RetryBudgetOpt = Annotated[
    float,
    typer.Option(metavar="SHARE", help="Retries may be at most this share of recent requests."),
]
MaxOutageOpt = Annotated[
    float,
    typer.Option(metavar="S", help="Give up (exit 4) when the upstream is down this long."),
]
RelearnOpt = Annotated[
    bool,
    typer.Option("--relearn", help="Ignore the rate learned on earlier runs; find it again."),
]
NoAdaptOpt = Annotated[
    bool,
    typer.Option(
        "--no-adapt", help="Pace only by --rate and --concurrency: no discovery, no learning."
    ),
]
CacheOpt = Annotated[
    str | None,
    typer.Option(
        envvar="SCANCTL_CACHE",
        metavar="PATH|URL",
        help="Cache: a SQLite file (default: the user cache dir), redis://host:port/db, or memory.",
    ),
]
TtlOpt = Annotated[
    float | None,
    typer.Option(metavar="S", help="Answers stay fresh S seconds (default: the type's TTL)."),
]
TransportOpt = Annotated[
    str,
    typer.Option(
        envvar="SCANCTL_TRANSPORT",
        metavar="auto|aiohttp|httpx",
        click_type=choices(*TRANSPORTS),
        help=(
            "HTTP transport under httpx: aiohttp (a quarter of the CPU) or httpx's own; auto "
            "(default): aiohttp, unless a proxy is set in the environment."
        ),
    ),
]
MaxBodyOpt = Annotated[
    str,
    typer.Option(
        metavar="SIZE", help="Fail an answer longer than SIZE bytes (K/M suffixes) unread: 5M."
    ),
]
FollowRedirectsOpt = Annotated[
    bool,
    typer.Option("--follow-redirects", help="Follow redirects (up to 5), even to another host."),
]
LockOpt = Annotated[
    str | None,
    typer.Option(metavar="NAME", help="No two runs with this lock name at once (exit 75)."),
]
WaitLockOpt = Annotated[
    float,
    typer.Option(metavar="S", help="Wait up to S seconds for a held lock instead of exiting 75."),
]
GraceOpt = Annotated[
    float,
    typer.Option(
        metavar="S", help="After Ctrl-C/SIGTERM, give requests in flight S seconds to finish."
    ),
]
NegativeTtlOpt = Annotated[
    float | None,
    typer.Option(metavar="S", help="Remember a 404 for S seconds (0: never; default: profile's)."),
]


def _check_ranges(**values: float | None) -> None:
    """Usage errors for numbers out of range, each named by its flag."""
    concurrency = values.get("concurrency")
    if concurrency is not None and not 1 <= concurrency <= 10_000:
        raise UsageError(f"--concurrency must be between 1 and 10000, got {concurrency:g}")
    retries = values.get("retries")
    if retries is not None and retries < 0:
        raise UsageError(f"--retries must be 0 or more, got {retries:g}")
    budget = values.get("retry_budget")
    if budget is not None and not 0 <= budget <= 1:
        raise UsageError(f"--retry-budget must be a share between 0 and 1, got {budget:g}")
    for name in ("negative_ttl", "stale_if_error", "wait_lock", "grace"):
        value = values.get(name)
        if value is not None and not value >= 0:
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag} must be 0 or more seconds, got {value:g}")
    for name, value in values.items():
        positive = name in ("rate", "timeout", "deadline", "max_outage", "ttl")
        if positive and value is not None and not value > 0:
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag} must be a positive number, got {value:g}")


DEFAULT_CONCURRENCY = 50
DEFAULT_TIMEOUT = 30.0
# Against an upstream where one request in six fails for a moment (the faults benchmark), 3
# retries still lose ~0.7 symbols per 1000 (0.16 ** 4); 4 lose ~0.1. The retry budget, not
# this, is what keeps an outage from being multiplied.
DEFAULT_RETRIES = 4


@dataclass(slots=True)
class _Upstream:
    """Where and how fast to ask, resolved flags > environment > config file > built-in."""

    profile: Profile
    url: str
    concurrency: int
    rate: float | None
    timeout: float
    retries: int
    headers: dict[str, str]
    source: str  # the config file the profile came from, or "built-in (no config file)"
    max_body: int = 5 * 1024 * 1024
    follow_redirects: bool = False
    transport: str = "auto"

    def settings(self, endpoint: EndpointType, **more: Any) -> ScanSettings:
        from scanctl.engine import ScanSettings

        return ScanSettings(
            endpoint=endpoint,
            base_url=self.url,
            concurrency=self.concurrency,
            rate=self.rate,
            timeout=self.timeout,
            retries=self.retries,
            headers=self.headers,
            weight_header=self.profile.weight_header,
            quota_headers=self.profile.quota_headers,
            upstream_bans=self.profile.bans,
            max_body=self.max_body,
            follow_redirects=self.follow_redirects,
            transport=self.transport,
            **more,
        )

    def cache_policy(
        self, endpoint: EndpointType, ttl: float | None, negative_ttl: float | None, **more: Any
    ) -> CachePolicy:
        """How long answers stay fresh (flag, else the type's / profile's), leases included."""
        from scanctl.cache.front import CachePolicy

        return CachePolicy(
            ttl=ttl or endpoint.ttl,
            negative_ttl=self.profile.negative_ttl if negative_ttl is None else negative_ttl,
            lease_seconds=self.timeout + 10.0,
            **more,
        )


def _resolve(
    config: str | None,
    profile_name: str | None,
    base_url: str | None,
    concurrency: int | None,
    rate: float | None,
    timeout: float | None,
    retries: int | None,
    raw_headers: list[str] | None,
    *,
    max_body: str = "5M",
    follow_redirects: bool = False,
    transport: str = "auto",
) -> _Upstream:
    from scanctl.config import parse_header, validate_base_url
    from scanctl.configfile import load_config, resolve_profile

    loaded = load_config(config)
    profile = resolve_profile(loaded, profile_name)
    limits = profile.limits
    up = _Upstream(
        profile=profile,
        url=validate_base_url(base_url) if base_url is not None else profile.base_url,
        concurrency=_first(concurrency, limits.concurrency, DEFAULT_CONCURRENCY),
        rate=rate if rate is not None else limits.rate,
        timeout=_first(timeout, limits.timeout, DEFAULT_TIMEOUT),
        retries=_first(retries, limits.retries, DEFAULT_RETRIES),
        headers=profile.request_headers(os.environ),
        source=str(loaded.path) if loaded.path else "built-in (no config file)",
        max_body=_size(max_body),
        follow_redirects=follow_redirects,
        transport=_transport(transport),
    )
    for raw in raw_headers or []:
        name, value = parse_header(raw)
        for same in [n for n in up.headers if n.lower() == name.lower()]:
            del up.headers[same]  # header names are case-insensitive: the flag wins
        up.headers[name] = value
    _check_ranges(concurrency=up.concurrency, rate=up.rate, timeout=up.timeout, retries=up.retries)
    return up


def _size(text: str) -> int:
    """A size in bytes from "5242880", "512K" or "5M" (binary multiples)."""
    import re

    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:I?B)?\s*", text, re.IGNORECASE)
    if not match or int(match.group(1)) == 0:
        raise UsageError(f"bad --max-body {text!r}: expected a size such as 5M, 512K or 100000")
    power = " KMG".index(match.group(2).upper() or " ")
    return int(match.group(1)) * int(1024**power)


def _transport(name: str) -> str:
    if name not in TRANSPORTS:
        raise UsageError(f"unknown --transport {name!r}; allowed: {', '.join(TRANSPORTS)}")
    return name


def _metrics_format(path: str | None, name: str | None) -> str:
    """What --metrics writes: --metrics-format when given, else prom for a path ending in .prom
    (node_exporter's textfile collector reads only those), else json."""
    if name is not None:
        if name not in METRICS_FORMATS:
            allowed = ", ".join(METRICS_FORMATS)
            raise UsageError(f"unknown --metrics-format {name!r}; allowed: {allowed}")
        if path is None:
            raise UsageError("--metrics-format needs --metrics PATH (the file it writes)")
        return name
    return "prom" if path is not None and path.endswith(".prom") else "json"


def _sharded(found: SymbolList, shard: str | None, quiet: bool) -> SymbolList:
    """The symbols of shard K/N (`--shard`), said on stderr; all of them without it."""
    if shard is None:
        return found
    from scanctl.symbols import parse_shard, take_shard

    part = parse_shard(shard)
    total = len(found.symbols)
    found = take_shard(found, part)
    if not quiet:
        print(
            f"scanctl: shard {part}: {len(found.symbols)} of {total} symbols",
            file=sys.stderr,
            flush=True,
        )
    return found


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)


@app.command()
def scan(
    symbols: SymbolsArg = None,
    file: FileOpt = None,
    scan_type: Annotated[
        str,
        typer.Option(
            "--type",
            "-t",
            metavar="TYPE",
            help="Scan type: smart_money, mss, signals, price (any case).",
            click_type=TYPE_VALUES,
        ),
    ] = "smart_money",
    base_url: BaseUrlOpt = None,
    config: ConfigOpt = None,
    profile_name: ProfileOpt = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-F",
            metavar="json|jsonl|csv|table",
            help="Output format (default: table on a terminal, else json).",
            click_type=choices(*FORMAT_CHOICES),
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", metavar="PATH", help="Write to PATH instead of stdout."),
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            metavar="PATH",
            help="Also write the run's figures to PATH (JSON; Prometheus text for a .prom PATH).",
        ),
    ] = None,
    metrics_format: Annotated[
        str | None,
        typer.Option(
            metavar="json|prom",
            help="What --metrics writes (default: prom for a PATH ending in .prom, else json).",
            click_type=choices(*METRICS_FORMATS),
        ),
    ] = None,
    concurrency: ConcurrencyOpt = None,
    rate: RateOpt = None,
    timeout: TimeoutOpt = None,
    retries: RetriesOpt = None,
    header: HeaderOpt = None,
    skip_invalid: SkipInvalidOpt = False,
    shard: ShardOpt = None,
    quiet: QuietOpt = False,
    no_progress: NoProgressOpt = False,
    deadline: DeadlineOpt = None,
    retry_budget: RetryBudgetOpt = 0.1,
    max_outage: MaxOutageOpt = 60.0,
    hedge: Annotated[
        bool,
        typer.Option("--hedge", help="Send a second copy of requests slower than the p95 so far."),
    ] = False,
    relearn: RelearnOpt = False,
    no_adapt: NoAdaptOpt = False,
    cache: CacheOpt = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Neither read nor write the cache.")
    ] = False,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Ignore cached answers; fetch all and store them.")
    ] = False,
    ttl: TtlOpt = None,
    stale_if_error: Annotated[
        float | None,
        typer.Option(
            metavar="S",
            help="When a fetch fails, serve a cached answer expired less than S seconds ago.",
        ),
    ] = None,
    negative_ttl: NegativeTtlOpt = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="With -F jsonl -o FILE: keep FILE's ok records, scan the rest, append."
        ),
    ] = False,
    changes: Annotated[
        bool,
        typer.Option(
            "--changes",
            help="Add changed / changed_fields: how each answer differs from the one before it.",
        ),
    ] = False,
    only_changed: Annotated[
        bool,
        typer.Option("--only-changed", help="Write only records whose answer changed (--changes)."),
    ] = False,
    lock: LockOpt = None,
    wait_lock: WaitLockOpt = 0.0,
    grace: GraceOpt = 5.0,
    max_body: MaxBodyOpt = "5M",
    follow_redirects: FollowRedirectsOpt = False,
    transport: TransportOpt = "auto",
    color: Annotated[
        str,
        typer.Option(
            metavar="auto|always|never",
            help="Colour in the table and progress bar (auto: on a terminal; NO_COLOR off).",
            click_type=choices(*COLOR_CHOICES),
        ),
    ] = "auto",
) -> int:
    """Scan symbols and write one record per symbol (stdout: data only; exit 0/2/3/4/130)."""
    from scanctl.symbols import collect_symbols

    up = _resolve(
        config,
        profile_name,
        base_url,
        concurrency,
        rate,
        timeout,
        retries,
        header,
        max_body=max_body,
        follow_redirects=follow_redirects,
        transport=transport,
    )
    profile = up.profile
    endpoint = profile.endpoint(scan_type)
    if fmt is None:  # like the GitHub CLI: a table for a person, JSON for a program
        to_stdout = output is None or output == "-"
        fmt = "table" if to_stdout and sys.stdout.isatty() else "json"
    if fmt not in FORMAT_CHOICES:
        raise UsageError(f"unknown --format {fmt!r}; allowed: {', '.join(FORMAT_CHOICES)}")
    check_color(color)
    metrics_fmt = _metrics_format(metrics, metrics_format)
    _check_ranges(
        deadline=deadline,
        retry_budget=retry_budget,
        max_outage=max_outage,
        ttl=ttl,
        negative_ttl=negative_ttl,
        stale_if_error=stale_if_error,
        wait_lock=wait_lock,
        grace=grace,
    )
    if no_cache and (refresh or stale_if_error is not None):
        raise UsageError("--no-cache cannot be combined with --refresh or --stale-if-error")
    changes = changes or only_changed
    if no_cache and changes:
        flag = "--only-changed" if only_changed else "--changes"
        raise UsageError(f"{flag} compares with the answers kept in the cache: drop --no-cache")
    if resume and (fmt != "jsonl" or output in (None, "-")):
        raise UsageError("--resume needs -F jsonl and -o FILE (the file it carries on)")
    found = _sharded(collect_symbols(symbols or [], file, skip_invalid=skip_invalid), shard, quiet)

    from scanctl.cache import namespace_for
    from scanctl.runner import ScanJob, run_scan

    settings = up.settings(
        endpoint,
        deadline=deadline,
        retry_budget=retry_budget,
        max_outage=max_outage,
        hedge=hedge,
        adaptive=not no_adapt,
    )
    policy = None
    if not no_cache:
        policy = up.cache_policy(
            endpoint,
            ttl,
            negative_ttl,
            refresh=refresh,
            stale_if_error=stale_if_error,
            changes=changes,
        )
    job = ScanJob(
        symbols=found.symbols,
        settings=settings,
        fmt=fmt,
        output=output,
        metrics_path=metrics,
        metrics_format=metrics_fmt,
        quiet=quiet,
        no_progress=no_progress,
        skipped_invalid=len(found.invalid),
        relearn=relearn,
        cache_location=cache,
        cache_policy=policy,
        namespace=namespace_for(profile.name, up.url, endpoint),
        grace=grace,
        resume=resume,
        lock_name=lock,
        wait_lock=wait_lock,
        only_changed=only_changed,
        color=color,
    )
    return int(run_scan(job))


@app.command("warm-cache")
def warm_cache(
    symbols: SymbolsArg = None,
    file: FileOpt = None,
    types: Annotated[
        str,
        typer.Option(
            "--type",
            "-t",
            metavar="TYPE[,TYPE...]",
            help="Scan types to warm, comma-separated.",
            click_type=TYPE_LISTS,
        ),
    ] = "smart_money",
    base_url: BaseUrlOpt = None,
    config: ConfigOpt = None,
    profile_name: ProfileOpt = None,
    cache: CacheOpt = None,
    ttl: TtlOpt = None,
    ahead: Annotated[
        float,
        typer.Option(
            metavar="SHARE", help="Also refresh entries with less than this share of TTL left."
        ),
    ] = 0.2,
    negative_ttl: NegativeTtlOpt = None,
    concurrency: ConcurrencyOpt = None,
    rate: RateOpt = None,
    timeout: TimeoutOpt = None,
    retries: RetriesOpt = None,
    header: HeaderOpt = None,
    skip_invalid: SkipInvalidOpt = False,
    shard: ShardOpt = None,
    quiet: QuietOpt = False,
    no_progress: NoProgressOpt = False,
    deadline: DeadlineOpt = None,
    retry_budget: RetryBudgetOpt = 0.1,
    max_outage: MaxOutageOpt = 60.0,
    relearn: RelearnOpt = False,
    no_adapt: NoAdaptOpt = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the counts as JSON on stdout.")
    ] = False,
    lock: LockOpt = None,
    wait_lock: WaitLockOpt = 0.0,
    grace: GraceOpt = 5.0,
    max_body: MaxBodyOpt = "5M",
    follow_redirects: FollowRedirectsOpt = False,
    transport: TransportOpt = "auto",
) -> int:
    """Fetch into the cache what is missing or about to expire; print fetched / fresh / failed."""
    from scanctl.symbols import collect_symbols

    up = _resolve(
        config,
        profile_name,
        base_url,
        concurrency,
        rate,
        timeout,
        retries,
        header,
        max_body=max_body,
        follow_redirects=follow_redirects,
        transport=transport,
    )
    profile = up.profile
    names = [t.strip() for t in types.split(",") if t.strip()]
    if not names:
        raise UsageError("--type needs at least one type")
    # Deduplicated by the type each name means: `-t mss,MSS` warms mss once.
    endpoints = list({e.name: e for e in map(profile.endpoint, names)}.values())
    _check_ranges(
        deadline=deadline,
        retry_budget=retry_budget,
        max_outage=max_outage,
        ttl=ttl,
        negative_ttl=negative_ttl,
        wait_lock=wait_lock,
        grace=grace,
    )
    if not 0 <= ahead < 1:
        raise UsageError(f"--ahead must be a share between 0 and 1, got {ahead:g}")
    found = _sharded(collect_symbols(symbols or [], file, skip_invalid=skip_invalid), shard, quiet)

    from scanctl.cache import namespace_for
    from scanctl.runner import ScanJob, run_warm

    jobs = []
    for endpoint in endpoints:
        settings = up.settings(
            endpoint,
            deadline=deadline,
            retry_budget=retry_budget,
            max_outage=max_outage,
            adaptive=not no_adapt,
        )
        policy = up.cache_policy(endpoint, ttl, negative_ttl, refresh_ahead=ahead)
        jobs.append(
            ScanJob(
                symbols=found.symbols,
                settings=settings,
                fmt="none",
                quiet=quiet,
                no_progress=no_progress,
                skipped_invalid=len(found.invalid),
                relearn=relearn,
                cache_location=cache,
                cache_policy=policy,
                namespace=namespace_for(profile.name, up.url, endpoint),
                command="warm-cache",
                grace=grace,
            )
        )
    return int(run_warm(jobs, as_json=as_json, lock_name=lock, wait_lock=wait_lock))


@app.command()
def stats(
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-F",
            metavar="table|json",
            help="table (default on a terminal) or json (default otherwise).",
            click_type=choices("table", "json"),
        ),
    ] = None,
    cache: CacheOpt = None,
    runs: Annotated[int, typer.Option(metavar="N", help="Show the last N runs.")] = 10,
) -> int:
    """Cache contents and hit rates, recent runs and their figures."""
    if fmt is not None and fmt not in ("table", "json"):
        raise UsageError(f"unknown --format {fmt!r}; allowed: table, json")
    if runs < 0:
        raise UsageError(f"--runs must be 0 or more, got {runs}")
    from scanctl.cache.report import print_stats

    print_stats(cache, fmt, runs)
    return 0


config_app = typer.Typer(
    cls=TyperGroup, rich_markup_mode=None, help="Show the settings in force; check a config file."
)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(
    config: ConfigOpt = None,
    profile_name: ProfileOpt = None,
    base_url: BaseUrlOpt = None,
    concurrency: ConcurrencyOpt = None,
    rate: RateOpt = None,
    timeout: TimeoutOpt = None,
    retries: RetriesOpt = None,
    header: HeaderOpt = None,
    cache: CacheOpt = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-F",
            metavar="toml|json",
            help="toml (default) or json.",
            click_type=choices("toml", "json"),
        ),
    ] = "toml",
) -> int:
    """Print the settings a scan would use (flags > env > file > built-in), secrets masked."""
    import json

    from scanctl.cache import default_location, mask_url
    from scanctl.configfile import effective, to_toml
    from scanctl.state import state_dir

    if fmt not in ("toml", "json"):
        raise UsageError(f"unknown --format {fmt!r}; allowed: toml, json")
    up = _resolve(config, profile_name, base_url, concurrency, rate, timeout, retries, header)
    api_key = up.profile.api_key_header.lower()
    document = effective(
        up.profile,
        up.source,
        dict(os.environ),
        {name: value for name, value in up.headers.items() if name.lower() != api_key},
        base_url=up.url,
        cache=mask_url(cache or default_location()),
        state_dir=str(state_dir()),
        limits={
            "concurrency": up.concurrency,
            "rate": up.rate if up.rate is not None else "adaptive",
            "timeout": up.timeout,
            "retries": up.retries,
        },
    )
    if fmt == "json":
        print(json.dumps(document, indent=2))
    else:
        print(to_toml(document), end="")
    return 0


@config_app.command("check")
def config_check(
    path: Annotated[
        str | None,
        typer.Argument(metavar="[PATH]", help="The file (default: --config / the usual place)."),
    ] = None,
) -> int:
    """Check a config file; name the line of the first error (exit 2)."""
    from scanctl.configfile import check_config

    where, names = check_config(path)
    if where is None:
        print("scanctl: no config file; the built-in profiles are in force", file=sys.stderr)
    else:
        shown = ", ".join(names) or "no profiles"
        print(f"scanctl: {where}: ok ({shown})", file=sys.stderr)
    return 0


cache_app = typer.Typer(
    cls=TyperGroup, rich_markup_mode=None, help="Manage the cache: clear or prune entries."
)
app.add_typer(cache_app, name="cache")


@cache_app.command("clear")
def cache_clear(
    type_name: Annotated[
        str | None,
        typer.Option(
            "--type",
            "-t",
            metavar="TYPE",
            help="Only this scan type (any case).",
            click_type=TYPE_VALUES,
        ),
    ] = None,
    older_than: Annotated[
        float | None,
        typer.Option(metavar="S", help="Only entries fetched more than S seconds ago."),
    ] = None,
    cache: CacheOpt = None,
) -> int:
    """Delete cached answers (all, of one type, or older than S seconds)."""
    if older_than is not None and not older_than >= 0:
        raise UsageError(f"--older-than must be 0 or more seconds, got {older_than:g}")
    from scanctl.cache.report import clear_cache

    clear_cache(cache, type_name, older_than)
    return 0


@cache_app.command("prune")
def cache_prune(
    older_than: Annotated[
        float,
        typer.Option(metavar="S", help="Delete entries expired more than S seconds ago."),
    ] = 0.0,
    cache: CacheOpt = None,
) -> int:
    """Delete expired entries (scans prune those expired for a week on their own)."""
    if not older_than >= 0:
        raise UsageError(f"--older-than must be 0 or more seconds, got {older_than:g}")
    from scanctl.cache.report import prune_cache

    prune_cache(cache, older_than)
    return 0


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point; `argv` runs those arguments instead of the process's, as
    `scanctl` would (`python -m scanctl.demo` is `scanctl demo-api`)."""
    # httpx imports its own command-line client (click, rich.console, pygments: ~60 ms of
    # every scan's start) whenever click is installed; scanctl never runs it. httpx expects
    # the import to fail when click is missing, and copes.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    if argv is None:
        app()
    else:
        app(args=argv, prog_name=PROG)
