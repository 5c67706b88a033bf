"""Writing records as json, jsonl or csv, to stdout or to a file, from one place.

- json: one object, the run summary with `results` in input order, written when the run ends.
- jsonl: one record per line, written and flushed the moment each symbol finishes, so `head` and
  `jq` start at once. A jsonl file is written in place, one whole line per write, because a
  crashed run's lines must stay readable (and resumable); json and csv files go to a temporary
  file beside the target and are renamed over it at the end, so a reader never sees half a file.
- csv: one row per symbol: the record's scalar fields, then the upstream answer's top-level
  scalar fields (a name that clashes with a record field gets a `data.` prefix).

Destinations are opened before the first request, so an unwritable path fails fast (exit 2).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO

from scanctl.errors import OutputError, UsageError
from scanctl.records import RECORD_FIELDS, ScanRecord

FORMATS = ("json", "jsonl", "csv")
CSV_RECORD_FIELDS = tuple(f for f in RECORD_FIELDS if f != "data")


def _oserror(path: str, exc: OSError) -> OutputError:
    return OutputError(f"cannot write {path}: {exc.strerror or exc}")


def check_writable(path: str, flag: str = "--output") -> Path:
    """Fail with a usage error when `path` cannot be created or replaced."""
    target = Path(path)
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


class StdoutDestination:
    """Standard output; failures other than a closed pipe become OutputError."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.is_terminal = self.stream.isatty()

    def commit(self) -> None:
        self.stream.flush()


class AtomicFileDestination:
    """A temporary file beside the target, renamed over it on commit."""

    is_terminal = False

    def __init__(self, path: str, flag: str = "--output") -> None:
        self.target = check_writable(path, flag)
        try:
            fd, self.temp_path = tempfile.mkstemp(
                prefix=f".{self.target.name}.", suffix=".tmp", dir=self.target.parent
            )
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


def open_destination(path: str | None, fmt: str, *, append: bool = False) -> Destination:
    """The destination for `--output` (None or "-" means stdout); jsonl may append (--resume)."""
    if path is None or path == "-":
        return StdoutDestination()
    if fmt == "jsonl":
        return InPlaceFileDestination(path, append=append)
    return AtomicFileDestination(path)


def dumps(value: Any, *, pretty: bool = False) -> str:
    """JSON text; non-ASCII kept as is."""
    return json.dumps(value, ensure_ascii=False, indent=2 if pretty else None)


class RecordWriter(Protocol):
    """Receives records as they finish, then the summary once at the end."""

    def write(self, record: ScanRecord) -> None: ...

    def finish(self, summary: dict[str, Any]) -> None: ...


class _Writer:
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
            raise _oserror(getattr(self.destination, "target", "standard output"), exc) from None

    def _commit(self) -> None:
        try:
            self.destination.commit()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _oserror("standard output", exc) from None


class JsonWriter(_Writer):
    """The whole run as one object, results in input order."""

    def __init__(self, destination: Destination) -> None:
        super().__init__(destination)
        self.records: list[ScanRecord] = []

    def write(self, record: ScanRecord) -> None:
        self.records.append(record)

    def finish(self, summary: dict[str, Any]) -> None:
        self.records.sort(key=lambda r: r.index)
        document: dict[str, Any] = {}
        for key, value in summary.items():
            document[key] = value
            if key == "success_rate":  # where the original scanner had it
                document["results"] = [r.to_dict() for r in self.records]
        self._put(dumps(document, pretty=self.destination.is_terminal) + "\n")
        self._commit()


class JsonlWriter(_Writer):
    """One record per line, flushed as soon as it is known."""

    def write(self, record: ScanRecord) -> None:
        self._put(dumps(record.to_dict()) + "\n", flush=True)

    def finish(self, summary: dict[str, Any]) -> None:
        self._commit()


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else value


class CsvWriter(_Writer):
    """One row per symbol; the columns are known only once every answer is in."""

    def __init__(self, destination: Destination) -> None:
        super().__init__(destination)
        self.records: list[ScanRecord] = []

    def write(self, record: ScanRecord) -> None:
        self.records.append(record)

    def finish(self, summary: dict[str, Any]) -> None:
        self.records.sort(key=lambda r: r.index)
        data_columns: dict[str, str] = {}  # data key -> column name, in first-seen order
        for record in self.records:
            if isinstance(record.data, dict):
                for key, value in record.data.items():
                    if key not in data_columns and _scalar(value):
                        data_columns[key] = f"data.{key}" if key in RECORD_FIELDS else key
        buffer = io.StringIO()
        out = csv.writer(buffer, lineterminator="\n")
        out.writerow([*CSV_RECORD_FIELDS, *data_columns.values()])
        for record in self.records:
            row = record.to_dict()
            data = record.data if isinstance(record.data, dict) else {}
            cells = [_cell(row[f]) for f in CSV_RECORD_FIELDS]
            cells += [_cell(data.get(k)) if _scalar(data.get(k)) else "" for k in data_columns]
            out.writerow(cells)
        self._put(buffer.getvalue())
        self._commit()


class NullWriter:
    """For runs whose product is the cache itself (`warm-cache`): records go nowhere."""

    def write(self, record: ScanRecord) -> None:
        pass

    def finish(self, summary: dict[str, Any]) -> None:
        pass


def make_writer(fmt: str, destination: Destination) -> RecordWriter:
    """The writer for a format name."""
    writers: dict[str, type[JsonWriter | JsonlWriter | CsvWriter]] = {
        "json": JsonWriter,
        "jsonl": JsonlWriter,
        "csv": CsvWriter,
    }
    return writers[fmt](destination)


def write_json_file(path: str, value: Any) -> None:
    """Write a JSON document atomically (used for --metrics)."""
    destination = AtomicFileDestination(path, "--metrics")
    try:
        destination.stream.write(dumps(value, pretty=True) + "\n")
    except OSError as exc:
        destination.discard()
        raise _oserror(path, exc) from None
    destination.commit()
