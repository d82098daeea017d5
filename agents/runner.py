"""Run one episode of a policy in the env: the loop shared by simulate, evaluate and tests."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

import gymnasium as gym

from agents.base import Policy
from sageserve_env.env.sageserve_env import SageServeEnv


@dataclass
class EpisodeResult:
    """What an episode left behind: the env (its simulator holds every record) and totals."""

    env: SageServeEnv
    reward: float
    steps: int
    wall_seconds: float
    kpis: Dict[str, float]
    reward_terms: Dict[str, float]
    policy_stats: Dict[str, Any] = field(default_factory=dict)


def make_env_for(policy: Policy, env_kwargs: Optional[Dict[str, Any]] = None) -> SageServeEnv:
    """A ``SageServeEnv`` with the settings the policy needs (its decision interval, action
    bounds...) unless the caller fixes them."""
    return SageServeEnv(**{**policy.env_kwargs(), **(env_kwargs or {})})


def run_episode(env: gym.Env, policy: Policy, seed: Optional[int] = None,
                options: Optional[Dict[str, Any]] = None,
                on_step: Optional[Callable[[float], None]] = None) -> EpisodeResult:
    """Reset ``env`` with ``seed`` and let ``policy`` act until the horizon."""
    start = time.perf_counter()
    obs, info = env.reset(seed=seed, options=options)
    base = env.unwrapped
    policy.reset(base, seed)
    total, steps = 0.0, 0
    terms = {k: 0.0 for k in info["reward_terms"]}
    done = False
    while not done:
        obs, reward, terminated, truncated, info = env.step(policy.act(obs, base))
        total += reward
        steps += 1
        for k, v in info["reward_terms"].items():
            terms[k] += v
        done = terminated or truncated
        if on_step is not None:
            on_step(info["sim_time_s"])
    return EpisodeResult(base, total, steps, time.perf_counter() - start, info["kpis"], terms, policy.stats())
