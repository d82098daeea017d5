"""The Gymnasium adapter: ``SageServeEnv`` steps the simulator at decision points."""

from __future__ import annotations

import bisect
import copy
import math
from collections import deque
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import gymnasium as gym
import numpy as np
import yaml
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from sageserve_env.config import CONFIG_DIR, EnvConfig, SimConfig, load_config
from sageserve_env.env.view import SimView
from sageserve_env.sim import FIDELITIES, make_simulator
from sageserve_env.sim.fleet import ACTIVE, BILLED_STATES, DRAINING, FREE, NO_MODEL, SPOT, STARTING
from sageserve_env.sim.stats import Stat
from sageserve_env.workload.forecast import FORECASTERS, EndpointForecasters
from sageserve_env.workload.deployment import assign
from sageserve_env.workload.workload import Workload

REWARD_TERMS = ("cost", "iw_slo_miss", "iw_e2e_miss", "niw_deadline_miss", "drop")
RATE_WINDOWS_S = (60.0, 300.0, 900.0)


def _positive_seconds(key: str, value: Any) -> float:
    """``value`` as a finite number of seconds > 0, else a ValueError naming ``key``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or not value > 0:
        raise ValueError(f"{key} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def reward_presets() -> Dict[str, Dict[str, float]]:
    """Named reward weights from ``configs/rewards.yaml``."""
    return yaml.safe_load((CONFIG_DIR / "rewards.yaml").read_text())


REGION_ENTRIES = ("region",)  # observation entries per region (R, ...); "time" is the world's; the rest per endpoint
WORLD_ENTRIES = ("time",)
TIME_FEATURES = ("sin_day", "cos_day", "sin_week", "cos_week")  # the "time" entry, in order
# the names of the last axis of the entries that have one (observation_features)
ENTRY_PARTS = {
    "instances": ("active", "starting", "draining", "spot"),
    "utilization": ("mean", "max"),
    "queued": ("iw", "niw"),
    "arrival_rate": tuple(f"{int(w // 60)}min" for w in RATE_WINDOWS_S),
    "region": ("free", "spot"),
    "time": TIME_FEATURES,
}


def observation_space(n_regions: int, n_models: int) -> spaces.Dict:
    """The observation space of a world of ``n_regions`` x ``n_models`` endpoints (the class
    docstring of ``SageServeEnv`` says what each entry holds)."""
    shape = (n_regions, n_models)
    box = lambda *s, hi=1.0: spaces.Box(0.0, hi, shape=s, dtype=np.float32)  # noqa: E731
    return spaces.Dict({
        "instances": box(*shape, 4),
        "utilization": box(*shape, 2),
        "queued": box(*shape, 2, hi=4.0),
        "arrival_rate": box(*shape, len(RATE_WINDOWS_S), hi=4.0),
        "forecast": box(*shape, hi=4.0),
        "ttft": box(*shape, hi=10.0),
        "slo_miss": box(*shape),
        "region": box(n_regions, 2),
        "time": spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32),
    })


def observation_features(space: spaces.Dict) -> List[str]:
    """The feature of each column of the flat observation (``gymnasium.spaces.flatten`` of
    ``space``): ``<entry>.<part>`` (``queued.iw``, ``utilization.max``, ``time.sin_day``) for
    the entries of ``ENTRY_PARTS``, the entry's name for the others (``ttft``)."""
    names: List[str] = []
    for key, box in space.spaces.items():
        parts = ENTRY_PARTS.get(key)
        cells = int(np.prod(box.shape[:-1])) if parts else int(np.prod(box.shape))
        names += [f"{key}.{p}" for p in parts] * cells if parts else [key] * cells
    return names


class SageServeEnv(gym.Env):
    """Autoscaling LLM endpoints across regions, after SageServe (O365, POMACS 2025).

    ## Description
    A fleet of GPU servers in several regions serves several LLMs. Each (region, model) pair is
    an *endpoint* with instances that are ``active`` (serving, billed), ``starting`` (billed,
    serving nothing yet), ``draining`` (billed, finishing its requests) or donated to the
    region's ``spot`` pool (not billed). Requests stream from a trace or a generated day; the
    request-level simulator batches them continuously on every instance. Every
    ``decision_interval_s`` the agent changes each endpoint's instance count.

    ## Action space
    ``MultiDiscrete([2 * max_delta + 1] * n_endpoints)``: entry ``e`` (endpoint ``e`` =
    region ``e // n_models``, model ``e % n_models``) asks for ``action[e] - max_delta``
    instances more (reclaim or start) or fewer (drain, then donate to spot). Changes the
    simulator cannot make (below ``min_instances``, no spot server left, within
    ``scaling.interval_s`` of the endpoint's last scaling event) are refused and
    reported in ``info["refused"]``; ``action_masks()`` marks them in advance for MaskablePPO.

    ## Observation space
    A ``Dict`` of float32 arrays; shapes use R regions, M models:
    ``instances`` (R, M, 4) active, starting, draining and own-model spot servers as a
    fraction of the region's servers; ``utilization`` (R, M, 2) mean and max memory
    utilization of active instances; ``queued`` (R, M, 2) log1p of queued IW and NIW tokens /
    16; ``arrival_rate`` (R, M, 3) log1p of requests per second over the last 1, 5, 15 min / 8;
    ``forecast`` (R, M) log1p of forecast IW prompt tokens per minute for the coming hour / 16
    (zeros without a forecaster); ``ttft`` (R, M) mean IW TTFT over the last interval divided
    by the SLO (clipped to 10); ``slo_miss`` (R, M) share of IW first tokens that missed the SLO
    in the last interval; ``region`` (R, 2) free and spot servers as a fraction of the fleet;
    ``time`` (4,) sine and cosine of the time of day and of the week.
    ``gymnasium.wrappers.FlattenObservation`` gives the flat vector for MlpPolicy.

    ## Rewards
    ``-(cost_usd * w_cost + iw_slo_misses * w_iw + iw_e2e_misses * w_e2e + niw_deadline_misses
    * w_niw + dropped * w_drop) * scale`` over the interval, with weights from a preset
    (``balanced``, ``cost``, ``slo``; see ``configs/rewards.yaml``) or a dict. At the horizon,
    IW requests still unserved past their SLO and NIW requests past their deadline are charged.
    ``info["reward_terms"]`` holds each (negative) term; they sum to the reward.

    ## Starting state
    ``reset`` draws the episode's workload (a generated day from the env's seeded generator, or
    a window of the configured trace) and starts from the scenario's initial allocation, or with
    ``initial_allocation="first_hour"`` from one sized for the episode's first hour
    (``sageserve_env.capacity.first_hour_instances``). When the scenario's workload uses the v1
    process with ``workload.history_days``, the preceding days' IW demand of the same process is
    part of ``view().demand_history()`` from the start (forecasters are not cold).

    ## Episode end
    Never ``terminated``; ``truncated`` when simulated time reaches ``horizon_s``. A ``step``
    after that (or before the first ``reset``) raises ``gymnasium.error.ResetNeeded``.

    ## Arguments
    See ``default_config()``; every key can be passed as a keyword argument or in
    ``reset(options={"config": {...}})``, except that ``reset`` refuses a change of the
    observation or action space (another scenario, fleet or ``max_delta``: wrappers keep the
    spaces they saw at construction). ``sim_overrides`` are ``key=value`` strings or a nested
    dict applied to the scenario's ``SimConfig``. ``reset(options={"workload": w})`` replays the
    ``Workload`` ``w`` instead of drawing one.

    ## Version history
    v0: initial release. Kept since: the trajectories (``tests/test_golden.py``); added without
    changing them: ``info["kpis"]`` ``requests_queued`` and ``requests_in_flight``, the
    ``scaling.interval_s`` knob (default -1, no limit); in the fast fidelity,
    ``SimView.endpoints().niw_queue_requests`` now counts the NIW queue (it read 0).
    v1: the benchmark tasks (``sageserve_env.tasks``, ``docs/benchmark.md``): the v1 workload
    process, generated history days, a first-hour allocation, fixed seed splits; server faults
    (``Outage-v1``: ``faults`` in the config, generated outages drawn by ``reset`` after the
    workload, ``draw_outages()``; ``info["kpis"]`` ``requests_retried`` and ``servers_down``);
    every task also as ``<Task>-fast-v1`` (this env with ``fidelity="fast"``).
    v1 (``...-fast-v1`` only): the fast fidelity vectorized over worlds, ``SageServeVectorEnv``
    (``sageserve_env/env/vector_env.py``) through ``make_vec``, its one-world case through ``make``;
    the same spaces and reward, traffic as per-tick aggregates (``docs/fidelity.md``, "v1").
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 30}

    @classmethod
    def default_config(cls) -> Dict[str, Any]:
        """The options and their defaults: the fields of ``sageserve_env.config.EnvConfig``."""
        return asdict(EnvConfig())

    def __init__(self, config: Optional[Dict[str, Any]] = None, render_mode: Optional[str] = None, **kwargs: Any):
        self.config = self.default_config()
        self._configure(config or {})
        self._configure(kwargs)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.render_mode = render_mode
        self._renderer = None
        self._setup()
        self.sim = None  # the episode's simulator (``Simulator`` or ``FlowSimulator``), from reset()

    # -- configuration --------------------------------------------------------------------
    def _configure(self, updates: Dict[str, Any]) -> None:
        if not isinstance(updates, Mapping):
            raise ValueError(f"SageServeEnv options must be a dict of option -> value, got {updates!r}")
        unknown = sorted(set(updates) - set(self.config))
        if unknown:
            raise ValueError(f"unknown SageServeEnv option(s) {unknown}; known: {sorted(self.config)}")
        self.config.update(copy.deepcopy(updates))

    def _setup(self) -> None:
        """Resolve the scenario and build the spaces (fixed for the env's lifetime)."""
        c = self.config
        overrides = c["sim_overrides"]
        self.sim_config: SimConfig = load_config(c["scenario"], overrides if isinstance(overrides, dict) else list(overrides))
        trace = self.sim_config.workload.trace
        if self.sim_config.workload.source == "trace" and not Path(trace).is_file():
            raise ValueError(f"workload.trace: trace file {trace!r} does not exist or is not a file")
        if c["fidelity"] not in FIDELITIES:
            raise ValueError(f"fidelity must be 'detailed' or 'fast', got {c['fidelity']!r}")
        _positive_seconds("fidelity_tick_s", c["fidelity_tick_s"])
        self.interval = _positive_seconds("decision_interval_s", c["decision_interval_s"])
        if c["horizon_s"] is None:
            self.horizon = float(self.sim_config.duration_s)
        else:
            self.horizon = _positive_seconds("horizon_s", c["horizon_s"])
        if not self.horizon >= self.interval:
            raise ValueError(f"horizon_s={self.horizon} must be at least decision_interval_s={self.interval}")
        self.weights = self._reward_weights(c["reward"])
        if c["forecaster"] not in ("none",) + FORECASTERS:
            raise ValueError(f"forecaster must be none, seasonal_naive or arima, got {c['forecaster']!r}")
        if c["initial_allocation"] not in ("scenario", "first_hour"):
            raise ValueError(f"initial_allocation must be scenario or first_hour, got {c['initial_allocation']!r}")
        for i, o in enumerate(self.sim_config.faults.outages):
            if o.start_s >= self.horizon:
                raise ValueError(f"faults.outages.{i}.start_s={o.start_s:g} is not before horizon_s={self.horizon:g}: "
                                 "the outage would never happen")
        if c["trace_window"] not in ("random", "start"):
            raise ValueError(f"trace_window must be random or start, got {c['trace_window']!r}")
        cfg = self.sim_config
        self.n_regions, self.n_models = len(cfg.regions), len(cfg.models)
        self.n_endpoints = self.n_regions * self.n_models
        biggest = max(cfg.initial_instances(r, m) for r in cfg.region_names for m in cfg.model_names)
        md = c["max_delta"]
        number = isinstance(md, (int, float, np.integer, np.floating)) and not isinstance(md, (bool, np.bool_))
        if md is not None and (not number or not float(md).is_integer() or md < 1):
            raise ValueError(f"max_delta must be an integer >= 1 (or None: the largest initial count), got {md!r}")
        self.max_delta = int(md) if md is not None else max(biggest, 1)
        self.action_space = spaces.MultiDiscrete(np.full(self.n_endpoints, 2 * self.max_delta + 1, dtype=np.int64))
        self.observation_space = observation_space(self.n_regions, self.n_models)
        spaces_ = self.observation_space.spaces
        self._obs_keys = tuple(spaces_)
        ends = np.cumsum([space.low.size for space in spaces_.values()])
        self._obs_slices = {k: (int(e - space.low.size), int(e), space.shape)
                            for (k, space), e in zip(spaces_.items(), ends)}
        self._obs_low = np.concatenate([space.low.ravel() for space in spaces_.values()]).astype(float)
        self._obs_high = np.concatenate([space.high.ravel() for space in spaces_.values()]).astype(float)
        self._trace: Optional[Workload] = None

    @staticmethod
    def _reward_weights(reward: Any) -> Dict[str, float]:
        presets = reward_presets()
        if isinstance(reward, str):
            if reward not in presets:
                raise ValueError(f"unknown reward preset {reward!r}; presets: {sorted(presets)}")
            reward = presets[reward]
        weights = {**presets["balanced"], **dict(reward)}
        unknown = sorted(set(weights) - set(REWARD_TERMS) - {"scale"})
        if unknown:
            raise ValueError(f"unknown reward weight(s) {unknown}; known: {list(REWARD_TERMS) + ['scale']}")
        for k, v in weights.items():
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"reward weight {k!r} must be a finite number >= 0, got {v!r}")
        return {k: float(v) for k, v in weights.items()}

    # -- episode --------------------------------------------------------------------------
    def reset(self, *, seed: Optional[int] = None, options: Optional[Dict[str, Any]] = None):
        if options is not None and not isinstance(options, Mapping):
            raise ValueError(f"reset options must be a dict (keys config, workload), got {options!r}")
        super().reset(seed=seed)
        options = dict(options or {})
        if "config" in options:
            updates = options.pop("config")
            if not isinstance(updates, Mapping):
                raise ValueError(f"reset option 'config' must be a dict of SageServeEnv options, got {updates!r}")
            probe = type(self)(config={**self.config, **updates})  # validates before anything changes
            changed = [name for name, old, new in (("observation", self.observation_space, probe.observation_space),
                                                   ("action", self.action_space, probe.action_space)) if old != new]
            if changed:
                raise ValueError(f"reset option 'config' = {updates!r} would change the {' and '.join(changed)} "
                                 "space; spaces are fixed for the env's lifetime: pass these options to the "
                                 "constructor (gym.make) instead")
            self._configure(updates)
            self._setup()
        workload = options.pop("workload", None)
        if options:
            raise ValueError(f"unknown reset option(s) {sorted(options)}; known: config, workload")
        if workload is not None:
            if not isinstance(workload, Workload):
                raise ValueError(f"reset option 'workload' must be a Workload, got {type(workload).__name__} "
                                 f"{workload!r:.80}")
            models = list(dict.fromkeys(self.sim_config.workload_models + self.sim_config.model_names))
            unknown = sorted(set(workload.regions) - set(self.sim_config.region_names)) + \
                sorted(set(workload.models) - set(models))
            if unknown:
                raise ValueError(f"reset option 'workload' ({workload.source}) names {unknown}, not in the "
                                 f"scenario's regions {self.sim_config.region_names} and models {models}")
            workload = assign(self.sim_config, workload)  # onto the deployment's endpoints
        history = None
        if workload is None:
            workload, history = self._draw_workload()
        episode_config = self.sim_config
        if self.config["initial_allocation"] == "first_hour" or episode_config.faults.generated:
            episode_config = copy.deepcopy(self.sim_config)
        if self.config["initial_allocation"] == "first_hour":
            from sageserve_env.capacity import first_hour_instances

            episode_config.scaling.initial_overrides = first_hour_instances(self.sim_config, workload)
        if episode_config.faults.generated:
            episode_config.faults.outages = self.draw_outages()
            episode_config.faults.generated = 0
        self.sim = make_simulator(episode_config, workload, self.config["fidelity"], float(self.config["fidelity_tick_s"]))
        self._view = SimView(self.sim, int(math.ceil(self.horizon / 60.0)) + 61, history)
        self._servers = np.maximum(self.sim.fleet.servers.astype(float), 1.0)  # per region, the divisor of counts
        self._forecasts = np.zeros((self.n_regions, self.n_models))
        kind = self.config["forecaster"]
        self._forecasters = EndpointForecasters(kind) if kind != "none" else None
        self._forecast_hour = -1
        self._last_gpu_cost = 0.0
        self._last_stats = self._view.statistics()
        # arrivals per endpoint at past decision points, for the arrival rates
        self._snapshots: deque = deque(maxlen=int(math.ceil(max(RATE_WINDOWS_S) / self.interval)) + 1)
        self._snapshot_times: deque = deque(maxlen=self._snapshots.maxlen)
        self._snapshots.append(self._last_stats[:, Stat.ARRIVED])
        self._snapshot_times.append(0.0)
        self._totals = {k: 0.0 for k in REWARD_TERMS}
        self._refused_total = 0
        self._update_forecast()
        return self._observation(self._last_stats, self._last_stats), self._info({}, [])

    def draw_episode(self, seed: int):
        """(workload, history or None) that ``reset(seed=seed)`` replays, without building the
        simulator; it reseeds the env's generator as ``reset`` does."""
        super().reset(seed=seed)
        return self._draw_workload()

    def draw_outages(self) -> list:
        """The episode's outages (``OutageConfig``): the scheduled ones, then ``faults.generated``
        drawn from the env's generator. ``reset`` draws them right after the workload, so after
        ``draw_episode(seed)`` this gives those of ``reset(seed=seed)``."""
        from sageserve_env.sim.faults import draw_outages

        faults = self.sim_config.faults
        if not faults.generated:
            return list(faults.outages)
        rng = np.random.default_rng(self.np_random.integers(2**63))
        return list(faults.outages) + draw_outages(self.sim_config, rng, self.horizon)

    def _draw_workload(self):
        """(workload, history): a generated day seeded from the env's generator (with its
        preceding days' per-minute IW demand when the v1 process asks for history, else None), or
        a window of the trace."""
        from sageserve_env.workload.generator import generate, generate_with_history, uses_v1_process
        from sageserve_env.workload.readers import load_trace

        cfg = self.sim_config
        rng = np.random.default_rng(self.np_random.integers(2**63))
        if cfg.workload.source == "generator":
            if uses_v1_process(cfg):
                return generate_with_history(cfg, rng, days=self.horizon / 86400.0)
            return generate(cfg, rng, days=self.horizon / 86400.0), None
        if self._trace is None:
            self._trace = load_trace(cfg.workload.trace, cfg.workload.trace_format, cfg)
        span = self._trace.duration_s - self.horizon
        start = 0.0
        if self.config["trace_window"] == "random" and span > 0:
            start = float(rng.uniform(0.0, span))
        return self._trace.slice_time(start, start + self.horizon), None

    def step(self, action):
        if self.sim is None:
            raise ResetNeeded("call reset() before step()")
        if self.sim.now >= self.horizon - 1e-9:
            raise ResetNeeded(f"the episode ended at horizon_s={self.horizon:g} (truncated); call reset() "
                              "before step()")
        results = self._scale(self._decode_action(action))
        t_end = min(self.sim.now + self.interval, self.horizon)
        self.sim.run_until(t_end)
        truncated = t_end >= self.horizon - 1e-9
        stats = self._view.statistics()
        gpu_s = self.sim.gpu_seconds_by_state()
        terms = self._reward_terms(stats[:, : Stat.DROPPED + 1].sum(0) - self._last_stats[:, : Stat.DROPPED + 1].sum(0),
                                   gpu_s)
        if truncated:
            for k, v in self._overdue_terms().items():
                terms[k] += v
        reward = float(sum(terms.values()))
        for k, v in terms.items():
            self._totals[k] += v
        obs = self._observation(self._last_stats, stats)
        self._snapshots.append(stats[:, Stat.ARRIVED])
        self._snapshot_times.append(t_end)
        self._last_stats = stats
        if int(t_end // 3600) != self._forecast_hour:
            self._update_forecast()
        if truncated:
            self.sim.check_invariants()
        return obs, reward, False, truncated, self._info(terms, results, gpu_s)

    def _decode_action(self, action) -> np.ndarray:
        """The instance change per endpoint, in endpoint order, that a valid ``action`` asks for."""
        a = np.asarray(action)
        if a.shape != (self.n_endpoints,):
            raise ValueError(f"action must have shape ({self.n_endpoints},) (one entry per endpoint), got {a.shape}")
        kind = a.dtype.kind
        if kind == "b" or (kind in "iu" and isinstance(action, (list, tuple))
                           and any(isinstance(x, (bool, np.bool_)) for x in action)):
            shown = a.tolist() if kind == "b" else list(action)
            raise ValueError(f"action entries must be integers, not booleans; got {shown!r}")
        if kind not in "iuf":
            raise ValueError(f"action entries must be integers, got {a.tolist()!r} (dtype {a.dtype})")
        values = a.tolist()
        if kind == "f":
            for e, v in enumerate(values):
                if not (math.isfinite(v) and v == round(v)):
                    raise ValueError(f"action entries must be integers: action[{e}] = {v!r} "
                                     f"(endpoint {self.endpoint_name(e)})")
        md = self.max_delta
        if min(values) < 0 or max(values) > 2 * md:
            e = next(i for i, v in enumerate(values) if v < 0 or v > 2 * md)
            raise ValueError(f"action[{e}] = {values[e]!r} (endpoint {self.endpoint_name(e)}) is outside "
                             f"0..{2 * md}")
        if kind == "f":
            values = [int(v) for v in values]
        return np.array(values, dtype=np.int64) - md

    def _scale(self, deltas: np.ndarray) -> List[Any]:
        """Apply the changes per endpoint, scale-downs first, so that their servers count."""
        n_m = self.n_models
        return [self.sim.scale(int(e) // n_m, int(e) % n_m, int(deltas[e]))
                for e in np.argsort(deltas, kind="stable") if deltas[e]]

    def endpoint_name(self, e: int) -> str:
        """``region/model`` of action and observation index ``e`` (region-major order)."""
        cfg = self.sim_config
        return f"{cfg.region_names[e // self.n_models]}/{cfg.model_names[e % self.n_models]}"

    # -- masks ----------------------------------------------------------------------------
    def action_masks(self) -> np.ndarray:
        """Valid choices per endpoint, concatenated (the MaskablePPO convention).

        A change is valid alone: each endpoint's scale-ups are bounded by its draining
        instances plus the spot and free servers it may take, its scale-downs by
        ``min_instances``. Several endpoints of a region draw on one spot pool, so a set of
        individually valid changes can still be partly refused.
        """
        if self.sim is None:
            return action_masks(None, 0, 0, self.max_delta, self.n_endpoints)
        fleet = self.sim.fleet
        return action_masks(fleet.counts, fleet.level, fleet.min_instances, self.max_delta,
                            ready=fleet.may_scale(self.sim.now))

    # -- observation, reward, info --------------------------------------------------------
    def _billed_cost(self, gpu_s: np.ndarray) -> float:
        """Cost so far of the active, starting and draining servers, from ``gpu_seconds_by_state()``."""
        billed = gpu_s[:, :, list(BILLED_STATES)].sum(axis=(1, 2))
        return float((billed / 3600.0 * self.sim.fleet.cost_per_gpu_hour).sum())

    def _reward_terms(self, d: np.ndarray, gpu_s: np.ndarray) -> Dict[str, float]:
        """Reward terms from the running totals' change over the interval (summed over the
        endpoints, ``Stat`` columns) and the GPU-seconds now."""
        w = self.weights
        cost = self._billed_cost(gpu_s)
        spent, self._last_gpu_cost = cost - self._last_gpu_cost, cost
        s = w["scale"]
        return {
            "cost": -spent * w["cost"] * s,
            "iw_slo_miss": -float(d[Stat.IW_SLO_MISSES]) * w["iw_slo_miss"] * s,
            "iw_e2e_miss": -float(d[Stat.IW_E2E_MISSES]) * w["iw_e2e_miss"] * s,
            "niw_deadline_miss": -float(d[Stat.NIW_DEADLINE_MISSES]) * w["niw_deadline_miss"] * s,
            "drop": -float(d[Stat.DROPPED]) * w["drop"] * s,
        }

    def _overdue_terms(self) -> Dict[str, float]:
        """At the horizon, charge requests still unserved past their SLO or deadline."""
        iw, niw = self.sim.overdue()
        s = self.weights["scale"]
        return {"cost": 0.0, "iw_slo_miss": -iw * self.weights["iw_slo_miss"] * s, "iw_e2e_miss": 0.0,
                "niw_deadline_miss": -niw * self.weights["niw_deadline_miss"] * s, "drop": 0.0}

    def _observation(self, before: np.ndarray, after: np.ndarray) -> Dict[str, np.ndarray]:
        """The observation from the statistics array at the interval's start and end."""
        shape = (self.n_regions, self.n_models)
        now = self.sim.now
        servers = self._servers[:, None, None]
        firsts = after[:, Stat.IW_FIRST_TOKENS] - before[:, Stat.IW_FIRST_TOKENS]
        served = firsts > 0
        per_first = np.where(served, 1.0 / np.maximum(firsts, 1.0), 0.0)
        ttft = (after[:, Stat.IW_TTFT_SUM] - before[:, Stat.IW_TTFT_SUM]) * per_first
        missed = (after[:, Stat.IW_SLO_MISSES] - before[:, Stat.IW_SLO_MISSES]) * per_first
        spot = after[:, Stat.SPOT_OWN].reshape(shape).sum(1)
        free = self.sim.fleet.counts[:, NO_MODEL, FREE]
        day = 2 * math.pi * (now % 86400.0) / 86400.0
        week = 2 * math.pi * ((now + 86400.0 * self.sim_config.workload.start_day) % 604800.0) / 604800.0
        obs = {
            "instances": after[:, Stat.ACTIVE:Stat.SPOT_OWN + 1].reshape(*shape, 4) / servers,
            "utilization": after[:, [Stat.UTILIZATION, Stat.UTILIZATION_MAX]].reshape(*shape, 2),
            "queued": np.log1p(after[:, [Stat.QUEUED_IW_TOKENS, Stat.QUEUED_NIW_TOKENS]]).reshape(*shape, 2) / 16.0,
            "arrival_rate": np.log1p(self._arrival_rates(after[:, Stat.ARRIVED], now)).reshape(*shape, -1) / 8.0,
            "forecast": np.log1p(self._forecasts) / 16.0,
            "ttft": ttft.reshape(shape) / self.sim_config.slo.iw_ttft_s,
            "slo_miss": missed.reshape(shape),
            "region": np.stack([free, spot], axis=1) / self._servers[:, None],
            "time": np.array([math.sin(day), math.cos(day), math.sin(week), math.cos(week)]),
        }
        # clipped to the boxes and cast in one go: 41 us a paper-env observation against 161 us
        # with a clip and a cast per entry (timeit)
        flat = np.concatenate([obs[k].ravel() for k in self._obs_keys])
        flat = flat.clip(self._obs_low, self._obs_high).astype(np.float32)
        return {k: flat[a:b].reshape(shape) for k, (a, b, shape) in self._obs_slices.items()}

    def _arrival_rates(self, arrived: np.ndarray, now: float) -> np.ndarray:
        """Requests per second per endpoint over each of RATE_WINDOWS_S, (endpoints, windows),
        from the snapshot at or just after the window's start (0 at the episode's start)."""
        times = self._snapshot_times
        rates = np.zeros((len(arrived), len(RATE_WINDOWS_S)))
        for j, window in enumerate(RATE_WINDOWS_S):
            i = bisect.bisect_left(times, now - window - 1e-9)
            if i == len(times):
                i = 0
            if now > times[i]:
                rates[:, j] = (arrived - self._snapshots[i]) / max(now - times[i], 1e-9)
        return rates

    def _update_forecast(self) -> None:
        """Refresh the coming hour's forecast of IW prompt tokens per minute (hourly)."""
        self._forecast_hour = int(self.sim.now // 3600)
        if self._forecasters is None:
            return
        history = self._view.demand_history()
        if len(history):
            self._forecasts = self._forecasters.forecast(history, 60).mean(axis=0)

    def _info(self, terms: Dict[str, float], results: List[Any], gpu_s: Optional[np.ndarray] = None) -> Dict[str, Any]:
        refused = [f"{res.region}/{res.model}: {res.refused} of {res.requested} refused ({res.refused_reason})"
                   for res in results if res.refused]
        self._refused_total += sum(res.refused for res in results)
        return {
            "reward_terms": dict(terms) or {k: 0.0 for k in REWARD_TERMS},
            "kpis": self.kpis(gpu_s),
            "refused": refused,
            "sim_time_s": self.sim.now,
        }

    def kpis(self, gpu_s: Optional[np.ndarray] = None) -> Dict[str, float]:
        """Running totals under the names ``summary.json`` uses (``gpu_s``: the simulator's
        ``gpu_seconds_by_state()`` now, when the caller has it)."""
        if self.sim is None:
            raise ResetNeeded("call reset() before kpis()")
        sim = self.sim
        c = self._last_stats.sum(0)
        if gpu_s is None:
            gpu_s = sim.gpu_seconds_by_state()
        gpu_h = gpu_s.sum(axis=(0, 1)) / 3600.0
        ups = len(sim.fleet.scale_log) - sim.fleet.n_scale_downs
        iw_first = c[Stat.IW_FIRST_TOKENS]
        return {
            "requests_total": float(sim.arrived),
            "requests_completed": float(c[Stat.COMPLETED]),
            "requests_dropped": float(c[Stat.DROPPED]),
            "requests_retried": float(c[Stat.RETRIED]),
            "servers_down": float(sim.fleet.down().sum()),
            "requests_queued": float(c[Stat.QUEUED_REQUESTS]),
            "requests_in_flight": float(c[Stat.IN_FLIGHT_REQUESTS]),
            "iw_slo_attainment_served": float(1.0 - c[Stat.IW_SLO_MISSES] / iw_first) if iw_first else 1.0,
            "iw_ttft_mean": float(c[Stat.IW_TTFT_SUM] / iw_first) if iw_first else 0.0,
            "niw_deadline_misses": float(c[Stat.NIW_DEADLINE_MISSES]),
            "billed_gpu_hours": float(gpu_h[list(BILLED_STATES)].sum()),
            "donated_gpu_hours": float(gpu_h[SPOT]),
            "wastage_gpu_hours": float(gpu_h[STARTING]),
            "cost_usd": float(self._last_gpu_cost),
            "scale_ups": float(ups),
            "scale_downs": float(sim.fleet.n_scale_downs),
            "refused_changes": float(self._refused_total),
            "reward": float(sum(self._totals.values())),
            "sim_seconds": float(sim.now),
        }

    def render(self):
        """The dashboard frame now (``sageserve_env.env.render``): an (H, W, 3) uint8 array for
        ``"rgb_array"``, shown in a window for ``"human"``; call it after ``reset`` and each step."""
        if self.render_mode is None:
            gym.logger.warn("render() needs a render_mode: SageServeEnv(render_mode='rgb_array')")
            return None
        if self._renderer is None:
            from sageserve_env.env.render import DashboardRenderer

            cfg = self.sim_config
            self._renderer = DashboardRenderer(cfg.region_names, cfg.model_names, self.render_mode,
                                               fps=self.metadata["render_fps"])
        view = self.view()  # raises before reset
        misses = self._last_stats[:, Stat.IW_SLO_MISSES]
        return self._renderer.render(view, self.kpis(), misses)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()

    def view(self) -> SimView:
        """Read-only simulator state for heuristic policies."""
        if self.sim is None:
            raise RuntimeError("call reset() first")
        return self._view


def action_masks(counts: Optional[np.ndarray], level: int, min_instances: int, max_delta: int,
                 n_endpoints: int = 0, ready: Optional[np.ndarray] = None) -> np.ndarray:
    """The masks of ``SageServeEnv.action_masks`` from fleet counts (..., regions, models + 1,
    states), any leading axes (worlds): (..., endpoints x (2 max_delta + 1)). Up to ``max_delta``
    up, bounded by the draining instances and the spot and free servers the endpoint may take;
    down, by ``min_instances`` and the active instances. ``counts`` None (no fleet yet) or
    ``level`` 0: only "no change", for ``n_endpoints`` (or the counts' endpoints); so too for
    the endpoints (..., regions, models) not ``ready`` (``scaling.interval_s``)."""
    offsets = np.arange(-max_delta, max_delta + 1)
    lead = () if counts is None else counts.shape[:-3]
    if counts is None or level == 0:
        n = n_endpoints if counts is None else counts.shape[-3] * (counts.shape[-2] - 1)
        return np.broadcast_to(offsets == 0, lead + (n, len(offsets))).reshape(lead + (-1,)).copy()
    c = counts[..., :-1, :]  # (..., regions, models, states)
    spot = c[..., SPOT]
    others = spot.sum(-1, keepdims=True) - spot if level >= 2 else 0
    up = c[..., DRAINING] + spot + counts[..., NO_MODEL, FREE][..., None] + others
    down = np.minimum(c[..., ACTIVE], c[..., ACTIVE] + c[..., STARTING] - min_instances)
    if ready is not None:
        up, down = np.where(ready, up, 0), np.where(ready, down, 0)
    hi = np.minimum(max_delta, up).reshape(lead + (-1, 1))
    lo = np.minimum(max_delta, np.maximum(down, 0)).reshape(lead + (-1, 1))
    return ((offsets >= -lo) & (offsets <= hi)).reshape(lead + (-1,))
