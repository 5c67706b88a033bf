"""Latency-bound scan: wall time against the ideal, measured in one run.

Starts the simulated upstream on a loopback port with a long-tailed latency (lognormal, given
median), runs `scanctl scan` over N symbols at a concurrency C, and compares the wall time with
the ideal for a scanner with C slots and no overhead:

    ideal = N * mean(server latency) / C + slowest server latency

Server latencies are the ones the upstream itself drew (from its stats), so client overhead
shows up in the ratio instead of being hidden in the ideal.

    python benchmarks/latency_bound.py --symbols 1000 --concurrency 50 --median 0.1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scanctl.demo.testing import fetch_stats, running_demo_process


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--median", type=float, default=0.1, help="server latency median, seconds")
    parser.add_argument("--sigma", type=float, default=0.5, help="lognormal sigma (tail weight)")
    args = parser.parse_args()

    symbols = "\n".join(f"C{i:06d}" for i in range(args.symbols))
    server_args = [
        "--latency-median",
        str(args.median),
        "--latency-sigma",
        str(args.sigma),
        "--seed",
        "42",
    ]
    with running_demo_process(server_args) as url, tempfile.TemporaryDirectory() as work:
        metrics = Path(work) / "metrics.json"
        before = fetch_stats(url)
        started = time.perf_counter()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "scanctl",
                "scan",
                "-f",
                "-",
                "-t",
                "mss",
                "--base-url",
                url,
                "--concurrency",
                str(args.concurrency),
                "-F",
                "jsonl",
                "-o",
                str(Path(work) / "out.jsonl"),
                "--metrics",
                str(metrics),
                "-q",
                "--no-cache",  # every symbol must go to the upstream
            ],
            input=symbols,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - started
        after = fetch_stats(url)
        summary = json.loads(metrics.read_text())
    requests = after["requests"] - before["requests"]
    mean = (after["latency_sum"] - before["latency_sum"]) / requests
    slowest = after["latency_max"]
    ideal = args.symbols * mean / args.concurrency + slowest
    report = {
        "symbols": args.symbols,
        "concurrency": args.concurrency,
        "exit_code": result.returncode,
        "successful": summary["successful"],
        "requests": requests,
        "server_mean_latency_s": round(mean, 4),
        "server_slowest_s": round(slowest, 3),
        "ideal_s": round(ideal, 3),
        "wall_s": round(wall, 3),
        "scan_time_s": summary["performance"]["total_time_seconds"],
        "wall_over_ideal": round(wall / ideal, 3),
        "scan_over_ideal": round(summary["performance"]["total_time_seconds"] / ideal, 3),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
