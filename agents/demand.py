"""A planner without a forecast, and the residual action over it in the vectorized fast fidelity.

``DemandPlan`` sizes every endpoint for the requests it received over the last minutes: its
target is ``ceil(rate / capacity)`` instances, ``rate`` the requests per second of one window
of the observation's ``arrival_rate`` and ``capacity`` the requests per second one instance
sustains (``capacity.instance_capacity`` at the mean token sizes of the model's requests in the
scenario's reference sample), between ``min_instances`` and the region's servers. Its change is
the target minus the instances the endpoint has or is starting. It reads only the observation,
so it plans for one env and for N worlds alike (any leading axes).

``DemandPolicy`` is it as a policy (``demand``). ``ResidualDemand`` wraps a
``SageServeVectorEnv``: the agent's action ``a`` per endpoint adds ``a - reach`` to the plan's
change, as ``agents.training.ResidualPlan`` does over ``lt_i`` in a single env (the vectorized
worlds run no forecaster). An untrained agent then explores around a fleet that follows the
load, where a change chosen at random walks the fleet far from it (a uniform policy over the
changes bills four times ``reactive``'s GPU-hours on a v1 day, docs/results.md).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np
from gymnasium import spaces
from gymnasium.vector import VectorWrapper

from agents.base import Policy, deltas_to_action
from agents.training import residual_change, residual_masks
from sageserve_env.capacity import DEFAULT_OUTPUT_TOKENS, DEFAULT_PROMPT_TOKENS, instance_capacity
from sageserve_env.config import SimConfig
from sageserve_env.env.sageserve_env import RATE_WINDOWS_S

# the observation's scaling of its entries (SageServeEnv._observation)
RATE_SCALE = 8.0


class DemandPlan:
    """Each endpoint's instance change toward the instances its recent arrivals need."""

    def __init__(self, cfg: SimConfig, window_s: float = 300.0, headroom: float = 1.0) -> None:
        self.check(window_s, headroom)
        self.window = RATE_WINDOWS_S.index(window_s)
        self.headroom = float(headroom)
        self.servers = np.array([region.servers for region in cfg.regions], dtype=float)[:, None]
        self.floor = int(cfg.scaling.min_instances)
        self.capacity = requests_per_instance(cfg)

    @staticmethod
    def check(window_s: float, headroom: float) -> None:
        """Raise ValueError unless ``window_s`` is a window of the observation and ``headroom`` > 0."""
        if window_s not in RATE_WINDOWS_S:
            raise ValueError(f"window_s must be one of the observation's rate windows {RATE_WINDOWS_S}, got {window_s!r}")
        if not (np.isfinite(headroom) and headroom > 0):
            raise ValueError(f"headroom must be a number > 0, got {headroom!r}")

    def targets(self, obs: Dict[str, np.ndarray]) -> np.ndarray:
        """Instances per endpoint, (..., R, M): the recent arrival rate over one instance's."""
        rate = np.expm1(RATE_SCALE * obs["arrival_rate"][..., self.window].astype(np.float64))
        need = np.ceil(self.headroom * rate / self.capacity - 1e-9)
        return np.clip(need, self.floor, self.servers).astype(np.int64)

    def changes(self, obs: Dict[str, np.ndarray]) -> np.ndarray:
        """Instance changes per endpoint, (..., R x M): target minus active and starting."""
        have = np.rint(obs["instances"][..., :2].astype(np.float64).sum(-1) * self.servers).astype(np.int64)
        change = self.targets(obs) - have
        return change.reshape(change.shape[:-2] + (-1,))


def requests_per_instance(cfg: SimConfig) -> np.ndarray:
    """Requests per second one instance of each endpoint sustains, (R, M), at the mean prompt
    and output tokens of its model's requests in the scenario's reference sample."""
    from sageserve_env.sim.perf_model import build_perf_models, kv_capacity
    from sageserve_env.sim.vector import reference_workload

    sample = reference_workload(cfg)
    model = sample.indexed(cfg.region_names, cfg.model_names).model
    n_models = len(cfg.model_names)
    count = np.bincount(model, minlength=n_models)
    seen = count > 0
    prompt = np.where(seen, np.bincount(model, sample.prompt_tokens, n_models) / np.maximum(count, 1), DEFAULT_PROMPT_TOKENS)
    output = np.where(seen, np.bincount(model, sample.output_tokens, n_models) / np.maximum(count, 1), DEFAULT_OUTPUT_TOKENS)
    perf = build_perf_models(cfg)
    out = np.empty((len(cfg.regions), n_models))
    for r, m in np.ndindex(out.shape):
        out[r, m] = instance_capacity(perf[r][m], kv_capacity(cfg, r, m), prompt[m], output[m],
                                      cfg.batching.max_batch_size, cfg.batching.max_batch_tokens).requests_per_s
    return out


class DemandPolicy(Policy):
    """Sizes every endpoint for its arrivals of the last ``window_s`` seconds (``DemandPlan``)."""

    name = "demand"

    def __init__(self, window_s: float = 300.0, headroom: float = 1.0) -> None:
        DemandPlan.check(window_s, headroom)  # a bad knob fails when the policy is built, not mid-run
        self.window_s, self.headroom = window_s, headroom
        self.plan: Optional[DemandPlan] = None

    def reset(self, env, seed=None):
        self.plan = DemandPlan(env.sim_config, self.window_s, self.headroom)

    def act(self, obs, env):
        return deltas_to_action(env, self.plan.changes(obs))


class ResidualDemand(VectorWrapper):
    """A ``SageServeVectorEnv`` whose agent adjusts ``DemandPlan``'s change of every endpoint
    (clipped to ``max_delta``, as ``DemandPolicy`` acts) by ``a - reach`` instances (``a`` in
    ``0 .. 2 reach``); ``action_masks()`` are the adjustments whose combined change the worlds
    allow (``agents.training.residual_masks``)."""

    def __init__(self, env: Any, reach: int = 2, window_s: float = 300.0, headroom: float = 1.0) -> None:
        super().__init__(env)
        if isinstance(reach, bool) or not isinstance(reach, (int, np.integer)) or reach < 1:
            raise ValueError(f"reach must be an integer >= 1, got {reach!r}")
        base = env.unwrapped
        self.reach, self.max_delta, self.n_endpoints = int(reach), base.max_delta, base.n_endpoints
        self.plan = DemandPlan(base.sim_config, window_s, headroom)
        self.single_action_space = spaces.MultiDiscrete(np.full(self.n_endpoints, 2 * self.reach + 1, dtype=np.int64))
        self.action_space = spaces.MultiDiscrete(np.full((self.num_envs, self.n_endpoints), 2 * self.reach + 1,
                                                         dtype=np.int64))
        self._changes: Optional[np.ndarray] = None

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._plan(obs)
        return obs, info

    def step(self, actions):
        a = np.asarray(actions)
        if a.shape != (self.num_envs, self.n_endpoints):
            raise ValueError(f"actions must have shape ({self.num_envs}, {self.n_endpoints}) (world, endpoint), "
                             f"got {a.shape}")
        if a.dtype.kind not in "iu" or (a < 0).any() or (a > 2 * self.reach).any():
            raise ValueError(f"residual actions must be integers in 0..{2 * self.reach}, got dtype {a.dtype}, "
                             f"range {a.min()}..{a.max()}")
        obs, reward, terminated, truncated, info = self.env.step(residual_change(self._changes, a, self.reach,
                                                                                 self.max_delta))
        self._plan(obs)
        return obs, reward, terminated, truncated, info

    def _plan(self, obs) -> None:
        """The plan's changes for the next step, within the worlds' bounds (as a policy's action)."""
        self._changes = np.clip(self.plan.changes(obs), -self.max_delta, self.max_delta)

    def action_masks(self) -> np.ndarray:
        return residual_masks(self.env.action_masks(), self._changes, self.reach, self.max_delta)
