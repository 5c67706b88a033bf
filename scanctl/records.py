"""The record of one symbol's scan: what every writer, metric and display observes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scanctl.changes import Change

# The public record schema, in output order (README, "Output").
RECORD_FIELDS = (
    "symbol",
    "type",
    "ok",
    "status",
    "data",
    "error",
    "attempts",
    "elapsed_ms",
    "cached",
    "stale",
)
# Added after them by `scan --changes` (README, "What changed").
CHANGE_FIELDS = ("changed", "changed_fields")


@dataclass(frozen=True, slots=True)
class ScanRecord:
    """The final answer for one symbol. Frozen: observers read it, never change it.

    `index` is the symbol's position in the input (json output restores input order with it) and
    `error_kind` the short class of failure that the summary counts ("HTTP 404", "Request
    timeout"); neither is part of the published record.
    """

    symbol: str
    type: str
    ok: bool
    status: int | None
    data: Any
    error: str | None
    attempts: int
    elapsed_ms: float
    cached: bool = False
    stale: bool = False  # served from an expired cache entry because the fetch failed
    index: int = 0
    error_kind: str | None = None
    change: Change | None = None

    def to_dict(self) -> dict[str, Any]:
        """The published record, fields in schema order."""
        published = {
            "symbol": self.symbol,
            "type": self.type,
            "ok": self.ok,
            "status": self.status,
            "data": self.data,
            "error": self.error,
            "attempts": self.attempts,
            "elapsed_ms": self.elapsed_ms,
            "cached": self.cached,
            "stale": self.stale,
        }
        if self.change is not None:
            published["changed"] = self.change.changed
            published["changed_fields"] = (
                None if self.change.changed is None else list(self.change.fields)
            )
        return published
