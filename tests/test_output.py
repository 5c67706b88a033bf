"""Writers: json / jsonl / csv content, atomic files, metrics without results."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from scanctl.errors import UsageError
from scanctl.output import (
    AtomicFileDestination,
    InPlaceFileDestination,
    StdoutDestination,
    make_writer,
    open_destination,
    write_json_file,
)
from scanctl.records import RECORD_FIELDS, ScanRecord
from tests.summaries import summary_of


def record(index: int, symbol: str, ok: bool = True, data: Any = None) -> ScanRecord:
    return ScanRecord(
        symbol,
        "mss",
        ok,
        200 if ok else 404,
        data if ok else None,
        None if ok else "HTTP 404: No data",
        1,
        12.5,
        index=index,
        error_kind=None if ok else "HTTP 404",
    )


SUMMARY = summary_of(
    total_scanned=3, successful=2, failed=1, success_rate=66.67, errors={"HTTP 404": 1}
)


def test_json_keeps_input_order_and_the_original_field_layout() -> None:
    out = io.StringIO()
    writer = make_writer("json", StdoutDestination(out))
    for r in [
        record(2, "SOL", data={"score": 1}),
        record(0, "BTC", data={"score": 2}),
        record(1, "ZZX", ok=False),
    ]:
        writer.write(r)
    writer.finish(SUMMARY)
    doc = json.loads(out.getvalue())
    assert [r["symbol"] for r in doc["results"]] == ["BTC", "ZZX", "SOL"]
    assert list(doc)[:6] == [
        "scan_type",
        "total_scanned",
        "successful",
        "failed",
        "success_rate",
        "results",
    ]
    assert list(doc["results"][0]) == list(RECORD_FIELDS)
    assert doc["results"][1]["error"] == "HTTP 404: No data" and doc["results"][1]["data"] is None


def test_jsonl_writes_and_flushes_each_record_as_it_comes() -> None:
    flushed: list[str] = []

    class Recorder(io.StringIO):
        def flush(self) -> None:
            flushed.append(self.getvalue())

    out = Recorder()
    writer = make_writer("jsonl", StdoutDestination(out))
    writer.write(record(1, "ETH", data={"score": 3}))
    assert flushed and json.loads(flushed[-1].splitlines()[-1])["symbol"] == "ETH"
    writer.write(record(0, "BTC", data={"score": 4}))
    writer.finish(SUMMARY)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["symbol"] for line in lines] == ["ETH", "BTC"]  # completion order, not input order


def test_csv_has_record_scalars_then_payload_scalars() -> None:
    out = io.StringIO()
    writer = make_writer("csv", StdoutDestination(out))
    writer.write(
        record(0, "BTC", data={"symbol": "BTC", "score": 80.5, "signal": "BUY", "phases": {"a": 1}})
    )
    writer.write(record(1, "ZZX", ok=False))
    writer.write(record(2, "ETH", data={"score": 40, "extra": True}))
    writer.finish(SUMMARY)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == [
        "symbol",
        "type",
        "ok",
        "status",
        "error",
        "attempts",
        "elapsed_ms",
        "cached",
        "stale",
        "data.symbol",
        "score",
        "signal",
        "extra",
    ]  # nested "phases" is not a scalar: left out; clashing "symbol" is prefixed
    assert rows[0]["score"] == "80.5" and rows[0]["ok"] == "true" and rows[0]["signal"] == "BUY"
    assert (
        rows[1]["ok"] == "false"
        and rows[1]["error"] == "HTTP 404: No data"
        and rows[1]["score"] == ""
    )
    assert rows[2]["extra"] == "true"


def test_atomic_file_appears_only_on_commit_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("previous")
    destination = open_destination(str(target), "json")
    assert isinstance(destination, AtomicFileDestination)
    writer = make_writer("json", destination)
    writer.write(record(0, "BTC", data={}))
    assert target.read_text() == "previous"  # readers never see a half-written file
    writer.finish(SUMMARY)
    assert json.loads(target.read_text())["results"][0]["symbol"] == "BTC"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_jsonl_file_is_written_in_place_line_by_line(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    destination = open_destination(str(target), "jsonl")
    assert isinstance(destination, InPlaceFileDestination)
    writer = make_writer("jsonl", destination)
    writer.write(record(0, "BTC", data={}))
    assert json.loads(target.read_text())["symbol"] == "BTC"  # visible while the scan runs
    writer.finish(SUMMARY)


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_unwritable_outputs_are_usage_errors_before_anything_runs(tmp_path: Path, fmt: str) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        open_destination(str(tmp_path / "missing" / "out"), fmt)
    with pytest.raises(UsageError, match="is a directory"):
        open_destination(str(tmp_path), fmt)


def test_metrics_file_is_json_written_atomically(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    write_json_file(str(path), SUMMARY.to_dict())
    assert json.loads(path.read_text()) == SUMMARY.to_dict()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_an_atomic_file_gets_the_permissions_of_a_new_file_or_keeps_the_old_ones(
    tmp_path: Path,
) -> None:
    """Not mkstemp's 0600: node_exporter, running as another user, must keep reading a .prom
    file that every run replaces."""
    umask = os.umask(0o027)
    try:
        new = tmp_path / "new.json"
        write_json_file(str(new), SUMMARY.to_dict())
        assert stat.S_IMODE(new.stat().st_mode) == 0o640
        old = tmp_path / "old.prom"
        old.write_text("old")
        old.chmod(0o604)
        destination = AtomicFileDestination(str(old))
        destination.stream.write("new")
        destination.commit()
        assert stat.S_IMODE(old.stat().st_mode) == 0o604 and old.read_text() == "new"
    finally:
        os.umask(umask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.json", "old.prom"]


def test_an_atomic_write_through_a_symlink_keeps_the_link(tmp_path: Path) -> None:
    from scanctl.output import AtomicFileDestination

    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    destination = AtomicFileDestination(str(link))
    destination.stream.write("new")
    destination.commit()
    assert link.is_symlink() and real.read_text() == "new"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stream_type", [io.StringIO, _Terminal])
@pytest.mark.parametrize("count", [0, 1, 7])
def test_json_streamed_from_the_spill_is_what_one_dumps_call_would_write(
    stream_type: type[io.StringIO], count: int
) -> None:
    from scanctl.output import dumps

    records = [
        record(i, f"S{i}", ok=i % 3 != 1, data={"n": i, "é": [i, {"x": None}]})
        for i in range(count)
    ]
    out = stream_type()
    destination = StdoutDestination(out)
    writer = make_writer("json", destination)
    for r in reversed(records):  # finished in the opposite order
        writer.write(r)
    writer.finish(SUMMARY)
    fields = list(SUMMARY.to_dict().items())
    document = {**dict(fields[:5]), "results": [r.to_dict() for r in records]}
    document.update(dict(fields[5:]))
    assert out.getvalue() == dumps(document, pretty=destination.is_terminal) + "\n"


def test_json_and_csv_keep_finished_records_on_disk_not_in_memory() -> None:
    for fmt in ("json", "csv"):
        writer = make_writer(fmt, StdoutDestination(io.StringIO()))
        for i in range(500):
            writer.write(record(499 - i, f"S{i}", data={"score": i, "pad": "x" * 200}))
        spill = writer.spill  # type: ignore[attr-defined]
        assert spill.size > 500 * 200 and len(spill.places) == 500
        assert not any(isinstance(v, list) and len(v) >= 500 for v in vars(writer).values())
        writer.finish(SUMMARY)
        assert spill.file.closed


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_the_spill_keeps_any_string_a_record_can_hold(fmt: str) -> None:
    out = io.StringIO()
    writer = make_writer(fmt, StdoutDestination(out))
    writer.write(record(0, "BTC", data={"value": "\ud800 é ✓"}))
    writer.finish(SUMMARY)
    assert "\ud800 é ✓" in out.getvalue()
