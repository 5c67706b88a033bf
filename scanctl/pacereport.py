"""`scanctl stats`' view of the shared send schedule: who shares which upstream's budget now.

Read with the store's own clock, like the processes that use it; a store that cannot be opened
is reported as such (stats is for looking, not for failing).
"""

from __future__ import annotations

from typing import Any

from scanctl.pacestore import PacingStoreError, open_pacing_store
from scanctl.state import state_dir


def pacing_section(spec: str | None) -> dict[str, Any]:
    """The `pacing` part of `stats --format json`: the store, and per upstream (base URL and
    the credential's hash, and the scan type when the profile gives each its own budget) the
    live processes, the rate in force, how far the schedule runs ahead, and the rates learned
    per scan type."""
    try:
        store = open_pacing_store(spec, state_dir())
    except PacingStoreError as exc:
        return {"store": spec, "error": str(exc), "upstreams": []}
    if store is None:
        return {"store": "local", "upstreams": []}
    try:
        states = store.states()
    except PacingStoreError as exc:
        return {"store": store.location, "error": str(exc), "upstreams": []}
    finally:
        store.close()
    upstreams = []
    for state in states:
        scope, found, type_name = state.scope.rpartition(" type:")
        if not found:
            scope, type_name = state.scope, ""
        upstream, found, key = scope.rpartition(" key:")
        if not found:
            upstream, key = scope, ""
        upstreams.append(
            {
                "upstream": upstream,
                "credential_sha256": key or None,
                "type": type_name or None,  # (None: one budget for every type)
                "processes": state.processes,
                "rate": None if state.rate is None else round(state.rate, 2),
                "ahead_seconds": state.ahead,
                "learned": state.learned,
            }
        )
    return {"store": f"{store.kind} {store.location}", "upstreams": upstreams}
