"""Env steps per second with a random masked policy, and a paper-scale day at 60 s decisions.

    python bench/bench_env.py [--small-steps 5000] [--fidelity detailed|fast|both]

Prints steps/s on the small variant (the policy with its ``action_masks`` and the resets with
their workload generation included), the wall time of a paper-scale 24 h episode and simulated
hours per wall-clock second. Targets (one core, detailed): >= 2,000 steps/s on the small
variant; the paper day in <= 90 s. Wall-clock figures: on a shared machine take the best of
three runs.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from sageserve_env.env.sageserve_env import SageServeEnv


def masked_random(env: SageServeEnv, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random valid choice per endpoint (vectorized over the endpoints)."""
    masks = env.action_masks().reshape(env.n_endpoints, -1)
    valid = np.add.reduce(masks, axis=1, dtype=np.int64)  # masks.sum(axis=1), without its Python wrapper
    pick = (rng.random(env.n_endpoints) * valid).astype(np.int64)  # which valid choice
    return np.add.reduce(masks.cumsum(axis=1) <= pick[:, None], axis=1, dtype=np.int64)  # its position in the row


def steps_per_second(env: SageServeEnv, steps: int, seed: int = 0) -> tuple:
    """(steps/s, simulated hours per wall second) over ``steps`` steps with resets as needed."""
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    start = time.perf_counter()
    simulated = 0.0
    for _ in range(steps):
        _, _, term, trunc, info = env.step(masked_random(env, rng))
        if term or trunc:
            simulated += info["sim_time_s"]
            env.reset()
    simulated += env.sim.now
    wall = time.perf_counter() - start
    return steps / wall, simulated / 3600.0 / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-steps", type=int, default=5000)
    parser.add_argument("--fidelity", choices=("detailed", "fast", "both"), default="both")
    args = parser.parse_args()
    for fidelity in (("detailed", "fast") if args.fidelity == "both" else (args.fidelity,)):
        small = SageServeEnv(scenario="small", fidelity=fidelity)
        sps, hps = steps_per_second(small, args.small_steps)
        print(f"[{fidelity}] small variant: {sps:,.0f} steps/s, {hps:,.1f} simulated h per wall s")
        paper = SageServeEnv(scenario="paper", fidelity=fidelity)
        start = time.perf_counter()
        sps, hps = steps_per_second(paper, int(paper.horizon // paper.interval), seed=1001)
        wall = time.perf_counter() - start
        print(f"[{fidelity}] paper 24 h at 60 s decisions: {wall:.1f} s wall including the reset "
              f"(workload generation), {sps:,.0f} steps/s, {hps:,.1f} simulated h per wall s")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
    main()
