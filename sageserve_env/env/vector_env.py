"""The Gymnasium adapter of the vectorized fast fidelity: ``SageServeVectorEnv`` (N worlds in one
array program, ``sageserve_env/sim/vector.py``) and ``SageServeFastEnv``, its N = 1 case as a
``gymnasium.Env``."""

from __future__ import annotations

import bisect
import math
from collections import deque
from typing import Any, Dict, Optional

import gymnasium as gym
import numpy as np
from gymnasium.error import ResetNeeded
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from sageserve_env.env.sageserve_env import RATE_WINDOWS_S, REWARD_TERMS, SageServeEnv, action_masks
from sageserve_env.sim.fleet import BILLED_STATES, FREE, NO_MODEL, SPOT, STARTING
from sageserve_env.sim.stats import Stat
from sageserve_env.sim.vector import VectorFlow, reference_workload

KPI_NAMES = ("requests_total", "requests_completed", "requests_dropped", "iw_slo_attainment_served",
             "iw_ttft_mean", "niw_deadline_misses", "billed_gpu_hours", "donated_gpu_hours", "wastage_gpu_hours",
             "cost_usd", "scale_ups", "scale_downs", "refused_changes", "reward", "sim_seconds")


class SageServeVectorEnv(VectorEnv):
    """N independent worlds of ``SageServeEnv`` in the vectorized fast fidelity, stepped together.

    ## Description
    The world, observation, action and reward of ``SageServeEnv`` (its docstring is the spec),
    simulated by ``VectorFlow``: token flows per tick over every endpoint of every world at once.

    ## Spaces
    ``single_observation_space`` and ``single_action_space`` are ``SageServeEnv``'s;
    ``observation_space`` and ``action_space`` are them batched (a leading world axis).
    ``action_masks()`` is (N, E x (2 max_delta + 1)).

    ## Episodes and autoreset
    ``reset(seed=s)`` seeds world ``i`` with ``s + i``. Every world ends (``truncated``) at
    ``horizon_s``, all at the same step. Autoreset mode ``SAME_STEP``: the step that ends an
    episode returns the next episode's first observation, the last one in
    ``info["final_obs"]`` and its info in ``info["final_info"]``; the next episodes' seeds
    come from each world's own generator.

    ## Info
    Gymnasium's vector layout: ``info["reward_terms"][term]`` and ``info["kpis"][name]`` are
    arrays over the worlds (with the ``_term`` / ``_name`` masks), ``info["refused"]`` the number
    of refused instance changes per world, ``info["endpoint_reward_terms"][term]`` (N, E) each
    endpoint's part of each term (``_reward_terms``: its own servers' cost, its requests' misses;
    they sum to the world's terms), for agents that learn per endpoint.

    ## Arguments
    ``num_envs`` and the keys of ``SageServeEnv.default_config()`` (``fidelity`` must be
    ``fast``, ``forecaster`` ``none``, the workload generated, no faults; ``decision_interval_s``
    and ``horizon_s`` whole multiples of ``fidelity_tick_s``). ``initial_allocation="first_hour"``
    sizes each world for its own expected first hour; ``trace_window`` has nothing to place (no
    traces) and is accepted as the task specs set it. ``ttft_histogram=True`` keeps each
    world's IW TTFT histogram (``sim.world_ttft_percentiles()``; it slows every tick).

    ## Version history
    v1: the fast fidelity vectorized over worlds (see ``docs/fidelity.md``, "v1").
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, num_envs: int = 1, config: Optional[Dict[str, Any]] = None, autoreset: bool = True,
                 ttft_histogram: bool = False, **kwargs: Any) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        kwargs = {"fidelity": "fast", **(config or {}), **kwargs}
        self.template = SageServeEnv(**kwargs)  # validates the options, holds the spaces and reward weights
        c = self.template.config
        if c["fidelity"] != "fast":
            raise ValueError(f"SageServeVectorEnv simulates the fast fidelity; fidelity={c['fidelity']!r}")
        if c["forecaster"] != "none":
            raise ValueError(f"SageServeVectorEnv has no forecaster; forecaster={c['forecaster']!r} needs SageServeEnv")
        VectorFlow.check_config(self.template.sim_config)  # traces, faults...: refused here, not at reset
        self.tick = float(c["fidelity_tick_s"])
        t = self.template
        for key, value in (("decision_interval_s", t.interval), ("horizon_s", t.horizon)):
            if abs(value / self.tick - round(value / self.tick)) > 1e-9:
                raise ValueError(f"{key}={value:g} must be a whole number of fidelity_tick_s={self.tick:g}")
        self.num_envs = int(num_envs)
        self.autoreset = bool(autoreset)
        self.ttft_histogram = bool(ttft_histogram)
        self.sim_config = t.sim_config
        self.n_regions, self.n_models, self.n_endpoints = t.n_regions, t.n_models, t.n_endpoints
        self.max_delta, self.interval, self.horizon, self.weights = t.max_delta, t.interval, t.horizon, t.weights
        self.single_observation_space = t.observation_space
        self.single_action_space = t.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._reference = reference_workload(self.sim_config)
        self._window = int(math.ceil(max(RATE_WINDOWS_S) / self.interval)) + 1
        self.sim: Optional[VectorFlow] = None
        self._world_rngs = None

    # -- episodes ---------------------------------------------------------------------------
    @property
    def seeded(self) -> bool:
        """Whether the worlds' random streams exist (set by the first ``reset``)."""
        return self._world_rngs is not None

    def reset(self, *, seed: Optional[int] = None, options: Optional[Dict[str, Any]] = None):
        if options:
            raise ValueError(f"SageServeVectorEnv.reset takes no options, got {sorted(options)}")
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
                raise ValueError(f"reset seed must be an integer >= 0 (world i gets seed + i), got {seed!r}")
            self._world_rngs = [np.random.default_rng(int(seed) + i) for i in range(self.num_envs)]
        elif self._world_rngs is None:
            root = np.random.SeedSequence()
            self._world_rngs = [np.random.default_rng(s) for s in root.spawn(self.num_envs)]
        self._start_episode()
        return self._observation(self._last, self._last), self._info(np.zeros(self.num_envs), None)

    def _start_episode(self) -> None:
        seeds = [int(rng.integers(2**63)) for rng in self._world_rngs]
        self.sim = VectorFlow(self.sim_config, seeds, self.horizon, self.tick, reference=self._reference,
                              ttft_histogram=self.ttft_histogram,
                              first_hour=self.template.config["initial_allocation"] == "first_hour")
        N = self.num_envs
        self._servers = np.maximum(self.sim.fleet.servers.astype(float), 1.0)
        self._last = self.sim.world_statistics()
        self._snapshots: deque = deque([self._last[..., Stat.ARRIVED]], maxlen=self._window)
        self._snapshot_times: deque = deque([0.0], maxlen=self._window)
        self._last_cost = np.zeros((N, self.n_endpoints))
        self._totals = {k: np.zeros(N) for k in REWARD_TERMS}
        self._refused_total = np.zeros(N)

    def step(self, actions):
        if self.sim is None:
            raise ResetNeeded("call reset() before step()")
        if self.sim.now >= self.horizon - 1e-9:
            raise ResetNeeded(f"the episodes ended at horizon_s={self.horizon:g} (truncated); call reset()")
        deltas = self._decode(actions)
        outcome = self.sim.scale_all(deltas)
        t_end = min(self.sim.now + self.interval, self.horizon)
        self.sim.run_until(t_end)
        truncated = t_end >= self.horizon - 1e-9
        stats = self.sim.world_statistics()
        gpu_s = self.sim.world_gpu_seconds()
        by_endpoint = self._reward_terms(stats[..., : Stat.DROPPED + 1] - self._last[..., : Stat.DROPPED + 1], gpu_s,
                                         self.sim.endpoint_overdue() if truncated else None)
        terms = {k: v.sum(1) for k, v in by_endpoint.items()}
        reward = sum(terms[k] for k in REWARD_TERMS)
        for k in REWARD_TERMS:
            self._totals[k] += terms[k]
        self._refused_total += np.abs(deltas - outcome.applied).sum(1)
        obs = self._observation(self._last, stats)
        self._snapshots.append(stats[..., Stat.ARRIVED])
        self._snapshot_times.append(t_end)
        self._last = stats
        info = self._info(np.abs(deltas - outcome.applied).sum(1), terms, gpu_s)
        every = info["_refused"]
        info["endpoint_reward_terms"] = {**by_endpoint, **{f"_{k}": every for k in by_endpoint}}
        info["_endpoint_reward_terms"] = every
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncations = np.full(self.num_envs, truncated)
        if truncated and self.autoreset:
            every = np.ones(self.num_envs, dtype=bool)
            info["final_obs"], info["_final_obs"] = obs, every
            info["final_info"], info["_final_info"] = dict(info), every
            self._start_episode()
            obs = self._observation(self._last, self._last)
        return obs, reward.astype(np.float64), terminated, truncations, info

    def _decode(self, actions) -> np.ndarray:
        """The instance change per (world, endpoint) that valid ``actions`` ask for."""
        a = np.asarray(actions)
        N, E, md = self.num_envs, self.n_endpoints, self.max_delta
        if a.shape != (N, E):
            raise ValueError(f"actions must have shape ({N}, {E}) (world, endpoint), got {a.shape}")
        if a.dtype.kind not in "iuf" or a.dtype.kind == "b":
            raise ValueError(f"actions must be integers, got dtype {a.dtype}")
        if a.dtype.kind == "f":
            bad = ~np.isfinite(a) | (a != np.round(a))
            if bad.any():
                n, e = np.argwhere(bad)[0]
                raise ValueError(f"actions must be integers: actions[{n}, {e}] = {a[n, e].item()!r} "
                                 f"(world {n}, endpoint {self.template.endpoint_name(int(e))})")
        out = (a < 0) | (a > 2 * md)
        if out.any():
            n, e = np.argwhere(out)[0]
            raise ValueError(f"actions[{n}, {e}] = {a[n, e].item()!r} (world {n}, endpoint "
                             f"{self.template.endpoint_name(int(e))}) is outside 0..{2 * md}")
        return a.astype(np.int64) - md

    # -- masks ------------------------------------------------------------------------------
    def action_masks(self) -> np.ndarray:
        """Valid choices per world and endpoint, concatenated per world: (N, E x (2 max_delta + 1)).
        The rule of ``SageServeEnv.action_masks`` (one function: ``action_masks``), a change valid alone."""
        if self.sim is None:
            return action_masks(None, 0, 0, self.max_delta, self.n_endpoints)[None].repeat(self.num_envs, 0)
        fleet = self.sim.fleet
        return action_masks(fleet.grid, fleet.level, fleet.min_instances, self.max_delta)

    # -- observation, reward, info ----------------------------------------------------------
    def _reward_terms(self, d: np.ndarray, gpu_s: np.ndarray, overdue: Optional[np.ndarray]) -> Dict[str, np.ndarray]:
        """Each endpoint's part of ``SageServeEnv``'s reward terms, (N, E) per term: the GPU cost
        its own servers billed since the last step and the misses and drops of the requests it
        served (``d``: (N, E, totals) since the last step); at the horizon (``overdue``, (N, E, 2))
        also its requests still unserved past their SLO or deadline. A world's terms are the sums
        over its endpoints. ``gpu_s``: (N, R, M + 1, states); a server without a model bills nothing."""
        w, s = self.weights, self.weights["scale"]
        N, M = self.num_envs, self.n_models
        billed = gpu_s[:, :, :M][..., list(BILLED_STATES)].sum(3)
        cost = (billed / 3600.0 * self.sim.fleet.cost_per_gpu_hour[None, :, None]).reshape(N, -1)
        spent, self._last_cost = cost - self._last_cost, cost
        iw, niw = (overdue[..., 0], overdue[..., 1]) if overdue is not None else (0.0, 0.0)
        return {
            "cost": -spent * w["cost"] * s,
            "iw_slo_miss": -(d[..., Stat.IW_SLO_MISSES] + iw) * w["iw_slo_miss"] * s,
            "iw_e2e_miss": -d[..., Stat.IW_E2E_MISSES] * w["iw_e2e_miss"] * s,
            "niw_deadline_miss": -(d[..., Stat.NIW_DEADLINE_MISSES] + niw) * w["niw_deadline_miss"] * s,
            "drop": -d[..., Stat.DROPPED] * w["drop"] * s,
        }

    def _observation(self, before: np.ndarray, after: np.ndarray) -> Dict[str, np.ndarray]:
        """``SageServeEnv._observation`` per world, from the (N, E, Stat) arrays."""
        N, R, M = self.num_envs, self.n_regions, self.n_models
        now = self.sim.now
        servers = self._servers[None, :, None, None]
        firsts = after[..., Stat.IW_FIRST_TOKENS] - before[..., Stat.IW_FIRST_TOKENS]
        per_first = np.where(firsts > 0, 1.0 / np.maximum(firsts, 1.0), 0.0)
        ttft = (after[..., Stat.IW_TTFT_SUM] - before[..., Stat.IW_TTFT_SUM]) * per_first
        missed = (after[..., Stat.IW_SLO_MISSES] - before[..., Stat.IW_SLO_MISSES]) * per_first
        spot = after[..., Stat.SPOT_OWN].reshape(N, R, M).sum(2)
        free = self.sim.fleet.grid[:, :, NO_MODEL, FREE]
        day = 2 * math.pi * (now % 86400.0) / 86400.0
        week = 2 * math.pi * ((now + 86400.0 * self.sim_config.workload.start_day) % 604800.0) / 604800.0
        obs = {
            "instances": after[..., Stat.ACTIVE:Stat.SPOT_OWN + 1].reshape(N, R, M, 4) / servers,
            "utilization": after[..., [Stat.UTILIZATION, Stat.UTILIZATION_MAX]].reshape(N, R, M, 2),
            "queued": np.log1p(after[..., [Stat.QUEUED_IW_TOKENS, Stat.QUEUED_NIW_TOKENS]]).reshape(N, R, M, 2) / 16.0,
            "arrival_rate": np.log1p(self._arrival_rates(after[..., Stat.ARRIVED], now)).reshape(N, R, M, -1) / 8.0,
            "forecast": np.zeros((N, R, M)),
            "ttft": ttft.reshape(N, R, M) / self.sim_config.slo.iw_ttft_s,
            "slo_miss": missed.reshape(N, R, M),
            "region": np.stack([free, spot], axis=2) / self._servers[None, :, None],
            "time": np.broadcast_to(np.array([math.sin(day), math.cos(day), math.sin(week), math.cos(week)]), (N, 4)),
        }
        return {k: np.clip(obs[k], space.low, space.high).astype(np.float32)
                for k, space in self.single_observation_space.spaces.items()}

    def _arrival_rates(self, arrived: np.ndarray, now: float) -> np.ndarray:
        """Requests per second per (world, endpoint) over each of RATE_WINDOWS_S: the rule of
        ``SageServeEnv._arrival_rates`` (the snapshot at or just after the window's start)."""
        times = self._snapshot_times
        rates = np.zeros(arrived.shape + (len(RATE_WINDOWS_S),))
        for j, window in enumerate(RATE_WINDOWS_S):
            i = bisect.bisect_left(times, now - window - 1e-9)
            if i == len(times):
                i = 0
            if now > times[i]:
                rates[..., j] = (arrived - self._snapshots[i]) / max(now - times[i], 1e-9)
        return rates

    def _info(self, refused: np.ndarray, terms: Optional[Dict[str, np.ndarray]],
              gpu_s: Optional[np.ndarray] = None) -> Dict[str, Any]:
        N = self.num_envs
        every = np.ones(N, dtype=bool)
        terms = terms or {k: np.zeros(N) for k in REWARD_TERMS}
        kpis = self.kpis(gpu_s)
        return {
            "reward_terms": {**terms, **{f"_{k}": every for k in terms}}, "_reward_terms": every,
            "kpis": {**kpis, **{f"_{k}": every for k in kpis}}, "_kpis": every,
            "refused": np.asarray(refused, dtype=np.int64), "_refused": every,
            "sim_time_s": np.full(N, self.sim.now), "_sim_time_s": every,
        }

    def kpis(self, gpu_s: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
        """``SageServeEnv.kpis`` per world: arrays of N."""
        if self.sim is None:
            raise ResetNeeded("call reset() before kpis()")
        c = self._last.sum(1)
        gpu_s = self.sim.world_gpu_seconds() if gpu_s is None else gpu_s
        gpu_h = gpu_s.sum(axis=(1, 2)) / 3600.0  # (N, states)
        first = c[:, Stat.IW_FIRST_TOKENS]
        has = first > 0
        fleet = self.sim.fleet
        return {
            "requests_total": c[:, Stat.ARRIVED] + 0.0,
            "requests_completed": c[:, Stat.COMPLETED] + 0.0,
            "requests_dropped": c[:, Stat.DROPPED] + 0.0,
            "iw_slo_attainment_served": np.where(has, 1.0 - c[:, Stat.IW_SLO_MISSES] / np.maximum(first, 1.0), 1.0),
            "iw_ttft_mean": np.where(has, c[:, Stat.IW_TTFT_SUM] / np.maximum(first, 1.0), 0.0),
            "niw_deadline_misses": c[:, Stat.NIW_DEADLINE_MISSES] + 0.0,
            "billed_gpu_hours": gpu_h[:, list(BILLED_STATES)].sum(1),
            "donated_gpu_hours": gpu_h[:, SPOT].copy(),
            "wastage_gpu_hours": gpu_h[:, STARTING].copy(),
            "cost_usd": self._last_cost.sum(1),
            "scale_ups": fleet.n_scale_ups.astype(float),
            "scale_downs": fleet.n_scale_downs.astype(float),
            "refused_changes": self._refused_total.copy(),
            "reward": sum(self._totals[k] for k in REWARD_TERMS),
            "sim_seconds": np.full(self.num_envs, self.sim.now),
        }


class SageServeFastEnv(gym.Env):
    """One world of ``SageServeVectorEnv`` as a ``gymnasium.Env`` (the v1 fast IDs' ``entry_point``):
    the same implementation at N = 1, with ``SageServeEnv``'s spaces, reward and info keys
    (``info["reward_terms"]``, ``info["kpis"]``, ``info["refused"]`` as a count)."""

    metadata = {"render_modes": []}

    def __init__(self, config: Optional[Dict[str, Any]] = None, **kwargs: Any) -> None:
        self.vector = SageServeVectorEnv(1, config, autoreset=False, **kwargs)
        self.observation_space = self.vector.single_observation_space
        self.action_space = self.vector.single_action_space
        self.n_regions, self.n_models = self.vector.n_regions, self.vector.n_models
        self.n_endpoints, self.max_delta = self.vector.n_endpoints, self.vector.max_delta
        self.config, self.sim_config = self.vector.template.config, self.vector.sim_config  # SageServeEnv's
        self.interval, self.horizon = self.vector.interval, self.vector.horizon

    def reset(self, *, seed: Optional[int] = None, options: Optional[Dict[str, Any]] = None):
        super().reset(seed=seed)
        if seed is None and not self.vector.seeded:
            seed = int(self.np_random.integers(2**62))
        obs, info = self.vector.reset(seed=seed, options=options)
        return self._one(obs), self._one(info)

    def step(self, action):
        a = np.asarray(action)
        if a.shape != (self.n_endpoints,):
            raise ValueError(f"action must have shape ({self.n_endpoints},) (one entry per endpoint), got {a.shape}")
        obs, reward, terminated, truncated, info = self.vector.step(a[None])
        return self._one(obs), float(reward[0]), bool(terminated[0]), bool(truncated[0]), self._one(info)

    def action_masks(self) -> np.ndarray:
        return self.vector.action_masks()[0]

    @staticmethod
    def _one(x):
        """World 0 of a batched value, the vector masks (``_key``) left out."""
        if isinstance(x, dict):
            return {k: SageServeFastEnv._one(v) for k, v in x.items() if not k.startswith("_")}
        if isinstance(x, np.ndarray):
            v = x[0]
            return v.item() if v.ndim == 0 else v
        return x
