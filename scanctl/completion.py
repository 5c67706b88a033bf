"""Shell completion of option values: a text type that can list its candidates.

An option completes through its click type (`click_type=Completed(...)`), not through Typer's
`autocompletion=`: Typer inspects an autocompletion callback's signature whenever it builds the
commands, which is on every run (~50 us an option), while a type costs nothing until the shell
asks. The scripts, the installer and the shell protocols are Typer's (see cli.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from typer._click.shell_completion import CompletionItem
from typer._click.types import StringParamType

if TYPE_CHECKING:
    from typer._click.core import Context, Parameter

# (value, help) pairs for the word being completed; help may be "".
Candidates = Callable[["Context", str], Iterable[tuple[str, str]]]


class Completed(StringParamType):
    """Text whose candidates come from `candidates(ctx, incomplete)`; ctx.params holds the
    options typed before the word being completed. Values are checked when the command runs,
    as for any text option, so an error names the flag in scanctl's own words."""

    def __init__(self, candidates: Candidates) -> None:
        self.candidates = candidates

    def shell_complete(
        self, ctx: Context, param: Parameter, incomplete: str
    ) -> list[CompletionItem]:
        return [
            CompletionItem(value, help=help or None)
            for value, help in self.candidates(ctx, incomplete)
            if value.startswith(incomplete)
        ]


def comma_list(names: Iterable[tuple[str, str]], incomplete: str) -> list[tuple[str, str]]:
    """Candidates for a comma-separated list (`mss,si<TAB>`): the names not listed yet, after
    those that are."""
    done, comma, _ = incomplete.rpartition(",")
    listed = set(done.split(",")) if comma else set()
    return [(done + comma + name, help) for name, help in names if name not in listed]


def choices(*values: str, lists: bool = False) -> Completed:
    """One of `values`; with `lists`, a comma-separated list of them."""
    pairs = [(value, "") for value in values]

    def candidates(ctx: Context, incomplete: str) -> list[tuple[str, str]]:
        return comma_list(pairs, incomplete) if lists else pairs

    return Completed(candidates)
