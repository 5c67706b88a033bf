"""The `scanctl` command line: parse, validate, hand over to the runner, map errors to exit codes.

Startup stays fast: this module imports neither httpx, anyio nor rich; the commands import what
they need when they run (a test and ruff's TID253 keep it so). Every error a user can cause is
reported as one line on stderr, `scanctl: error: ...`, with the exit code of `ExitCode`; that
mapping happens here and nowhere else. Shell completion is answered here too: Typer's scripts
and shell protocols, scanctl's own options to show and install them (see `_install_completion`).
The scan commands' options come from the settings model (docs/architecture.md, "Settings").
"""

from __future__ import annotations

import gc
import inspect
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer._click.exceptions import ClickException
from typer._completion_classes import completion_init
from typer.core import TyperGroup

from scanctl import __version__
from scanctl.completion import Completed, choices, comma_list
from scanctl.errors import ExitCode, OutputError, ScanctlError, UsageError
from scanctl.settings import (
    BASE_URL,
    CACHE,
    FILE,
    LOCK,
    METRICS,
    METRICS_FORMAT,
    MODEL,
    OUTPUT,
    QUIET,
    RESUME,
    SCAN,
    SHARD,
    SHOW,
    SKIP_INVALID,
    WAIT_LOCK,
    WARM,
    Resolved,
    Setting,
    resolve,
)

if TYPE_CHECKING:
    from collections.abc import MutableMapping

    from typer._click import Command, Context

    from scanctl.symbols import SymbolList

FORMAT_CHOICES = ("json", "jsonl", "csv", "table")


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
        profile = resolve_profile(config, ctx.params.get("profile"))
    except Exception:
        profile = load_builtin_profile()
    return [(t.name, f"{t.method} {t.path}") for t in profile.types.values()]


TYPE_VALUES = Completed(lambda ctx, incomplete: _profile_types(ctx))
TYPE_LISTS = Completed(lambda ctx, incomplete: comma_list(_profile_types(ctx), incomplete))


# -- options from the settings model (scanctl/settings.py) --------------------------------------
#
# `scan`, `warm-cache` and `config show` take the settings `MODEL` offers them: each command's
# signature is its own few parameters (the symbols, its --type and --format) followed by one
# Typer option per declared setting, made here. Typer reads a function's signature through
# `inspect.signature`, which honours `__signature__`; the body receives the settings as
# `**given` and hands them to `settings.resolve`, the one place flags, variables, the profile
# and the built-in defaults meet. The options carry no `envvar`: the resolver reads the
# variables (for the Python API too), and `--help` still names them, in click's own layout.

SymbolsArg = Annotated[
    list[str] | None,
    typer.Argument(metavar="SYMBOL", help="Symbols to scan (also comma-separated)."),
]
TypeOpt = Annotated[
    str,
    typer.Option(
        "--type",
        "-t",
        metavar="TYPE",
        help="Scan type: smart_money, mss, signals, price (any case).",
        click_type=TYPE_VALUES,
    ),
]


def _option(setting: Setting[Any]) -> inspect.Parameter:
    """The Typer option of a setting. Only a setting nothing else can set has its default on
    the flag (so `--help` shows it); any other flag defaults to None, "not given", and its
    help says what applies instead."""
    help_text = setting.help_text
    if setting.env is not None:
        extra = f"env var: {setting.env}"
        if setting.default is not None and setting.profile_key is None:
            extra += f"; default: {setting.default}"
        help_text += f"  [{extra}]"
    default = setting.default if setting.from_flag_alone else None
    annotation: Any = setting.kind if default is not None else setting.kind | None
    if setting.kind is bool:
        annotation, default = bool, False
    elif setting.repeatable:
        annotation = list[str] | None
    option = typer.Option(
        default,
        setting.flag,
        *([setting.short] if setting.short else []),
        metavar=setting.metavar,
        help=help_text,
        click_type=choices(*setting.choices) if setting.choices else None,
    )
    return inspect.Parameter(
        setting.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation
    )


_SIGNED: list[tuple[Callable[..., int], str, list[inspect.Parameter], dict[str, str]]] = []


def _takes_settings(
    command: str, after: dict[str, str] | None = None
) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Give a command the options of the settings offered to `command`. Its own parameters
    come first, except those `after` places behind a setting (so `--help` keeps its order)."""

    def sign(func: Callable[..., int]) -> Callable[..., int]:
        own = [
            p
            for p in inspect.signature(func, eval_str=True).parameters.values()
            if p.kind is not inspect.Parameter.VAR_KEYWORD
        ]
        _SIGNED.append((func, command, own, after or {}))
        _sign(func, command, own, after or {})
        return func

    return sign


def _sign(
    func: Callable[..., int], command: str, own: list[inspect.Parameter], after: dict[str, str]
) -> None:
    params = [p for p in own if p.name not in after]
    for setting in MODEL.offered(command):
        params.append(_option(setting))
        params += [p.replace(kind=p.KEYWORD_ONLY) for p in own if after.get(p.name) == setting.name]
    func.__signature__ = inspect.Signature(params, return_annotation=int)  # type: ignore[attr-defined]


def sign_commands() -> None:
    """Rebuild the commands' options from the model (after a test declares a setting)."""
    for func, command, own, after in _SIGNED:
        _sign(func, command, own, after)


def _resolve(given: dict[str, Any]) -> Resolved:
    return resolve(given, os.environ)


def _metrics_format(path: str | None, name: str | None) -> str:
    """What --metrics writes: --metrics-format when given, else prom for a path ending in .prom
    (node_exporter's textfile collector reads only those), else json."""
    if name is not None:
        if path is None:
            raise UsageError("--metrics-format needs --metrics PATH (the file it writes)")
        return name
    return "prom" if path is not None and path.endswith(".prom") else "json"


def _symbols(symbols: list[str] | None, options: Resolved) -> SymbolList:
    """The symbols from arguments and --file, invalid ones skipped or refused (--skip-invalid);
    only shard K/N of them with --shard, said on stderr."""
    from scanctl.symbols import collect_symbols

    found = collect_symbols(symbols or [], options[FILE], skip_invalid=options[SKIP_INVALID])
    shard = options[SHARD]
    if shard is None:
        return found
    from scanctl.symbols import parse_shard, take_shard

    part = parse_shard(shard)
    total = len(found.symbols)
    found = take_shard(found, part)
    if not options[QUIET]:
        print(
            f"scanctl: shard {part}: {len(found.symbols)} of {total} symbols",
            file=sys.stderr,
            flush=True,
        )
    return found


@app.command()
@_takes_settings(SCAN, after={"scan_type": "file", "fmt": "profile"})
def scan(
    symbols: SymbolsArg = None,
    scan_type: TypeOpt = "smart_money",
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
    **given: Any,
) -> int:
    """Scan symbols and write one record per symbol (stdout: data only; exit 0/2/3/4/130)."""
    options = _resolve(given)
    endpoint = options.profile.endpoint(scan_type)
    output = options[OUTPUT]
    if fmt is None:  # like the GitHub CLI: a table for a person, JSON for a program
        to_stdout = output is None or output == "-"
        fmt = "table" if to_stdout and sys.stdout.isatty() else "json"
    if fmt not in FORMAT_CHOICES:
        raise UsageError(f"unknown --format {fmt!r}; allowed: {', '.join(FORMAT_CHOICES)}")
    metrics_fmt = _metrics_format(options[METRICS], options[METRICS_FORMAT])
    if options[RESUME] and (fmt != "jsonl" or output in (None, "-")):
        raise UsageError("--resume needs -F jsonl and -o FILE (the file it carries on)")
    from scanctl.runner import check_cache_flags

    check_cache_flags(options)
    found = _symbols(symbols, options)

    from scanctl.runner import ScanJob, run_scan

    job = ScanJob.for_scan(
        options,
        endpoint,
        found.symbols,
        skipped_invalid=len(found.invalid),
        fmt=fmt,
        metrics_format=metrics_fmt,
    )
    return int(run_scan(job))


@app.command("warm-cache")
@_takes_settings(WARM, after={"types": "file", "as_json": "no_adapt"})
def warm_cache(
    symbols: SymbolsArg = None,
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
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the counts as JSON on stdout.")
    ] = False,
    **given: Any,
) -> int:
    """Fetch into the cache what is missing or about to expire; print fetched / fresh / failed."""
    options = _resolve(given)
    names = [t.strip() for t in types.split(",") if t.strip()]
    if not names:
        raise UsageError("--type needs at least one type")
    # Deduplicated by the type each name means: `-t mss,MSS` warms mss once.
    endpoints = list({e.name: e for e in map(options.profile.endpoint, names)}.values())
    found = _symbols(symbols, options)

    from scanctl.runner import ScanJob, run_warm

    jobs = [
        ScanJob.for_warming(options, endpoint, found.symbols, skipped_invalid=len(found.invalid))
        for endpoint in endpoints
    ]
    return int(
        run_warm(jobs, as_json=as_json, lock_name=options[LOCK], wait_lock=options[WAIT_LOCK])
    )


@app.command()
@_takes_settings("stats", after={"runs": "cache"})
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
    runs: Annotated[int, typer.Option(metavar="N", help="Show the last N runs.")] = 10,
    **given: Any,
) -> int:
    """Cache contents and hit rates, recent runs and their figures; the shared pacing state."""
    if fmt is not None and fmt not in ("table", "json"):
        raise UsageError(f"unknown --format {fmt!r}; allowed: table, json")
    if runs < 0:
        raise UsageError(f"--runs must be 0 or more, got {runs}")
    from scanctl.cache.report import print_stats
    from scanctl.pacereport import pacing_section

    print_stats(given["cache"], fmt, runs, pacing_section(given["pacing_store"]))
    return 0


config_app = typer.Typer(
    cls=TyperGroup, rich_markup_mode=None, help="Show the settings in force; check a config file."
)
app.add_typer(config_app, name="config")


@config_app.command("show")
@_takes_settings(SHOW, after={"fmt": "cache"})
def config_show(
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
    **given: Any,
) -> int:
    """Print the settings a scan would use (flags > env > file > built-in), secrets masked."""
    import json

    from scanctl.cache import default_location, mask_url
    from scanctl.configfile import effective, to_toml
    from scanctl.settings import shown
    from scanctl.state import state_dir

    if fmt not in ("toml", "json"):
        raise UsageError(f"unknown --format {fmt!r}; allowed: toml, json")
    options = _resolve(given)
    profile = options.profile
    api_key = profile.api_key_header.lower()
    document = effective(
        profile,
        options.source,
        dict(os.environ),
        {name: value for name, value in options.headers.items() if name.lower() != api_key},
        base_url=options[BASE_URL],
        cache=mask_url(options[CACHE] or default_location()),
        state_dir=str(state_dir()),
        limits={s.name: shown(s, options.values[s.name]) for s in MODEL if s.show == "limits"},
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
@_takes_settings("cache clear")
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
    **given: Any,
) -> int:
    """Delete cached answers (all, of one type, or older than S seconds)."""
    if older_than is not None and not older_than >= 0:
        raise UsageError(f"--older-than must be 0 or more seconds, got {older_than:g}")
    from scanctl.cache.report import clear_cache

    clear_cache(given["cache"], type_name, older_than)
    return 0


@cache_app.command("prune")
@_takes_settings("cache prune")
def cache_prune(
    older_than: Annotated[
        float,
        typer.Option(metavar="S", help="Delete entries expired more than S seconds ago."),
    ] = 0.0,
    **given: Any,
) -> int:
    """Delete expired entries (scans prune those expired for a week on their own)."""
    if not older_than >= 0:
        raise UsageError(f"--older-than must be 0 or more seconds, got {older_than:g}")
    from scanctl.cache.report import prune_cache

    prune_cache(given["cache"], older_than)
    return 0


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point; `argv` runs those arguments instead of the process's, as
    `scanctl` would (`python -m scanctl.demo` is `scanctl demo-api`)."""
    # httpx imports its own command-line client (click, rich.console, pygments: ~60 ms of
    # every scan's start) whenever click is installed; scanctl never runs it. httpx expects
    # the import to fail when click is missing, and copes.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    try:
        if argv is None:
            app()
        else:
            app(args=argv, prog_name=PROG)
    finally:
        # The run is over and everything it wrote is closed: the interpreter's last garbage
        # collection, over every object of every module imported, would only delay the exit
        # (~35 ms of every run, measured, most of a one-symbol run's time after its answer).
        gc.freeze()
