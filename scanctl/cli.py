"""The `scanctl` command line: parse, validate, hand over to the runner, map errors to exit codes.

Startup stays fast: this module imports neither httpx, anyio nor rich; the commands import what
they need when they run (a test and ruff's TID253 keep it so). Every error a user can cause is
reported as one line on stderr, `scanctl: error: ...`, with the exit code of `ExitCode`; that
mapping happens here and nowhere else.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any, NoReturn

import typer
from typer._click.exceptions import ClickException
from typer.core import TyperGroup

from scanctl import __version__
from scanctl.errors import ExitCode, ScanctlError, UsageError

DEFAULT_BASE_URL = "http://localhost:8000"
FORMAT_CHOICES = ("json", "jsonl", "csv")


def _fail(message: str, code: ExitCode) -> NoReturn:
    print(f"scanctl: error: {message}", file=sys.stderr, flush=True)
    sys.exit(int(code))


class _OneLineErrors(TyperGroup):
    """Runs commands with every error as one line on stderr and a documented exit code."""

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


app = typer.Typer(
    cls=_OneLineErrors,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Scan thousands of symbols through a rate-limited HTTP analysis API, losing none.",
)


def _version(value: bool) -> None:
    if value:
        print(f"scanctl {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """scanctl: a batch scanner for rate-limited analysis APIs."""


@app.command()
def scan(
    symbols: Annotated[
        list[str] | None,
        typer.Argument(metavar="SYMBOL", help="Symbols to scan (also comma-separated)."),
    ] = None,
    file: Annotated[
        str | None,
        typer.Option(
            "--file",
            "-f",
            metavar="PATH|-",
            help="Read symbols from PATH, one per line; '-' for stdin.",
        ),
    ] = None,
    scan_type: Annotated[
        str,
        typer.Option(
            "--type", "-t", metavar="TYPE", help="Scan type: smart_money, mss, signals, price."
        ),
    ] = "smart_money",
    base_url: Annotated[
        str,
        typer.Option(envvar="SCANCTL_BASE_URL", metavar="URL", help="Upstream API address."),
    ] = DEFAULT_BASE_URL,
    fmt: Annotated[
        str,
        typer.Option(
            "--format", "-F", metavar="json|jsonl|csv", help="Output format: json, jsonl or csv."
        ),
    ] = "json",
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", metavar="PATH", help="Write to PATH instead of stdout."),
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(metavar="PATH", help="Also write the run summary (without results) to PATH."),
    ] = None,
    concurrency: Annotated[int, typer.Option(metavar="N", help="Most requests in flight.")] = 50,
    rate: Annotated[
        float | None,
        typer.Option(metavar="R", help="Most requests per second (default: no ceiling)."),
    ] = None,
    timeout: Annotated[
        float, typer.Option(metavar="S", help="Seconds one request may take in all.")
    ] = 30.0,
    retries: Annotated[
        int,
        typer.Option(
            metavar="N", help="Retries per symbol after timeouts, connection errors and 5xx."
        ),
    ] = 3,
    header: Annotated[
        list[str] | None,
        typer.Option(
            "--header",
            "-H",
            metavar="'NAME: VALUE'",
            help="Extra request header 'Name: value' (repeatable).",
        ),
    ] = None,
    skip_invalid: Annotated[
        bool,
        typer.Option(
            "--skip-invalid", help="Warn about and skip invalid symbols instead of stopping."
        ),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Nothing on stderr but errors.")
    ] = False,
    no_progress: Annotated[
        bool, typer.Option("--no-progress", help="No progress bar (status lines instead).")
    ] = False,
    deadline: Annotated[
        float | None,
        typer.Option(
            metavar="S",
            help="Stop after S seconds; symbols not finished (throttled ones too) are failed.",
        ),
    ] = None,
    retry_budget: Annotated[
        float,
        typer.Option(metavar="SHARE", help="Retries may be at most this share of recent requests."),
    ] = 0.1,
    max_outage: Annotated[
        float,
        typer.Option(metavar="S", help="Give up (exit 4) when the upstream is down this long."),
    ] = 60.0,
    hedge: Annotated[
        bool,
        typer.Option("--hedge", help="Send a second copy of requests slower than the p95 so far."),
    ] = False,
    relearn: Annotated[
        bool,
        typer.Option("--relearn", help="Ignore the rate learned on earlier runs; find it again."),
    ] = False,
    no_adapt: Annotated[
        bool,
        typer.Option(
            "--no-adapt", help="Pace only by --rate and --concurrency: no discovery, no learning."
        ),
    ] = False,
) -> int:
    """Scan symbols and write one record per symbol (stdout: data only; exit 0/2/3/4/130)."""
    from scanctl.config import load_builtin_profile, parse_header, validate_base_url
    from scanctl.symbols import collect_symbols

    profile = load_builtin_profile()
    endpoint = profile.endpoint(scan_type)
    url = validate_base_url(base_url)
    if fmt not in FORMAT_CHOICES:
        raise UsageError(f"unknown --format {fmt!r}; allowed: {', '.join(FORMAT_CHOICES)}")
    if concurrency < 1 or concurrency > 10_000:
        raise UsageError(f"--concurrency must be between 1 and 10000, got {concurrency}")
    if rate is not None and not rate > 0:
        raise UsageError(f"--rate must be a positive number of requests per second, got {rate}")
    if not timeout > 0:
        raise UsageError(f"--timeout must be a positive number of seconds, got {timeout}")
    if retries < 0:
        raise UsageError(f"--retries must be 0 or more, got {retries}")
    if deadline is not None and not deadline > 0:
        raise UsageError(f"--deadline must be a positive number of seconds, got {deadline}")
    if not 0 <= retry_budget <= 1:
        raise UsageError(f"--retry-budget must be a share between 0 and 1, got {retry_budget}")
    if not max_outage > 0:
        raise UsageError(f"--max-outage must be a positive number of seconds, got {max_outage}")
    headers: dict[str, str] = {}
    api_key = os.environ.get("SCANCTL_API_KEY")
    if api_key:
        headers[profile.api_key_header] = api_key
    for raw in header or []:
        name, value = parse_header(raw)
        headers[name] = value

    found = collect_symbols(symbols or [], file, skip_invalid=skip_invalid)

    from scanctl.engine import ScanSettings
    from scanctl.runner import ScanJob, run_scan

    settings = ScanSettings(
        endpoint=endpoint,
        base_url=url,
        concurrency=concurrency,
        rate=rate,
        timeout=timeout,
        retries=retries,
        headers=headers,
        deadline=deadline,
        retry_budget=retry_budget,
        max_outage=max_outage,
        hedge=hedge,
        adaptive=not no_adapt,
        weight_header=profile.weight_header,
    )
    job = ScanJob(
        symbols=found.symbols,
        settings=settings,
        fmt=fmt,
        output=output,
        metrics_path=metrics,
        quiet=quiet,
        no_progress=no_progress,
        skipped_invalid=len(found.invalid),
        relearn=relearn,
    )
    return int(run_scan(job))


@app.command(
    "demo-api",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def demo_api(ctx: typer.Context) -> int:
    """Run the simulated upstream (see `scanctl demo-api --help`)."""
    try:
        from scanctl.demo.server import main as demo_main
    except ImportError as exc:
        raise UsageError(
            f"the simulated upstream needs the demo extra: pip install 'scanctl[demo]' ({exc})"
        ) from None
    return demo_main(list(ctx.args))


def main() -> None:
    """Console-script entry point."""
    app()
