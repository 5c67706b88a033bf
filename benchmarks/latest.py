"""benchmarks/results/latest.json: one section per benchmark, each written without the others'
being lost (pacing.py writes "pacing", speed.py "speed", and speed.py's chart reads pacing's)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


def save_section(name: str, section: dict[str, Any]) -> None:
    """Replace section `name`, keeping the rest; written whole or not at all."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    try:
        everything = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        everything = {}
    everything[name] = section
    temporary = RESULTS.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(everything, indent=2) + "\n")
    temporary.replace(RESULTS)
