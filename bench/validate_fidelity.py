"""Validation: does the fast fidelity rank and price policies the way the detailed one does?

    python bench/validate_fidelity.py [--scenario paper] [--hours 12] [--days 2] [--workers 2]
                                      [--policies static,reactive,...] [--static 1,2,3,5]
                                      [--forecaster seasonal_naive|arima] [--tick 5]
                                      [--v1] [--override workload.requests_per_day=6e6 ...]

Runs every policy of ``agents``' registry that exists (static, reactive, lt_i, lt_ua, chiron,
oracle; ``random`` and learned agents are left out) plus "static at k instances" (the static
policy from an initial allocation of k instances per endpoint: cheap, and it spans the cost/SLO
trade-off) on ``--days`` generated days (seeds 0, 1, ...), each for ``--hours`` from midnight,
in both fidelities on the same workloads; the long-term policies forecast with ``--forecaster``.
Per policy (means over days) it prints billed GPU-hours, IW SLO attainment and IW p95 TTFT (from
``metrics.summarize``) and the reward in both modes, their differences against the targets
(GPU-hours within 5%, attainment within 3 points, p95 TTFT within 20%), and Kendall's tau of the
policies' mean rewards across modes (>= 0.8).

``--v1`` compares the vectorized fast fidelity (``SageServeFastEnv``, one world) instead of v0's:
only the policies that read no ``env.view()`` run (static, random, static at k); v1 keeps no
per-request records, so its p95 TTFT comes from the histogram of its per-tick TTFT estimates
(``ttft_histogram=True``, ``VectorFlow.world_ttft_percentiles``) and its IW SLO attainment from
``VectorFlow.world_iw_slo``.
``--override key=value`` applies simulator overrides to every episode of both modes (say, a
scaled-up day where queues form).
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from typing import Dict, List, Tuple

import numpy as np
from scipy.stats import kendalltau

from agents import make_policy, policy_names
from agents.runner import run_episode
from sageserve_env.env.sageserve_env import SageServeEnv
from sageserve_env.env.vector_env import SageServeFastEnv
from sageserve_env.sim.metrics import summarize

DEFAULT_POLICIES = ("static", "reactive", "lt_i", "lt_ua", "chiron", "oracle")
LONG_TERM = ("lt_i", "lt_u", "lt_ua")
TARGETS = {"gpu_hours_pct": 5.0, "slo_points": 3.0, "p95_pct": 20.0, "kendall_tau": 0.8}
VIEW_FREE = ("static", "random")  # policies that act on the observation and masks alone (v1 has no ``view()``)


def run_one(job: Tuple[str, str, int, str, float, str, float, Tuple[str, ...]]) -> Tuple[Tuple, Dict[str, float]]:
    """One episode: (policy spec, fidelity ("detailed", "fast" or "v1"), seed, scenario, horizon,
    forecaster of the long-term policies, tick of the fast fidelity, simulator overrides) -> (the
    job, its figures)."""
    spec, fidelity, seed, scenario, horizon, forecaster, tick, overrides = job
    name, _, k = spec.partition("@")
    policy = make_policy(name, forecaster=forecaster) if name in LONG_TERM else make_policy(name)
    kwargs = {**policy.env_kwargs(), "scenario": scenario, "horizon_s": horizon,
              "fidelity": "fast" if fidelity == "v1" else fidelity, "fidelity_tick_s": tick,
              "sim_overrides": list(overrides) + ([f"scaling.initial_instances={k}"] if k else [])}
    env = SageServeFastEnv(ttft_histogram=True, **kwargs) if fidelity == "v1" else SageServeEnv(**kwargs)
    result = run_episode(env, policy, seed=seed)
    if fidelity == "v1":
        sim = env.vector.sim
        met, missed = sim.world_iw_slo()[0]
        p95 = sim.world_ttft_percentiles()[0]["iw_ttft_p95"]
        return job, {"reward": result.reward, "gpu_hours": result.kpis["billed_gpu_hours"],
                     "slo": met / (met + missed) if met + missed else float("nan"),
                     "p95": float("nan") if p95 is None else p95, "wall": result.wall_seconds}
    summary = summarize(env.sim, result.wall_seconds)
    return job, {"reward": result.reward, "gpu_hours": summary["billed_gpu_hours"],
                 "slo": summary["iw_slo_attainment"], "p95": summary["iw_ttft_p95"], "wall": result.wall_seconds}


def pct(fast: float, detailed: float) -> float:
    return 100.0 * (fast - detailed) / detailed if detailed else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="paper")
    parser.add_argument("--hours", type=float, default=12.0)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--policies", default=",".join(DEFAULT_POLICIES))
    parser.add_argument("--static", default="1,2,3,5", help="instance counts of the 'static at k' variants")
    parser.add_argument("--forecaster", default="seasonal_naive", choices=("seasonal_naive", "arima"),
                        help="of lt_*: ARIMA (their default) costs minutes per episode in both fidelities alike")
    parser.add_argument("--tick", type=float, default=5.0, help="fidelity_tick_s of the fast fidelity")
    parser.add_argument("--v1", action="store_true", help="compare the vectorized fast fidelity (v1) instead of v0's")
    parser.add_argument("--override", nargs="*", default=[], help="simulator overrides (key=value) of every episode")
    args = parser.parse_args()

    known = set(policy_names())
    specs: List[str] = [p for p in args.policies.split(",") if p in known and (not args.v1 or p in VIEW_FREE)]
    specs += [f"static@{k}" for k in args.static.split(",") if k]
    fast = "v1" if args.v1 else "fast"
    setting = (args.scenario, args.hours * 3600.0, args.forecaster, args.tick, tuple(args.override))
    jobs = [(spec, fid, seed) + setting for spec in specs for seed in range(args.days) for fid in ("detailed", fast)]
    start = time.perf_counter()
    results = {}
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        for job, figures in pool.imap_unordered(run_one, jobs):
            results[job] = figures
            print(f"[{len(results)}/{len(jobs)}] {job[0]} {job[1]} day {job[2]}: {figures['wall']:.1f} s", flush=True)
    print(f"\n{args.scenario}{' ' + ' '.join(args.override) if args.override else ''}, {args.days} days x "
          f"{args.hours:g} h, {fast} tick {args.tick:g} s, {len(jobs)} episodes in {time.perf_counter() - start:.0f} s\n")

    def mean(spec: str, fid: str, key: str) -> float:
        return float(np.mean([results[(spec, fast if fid == "fast" else fid, s) + setting][key]
                              for s in range(args.days)]))

    head = (f"{'policy':11s} {'GPU-h det':>10s} {'fast':>9s} {'diff%':>6s}  {'SLO det':>8s} {'fast':>7s} "
            f"{'pts':>5s}  {'p95 det':>8s} {'fast':>8s} {'diff%':>6s}  {'reward det':>11s} {'fast':>10s}  "
            f"{'wall det':>8s} {'fast':>6s}")
    print(head)
    print("-" * len(head))
    worst = {"gpu_hours_pct": 0.0, "slo_points": 0.0, "p95_pct": 0.0}
    rewards = {fid: [] for fid in ("detailed", "fast")}
    for spec in specs:
        g = [mean(spec, f, "gpu_hours") for f in ("detailed", "fast")]
        s = [100 * mean(spec, f, "slo") for f in ("detailed", "fast")]
        q = [mean(spec, f, "p95") for f in ("detailed", "fast")]
        r = [mean(spec, f, "reward") for f in ("detailed", "fast")]
        w = [mean(spec, f, "wall") for f in ("detailed", "fast")]
        rewards["detailed"].append(r[0])
        rewards["fast"].append(r[1])
        worst["gpu_hours_pct"] = max(worst["gpu_hours_pct"], abs(pct(g[1], g[0])))
        worst["slo_points"] = max(worst["slo_points"], abs(s[1] - s[0]))
        worst["p95_pct"] = max(worst["p95_pct"], abs(pct(q[1], q[0])))
        print(f"{spec:11s} {g[0]:10.1f} {g[1]:9.1f} {pct(g[1], g[0]):+6.1f}  {s[0]:8.2f} {s[1]:7.2f} "
              f"{s[1] - s[0]:+5.2f}  {q[0]:8.2f} {q[1]:8.2f} {pct(q[1], q[0]):+6.1f}  {r[0]:11.2f} {r[1]:10.2f}  "
              f"{w[0]:8.1f} {w[1]:6.1f}")
    tau = float(kendalltau(rewards["detailed"], rewards["fast"]).statistic)
    print(f"\nKendall tau of mean rewards across modes: {tau:.3f} (target >= {TARGETS['kendall_tau']})")
    ok = tau >= TARGETS["kendall_tau"]
    for key, value in worst.items():
        print(f"worst |{key}|: {value:.2f} (target <= {TARGETS[key]})")
        ok &= value <= TARGETS[key]
    print("all targets met" if ok else "some targets missed")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
