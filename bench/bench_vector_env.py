"""Env steps per second (all worlds together) of the vectorized fast fidelity against N.

    python bench/bench_vector_env.py                      # paper and small, N = 1 .. 1024
    python bench/bench_vector_env.py --scenario paper --worlds 256 --steps 200
    python bench/bench_vector_env.py --traffic --scenario paper small --worlds 256 1024
    python bench/bench_vector_env.py --instructions --scenario paper --worlds 256 --steps 16

One process, one core (OPENBLAS_NUM_THREADS=1), seeded random masked actions, 60 s decisions,
5 s ticks. Each N runs in a fresh subprocess so that its peak RSS is its own; the clock covers
the steps only (masks, action draws, step), after one warm-up step. Two figures: per second of
wall time (the target's) and per second of the process's CPU time (less disturbed by other
processes on a shared machine).

``--instructions`` counts instead of timing, under valgrind's callgrind (which counts the same
whatever else the machine runs): the instructions of a run of 2 x ``--steps`` steps less those
of a run of ``--steps`` (setup and warm-up cancel), per env step. Keep ``--steps`` a multiple of
16 at 60 s decisions and 5 s ticks (16 steps = 192 ticks = 3 traffic chunks of 64), so that both
runs draw the traffic in proportion. It takes minutes: callgrind runs some 50 times slower.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

TARGETS = {("paper", 256): 20_000, ("small", 1024): 100_000}


def run_one(scenario: str, n: int, steps: int) -> dict:
    import numpy as np

    from sageserve_env.env.vector_env import SageServeVectorEnv

    env = SageServeVectorEnv(n, scenario=scenario, decision_interval_s=60.0, fidelity_tick_s=5.0)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    k = 2 * env.max_delta + 1

    def act():
        m = env.action_masks().reshape(n, env.n_endpoints, k)
        return (rng.random(m.shape) * m).argmax(2)

    env.step(act())
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        env.step(act())
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"scenario": scenario, "worlds": n, "steps_per_s": steps * n / elapsed,
            "cpu_steps_per_s": steps * n / cpu, "peak_rss_mb": rss_mb}


def traffic_chunks(scenario: str, n: int, ticks: int = 2048) -> None:
    """CPU ms per tick of drawing the traffic alone, against the chunk length (ticks per draw)."""
    from sageserve_env.env.vector_env import SageServeVectorEnv

    env = SageServeVectorEnv(n, scenario=scenario, decision_interval_s=60.0, fidelity_tick_s=5.0)
    env.reset(seed=0)
    traffic = env.sim.traffic
    for chunk in (16, 64, 128, 512):
        traffic.chunk = min(chunk, traffic.n_ticks + 1)
        traffic.reseed(list(range(n)))
        cpu = time.process_time()
        for k in range(ticks):
            traffic.row(k)
        print(f"{scenario:>8} {n:>6} chunk {traffic.chunk:>4} ticks: "
              f"{(time.process_time() - cpu) / ticks * 1e3:.3f} CPU ms per tick", flush=True)


def instructions(scenario: str, n: int, steps: int) -> float:
    """Instructions per env step (all worlds), from two callgrind runs of ``run_one``."""
    totals = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in (steps, 2 * steps):
            out = os.path.join(tmp, f"callgrind.{k}")
            subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__,
                            "--one", "--scenario", scenario, "--worlds", str(n), "--steps", str(k)],
                           capture_output=True, text=True, check=True)
            with open(out) as f:
                totals.append(next(int(line.split()[1]) for line in f if line.startswith("totals:")))
    return (totals[1] - totals[0]) / (steps * n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", nargs="*", default=["paper", "small"])
    ap.add_argument("--worlds", nargs="*", type=int, default=[1, 16, 64, 256, 1024])
    ap.add_argument("--steps", type=int, default=None, help="vector steps per N (default: ~2e4 / N, 30..300)")
    ap.add_argument("--traffic", action="store_true", help="time the traffic draw alone per chunk length")
    ap.add_argument("--instructions", action="store_true", help="count instructions per env step (callgrind)")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.instructions:
        for scenario in args.scenario:
            for n in args.worlds:
                steps = args.steps or 16
                print(f"{scenario:>8} {n:>6} {instructions(scenario, n, steps):>12,.0f} instructions per env step "
                      f"({steps} and {2 * steps} steps)", flush=True)
        return
    if args.traffic:
        for scenario in args.scenario:
            for n in args.worlds:
                traffic_chunks(scenario, n)
        return
    if args.one:
        print(json.dumps(run_one(args.scenario[0], args.worlds[0], args.steps)))
        return
    print(f"{'scenario':>8} {'N':>6} {'env steps/s':>12} {'per CPU s':>10} {'peak RSS MB':>12}  target")
    for scenario in args.scenario:
        for n in args.worlds:
            steps = args.steps or max(30, min(300, 20_000 // n))
            out = subprocess.run([sys.executable, __file__, "--one", "--scenario", scenario, "--worlds", str(n),
                                  "--steps", str(steps)], capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            target = TARGETS.get((scenario, n))
            note = "" if target is None else f"{'met' if r['steps_per_s'] >= target else 'MISSED'} (>= {target:,})"
            if scenario == "paper" and n == 1024:
                note = f"{'met' if r['peak_rss_mb'] <= 4096 else 'MISSED'} (RSS <= 4 GB)"
            print(f"{scenario:>8} {n:>6} {r['steps_per_s']:>12,.0f} {r['cpu_steps_per_s']:>10,.0f} "
                  f"{r['peak_rss_mb']:>12,.0f}  {note}", flush=True)


if __name__ == "__main__":
    main()
