"""Records as a table for a person at a terminal (`-F table`, the default when stdout is one).

One row per symbol in input order: symbol, ok, the status (or, for a failure, the error),
whether the cache answered, and the answer's most telling fields, which the profile declares per
type (`display = ["score", "signal", "confidence"]`; without it, the first few scalar fields of
the answers). With `--changes`, a column names the fields that changed.

The rows are known only when the run ends (input order), so a table holds at most `MAX_ROWS`
of them, those earliest in the input, and says below it how many it left out and how to get
them all: a table of 100 000 rows is no use to anyone at a terminal, and the progress bar on
stderr is what shows a long run is alive. Memory stays bounded whatever the run's size.
"""

from __future__ import annotations

import heapq
import io
import json
from typing import Any

from scanctl.outcome import Summary
from scanctl.output import Destination, TextWriter
from scanctl.records import ScanRecord

MAX_ROWS = 500
GUESSED_FIELDS = 4  # answer fields shown when the profile declares none
NATURAL_WIDTH = 240  # the most a table may take when it is not drawn on a terminal


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class TableWriter(TextWriter):
    """Keeps the earliest `max_rows` records (a heap by input position), draws them at the end."""

    def __init__(
        self,
        destination: Destination,
        display: tuple[str, ...] = (),
        *,
        color: bool = False,
        max_rows: int = MAX_ROWS,
    ) -> None:
        super().__init__(destination)
        self.display = display
        self.color = color
        self.max_rows = max_rows
        self._kept: list[tuple[int, int, ScanRecord]] = []  # a max-heap by index (negated)
        self.left_out = 0
        self._written = 0  # breaks ties, so records themselves are never compared

    def write(self, record: ScanRecord) -> None:
        self._written += 1
        item = (-record.index, self._written, record)
        if len(self._kept) < self.max_rows:
            heapq.heappush(self._kept, item)
            return
        self.left_out += 1
        if -self._kept[0][0] > record.index:  # earlier in the input than the latest kept
            heapq.heapreplace(self._kept, item)

    def finish(self, summary: Summary) -> None:
        rows = [record for *_, record in sorted(self._kept, key=lambda item: -item[0])]
        self._put(self.render(rows))
        self._commit()

    def _fields(self, rows: list[ScanRecord]) -> list[str]:
        """The profile's display fields, or the first scalar fields the answers have."""
        if self.display:
            return list(self.display)
        seen: dict[str, None] = {}
        for record in rows:
            if isinstance(record.data, dict):
                for key, value in record.data.items():
                    if key != "symbol" and _scalar(value):
                        seen.setdefault(key)
            if len(seen) >= GUESSED_FIELDS:
                break
        return list(seen)[:GUESSED_FIELDS]

    def render(self, rows: list[ScanRecord]) -> str:
        """The table as text, with escape sequences only when colour is on."""
        from rich import box
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        fields = self._fields(rows)
        changes = any(record.change is not None for record in rows)
        table = Table(
            box=box.SIMPLE_HEAD,
            header_style="bold",
            pad_edge=False,
            show_edge=False,
            padding=(0, 1),
            collapse_padding=True,
        )
        table.add_column("symbol", no_wrap=True)
        table.add_column("ok", no_wrap=True)
        # The status, or a failure's error: the one column that gives way on a narrow terminal.
        table.add_column("status", no_wrap=False, min_width=6)
        table.add_column("cached", no_wrap=True)
        if changes:
            table.add_column("changed", no_wrap=True)
        for field in fields:
            justify = "right" if _numeric(rows, field) else "left"
            table.add_column(field, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        for record in rows:
            data = record.data if record.ok and isinstance(record.data, dict) else {}
            if record.ok:
                status = Text(str(record.status or ""))
            else:
                text = record.error or f"HTTP {record.status}"
                status = Text(text, style="red", no_wrap=True, overflow="ellipsis")
            cells = [
                Text(record.symbol),
                Text("yes", style="green") if record.ok else Text("no", style="bold red"),
                status,
                Text("stale" if record.stale else "yes" if record.cached else "", style="dim"),
            ]
            if changes:
                cells.append(_changed_cell(record))
            cells += [Text(_text(data.get(field))) for field in fields]
            table.add_row(*cells)
        out = io.StringIO()
        terminal = self.destination.is_terminal
        console = Console(
            file=out,
            force_terminal=self.color,
            color_system="auto" if self.color else None,
            no_color=not self.color,
            highlight=False,
            emoji=False,
            width=None if terminal else NATURAL_WIDTH,
            legacy_windows=False,
        )
        if terminal:  # the real terminal's width, read from the stream the table goes to
            console.size = _terminal_size(self.destination)
        console.print(table)
        if self.left_out:
            note = (
                f"... and {self.left_out} more rows not shown: -F csv or -F jsonl writes them all"
            )
            console.print(Text(note, style="dim"))
        return out.getvalue()


def _numeric(rows: list[ScanRecord], field: str) -> bool:
    """Whether every value of this field is a number (right-aligned, as numbers are read)."""
    values = [r.data.get(field) for r in rows if r.ok and isinstance(r.data, dict)]
    present = [v for v in values if v is not None]
    return bool(present) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in present
    )


def _changed_cell(record: ScanRecord) -> Any:
    from rich.text import Text

    change = record.change
    if change is None or change.changed is None:
        return Text("")
    if not change.changed:
        return Text("no", style="dim")
    return Text(", ".join(change.fields) or "yes", style="bold yellow")


def _terminal_size(destination: Destination) -> tuple[int, int]:
    """The terminal's size; `COLUMNS`, else 80, when it says none (a new pseudo-terminal
    reports 0 columns until someone sets them)."""
    import os

    try:
        size = os.get_terminal_size(destination.stream.fileno())
        columns, lines = size.columns, size.lines
    except (OSError, ValueError, io.UnsupportedOperation):
        columns, lines = 0, 0
    if columns <= 0:
        given = os.environ.get("COLUMNS", "")
        columns = int(given) if given.isdigit() and int(given) > 0 else 80
    return columns, lines if lines > 0 else 25
