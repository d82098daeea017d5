"""Benchmark: the fast fidelity against the detailed one, in env steps per second.

    python bench/bench_fidelity.py [--seed N] [--hours H]

1. A paper-scale 24 h episode at 60 s decisions in the fast fidelity, end to end (reset with
   the day's generation, then every step), best of three; target <= 5 s on one core.
2. Env steps per second of both fidelities (the fast one also with a 15 s tick) on the small and
   the paper presets over the first ``--hours`` of a generated day (60 s decisions, reset
   excluded).

The policy keeps the allocation (the action "no change"), so the figures are the simulator's and
the env's; heuristic policies add their own time in both fidelities. Wall and CPU seconds are
printed: on a shared machine the CPU time is the steadier figure.
"""

from __future__ import annotations

import argparse
import time
from typing import Tuple

import numpy as np

from sageserve_env.env.sageserve_env import SageServeEnv

TARGET_DAY_S = 5.0
DAY_REPEATS = 3  # the day is timed this many times and the best run reported (shared machines are noisy)


def episode(scenario: str, fidelity: str, hours: float, seed: int,
            tick_s: float = 5.0) -> Tuple[int, float, float, float, float]:
    """(steps, reset wall s, reset CPU s, steps wall s, steps CPU s) of one episode kept static."""
    env = SageServeEnv(scenario=scenario, fidelity=fidelity, horizon_s=hours * 3600.0, decision_interval_s=60.0,
                       fidelity_tick_s=tick_s)
    keep = np.full(env.n_endpoints, env.max_delta)
    w0, c0 = time.perf_counter(), time.process_time()
    env.reset(seed=seed)
    w1, c1 = time.perf_counter(), time.process_time()
    steps, done = 0, False
    while not done:
        done = env.step(keep)[3]
        steps += 1
    return steps, w1 - w0, c1 - c0, time.perf_counter() - w1, time.process_time() - c1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hours", type=float, default=12.0, help="simulated hours of the steps-per-second runs")
    args = parser.parse_args()

    runs = sorted((episode("paper", "fast", 24.0, args.seed) for _ in range(DAY_REPEATS)), key=lambda r: r[2] + r[4])
    steps, rw, rc, sw, sc = runs[0]
    total = rc + sc
    print(f"paper 24 h, fast, 60 s decisions, best of {DAY_REPEATS}: {steps} steps, reset {rw:.2f} s wall "
          f"({rc:.2f} CPU), steps {sw:.2f} s wall ({sc:.2f} CPU); total {rw + sw:.2f} s wall, {total:.2f} s CPU "
          f"(target <= {TARGET_DAY_S:g} s: {'met' if total <= TARGET_DAY_S else 'missed'}); "
          f"worst {runs[-1][2] + runs[-1][4]:.2f} s CPU\n")

    print(f"env steps per second, first {args.hours:g} h of a day, 60 s decisions (CPU time, reset excluded)")
    runs = (("detailed", "detailed", 5.0), ("fast", "fast", 5.0), ("fast, 15 s tick", "fast", 15.0))
    print(f"{'scenario':9s}" + "".join(f"{name:>17s}" for name, _, _ in runs))
    for scenario in ("small", "paper"):
        rate = []
        for _, fidelity, tick in runs:
            steps, _, _, _, sc = episode(scenario, fidelity, args.hours, args.seed, tick)
            rate.append(steps / sc)
        print(f"{scenario:9s}" + "".join(f"{r:11.0f} ({r / rate[0]:3.1f}x)" for r in rate))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
