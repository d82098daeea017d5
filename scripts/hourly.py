"""Policies hour by hour on one day of a benchmark task: where a policy's advantage comes from.

    python scripts/hourly.py --env Burst-fast-v1 --seed 20000 --policies lt_ua rl_v1 --out docs/results
    python scripts/hourly.py --env Day-v1 --seed 20000 --policies reactive lt_ua ckpt:logs/.../best_model.zip

Runs each policy for one episode of ``--env`` (a task ID: ``<Task>-v1`` detailed or
``<Task>-fast-v1``) and samples the running totals at every decision: billed GPU-hours, IW
first tokens and IW SLO misses, and each endpoint's active instances and IW arrivals. Writes
``hourly.csv`` (one row per policy and hour: the hour's billed GPU-hours, IW requests served,
SLO misses and attainment), ``day.csv`` (per decision and endpoint: instances, arrivals per
second) and two figures: ``hourly.png`` (GPU-hours and SLO misses per hour, each policy against
the first) and ``day.png`` (every endpoint's instances per policy over the day, with its load).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

HOUR_S = 3600.0


def run(env_id: str, seed: int, spec: str) -> Dict[str, np.ndarray]:
    """One episode of policy ``spec``: the running totals at each decision."""
    from agents import make_policy
    from agents.runner import make_env_for, run_episode
    from sageserve_env.sim.stats import Stat
    from sageserve_env.tasks import task

    policy = make_policy(spec)
    env = make_env_for(policy, task(env_id).env_kwargs())
    policy.check_env(env)
    rows: List[list] = []

    def sample(t: float) -> None:
        st = env.sim.statistics()
        rows.append([t, env.kpis()["billed_gpu_hours"], st[:, Stat.IW_FIRST_TOKENS].sum(),
                     st[:, Stat.IW_SLO_MISSES].sum(), *st[:, Stat.ACTIVE], *st[:, Stat.ARRIVED]])

    result = run_episode(env, policy, seed=seed, on_step=sample)
    a = np.array(rows)
    E = env.n_endpoints
    names = [f"{r}/{m}" for r in env.sim_config.region_names for m in env.sim_config.model_names]
    return {"t": a[:, 0], "gpu_h": a[:, 1], "first": a[:, 2], "miss": a[:, 3], "active": a[:, 4:4 + E],
            "arrived": a[:, 4 + E:4 + 2 * E], "names": names, "kpis": result.kpis, "reward": result.reward}


def per_hour(run_: Dict[str, np.ndarray], hours: int) -> np.ndarray:
    """(hours, 3): billed GPU-hours, IW first tokens and IW SLO misses within each hour."""
    edges = np.arange(1, hours + 1) * HOUR_S
    at = np.searchsorted(run_["t"], edges - 1e-6)  # the first sample at or after each hour's end
    at = np.minimum(at, len(run_["t"]) - 1)
    cum = np.stack([run_["gpu_h"][at], run_["first"][at], run_["miss"][at]], axis=1)
    return np.diff(np.vstack([np.zeros(3), cum]), axis=0)


def write(out: Path, env_id: str, seed: int, runs: Dict[str, Dict[str, np.ndarray]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    hours = int(np.ceil(max(r["t"][-1] for r in runs.values()) / HOUR_S))
    table = {name: per_hour(r, hours) for name, r in runs.items()}
    with open(out / "hourly.csv", "w") as f:
        f.write("env,seed,policy,hour,billed_gpu_hours,iw_served,iw_slo_misses,iw_slo_attainment\n")
        for name, h in table.items():
            for k, (gpu, first, miss) in enumerate(h):
                att = 1.0 - miss / first if first > 0 else 1.0
                f.write(f"{env_id},{seed},{name},{k},{gpu:.4f},{first:.0f},{miss:.0f},{att:.6f}\n")
    with open(out / "day.csv", "w") as f:
        first = next(iter(runs.values()))
        f.write("policy,time_s," + ",".join(f"active:{n}" for n in first["names"]) + ","
                + ",".join(f"arrived:{n}" for n in first["names"]) + "\n")
        for name, r in runs.items():
            for i, t in enumerate(r["t"]):
                f.write(f"{name},{t:g}," + ",".join(f"{v:g}" for v in r["active"][i]) + ","
                        + ",".join(f"{v:g}" for v in r["arrived"][i]) + "\n")
    base = next(iter(table))
    fig, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for name, h in table.items():
        axes[0].plot(np.arange(hours), h[:, 0], marker=".", label=name)
        axes[1].plot(np.arange(hours), h[:, 2], marker=".", label=name)
    axes[0].set_ylabel("billed GPU-hours in the hour")
    axes[1].set_ylabel("IW SLO misses in the hour")
    axes[1].set_xlabel("hour of the episode")
    axes[0].set_title(f"{env_id}, seed {seed}: each policy hour by hour ({base} first)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "hourly.png", dpi=110)
    plt.close(fig)
    names = first["names"]
    cols = 4
    rows = int(np.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.4 * rows), sharex=True, squeeze=False)
    for e, name in enumerate(names):
        ax = axes[e // cols][e % cols]
        for pname, r in runs.items():
            ax.step(r["t"] / HOUR_S, r["active"][:, e], where="post", label=pname, lw=1)
        twin = ax.twinx()
        r = first
        rate = np.diff(r["arrived"][:, e], prepend=0.0) / np.maximum(np.diff(r["t"], prepend=0.0), 1e-9)
        twin.plot(r["t"] / HOUR_S, rate, color="grey", alpha=0.35, lw=0.8)
        twin.set_yticks([])
        ax.set_title(name, fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{env_id}, seed {seed}: active instances per endpoint (lines) and its arrivals (grey)")
    fig.tight_layout()
    fig.savefig(out / "day.png", dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="Burst-fast-v1", help="a task ID (<Task>-v1 or <Task>-fast-v1)")
    ap.add_argument("--seed", type=int, default=20000)
    ap.add_argument("--policies", nargs="+", default=["lt_ua", "rl_v1"])
    ap.add_argument("--out", type=Path, default=Path("results/hourly"))
    args = ap.parse_args(argv)
    from sageserve_env.tasks import task

    try:
        task(args.env)
    except ValueError as exc:
        ap.error(str(exc))
    runs = {}
    for spec in args.policies:
        runs[spec] = run(args.env, args.seed, spec)
        k = runs[spec]["kpis"]
        print(f"{spec}: reward {runs[spec]['reward']:.1f}, billed {k['billed_gpu_hours']:.1f} GPU-h, "
              f"IW SLO {k['iw_slo_attainment_served']:.4f}")
    write(args.out, args.env, args.seed, runs)
    print(f"wrote {args.out}/hourly.csv, day.csv, hourly.png, day.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
