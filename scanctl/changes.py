"""What changed between two answers for one symbol (`scan --changes`).

A watchlist job exists to answer "which coins changed since the last run?". The cache keeps,
beside each answer, the ok answer it replaced (`Entry.previous`), so the comparison needs no
state of its own: a fetched answer is compared with the one it replaces, and an answer served
from the cache with the one it replaced when it was fetched. Only ok answers are compared: a
failure says nothing about the data, and a first answer has nothing to be compared with
(`changed` is then null, which is not "changed").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Change:
    """`changed` (None: nothing to compare) and the top-level fields whose values differ."""

    changed: bool | None
    fields: tuple[str, ...] = ()


NOTHING_TO_COMPARE = Change(None)


def compare(before: Any, after: Any) -> Change:
    """How `after` differs from `before` (None: there was no earlier ok answer).

    For two JSON objects, the top-level keys whose values differ (a key present in one only
    counts), in the order of `after` then of `before`; for anything else, whether they differ.
    """
    if before is None:
        return NOTHING_TO_COMPARE
    if isinstance(before, dict) and isinstance(after, dict):
        fields = [key for key, value in after.items() if key not in before or before[key] != value]
        fields += [key for key in before if key not in after]
        return Change(bool(fields), tuple(fields))
    return Change(before != after)
