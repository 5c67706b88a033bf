"""Whether to colour what scanctl draws: `--color`, then `NO_COLOR`, then `FORCE_COLOR`, then
whether the text goes to a terminal.

The conventions of the ecosystem: an explicit flag always wins (as in the GitHub CLI and
httpie); `NO_COLOR` set to anything but the empty string turns colour off (no-color.org);
`FORCE_COLOR` set likewise turns it on where it would be off, e.g. through a pager, except
`FORCE_COLOR=0` or `false`, which Node's tools (supports-color) read as "no colour"; with
neither, colour only on a terminal. `NO_COLOR` wins over `FORCE_COLOR`: it is the user's own
opt-out, while `FORCE_COLOR` is often set by a CI system for every tool at once.
"""

from __future__ import annotations

from collections.abc import Mapping

# `--color`'s values (the settings model checks a flag against them: scanctl/settings.py).
COLOR_CHOICES = ("auto", "always", "never")


def wants_color(choice: str, env: Mapping[str, str], *, is_terminal: bool) -> bool:
    """Whether text bound for a terminal (or not) gets colour, by the rules above."""
    if choice != "auto":
        return choice == "always"
    if env.get("NO_COLOR"):
        return False
    force = env.get("FORCE_COLOR", "")
    if force.lower() in ("0", "false"):
        return False
    if force:
        return True
    return is_terminal
