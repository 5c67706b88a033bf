"""`--resume`: carry on a jsonl scan that was interrupted or killed, without doing anything twice.

The jsonl output holds one complete record per line (it is written a whole line at a time), except
perhaps a last line cut short by a crash. Resuming reads it once, line by line (memory holds the
set of finished symbols, not the records):
- an ok record of this scan type marks its symbol done: it is kept and not scanned again;
- a failed record of this type is dropped, so its symbol is scanned again and appears once;
- a second record for a symbol already kept is dropped;
- records of other types are kept as they are;
- a last line that is not a whole JSON record (cut short by a crash) is dropped;
- any other line that is not a JSON record means this is not a jsonl output of ours: refused
  (exit 2), the file untouched.
If anything was dropped, the file is rewritten (temporary file and rename, same permissions)
before the scan appends. Symbols are compared upper-cased, as the symbol reader normalises them.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from scanctl.errors import UsageError


@dataclass(slots=True)
class ResumeState:
    """What an earlier run left in the output file."""

    done: set[str] = field(default_factory=set)  # symbols with an ok record of this type
    dropped_failed: int = 0
    dropped_duplicates: int = 0
    dropped_broken: int = 0  # lines that were not JSON records (a crash mid-line)

    @property
    def changed(self) -> bool:
        return bool(self.dropped_failed or self.dropped_duplicates or self.dropped_broken)


def _record(line: bytes) -> dict[str, object] | None:
    try:
        value = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if isinstance(value, dict) and isinstance(value.get("symbol"), str) and "ok" in value:
        return value
    return None


def prepare_resume(path: str, scan_type: str) -> ResumeState:
    """Read `path`, keep what is done, rewrite it if needed; a missing file is a fresh start."""
    state = ResumeState()
    target = Path(path)
    if not target.exists():
        return state
    if not target.is_file():
        raise UsageError(f"--resume needs a regular file to read, {path!r} is not one")
    directory = target.parent if str(target.parent) else Path(".")
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".resume", dir=directory)
    except OSError as exc:
        raise UsageError(f"--resume {path!r}: cannot write beside it: {exc.strerror}") from None
    try:
        with open(target, "rb") as source, os.fdopen(fd, "wb") as kept:
            broken_at = None
            for number, line in enumerate(source, start=1):
                if broken_at is not None:
                    raise UsageError(
                        f"--resume {path!r}: line {broken_at} is not a scanctl jsonl record; "
                        "resume needs the -F jsonl output of an earlier scan"
                    )
                record = _record(line) if line.endswith(b"\n") else None
                if record is None:
                    broken_at = number  # forgiven only if it is the last line
                    state.dropped_broken += 1
                    continue
                if record.get("type") != scan_type:
                    kept.write(line)
                    continue
                symbol = str(record["symbol"]).upper()
                if record.get("ok") is not True:
                    state.dropped_failed += 1
                elif symbol in state.done:
                    state.dropped_duplicates += 1
                else:
                    state.done.add(symbol)
                    kept.write(line)
            kept.flush()
            os.fsync(kept.fileno())
        if state.changed:
            os.chmod(temp, stat.S_IMODE(os.stat(target).st_mode))
            os.replace(temp, target)
    except OSError as exc:
        raise UsageError(f"--resume {path!r}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)
    return state
