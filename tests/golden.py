"""Golden trajectories of the v0 IDs: what a registered ID promises to keep.

Each case runs a registered env with seeded random masked actions and records, per step, the
reward, its terms, the KPIs, the observation and the ``SimView`` endpoint state that heuristic
policies read; two more cases summarize a generated paper day replayed with the static
allocation (``simulate``), in both fidelities. ``tests/test_golden.py`` recomputes every case and
compares it with ``tests/data/golden_v0.npz`` to 1e-9 relative. The released v1 vector IDs
(``SageServe-fast-v1``, ``SageServeSmall-fast-v1``) have their cases in
``tests/data/golden_v1.npz``: a few worlds under seeded random masked actions, per step.

    python tests/golden.py      # (re)write tests/data/golden_v0.npz: only for a new version
    python tests/golden.py v1   # (re)write tests/data/golden_v1.npz: only for a new version
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict

import numpy as np

GOLDEN_FILE = Path(__file__).resolve().parent / "data" / "golden_v0.npz"
GOLDEN_V1_FILE = Path(__file__).resolve().parent / "data" / "golden_v1.npz"
# (env ID, seed, steps): two seeds per ID, a few hundred decisions each
ENV_CASES = (
    ("SageServeSmall-v0", 0, 300), ("SageServeSmall-v0", 7, 300),
    ("SageServe-v0", 0, 200), ("SageServe-v0", 3, 200),
    ("SageServeSmall-fast-v0", 0, 300), ("SageServeSmall-fast-v0", 7, 300),
    ("SageServe-fast-v0", 0, 200), ("SageServe-fast-v0", 3, 200),
)
# (vector env ID, worlds, seed, steps)
VECTOR_CASES = (("SageServeSmall-fast-v1", 3, 0, 200), ("SageServe-fast-v1", 3, 5, 150))
DAY_CASES = (("paper", "detailed"), ("paper", "fast"))
# summary entries added after the goldens were recorded (every request's state at the end)
ADDED_SUMMARY_KEYS = ("requests_queued", "requests_in_flight", "requests_dropped_too_large",
                      "requests_dropped_iw_timeout", "requests_retried", "down_gpu_hours")
# what the v0 IDs reported when the goldens were recorded: later additions are not compared
V0_KPIS = tuple(sorted((
    "requests_total", "requests_completed", "requests_dropped", "iw_slo_attainment_served", "iw_ttft_mean",
    "niw_deadline_misses", "billed_gpu_hours", "donated_gpu_hours", "wastage_gpu_hours", "cost_usd", "scale_ups",
    "scale_downs", "refused_changes", "reward", "sim_seconds")))
V0_VIEW = ("active", "starting", "draining", "spot_own", "utilization", "utilization_max", "busy_fraction",
           "queued_iw_tokens", "queued_niw_tokens", "niw_queue_requests")


def _masked_random(env, rng: np.random.Generator) -> np.ndarray:
    masks = env.action_masks().reshape(env.n_endpoints, -1)
    return np.array([rng.choice(np.flatnonzero(m)) for m in masks])


def env_case(env_id: str, seed: int, steps: int) -> Dict[str, np.ndarray]:
    """Per-step arrays of one env trajectory under seeded random masked actions."""
    import gymnasium as gym

    import sageserve_env  # noqa: F401  (registers the IDs)

    env = gym.make(f"sageserve_env/{env_id}")
    base = env.unwrapped
    rng = np.random.default_rng(seed + 1000)
    obs, info = env.reset(seed=seed)
    out: Dict[str, list] = {"reward": [], "terms": [], "kpis": [], "obs": [], "view": [], "masks": []}
    for _ in range(steps):
        action = _masked_random(base, rng)
        obs, reward, _, truncated, info = env.step(action)
        out["reward"].append(reward)
        out["terms"].append([info["reward_terms"][k] for k in sorted(info["reward_terms"])])
        out["kpis"].append([info["kpis"][k] for k in V0_KPIS])
        out["obs"].append(np.concatenate([np.asarray(v, dtype=float).ravel() for v in obs.values()]))
        state = base.view().endpoints()
        out["view"].append(np.concatenate([np.asarray(getattr(state, k), dtype=float).ravel() for k in V0_VIEW]))
        out["masks"].append(base.action_masks().astype(float))
        if truncated:
            break
    return {k: np.asarray(v, dtype=float) for k, v in out.items()}


def vector_case(env_id: str, n_worlds: int, seed: int, steps: int) -> Dict[str, np.ndarray]:
    """Per-step arrays (step, world, ...) of a vector env's worlds under seeded random masked actions."""
    import gymnasium as gym

    import sageserve_env  # noqa: F401  (registers the IDs)

    env = gym.make_vec(f"sageserve_env/{env_id}", num_envs=n_worlds, vectorization_mode="vector_entry_point")
    rng = np.random.default_rng(seed + 1000)
    obs, info = env.reset(seed=seed)
    out: Dict[str, list] = {"reward": [], "terms": [], "kpis": [], "obs": []}
    for _ in range(steps):
        masks = env.unwrapped.action_masks().reshape(n_worlds, env.unwrapped.n_endpoints, -1)
        action = np.array([[rng.choice(np.flatnonzero(m)) for m in world] for world in masks])
        obs, reward, _, _, info = env.step(action)
        out["reward"].append(reward)
        out["terms"].append(np.stack([info["reward_terms"][k] for k in sorted(info["reward_terms"])
                                     if not k.startswith("_")], 1))
        out["kpis"].append(np.stack([info["kpis"][k] for k in V0_KPIS], 1))
        out["obs"].append(np.concatenate([np.asarray(obs[k], dtype=float).reshape(n_worlds, -1)
                                          for k in sorted(obs)], 1))
    env.close()
    return {k: np.asarray(v, dtype=float) for k, v in out.items()}


def v1_cases() -> Dict[str, np.ndarray]:
    """Every vector case, flattened into one ``name/field -> array`` mapping."""
    return {f"vec/{env_id}/{n}/{seed}/{k}": v for env_id, n, seed, steps in VECTOR_CASES
            for k, v in vector_case(env_id, n, seed, steps).items()}


def day_case(scenario: str, fidelity: str) -> Dict[str, np.ndarray]:
    """The numeric entries of ``summary.json`` of a generated day replayed with a static fleet."""
    from sageserve_env.config import load_config
    from sageserve_env.sim.metrics import summarize

    cfg = load_config(scenario)
    sim = _static_day(cfg, fidelity)
    summary = summarize(sim, 0.0)
    names, values = _flatten(summary)
    keep = [i for i, n in enumerate(names) if n.rsplit(".", 1)[-1] not in ADDED_SUMMARY_KEYS]
    names, values = [names[i] for i in keep], [values[i] for i in keep]
    return {"names": np.array(names), "values": np.array(values, dtype=float)}


def _static_day(cfg, fidelity: str):
    from sageserve_env.cli import build_workload, simulate

    if fidelity == "detailed":
        return simulate(cfg, build_workload(cfg, 0), progress=False)[0]
    from sageserve_env.sim.flow import FlowSimulator

    sim = FlowSimulator(cfg, build_workload(cfg, 0))
    sim.run_until(cfg.duration_s)
    sim.check_invariants()
    return sim


def _flatten(summary, prefix: str = ""):
    """Numeric leaves of a summary as (dotted name, value); None as NaN, wall time left out."""
    names, values = [], []
    items = summary.items() if isinstance(summary, dict) else enumerate(summary)
    for k, v in items:
        name = f"{prefix}{k}"
        if k == "wall_seconds":
            continue
        if isinstance(v, (dict, list)):
            n, x = _flatten(v, name + ".")
            names += n
            values += x
        elif v is None or isinstance(v, (int, float)) and not isinstance(v, bool):
            names.append(name)
            values.append(np.nan if v is None else float(v))
    return names, values


def all_cases() -> Dict[str, np.ndarray]:
    """Every case, flattened into one ``name/field -> array`` mapping."""
    data: Dict[str, np.ndarray] = {}
    for env_id, seed, steps in ENV_CASES:
        for k, v in env_case(env_id, seed, steps).items():
            data[f"env/{env_id}/{seed}/{k}"] = v
    for scenario, fidelity in DAY_CASES:
        for k, v in day_case(scenario, fidelity).items():
            data[f"day/{scenario}/{fidelity}/{k}"] = v
    return data


if __name__ == "__main__":
    target, cases = (GOLDEN_V1_FILE, v1_cases) if sys.argv[1:] == ["v1"] else (GOLDEN_FILE, all_cases)
    target.parent.mkdir(exist_ok=True)
    np.savez_compressed(target, **cases())
    print(f"wrote {target}", file=sys.stderr)
