"""One agent per region: a PettingZoo ``ParallelEnv`` over ``SageServeEnv``.

Agents are the regions (``possible_agents`` = the scenario's region names). All act at every
decision point on the same simulator, so the episode is the single-agent one split by region:

- Observation of region r: a Dict with the base env's per-endpoint entries of r's endpoints
  (``instances`` (M, 4), ``utilization``, ``queued``, ``arrival_rate``, ``forecast``, ``ttft``,
  ``slo_miss``: the base entries' row r) plus the global features every agent shares: ``region``
  (R, 2), the free and spot servers of every region, and ``time`` (4,).
- Action of region r: ``MultiDiscrete([2 * max_delta + 1] * M)``, the base action's entries of
  r's endpoints; ``infos[r]["action_mask"]`` (and ``action_mask(r)``) is the matching slice of
  the base env's ``action_masks()``, flat, for masked policies.
- Reward of region r: its share of the interval's GPU cost plus its share of the service terms.
  The cost term is split in proportion to each region's billed cost rate (billed instances x
  GPUs per server x price per GPU-hour), the mean of its rates at the interval's start and
  end. The service terms (IW SLO and end-to-end misses, NIW deadline misses, drops) are global:
  the router moves IW requests between regions, so a miss cannot be blamed on one region.
  ``service_share="split"`` (default) gives each region 1/R of them, so the regions' rewards
  sum to the base env's reward; ``"full"`` gives every region the whole of them, a team signal.
  ``infos[r]["reward_terms"]`` holds region r's terms; ``infos[r]["kpis"]`` the global KPIs.
- ``state()`` is the base env's observation, flattened (for centralized critics).

Episodes end for every agent at once (``truncations`` at the horizon). ``reset(seed=...)``
seeds the base env, so a seed fixes the trajectory of given actions.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from sageserve_env.env.sageserve_env import REWARD_TERMS, SageServeEnv

GLOBAL_KEYS = ("region", "time")  # observation entries every agent sees whole
SERVICE_SHARES = ("split", "full")


class SageServeParallelEnv(ParallelEnv):
    """Per-region agents over one ``SageServeEnv`` (keywords as ``SageServeEnv``'s, or ``env=``)."""

    metadata = {"name": "sageserve_v0", "render_modes": SageServeEnv.metadata["render_modes"],
                "render_fps": SageServeEnv.metadata["render_fps"], "is_parallelizable": True}

    def __init__(self, env: Optional[SageServeEnv] = None, service_share: str = "split",
                 render_mode: Optional[str] = None, **env_kwargs: Any):
        if service_share not in SERVICE_SHARES:
            raise ValueError(f"service_share must be one of {SERVICE_SHARES}, got {service_share!r}")
        if env is not None and (env_kwargs or render_mode is not None):
            raise ValueError("pass either a SageServeEnv or its keywords, not both")
        self.env = env if env is not None else SageServeEnv(render_mode=render_mode, **env_kwargs)
        self.render_mode = self.env.render_mode
        self.service_share = service_share
        base = self.env
        self.n_models = base.n_models
        self.possible_agents: List[str] = list(base.sim_config.region_names)
        self.agents: List[str] = []
        self._index = {a: r for r, a in enumerate(self.possible_agents)}
        self.observation_spaces = {a: self._agent_space(r) for a, r in self._index.items()}
        k = 2 * base.max_delta + 1
        self.action_spaces = {a: spaces.MultiDiscrete(np.full(base.n_models, k, dtype=np.int64))
                              for a in self.possible_agents}
        self.state_space = spaces.flatten_space(base.observation_space)
        self._obs: Optional[Dict[str, np.ndarray]] = None
        self._rate = np.zeros(base.n_regions)

    def _agent_space(self, r: int) -> spaces.Dict:
        entries = {}
        for key, box in self.env.observation_space.spaces.items():
            if key in GLOBAL_KEYS:
                entries[key] = box
            else:
                entries[key] = spaces.Box(box.low[r], box.high[r], dtype=box.dtype)
        return spaces.Dict(entries)

    def observation_space(self, agent: str) -> spaces.Space:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self.action_spaces[agent]

    # -- episode --------------------------------------------------------------------------
    def reset(self, seed: Optional[int] = None, options: Optional[Dict[str, Any]] = None):
        """Reset the base env; ``options`` keys ``config`` and ``workload`` are passed on, others
        ignored (PettingZoo passes its own)."""
        passed = {k: v for k, v in (options or {}).items() if k in ("config", "workload")}
        obs, info = self.env.reset(seed=seed, options=passed or None)
        self.agents = list(self.possible_agents)
        self._obs = obs
        self._rate = self._billed_rate()
        zero = {k: 0.0 for k in REWARD_TERMS}
        return self._split(obs), self._infos(info, {a: dict(zero) for a in self.agents})

    def step(self, actions: Dict[str, Any]):
        if not self.agents:
            raise RuntimeError("the episode is over: call reset()")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"no action for agent(s) {missing}; every region acts at every step")
        joint = np.concatenate([np.asarray(actions[a], dtype=np.int64).reshape(self.n_models)
                                for a in self.possible_agents])
        obs, _, terminated, truncated, info = self.env.step(joint)
        self._obs = obs
        rate = self._billed_rate()
        terms = self._region_terms(info["reward_terms"], (self._rate + rate) / 2.0)
        self._rate = rate
        agents = list(self.agents)
        rewards = {a: float(sum(terms[a].values())) for a in agents}
        observations = self._split(obs)
        infos = self._infos(info, terms)
        terminations = {a: bool(terminated) for a in agents}
        truncations = {a: bool(truncated) for a in agents}
        if terminated or truncated:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    # -- per-region pieces ----------------------------------------------------------------
    def _billed_rate(self) -> np.ndarray:
        """Cost per hour of each region's billed instances now."""
        view = self.env.view()
        ep = view.endpoints()
        billed = (ep.active + ep.starting + ep.draining).sum(axis=1)
        return billed * view.gpus_per_server() * view.cost_per_gpu_hour()

    def _region_terms(self, terms: Dict[str, float], rate: np.ndarray) -> Dict[str, Dict[str, float]]:
        n = len(self.possible_agents)
        total = float(rate.sum())
        cost_share = rate / total if total > 0 else np.full(n, 1.0 / n)
        service = 1.0 / n if self.service_share == "split" else 1.0
        return {a: {k: float(v * (cost_share[r] if k == "cost" else service)) for k, v in terms.items()}
                for a, r in self._index.items()}

    def _split(self, obs: Dict[str, np.ndarray]) -> Dict[str, Dict[str, np.ndarray]]:
        return {a: {k: (v if k in GLOBAL_KEYS else v[self._index[a]]).copy() for k, v in obs.items()}
                for a in self.agents}

    def _infos(self, info: Dict[str, Any], terms: Dict[str, Dict[str, float]]) -> Dict[str, Dict[str, Any]]:
        masks = self.env.action_masks().reshape(len(self.possible_agents), -1)
        return {a: {"action_mask": masks[self._index[a]].copy(), "reward_terms": terms[a],
                    "kpis": dict(info["kpis"]), "sim_time_s": info["sim_time_s"]} for a in terms}

    def action_mask(self, agent: str) -> np.ndarray:
        """Valid choices of ``agent``'s endpoints, concatenated (as ``SageServeEnv.action_masks``)."""
        return self.env.action_masks().reshape(len(self.possible_agents), -1)[self._index[agent]].copy()

    def state(self) -> np.ndarray:
        if self._obs is None:
            raise RuntimeError("call reset() first")
        return spaces.flatten(self.env.observation_space, self._obs)

    def render(self):
        return self.env.render()

    def close(self) -> None:
        self.env.close()


def parallel_env(**kwargs: Any) -> SageServeParallelEnv:
    """``SageServeParallelEnv(**kwargs)``, under PettingZoo's usual constructor name."""
    return SageServeParallelEnv(**kwargs)
