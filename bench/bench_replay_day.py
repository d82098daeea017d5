"""Benchmark: replay a generated paper-scale day (preset ``paper``, ~1.5M requests) end to end.

    python bench/bench_replay_day.py [--out DIR] [--seed N] [extra simulate arguments...]

Runs ``python -m sageserve_env simulate scenario=paper`` in this process (generation, simulation,
summary, Parquet records and plots) and prints the wall time, simulated requests per second and
peak RSS. Targets: the day in <= 60 s on one core, <= 2 GB RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from sageserve_env.cli import main as simulate_main

TARGET_WALL_S = 60.0
TARGET_RSS_GB = 2.0


def peak_rss_gb() -> float:
    """Peak resident set size of this process and its children (Linux reports KiB)."""
    kib = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return kib / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="output directory (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    args, extra = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        start = time.perf_counter()
        code = simulate_main(["simulate", "scenario=paper", f"seed={args.seed}", f"out={out}", "progress=false",
                              *extra])
        wall = time.perf_counter() - start
        if code:
            return code
        summary = json.loads((out / "summary.json").read_text())
    requests = summary["requests_total"]
    rss = peak_rss_gb()
    print(f"\nrequests {requests:,}  wall {wall:.1f} s (simulation loop {summary['wall_seconds']:.1f} s)  "
          f"{requests / wall:,.0f} requests/s end to end, {requests / summary['wall_seconds']:,.0f} in the loop  "
          f"peak RSS {rss:.2f} GB")
    print(f"targets: wall <= {TARGET_WALL_S:.0f} s {'met' if wall <= TARGET_WALL_S else 'MISSED'}, "
          f"RSS <= {TARGET_RSS_GB:.0f} GB {'met' if rss <= TARGET_RSS_GB else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
