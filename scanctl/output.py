"""Writing records as json, jsonl or csv, to stdout or to a file, from one place.

- json: one object, the run summary with `results` in input order, written when the run ends.
- jsonl: one record per line, written and flushed the moment each symbol finishes, so `head` and
  `jq` start at once. A jsonl file is written in place, one whole line per write, because a
  crashed run's lines must stay readable (and resumable); json and csv files go to a temporary
  file beside the target and are renamed over it at the end, so a reader never sees half a file.
- csv: one row per symbol: the record's scalar fields, then the upstream answer's top-level
  scalar fields (a name that clashes with a record field gets a `data.` prefix). Upstream text is
  untrusted and spreadsheets run a cell that starts with `=`, `+`, `-` or `@` (and some also one
  that starts with a tab or carriage return) as a formula (OWASP, "CSV Injection"): every string
  cell, header names included, that starts with one of these gets a `'` in front, which
  spreadsheets show as plain text. Numbers (int and float, such as -3.5) are not strings and are
  written as they are. With `--changes`, `changed` and `changed_fields` (names joined by `;`)
  follow the record's fields. Cells holding a comma, a quote or any line break (a lone
  carriage return too) are quoted (RFC 4180), so no value can start a row of its own.

Destinations are opened before the first request, so an unwritable path fails fast (exit 2).
A path that exists but is not a regular file (/dev/null, /dev/full, a terminal, a FIFO) is written
straight into, never through a temporary file renamed over it: there is nothing to replace
atomically, and for root the rename would replace the device node itself. A write that fails
later (a full disk) is an OutputError, exit 1, and leaves no temporary file behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO

from scanctl.errors import OutputError, UsageError
from scanctl.outcome import Summary
from scanctl.records import CHANGE_FIELDS, RECORD_FIELDS, ScanRecord

CSV_RECORD_FIELDS = tuple(f for f in RECORD_FIELDS if f != "data")


def _oserror(path: str, exc: OSError) -> OutputError:
    return OutputError(f"cannot write {path}: {exc.strerror or exc}")


def is_special_file(path: str | Path) -> bool:
    """True when `path` exists but is neither a regular file nor a directory (a device, a FIFO,
    a socket), following symlinks: such a path can only be written into, never replaced."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def check_writable(path: str, flag: str = "--output") -> Path:
    """Fail with a usage error when `path` cannot be created or replaced (or, when it is a
    device or FIFO, written into: then only the path itself has to be writable)."""
    target = Path(path)
    if is_special_file(target):
        if not os.access(target, os.W_OK):
            raise UsageError(f"{flag} {path!r} is not writable")
        return target
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{flag} {path!r}: directory {str(parent)!r} does not exist")
    if target.is_dir():
        raise UsageError(f"{flag} {path!r} is a directory")
    if not os.access(parent, os.W_OK | os.X_OK) or (
        target.exists() and not os.access(target, os.W_OK)
    ):
        raise UsageError(f"{flag} {path!r} is not writable")
    return target


class Destination(Protocol):
    """Where text goes: stdout, a file written in place, or an atomically replaced file."""

    stream: TextIO
    is_terminal: bool

    def commit(self) -> None: ...

    def discard(self) -> None:
        """Give up after a failed write: leave no temporary file behind."""


class StdoutDestination:
    """Standard output; failures other than a closed pipe become OutputError."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.is_terminal = self.stream.isatty()

    def commit(self) -> None:
        self.stream.flush()

    def discard(self) -> None:
        pass  # stdout is not ours to close


def _create_beside(target: Path) -> tuple[int, str]:
    """A new, empty temporary file beside `target`, named `.NAME.RANDOM.tmp` (a reader of `*.prom`
    or `*.json` never picks it up), with the permissions the target should keep: the target's own
    when it exists, else those open() gives a new file (0666 less the umask). mkstemp's 0600 made
    every replaced file private to its writer: another user's reader (node_exporter reading a
    .prom file, a web server) lost it at the first run, and no chmod survived the next one."""
    for _ in range(100):
        path = target.parent / f".{target.name}.{os.urandom(4).hex()}.tmp"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        with contextlib.suppress(OSError):  # no target yet: the umask's permissions stay
            os.fchmod(fd, stat.S_IMODE(os.stat(target).st_mode))
        return fd, str(path)
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(target.parent))


class AtomicFileDestination:
    """A temporary file beside the target, renamed over it on commit."""

    is_terminal = False

    def __init__(self, path: str, flag: str = "--output") -> None:
        # A symlink is followed: the file it points at is replaced, the link itself kept.
        self.target = check_writable(os.path.realpath(path) if os.path.islink(path) else path, flag)
        try:
            fd, self.temp_path = _create_beside(self.target)
        except OSError as exc:
            raise UsageError(f"{flag} {path!r}: {exc.strerror or exc}") from None
        self.stream: TextIO = open(fd, "w", encoding="utf-8", newline="")  # noqa: SIM115

    def commit(self) -> None:
        try:
            self.stream.flush()
            os.fsync(self.stream.fileno())
            self.stream.close()
            os.replace(self.temp_path, self.target)
        except OSError as exc:
            self.discard()
            raise _oserror(str(self.target), exc) from None

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.stream.close()
        with contextlib.suppress(OSError):
            os.unlink(self.temp_path)


class InPlaceFileDestination:
    """A file written as it goes (jsonl): complete lines survive a crash."""

    is_terminal = False

    def __init__(self, path: str, flag: str = "--output", *, append: bool = False) -> None:
        self.target = check_writable(path, flag)
        try:
            mode: Literal["a", "w"] = "a" if append else "w"
            self.stream: TextIO = open(self.target, mode, encoding="utf-8", newline="")  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"{flag} {path!r}: {exc.strerror or exc}") from None

    def commit(self) -> None:
        try:
            self.stream.flush()
            os.fsync(self.stream.fileno())
            self.stream.close()
        except OSError as exc:
            raise _oserror(str(self.target), exc) from None

    def discard(self) -> None:
        with contextlib.suppress(OSError):  # the complete lines already written stay
            self.stream.close()


class SpecialFileDestination(InPlaceFileDestination):
    """A device or FIFO (/dev/null, /dev/full, /dev/tty, a named pipe), written straight into.

    There is no file to replace atomically, fsync fails on it (EINVAL), and a temporary file
    renamed over /dev/full would, for root, replace the device node with a regular file.
    """

    def __init__(self, path: str, flag: str = "--output", *, append: bool = False) -> None:
        super().__init__(path, flag, append=append)
        self.is_terminal = self.stream.isatty()

    def commit(self) -> None:
        try:
            self.stream.flush()
            self.stream.close()
        except OSError as exc:
            self.discard()  # close() flushes again, and fails again: discard() ignores that
            raise _oserror(str(self.target), exc) from None


def open_destination(path: str | None, fmt: str, *, append: bool = False) -> Destination:
    """The destination for `--output` (None or "-" means stdout); jsonl may append (--resume)."""
    if path is None or path == "-":
        return StdoutDestination()
    if is_special_file(path):
        return SpecialFileDestination(path, append=append)
    if fmt == "jsonl":
        return InPlaceFileDestination(path, append=append)
    return AtomicFileDestination(path)


# Made once: json.dumps with any option builds a new encoder per call (one per record).
_COMPACT = json.JSONEncoder(ensure_ascii=False)
_PRETTY = json.JSONEncoder(ensure_ascii=False, indent=2)


def dumps(value: Any, *, pretty: bool = False) -> str:
    """JSON text; non-ASCII kept as is."""
    return (_PRETTY if pretty else _COMPACT).encode(value)


class RecordWriter(Protocol):
    """Receives records as they finish, then the summary once at the end."""

    def write(self, record: ScanRecord) -> None: ...

    def finish(self, summary: Summary) -> None: ...


class TextWriter:
    """The base of every writer: text to a destination; a failed write becomes OutputError."""

    def __init__(self, destination: Destination) -> None:
        self.destination = destination

    def _put(self, text: str, *, flush: bool = False) -> None:
        try:
            self.destination.stream.write(text)
            if flush:
                self.destination.stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            self.destination.discard()
            where = str(getattr(self.destination, "target", "standard output"))
            raise _oserror(where, exc) from None

    def _commit(self) -> None:
        try:
            self.destination.commit()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _oserror("standard output", exc) from None


class _Spill:
    """Finished records kept in a temporary file, not in memory, and read back in input order.

    json and csv write in input order (and csv knows its columns only at the end), so they
    must wait for the last record; holding 100 000 answers in memory for that is what this
    avoids. Memory holds one (index, offset, length) triple per record.
    """

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self.places: list[tuple[int, int, int]] = []
        self.size = 0

    def add(self, record: ScanRecord) -> None:
        # ASCII with escapes: a lone surrogate (valid in a str, not in UTF-8) survives the trip.
        data = json.dumps(record.to_dict()).encode("ascii")
        self.file.write(data)
        self.places.append((record.index, self.size, len(data)))
        self.size += len(data)

    def in_order(self) -> Iterator[dict[str, Any]]:
        self.file.flush()
        for _, offset, length in sorted(self.places):
            self.file.seek(offset)
            yield json.loads(self.file.read(length))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()


class _SpillingWriter(TextWriter):
    """A writer that spills records and writes everything at the end; a spill that fails
    (the temporary directory is full) is reported by `finish`, not inside the engine."""

    def __init__(self, destination: Destination) -> None:
        super().__init__(destination)
        self.spill = _Spill()
        self.failure: OutputError | None = None

    def write(self, record: ScanRecord) -> None:
        if self.failure is not None:
            return
        try:
            self.spill.add(record)
        except OSError as exc:
            self.failure = OutputError(f"cannot keep results in a temporary file: {exc.strerror}")

    def finish(self, summary: Summary) -> None:
        try:
            if self.failure is not None:
                self.destination.discard()
                raise self.failure
            self._write_all(summary)
            self._commit()
        finally:
            self.spill.close()

    def _write_all(self, summary: Summary) -> None:
        raise NotImplementedError


_RESULTS = "\u0000results\u0000"  # a placeholder no summary value can hold


class JsonWriter(_SpillingWriter):
    """The whole run as one object, results in input order, streamed from the spill."""

    def _write_all(self, summary: Summary) -> None:
        document: dict[str, Any] = {}
        for key, value in summary.to_dict().items():
            document[key] = value
            if key == "success_rate":  # where the original scanner had it
                document["results"] = _RESULTS
        pretty = self.destination.is_terminal
        head, _, tail = dumps(document, pretty=pretty).partition(dumps(_RESULTS))
        self._put(head + "[")
        first = True
        for record in self.spill.in_order():
            if pretty:
                text = "\n" + "\n".join(
                    "    " + line for line in dumps(record, pretty=True).split("\n")
                )
                self._put(text if first else "," + text)
            else:
                self._put(dumps(record) if first else ", " + dumps(record))
            first = False
        self._put(("\n  ]" if pretty and not first else "]") + tail + "\n")


class JsonlWriter(TextWriter):
    """One record per line, flushed as soon as it is known.

    `write` runs inside the engine's task group, where an OutputError would come out wrapped in
    an ExceptionGroup (and be reported as an internal error); so the first failure (a full
    disk) is kept, later records are not tried, and `finish` raises it, where the runner reports
    it as one line with exit 1. A closed pipe (BrokenPipeError) still ends the run at once.
    """

    def __init__(self, destination: Destination) -> None:
        super().__init__(destination)
        self.failure: OutputError | None = None

    def write(self, record: ScanRecord) -> None:
        if self.failure is not None:
            return
        try:
            self._put(dumps(record.to_dict()) + "\n", flush=True)
        except OutputError as exc:
            self.failure = exc

    def finish(self, summary: Summary) -> None:
        if self.failure is not None:
            raise self.failure
        self._commit()


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


# What makes a spreadsheet read a cell as a formula (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralised(text: str) -> str:
    """Text a spreadsheet shows as text: a leading `'` when it would start a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _cell(value: Any) -> str:
    if isinstance(value, list):  # changed_fields: names joined by ";"
        return neutralised(";".join(map(str, value)))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return neutralised(value)
    return "" if value is None else str(value)  # numbers stay numbers, minus sign and all


def _csv_line(cells: list[str]) -> str:
    """One CSV row (RFC 4180): a cell holding a comma, a quote or any line break is quoted.

    Not csv.writer: with "\n" as its line terminator, Python 3.11's writer leaves a lone "\r"
    unquoted, and spreadsheets start a new row there, so an upstream value "x\r=cmd()" became a
    row of its own beginning with a formula.
    """
    quoted = (
        '"' + cell.replace('"', '""') + '"' if any(c in cell for c in ',"\r\n') else cell
        for cell in cells
    )
    return ",".join(quoted) + "\n"


class CsvWriter(_SpillingWriter):
    """One row per symbol, in input order; the columns are known only once every answer is in,
    so the spill is read twice: once for the columns, once for the rows."""

    def _write_all(self, summary: Summary) -> None:
        data_columns: dict[str, str] = {}  # data key -> column name, in first-seen order
        record_columns = CSV_RECORD_FIELDS
        for row in self.spill.in_order():
            if len(row) > len(RECORD_FIELDS):  # --changes: `changed`, `changed_fields` too
                record_columns = CSV_RECORD_FIELDS + CHANGE_FIELDS
            data = row["data"]
            if isinstance(data, dict):
                for key, value in data.items():
                    if key not in data_columns and _scalar(value):
                        data_columns[key] = f"data.{key}" if key in RECORD_FIELDS else key
        header = [*record_columns, *map(neutralised, data_columns.values())]
        self._put(_csv_line(header))
        for row in self.spill.in_order():
            data = row["data"] if isinstance(row["data"], dict) else {}
            cells = [_cell(row.get(f)) for f in record_columns]
            cells += [_cell(data.get(k)) if _scalar(data.get(k)) else "" for k in data_columns]
            self._put(_csv_line(cells))


class NullWriter:
    """For runs whose product is the cache itself (`warm-cache`): records go nowhere."""

    def write(self, record: ScanRecord) -> None:
        pass

    def finish(self, summary: Summary) -> None:
        pass


def make_writer(
    fmt: str, destination: Destination, *, display: tuple[str, ...] = (), color: bool = False
) -> RecordWriter:
    """The writer for a format name; a table shows the `display` fields, coloured or not."""
    if fmt == "table":
        from scanctl.table import TableWriter

        return TableWriter(destination, display, color=color)
    writers: dict[str, type[JsonWriter | JsonlWriter | CsvWriter]] = {
        "json": JsonWriter,
        "jsonl": JsonlWriter,
        "csv": CsvWriter,
    }
    return writers[fmt](destination)


def write_text_file(path: str, text: str, flag: str = "--metrics") -> None:
    """Write `text` atomically (a temporary file beside `path`, fsynced, renamed over it), or
    straight into a device or FIFO: the --metrics file, as JSON or in Prometheus' format."""
    destination: AtomicFileDestination | SpecialFileDestination
    if is_special_file(path):
        destination = SpecialFileDestination(path, flag)
    else:
        destination = AtomicFileDestination(path, flag)
    try:
        destination.stream.write(text)
    except OSError as exc:
        destination.discard()
        raise _oserror(path, exc) from None
    destination.commit()


def write_json_file(path: str, value: Any) -> None:
    """Write a JSON document atomically (used for --metrics); a device or FIFO directly."""
    write_text_file(path, dumps(value, pretty=True) + "\n")
