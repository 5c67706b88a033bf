"""`scanctl stats` and `scanctl cache clear|prune`: the cache and the run log, for people
and scripts.

The figures over runs (hit rate, the original scanner's totals) come from the run log the store
keeps (the last 500 runs), so they cover every process that used this cache, cron jobs included.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from scanctl.cache import open_store
from scanctl.cache.store import RUNS_KEPT, CacheStats
from scanctl.config import match_type


def _warn(message: str) -> None:
    print(f"scanctl: {message}", file=sys.stderr, flush=True)


def totals(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The original scanner's totals and the cache's hit rate, over the runs given."""
    scans = sum(r.get("symbols", 0) for r in runs)
    elapsed = sum(r.get("total_time", 0.0) for r in runs)
    hits = sum(r.get("hits", 0) for r in runs)
    misses = sum(r.get("misses", 0) for r in runs)
    return {
        "runs": len(runs),
        "total_scans": scans,
        "successful_scans": sum(r.get("successful", 0) for r in runs),
        "failed_scans": sum(r.get("failed", 0) for r in runs),
        "total_time": round(elapsed, 3),
        "avg_scan_time": round(elapsed / scans, 4) if scans else 0.0,
        "scans_per_second": round(scans / elapsed, 2) if elapsed > 0 else 0.0,
        "cache_hits": hits,
        "cache_misses": misses,
        "stale_served": sum(r.get("stale_served", 0) for r in runs),
        "hit_rate": round(100.0 * hits / (hits + misses), 2) if hits + misses else 0.0,
        "requests_sent": sum(r.get("requests", 0) for r in runs),
        "throttled": sum(r.get("throttled", 0) for r in runs),
    }


def stats_document(stats: CacheStats, runs: list[dict[str, Any]], shown: int) -> dict[str, Any]:
    """Everything `scanctl stats --format json` prints."""
    entries = {
        name: {"fresh": c.fresh, "expired": c.expired, "negative": c.negative, "total": c.total}
        for name, c in stats.by_type.items()
    }
    return {
        "cache": {
            "backend": stats.backend,
            "location": stats.location,
            "size_bytes": stats.size_bytes,
            "entries": entries,
            "entries_total": sum(e["total"] for e in entries.values()),
        },
        "totals": totals(runs),
        "recent_runs": runs[:shown],
    }


def print_stats(
    spec: str | None, fmt: str | None, shown: int, pacing: dict[str, Any] | None = None
) -> None:
    """Print the stats document: a rich table on a terminal, JSON otherwise (or as asked);
    `pacing`: the shared pacing state (`pacereport`), shown after the cache's."""
    store = open_store(spec, warn=_warn, repair=False)
    try:
        document = stats_document(store.stats(time.time()), store.runs(RUNS_KEPT), shown)
    finally:
        store.close()
    if pacing is not None:
        document["pacing"] = pacing
    if fmt is None:
        fmt = "table" if sys.stdout.isatty() else "json"
    if fmt == "json":
        import json

        print(json.dumps(document, indent=2))
        return
    _print_tables(document)


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _print_tables(document: dict[str, Any]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console()
    cache, sums = document["cache"], document["totals"]
    console.print(
        f"[bold]cache[/] {cache['backend']} at {cache['location']}, {_size(cache['size_bytes'])}, "
        f"{cache['entries_total']} entries",
        highlight=False,
    )
    entries = Table("type", "fresh", "expired", "negative (404)", "total", title="entries")
    for name, c in cache["entries"].items():
        entries.add_row(name, *(str(c[k]) for k in ("fresh", "expired", "negative", "total")))
    console.print(entries)
    summary = Table("figure", "value", title=f"over the last {sums['runs']} runs")
    for key, value in sums.items():
        if key != "runs":
            summary.add_row(key, f"{value}%" if key == "hit_rate" else str(value))
    console.print(summary)
    runs = Table(title="recent runs", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    for name in ("when (UTC)", "command", "type"):
        runs.add_column(name, no_wrap=True)
    for name in ("symbols", "ok %", "time s", "scans/s", "cached", "429s", "rate"):
        runs.add_column(name, justify="right", no_wrap=True)
    for run in document["recent_runs"]:
        rate = run.get("final_rate")
        runs.add_row(
            str(run.get("at", ""))[5:16].replace("T", " "),  # "11-25 12:50"
            "warm" if run.get("command") == "warm-cache" else str(run.get("command", "")),
            str(run.get("type", "")),
            str(run.get("symbols", 0)),
            f"{run.get('success_rate', 0):.0f}",
            f"{run.get('total_time', 0):.2f}",
            f"{run.get('scans_per_second', 0):.0f}",
            str(run.get("hits", 0)),
            str(run.get("throttled", 0)),
            "-" if rate is None else f"{rate:.1f}",
        )
    console.print(runs)
    if "pacing" in document:
        _print_pacing(console, document["pacing"])


def _print_pacing(console: Any, pacing: dict[str, Any]) -> None:
    """The shared budget per upstream: processes sharing it now, its rate, the rates learned."""
    from rich.table import Table

    title = f"shared pacing ({pacing['store']})"
    if "error" in pacing:
        console.print(f"[bold]{title}[/]: {pacing['error']}", highlight=False)
        return
    table = Table("upstream", "key", "processes", "rate", "ahead s", "learned", title=title)
    for up in pacing["upstreams"]:
        learned = ", ".join(f"{t} {p.get('rate')}" for t, p in up["learned"].items())
        rate = up["rate"]
        table.add_row(
            up["upstream"] + (f" ({up['type']})" if up.get("type") else ""),
            (up["credential_sha256"] or "")[:8],
            str(up["processes"]),
            "-" if rate is None else f"{rate:.1f}",
            f"{up['ahead_seconds']:.2f}",
            learned or "-",
        )
    console.print(table)


def clear_cache(spec: str | None, type_name: str | None, older_than: float | None) -> int:
    """Delete entries; say how many on stderr. The type is matched as `scan -t` matches it
    (exact, else ignoring case), among the types the cache holds: the cache may hold types of
    several profiles, none of which need be in force."""
    store = open_store(spec, warn=_warn)
    try:
        if type_name is not None:
            cached = store.stats(time.time()).by_type
            type_name = match_type(type_name, cached) or type_name
        cutoff = None if older_than is None else time.time() - older_than
        removed = store.invalidate(type_name=type_name, older_than=cutoff)
    finally:
        store.close()
    _warn(f"removed {removed} cached entries from {store.location}")
    return removed


def prune_cache(spec: str | None, expired_for: float) -> int:
    """Delete entries expired more than `expired_for` seconds ago; say how many."""
    store = open_store(spec, warn=_warn)
    try:
        removed = store.prune(time.time(), expired_for)
    finally:
        store.close()
    _warn(f"pruned {removed} expired entries from {store.location}")
    return removed
