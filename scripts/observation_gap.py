"""What a policy sees in the two fidelities: its observation features, fast against detailed.

    python scripts/observation_gap.py --task Day --seed 20000 --policy rl_v1_budget
    python scripts/observation_gap.py --task Day --seed 20000 --policy rl_v1_budget --hide queued.iw

Plays one episode of ``--policy`` on ``<task>-v1`` (the request-level simulator) and on
``<task>-fast-v1`` (token flows) from the same seed and prints, per observation feature
(``sageserve_env.env.sageserve_env.observation_features``), its mean and the share of
endpoint-decisions where it is above 0.01 in each, then the episode's billed GPU-hours, IW SLO
attainment and reward. A policy trained in the fast fidelity learns what its features mean there;
a feature whose values differ in the detailed one (not because the fleet differs: the GPU-hours
line says whether it does) is one it misreads there. ``--hide`` shows the policy 0 for those
features in both runs (what ``train.py hidden_features`` trains an agent with), to measure what
misreading them costs.
"""

from __future__ import annotations

import argparse
from typing import Dict, List, Optional, Sequence

import numpy as np


def play(env_id: str, seed: int, spec: str, hide: Sequence[str], hours: Optional[float] = None) -> Dict[str, object]:
    """One episode (the task's horizon, or ``hours``): the flat observations the policy was
    shown and the final KPIs."""
    from gymnasium import spaces

    from agents import make_policy
    from agents.runner import make_env_for
    from agents.training import flat_observation, hidden_columns
    from sageserve_env.env.sageserve_env import observation_features
    from sageserve_env.tasks import task

    policy = make_policy(spec)
    kwargs = task(env_id).env_kwargs()
    if hours is not None:
        kwargs["horizon_s"] = hours * 3600.0
    env = make_env_for(policy, kwargs)
    base = env.unwrapped
    columns = hidden_columns(base.observation_space, hide)
    obs, _ = env.reset(seed=seed)
    policy.reset(base, seed)
    seen: List[np.ndarray] = []
    total, done = 0.0, False
    while not done:
        flat = flat_observation(base, obs)
        flat[columns] = 0.0
        obs, reward, terminated, truncated, info = env.step(
            policy.act(spaces.unflatten(base.observation_space, flat), base))
        seen.append(flat)
        total += reward
        done = terminated or truncated
    return {"obs": np.array(seen), "kpis": info["kpis"], "reward": total,
            "names": np.array(observation_features(base.observation_space))}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="Day", help="a v1 task: Day, DayLight, Burst, Outage, Week")
    parser.add_argument("--seed", type=int, default=20000)
    parser.add_argument("--policy", default="rl_v1_budget")
    parser.add_argument("--hide", nargs="*", default=[], help="features shown as 0, e.g. queued.iw")
    parser.add_argument("--hours", type=float, default=None, help="a shorter episode (default: the task's horizon)")
    args = parser.parse_args(argv)
    from agents.training import hidden_columns
    from sageserve_env.env.sageserve_env import observation_space
    from sageserve_env.tasks import task

    try:
        task(f"{args.task}-v1")
        hidden_columns(observation_space(1, 1), args.hide)
    except ValueError as exc:
        parser.error(str(exc))
    if args.hours is not None and not args.hours > 0:
        parser.error(f"--hours must be > 0, got {args.hours}")
    runs = {fid: play(f"{args.task}-{suffix}v1", args.seed, args.policy, args.hide, args.hours)
            for fid, suffix in (("detailed", ""), ("fast", "fast-"))}
    names = runs["fast"]["names"]
    print(f"{args.policy} on {args.task}, seed {args.seed}" + (f", hiding {args.hide}" if args.hide else ""))
    print("| feature | mean detailed | mean fast | share > 0.01 detailed | share > 0.01 fast |")
    print("|---|---|---|---|---|")
    for name in dict.fromkeys(names):
        cols = names == name
        d, f = runs["detailed"]["obs"][:, cols], runs["fast"]["obs"][:, cols]
        print(f"| {name} | {d.mean():.4f} | {f.mean():.4f} | {(d > 0.01).mean():.3f} | {(f > 0.01).mean():.3f} |")
    for fid, run in runs.items():
        k = run["kpis"]
        print(f"{fid}: {k['billed_gpu_hours']:,.0f} GPU-h, IW SLO attainment {k['iw_slo_attainment_served']:.4f}, "
              f"reward {run['reward']:,.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
