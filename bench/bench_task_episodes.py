"""Where one v1 task episode's time goes, per (task, policy), and the reference table it projects.

    python bench/bench_task_episodes.py                                  # every fast task x baseline
    python bench/bench_task_episodes.py --tasks Day-fast-v1 --policies reactive,lt_ua --seed 20000

Runs one episode per (task, policy) on one seed, as ``evaluate.py``'s worker does (``make_env_for``,
``run_episode``; without writing outputs), and prints the CPU seconds of each phase: drawing the
workload (the generator, with its history days), building the simulator (the fast fidelity bins
every request into its tick table), the simulator's ``run_until``, the forecasts (every
``EndpointForecasters.forecast``: the long-term policies' ARIMA, the env's feature), the rest of
the policies' ``act``, the rest of the env's step, and ``summarize``. CPU time rather than wall
time, so that a loaded machine still gives the figure of an idle core; the wall time and the load
are printed beside it. The projection is the full table (every policy x task x ``--seeds`` test
seeds) on ``--workers`` workers: the sum of the episodes' CPU seconds x seeds / workers.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PHASES = ("workload", "build", "simulate", "forecast", "policy", "env", "summarize")


class Clock:
    """CPU seconds per phase; ``wrap`` times a callable into one phase, nested phases subtracted."""

    def __init__(self) -> None:
        self.cpu = dict.fromkeys(PHASES, 0.0)
        self._stack: list = []

    def wrap(self, phase: str, fn):
        def timed(*args, **kwargs):
            start = time.process_time()
            self._stack.append(0.0)
            try:
                return fn(*args, **kwargs)
            finally:
                inner = self._stack.pop()
                spent = time.process_time() - start
                self.cpu[phase] += spent - inner
                if self._stack:
                    self._stack[-1] += spent
        return timed


def episode(env_id: str, policy_name: str, seed: int) -> dict:
    """One episode's CPU seconds per phase, its wall and CPU totals and its reward."""
    import sageserve_env.env.sageserve_env as env_module
    import sageserve_env.workload.generator as generator
    from agents import make_policy
    from agents.runner import make_env_for, run_episode
    from sageserve_env.sim.metrics import summarize
    from sageserve_env.tasks import task
    from sageserve_env.workload.forecast import EndpointForecasters

    clock = Clock()
    saved = (generator.generate_with_history, env_module.make_simulator, EndpointForecasters.forecast)
    generator.generate_with_history = clock.wrap("workload", saved[0])
    EndpointForecasters.forecast = clock.wrap("forecast", saved[2])

    def build(*args, **kwargs):
        sim = clock.wrap("build", saved[1])(*args, **kwargs)
        sim.run_until = clock.wrap("simulate", sim.run_until)
        return sim

    env_module.make_simulator = build
    try:
        policy = make_policy(policy_name)
        policy.act = clock.wrap("policy", policy.act)
        env = make_env_for(policy, task(env_id).env_kwargs())
        env.step = clock.wrap("env", env.step)
        wall, cpu = time.perf_counter(), time.process_time()
        result = clock.wrap("env", run_episode)(env, policy, seed=seed)
        clock.wrap("summarize", summarize)(env.sim, result.wall_seconds)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        generator.generate_with_history, env_module.make_simulator, EndpointForecasters.forecast = saved
    return {"task": env_id, "policy": policy_name, **clock.cpu, "cpu": cpu, "wall": wall, "reward": result.reward,
            "steps": result.steps}


def main(argv=None) -> int:
    from evaluate import SUITE_POLICIES
    from sageserve_env.tasks import tasks

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(tasks("v1-fast")))
    parser.add_argument("--policies", default=",".join(SUITE_POLICIES))
    parser.add_argument("--seed", type=int, default=20000)
    parser.add_argument("--seeds", type=int, default=10, help="test seeds per task in the projected table")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    rows = []
    print("| task | policy | steps | " + " | ".join(PHASES) + " | CPU s | wall s | load |")
    print("|---|---|---|" + "---|" * (len(PHASES) + 3))
    for env_id in args.tasks.split(","):
        for name in args.policies.split(","):
            row = episode(env_id, name, args.seed)
            rows.append(row)
            print(f"| {env_id} | {name} | {row['steps']} | " + " | ".join(f"{row[p]:.1f}" for p in PHASES)
                  + f" | {row['cpu']:.1f} | {row['wall']:.1f} | {os.getloadavg()[0]:.1f} |", flush=True)
    total = sum(r["cpu"] for r in rows)
    print(f"\n{len(rows)} episodes: {total:.0f} CPU s. Projected table ({args.seeds} seeds, {args.workers} workers): "
          f"{total * args.seeds / args.workers / 60:.1f} min")
    for phase in PHASES:
        print(f"  {phase}: {sum(r[phase] for r in rows) / total:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
