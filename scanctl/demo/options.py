"""`scanctl demo-api`'s options: the simulated upstream's knobs, parsed and checked the way every
scanctl command's are (Typer; a mistake is one line naming its flag, exit 2).

This module imports neither starlette nor uvicorn, so `--help` and every check work without the
demo extra; the server is imported only to serve. The CLI builds the command only when it is
asked for (cli.py, `_OneLineErrors.get_command`), so none of this costs a scan's start.

A new knob is a field of `DemoConfig` and a parameter of `demo_api` with the same name (the
values go to the config by name), plus its range in `RANGES` if it has one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from scanctl.completion import choices
from scanctl.demo.headers import HINT_KINDS
from scanctl.demo.limiters import LIMITER_KINDS
from scanctl.errors import UsageError

if TYPE_CHECKING:
    from typer._click import Command

OUTAGE_MODES = ("drop", "503")
# The fault shares (the server draws them in this order); together at most 1.
FAULTS = ("error_rate", "unavailable_rate", "hang_rate", "drop_rate", "html_rate", "truncated_rate")


@dataclass(slots=True)
class DemoConfig:
    """Every knob of the simulated upstream."""

    latency_median: float = 0.05
    latency_sigma: float = 0.5
    rate_limit: float | None = None
    burst: int = 1
    limiter: str = "token-bucket"
    window: float = 1.0
    hints: frozenset[str] = frozenset({"retry-after"})
    count_rejected: bool = False
    reset_offset: float = 0.0
    retry_after_always: bool = False
    fractional_epoch: bool = False
    ban_after: int | None = None
    ban_seconds: float = 120.0
    error_rate: float = 0.0
    unavailable_rate: float = 0.0
    hang_rate: float = 0.0
    hang_seconds: float = 3.0
    drop_rate: float = 0.0
    html_rate: float = 0.0
    truncated_rate: float = 0.0
    require_key: str | None = None
    seed: int | None = None
    # (start, duration) in seconds, counted from the first request; None: no outage.
    outage: tuple[float, float] | None = None
    outage_mode: str = "drop"
    # Answers that move: every `move_every` seconds (None: only on POST /_demo/move), this
    # share of the symbols gets a new answer (each symbol in its turn).
    move_every: float | None = None
    move_share: float = 1.0


@dataclass(frozen=True, slots=True)
class Listen:
    """Where to serve: `port` 0 is a free port, chosen when binding."""

    host: str = "127.0.0.1"
    port: int = 8000


def _non_negative(value: float) -> bool:
    return 0 <= value < math.inf  # NaN fails every comparison


def _positive(value: float) -> bool:
    return 0 < value < math.inf


def _share(value: float) -> bool:
    return 0 <= value <= 1


# What each number must be, as the error says it: "--window must be a positive number ...".
RANGES: tuple[tuple[str, str, Callable[[float], bool]], ...] = (
    ("port", "between 0 and 65535", lambda port: 0 <= port <= 65535),
    ("latency_median", "0 or more seconds", _non_negative),
    ("latency_sigma", "0 or more", _non_negative),
    ("rate_limit", "a positive number", _positive),
    ("burst", "1 or more", lambda burst: burst >= 1),
    ("window", "a positive number of seconds", _positive),
    ("reset_offset", "a number of seconds", math.isfinite),
    ("ban_after", "1 or more", lambda count: count >= 1),
    ("ban_seconds", "0 or more seconds", _non_negative),
    ("hang_seconds", "0 or more seconds", _non_negative),
    ("move_every", "a positive number of seconds", _positive),
    ("move_share", "a share between 0 and 1", _share),
    *((name, "a share between 0 and 1", _share) for name in FAULTS),
)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def demo_api(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(metavar="HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            metavar="PORT",
            help="Port to listen on; 0 picks a free one. Its URL is the only line on stdout.",
        ),
    ] = 8000,
    latency_median: Annotated[
        float, typer.Option(metavar="S", help="Median latency in seconds (lognormal).")
    ] = 0.05,
    latency_sigma: Annotated[
        float, typer.Option(metavar="X", help="Lognormal sigma: the weight of the latency tail.")
    ] = 0.5,
    rate_limit: Annotated[
        float | None,
        typer.Option(metavar="R", help="Requests per second allowed (default: no limit)."),
    ] = None,
    burst: Annotated[
        int | None,
        typer.Option(metavar="N", help="Requests allowed at once (default: 1 s of --rate-limit)."),
    ] = None,
    limiter: Annotated[
        str,
        typer.Option(
            metavar="KIND",
            help=f"The limit's kind: {', '.join(LIMITER_KINDS)}.",
            click_type=choices(*LIMITER_KINDS),
        ),
    ] = "token-bucket",
    window: Annotated[
        float,
        typer.Option(metavar="S", help="Window length in seconds, for the window limiters."),
    ] = 1.0,
    hints: Annotated[
        str,
        typer.Option(
            metavar="HINT[,HINT...]",
            help=f"Rate-limit headers to send, comma-separated: {', '.join(HINT_KINDS)}.",
            click_type=choices(*HINT_KINDS, lists=True),
        ),
    ] = "retry-after",
    count_rejected: Annotated[
        bool,
        typer.Option(
            "--count-rejected",
            help="The limiter counts the requests it refuses too (as many gateways do).",
        ),
    ] = False,
    reset_offset: Annotated[
        float,
        typer.Option(
            metavar="S",
            help="Advertise every reset (and Retry-After) S seconds late (negative: early).",
        ),
    ] = 0.0,
    retry_after_always: Annotated[
        bool,
        typer.Option(
            "--retry-after-always", help="Send Retry-After on every answer, 200s included."
        ),
    ] = False,
    fractional_epoch: Annotated[
        bool,
        typer.Option(
            "--fractional-epoch",
            help="Write epoch resets (x-ratelimit-epoch) with their fraction.",
        ),
    ] = False,
    ban_after: Annotated[
        int | None,
        typer.Option(metavar="N", help="Answer 418 (a ban) after N 429s within a minute."),
    ] = None,
    ban_seconds: Annotated[
        float, typer.Option(metavar="S", help="How long a ban lasts, in seconds.")
    ] = 120.0,
    error_rate: Annotated[
        float, typer.Option(metavar="SHARE", help="Share of requests answered 500.")
    ] = 0.0,
    unavailable_rate: Annotated[
        float, typer.Option(metavar="SHARE", help="Share of requests answered 503.")
    ] = 0.0,
    hang_rate: Annotated[
        float, typer.Option(metavar="SHARE", help="Share of requests held --hang-seconds longer.")
    ] = 0.0,
    hang_seconds: Annotated[
        float, typer.Option(metavar="S", help="Seconds a hang adds to an answer.")
    ] = 3.0,
    drop_rate: Annotated[
        float,
        typer.Option(metavar="SHARE", help="Share of requests whose connection is cut mid-answer."),
    ] = 0.0,
    html_rate: Annotated[
        float, typer.Option(metavar="SHARE", help="Share of requests answered 200 with HTML.")
    ] = 0.0,
    truncated_rate: Annotated[
        float,
        typer.Option(metavar="SHARE", help="Share of requests answered 200 with cut-off JSON."),
    ] = 0.0,
    outage: Annotated[
        str | None,
        typer.Option(
            metavar="START:DURATION",
            help="From START s after the first request, for DURATION s, every request fails.",
        ),
    ] = None,
    outage_mode: Annotated[
        str,
        typer.Option(
            metavar="drop|503",
            help="During the outage: cut every connection mid-answer, or answer 503.",
            click_type=choices(*OUTAGE_MODES),
        ),
    ] = "drop",
    require_key: Annotated[
        str | None, typer.Option(metavar="KEY", help="Answer 401 unless X-API-Key is KEY.")
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(metavar="N", help="Seed for the latency and fault draws (repeatable runs)."),
    ] = None,
    move_every: Annotated[
        float | None,
        typer.Option(
            metavar="S",
            help="Answers move every S seconds (POST /_demo/move moves them at once).",
        ),
    ] = None,
    move_share: Annotated[
        float,
        typer.Option(
            metavar="SHARE", help="Share of the symbols whose answer moves each time (1)."
        ),
    ] = 1.0,
) -> int:
    """Serve a simulated analysis API with latency, rate-limit and fault knobs (Ctrl-C stops)."""
    listen, config = settings(ctx.params)
    try:
        from scanctl.demo.server import serve
    except ImportError as exc:
        raise UsageError(
            f"the simulated upstream needs the demo extra: pip install 'scanctl[demo]' ({exc})"
        ) from None
    return serve(listen, config)


def demo_api_command() -> Command:
    """The `demo-api` command as the scanctl group runs it (plain help, like its siblings)."""
    app = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)
    app.command("demo-api")(demo_api)
    return typer.main.get_command(app)


def parse_args(argv: Sequence[str]) -> tuple[Listen, DemoConfig]:
    """What `scanctl demo-api ARGV` would serve, without serving (tests build the app from it).

    A mistake raises the UsageError the command would report.
    """
    from typer._click.exceptions import ClickException

    try:
        ctx = demo_api_command().make_context("demo-api", list(argv))
    except ClickException as exc:
        raise UsageError(" ".join(exc.format_message().split())) from None
    return settings(ctx.params)


def settings(values: Mapping[str, Any]) -> tuple[Listen, DemoConfig]:
    """Check the options' values (by parameter name) and turn them into a `DemoConfig`."""
    options = dict(values)
    for name, requirement, fits in RANGES:
        value = options[name]
        if value is not None and not fits(value):
            raise UsageError(f"{_flag(name)} must be {requirement}, got {value:g}")
    total = sum(options[name] for name in FAULTS)
    if total > 1 + 1e-9:  # 0.1 + 0.2 + 0.7 is 1.0000000000000002
        given = ", ".join(f"{_flag(n)} {options[n]:g}" for n in FAULTS if options[n])
        raise UsageError(f"the fault rates add up to more than 1 ({given})")
    for name, allowed in (("limiter", LIMITER_KINDS), ("outage_mode", OUTAGE_MODES)):
        if options[name] not in allowed:
            raise UsageError(
                f"unknown {_flag(name)} {options[name]!r}; allowed: {', '.join(allowed)}"
            )
    options["hints"] = _hints(options["hints"])
    if options["outage"] is not None:
        options["outage"] = _outage(options["outage"])
    if options["burst"] is None:
        options["burst"] = max(1, round(options["rate_limit"] or 1))
    listen = Listen(options.pop("host"), options.pop("port"))
    return listen, DemoConfig(**options)


def _hints(text: str) -> frozenset[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in parts if p not in HINT_KINDS]
    if unknown or not parts:
        shown = ", ".join(map(repr, unknown)) if unknown else repr(text)
        raise UsageError(f"unknown --hints {shown}; allowed: {', '.join(HINT_KINDS)}")
    return frozenset(parts) - {"none"}


def _outage(text: str) -> tuple[float, float]:
    start, colon, duration = text.partition(":")
    try:
        window = (float(start), float(duration))
    except ValueError:
        window = (math.nan, math.nan)
    if not colon or not (0.0 <= window[0] < math.inf and 0.0 < window[1] < math.inf):
        raise UsageError(f"bad --outage {text!r}: expected START:DURATION in seconds (e.g. 5:20)")
    return window
