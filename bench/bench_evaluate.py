"""Wall time of the default ``python evaluate.py`` run with the process pool and with Ray, side by side.

    python bench/bench_evaluate.py [key=value ...]                 # extra evaluate.py overrides, both launchers
    python bench/bench_evaluate.py --launchers pool                # one launcher (target: within 5 minutes on 2 cores)
    python bench/bench_evaluate.py policies=[static,reactive] scenario=small   # a reduced matrix

Each launcher runs the same matrix into its own folder under ``results/bench_evaluate/``; the
script prints each one's wall time (the whole command, and the episodes alone as evaluate.py
records them in ``timing.json``, Ray's start included), Ray's overhead against the pool, the
start and stop of an empty local Ray measured on its own, the load average, and whether the two
``results.csv`` agree.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(launcher: str, overrides: list) -> dict:
    """One ``evaluate.py`` run with ``launcher``: its wall times and output folder."""
    out = ROOT / "results" / "bench_evaluate" / launcher
    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "evaluate.py"), f"out={out}", f"launcher={launcher}", *overrides],
                   check=True, cwd=ROOT)
    wall = time.perf_counter() - start
    timing = json.loads((out / "timing.json").read_text())
    return {"wall": wall, "episodes_wall": timing["wall_seconds"], "episodes": timing["episodes"], "out": out}


def ray_start_stop(num_cpus: int) -> float:
    """Seconds to start and stop a local Ray with nothing to run."""
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    ray.shutdown()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--launchers", nargs="+", choices=("pool", "ray"), default=["pool", "ray"])
    args, overrides = p.parse_known_args()
    bad = [o for o in overrides if "=" not in o]
    if bad:
        p.error(f"evaluate.py overrides are key=value, got {bad}")
    load = os.getloadavg()
    runs = {launcher: run(launcher, overrides) for launcher in args.launchers}
    print(f"\nevaluate.py {' '.join(overrides) or '(default matrix)'}; load average before "
          f"{load[0]:.1f}, after {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'launcher':<9}{'episodes':>9}{'command s':>11}{'episodes s':>12}")
    for launcher, r in runs.items():
        print(f"{launcher:<9}{r['episodes']:>9}{r['wall']:>11.1f}{r['episodes_wall']:>12.1f}")
    if len(runs) == 2:
        pool, ray = runs["pool"], runs["ray"]
        extra = ray["wall"] - pool["wall"]
        print(f"Ray's overhead: {extra:+.1f} s ({extra / pool['wall']:+.0%}) for the command, "
              f"{ray['episodes_wall'] - pool['episodes_wall']:+.1f} s for the episodes; an empty local Ray "
              f"starts and stops in {ray_start_stop(os.cpu_count()):.1f} s")
        same = (pool["out"] / "results.csv").read_bytes() == (ray["out"] / "results.csv").read_bytes()
        print(f"results.csv identical: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
