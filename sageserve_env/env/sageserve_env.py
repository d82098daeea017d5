"""The Gymnasium adapter: ``SageServeEnv`` steps the simulator at decision points."""

from __future__ import annotations

import bisect
import copy
import math
import operator
from collections import deque
from itertools import chain
from typing import Any, Dict, List, Optional, Tuple

import gymnasium as gym
import numpy as np
import yaml
from gymnasium import spaces

from sageserve_env.config import CONFIG_DIR, SimConfig, load_config
from sageserve_env.env.view import SimView, demand_per_minute
from sageserve_env.sim.flow import FlowSimulator
from sageserve_env.sim.simulator import Simulator
from sageserve_env.workload.workload import Workload

REWARD_TERMS = ("cost", "iw_slo_miss", "iw_e2e_miss", "niw_deadline_miss", "drop")
RATE_WINDOWS_S = (60.0, 300.0, 900.0)
# running totals per endpoint that observations and rewards difference between steps
_COUNTERS = ("arrived", "arrived_prompt_tokens", "iw_first_tokens", "iw_ttft_sum", "iw_slo_misses",
             "iw_e2e_misses", "niw_deadline_misses", "dropped", "completed")
_C = {k: i for i, k in enumerate(_COUNTERS)}
_get_counters = operator.attrgetter(*_COUNTERS)


def reward_presets() -> Dict[str, Dict[str, float]]:
    """Named reward weights from ``configs/rewards.yaml``."""
    return yaml.safe_load((CONFIG_DIR / "rewards.yaml").read_text())


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
    simulator cannot make (below ``min_instances``, no spot server left) are refused and
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
    a window of the configured trace) and starts from the scenario's initial allocation.

    ## Episode end
    Never ``terminated``; ``truncated`` when simulated time reaches ``horizon_s``.

    ## Arguments
    See ``default_config()``; every key can be passed as a keyword argument or in
    ``reset(options={"config": {...}})``. ``sim_overrides`` are ``key=value`` strings or a
    nested dict applied to the scenario's ``SimConfig``.

    ## Version history
    v0: initial release.
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 30}

    @classmethod
    def default_config(cls) -> Dict[str, Any]:
        return {
            "scenario": "paper",  # preset name or YAML path
            "sim_overrides": [],  # key=value strings or a dict, applied to the scenario
            "decision_interval_s": 60.0,
            "horizon_s": None,  # default: the scenario's duration_s
            "max_delta": None,  # default: the largest initial instance count of an endpoint
            "reward": "balanced",  # preset name or dict of weights
            "forecaster": "none",  # none | seasonal_naive | arima: fills the forecast feature
            "trace_window": "random",  # random | start: where a trace episode begins
            "fidelity": "detailed",  # detailed (request-level) | fast (token flows per tick, for training)
            "fidelity_tick_s": 5.0,  # tick of the fast fidelity
        }

    def __init__(self, config: Optional[Dict[str, Any]] = None, render_mode: Optional[str] = None, **kwargs: Any):
        self.config = self.default_config()
        self._configure(config or {})
        self._configure(kwargs)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.render_mode = render_mode
        self._renderer = None
        self._setup()
        self.sim: Optional[Simulator] = None

    # -- configuration --------------------------------------------------------------------
    def _configure(self, updates: Dict[str, Any]) -> None:
        unknown = sorted(set(updates) - set(self.config))
        if unknown:
            raise ValueError(f"unknown SageServeEnv option(s) {unknown}; known: {sorted(self.config)}")
        self.config.update(copy.deepcopy(updates))

    def _setup(self) -> None:
        """Resolve the scenario and build the spaces (fixed for the env's lifetime)."""
        c = self.config
        overrides = c["sim_overrides"]
        self.sim_config: SimConfig = load_config(c["scenario"], overrides if isinstance(overrides, dict) else list(overrides))
        if c["fidelity"] not in ("detailed", "fast"):
            raise ValueError(f"fidelity must be 'detailed' or 'fast', got {c['fidelity']!r}")
        if not (isinstance(c["fidelity_tick_s"], (int, float)) and c["fidelity_tick_s"] > 0):
            raise ValueError(f"fidelity_tick_s must be > 0, got {c['fidelity_tick_s']!r}")
        self.interval = float(c["decision_interval_s"])
        if not self.interval > 0:
            raise ValueError(f"decision_interval_s must be > 0, got {c['decision_interval_s']!r}")
        self.horizon = float(c["horizon_s"] or self.sim_config.duration_s)
        if not self.horizon >= self.interval:
            raise ValueError(f"horizon_s={self.horizon} must be at least decision_interval_s={self.interval}")
        self.weights = self._reward_weights(c["reward"])
        if c["forecaster"] not in ("none", "seasonal_naive", "arima"):
            raise ValueError(f"forecaster must be none, seasonal_naive or arima, got {c['forecaster']!r}")
        if c["trace_window"] not in ("random", "start"):
            raise ValueError(f"trace_window must be random or start, got {c['trace_window']!r}")
        cfg = self.sim_config
        self.n_regions, self.n_models = len(cfg.regions), len(cfg.models)
        self.n_endpoints = self.n_regions * self.n_models
        biggest = max(cfg.initial_instances(r, m) for r in cfg.region_names for m in cfg.model_names)
        self.max_delta = int(c["max_delta"] if c["max_delta"] is not None else max(biggest, 1))
        if self.max_delta < 1:
            raise ValueError(f"max_delta must be >= 1, got {self.max_delta}")
        self.action_space = spaces.MultiDiscrete(np.full(self.n_endpoints, 2 * self.max_delta + 1, dtype=np.int64))
        shape = (self.n_regions, self.n_models)
        box = lambda *s, hi=1.0: spaces.Box(0.0, hi, shape=s, dtype=np.float32)  # noqa: E731
        self.observation_space = spaces.Dict({
            "instances": box(*shape, 4),
            "utilization": box(*shape, 2),
            "queued": box(*shape, 2, hi=4.0),
            "arrival_rate": box(*shape, len(RATE_WINDOWS_S), hi=4.0),
            "forecast": box(*shape, hi=4.0),
            "ttft": box(*shape, hi=10.0),
            "slo_miss": box(*shape),
            "region": box(self.n_regions, 2),
            "time": spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32),
        })
        self._plan_observation()
        self._mask_offsets = np.arange(2 * self.max_delta + 1) - self.max_delta
        self._trace: Optional[Workload] = None

    def _plan_observation(self) -> None:
        """Where each observation entry comes from, so that a step builds it with a few numpy calls.

        A step lists the raw values as Python numbers (``_observation``): per endpoint the
        ``SimView.rows()`` fields, then per endpoint the log1p inputs (queued IW and NIW tokens,
        arrival rates per window, forecast), then per endpoint mean TTFT and SLO-miss share, then
        per region free and spot servers, then the time features. The observation is
        ``clip(src[perm] / den)`` cast to float32 and split into the Dict's entries; ``den`` holds
        each entry's divisor (servers of its region, 16, 8, the SLO or 1).
        """
        R, M = self.n_regions, self.n_models
        E = R * M
        W = len(RATE_WINDOWS_S)
        logs, pair, region, time = 10 * E, 16 * E, 18 * E, 18 * E + 2 * R
        self._obs_logs = slice(logs, pair)
        e = np.arange(E).reshape(R, M)
        r = np.arange(R)
        slo = self.sim_config.slo.iw_ttft_s
        # (entry, source indices in the entry's shape, divisor; None: the servers of the region)
        parts = {
            "instances": (np.stack([10 * e + f for f in range(4)], axis=-1), None),
            "utilization": (np.stack([10 * e + f for f in (4, 5)], axis=-1), 1.0),
            "queued": (np.stack([logs + 6 * e + f for f in range(2)], axis=-1), 16.0),
            "arrival_rate": (np.stack([logs + 6 * e + 2 + j for j in range(W)], axis=-1), 8.0),
            "forecast": (logs + 6 * e + 2 + W, 16.0),
            "ttft": (pair + 2 * e, slo),
            "slo_miss": (pair + 2 * e + 1, 1.0),
            "region": (np.stack([region + 2 * r, region + 2 * r + 1], axis=-1), None),
            "time": (time + np.arange(4), 1.0),
        }
        perm, den, fleet_slots, fleet_region, layout, low, high = [], [], [], [], [], [], []
        offset = 0
        for k, space in self.observation_space.spaces.items():
            idx, divisor = parts[k]
            assert idx.shape == space.shape, (k, idx.shape, space.shape)
            n = idx.size
            perm.append(idx.ravel())
            den.append(np.full(n, 1.0 if divisor is None else divisor))
            if divisor is None:  # the first axis is the region
                fleet_slots.append(offset + np.arange(n))
                fleet_region.append(np.repeat(r, n // R))
            layout.append((k, offset, offset + n, space.shape))
            low.append(space.low.ravel())
            high.append(space.high.ravel())
            offset += n
        self._obs_perm = np.concatenate(perm)
        self._obs_den_base = np.concatenate(den)
        self._obs_den = self._obs_den_base.copy()
        self._obs_fleet_slots = np.concatenate(fleet_slots)
        self._obs_fleet_region = np.concatenate(fleet_region)
        self._obs_layout = layout
        self._obs_low = np.concatenate(low).astype(float)
        self._obs_high = np.concatenate(high).astype(float)

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
        super().reset(seed=seed)
        options = dict(options or {})
        if "config" in options:
            self._configure(options.pop("config"))
            self._setup()
        workload = options.pop("workload", None)
        if options:
            raise ValueError(f"unknown reset option(s) {sorted(options)}; known: config, workload")
        if workload is None:
            workload = self._draw_workload()
        if self.config["fidelity"] == "fast":
            self.sim = FlowSimulator(self.sim_config, workload, tick_s=float(self.config["fidelity_tick_s"]))
        else:
            self.sim = Simulator(self.sim_config, workload)
        minutes = int(math.ceil(self.horizon / 60.0)) + 61
        self._view = SimView(self.sim, demand_per_minute(self.sim, minutes))
        fleet = np.maximum(np.array([len(f) for f in self.sim.servers], dtype=float), 1.0)
        self._obs_den = self._obs_den_base.copy()
        self._obs_den[self._obs_fleet_slots] = fleet[self._obs_fleet_region]
        self._forecasts = np.zeros((self.n_regions, self.n_models))
        self._forecaster_state: Dict[Tuple[int, int], Any] = {}
        self._forecast_hour = -1
        self._last_gpu_cost = 0.0
        self._last_rows = self._counters()
        # arrivals per endpoint at past decision points, for the arrival rates
        self._snapshots: deque = deque(maxlen=int(math.ceil(max(RATE_WINDOWS_S) / self.interval)) + 1)
        self._snapshot_times: deque = deque(maxlen=self._snapshots.maxlen)
        self._snapshots.append(self._arrivals(self._last_rows))
        self._snapshot_times.append(0.0)
        self._totals = {k: 0.0 for k in REWARD_TERMS}
        self._refused_total = 0
        self._update_forecast()
        return self._observation(self._last_rows, self._last_rows), self._info({}, [])

    def _draw_workload(self) -> Workload:
        """A generated day seeded from the env's generator, or a window of the trace."""
        from sageserve_env.workload.generator import generate
        from sageserve_env.workload.readers import load_trace

        cfg = self.sim_config
        rng = np.random.default_rng(self.np_random.integers(2**63))
        if cfg.workload.source == "generator":
            return generate(cfg, rng, days=self.horizon / 86400.0)
        if self._trace is None:
            self._trace = load_trace(cfg.workload.trace, cfg.workload.trace_format, cfg)
        span = self._trace.duration_s - self.horizon
        start = 0.0
        if self.config["trace_window"] == "random" and span > 0:
            start = float(rng.uniform(0.0, span))
        return self._trace.slice_time(start, start + self.horizon)

    def step(self, action):
        if self.sim is None:
            raise RuntimeError("call reset() before step()")
        results = self._scale(self._decode_action(action), self.n_models)
        t_end = min(self.sim.now + self.interval, self.horizon)
        self.sim.run_until(t_end)
        truncated = t_end >= self.horizon - 1e-9
        rows = self._counters()
        changes = [[a - b for a, b in zip(now, before)] for now, before in zip(rows, self._last_rows)]
        gpu_s = self.sim.gpu_seconds_by_state()
        terms = self._reward_terms(self._sum_counters(changes), gpu_s)
        if truncated:
            for k, v in self._overdue_terms().items():
                terms[k] += v
        reward = float(sum(terms.values()))
        for k, v in terms.items():
            self._totals[k] += v
        obs = self._observation(self._last_rows, rows)
        self._snapshots.append(self._arrivals(rows))
        self._snapshot_times.append(t_end)
        self._last_rows = rows
        if int(t_end // 3600) != self._forecast_hour:
            self._update_forecast()
        if truncated:
            self.sim.check_invariants()
        return obs, reward, False, truncated, self._info(terms, results, gpu_s)

    def _decode_action(self, action) -> List[int]:
        """The instance change per endpoint, in endpoint order, that a valid ``action`` asks for."""
        a = np.asarray(action)
        if a.shape != (self.n_endpoints,):
            raise ValueError(f"action must have shape ({self.n_endpoints},) (one entry per endpoint), got {a.shape}")
        if a.dtype.kind not in "iu" and not np.issubdtype(a.dtype, np.integer):
            if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
                raise ValueError(f"action entries must be integers, got {a.tolist()}")
            a = a.astype(np.int64)
        values = a.tolist()
        if min(values) < 0 or max(values) > 2 * self.max_delta:
            e = int(np.flatnonzero((a < 0) | (a > 2 * self.max_delta))[0])
            raise ValueError(f"action[{e}] = {int(a[e])} (endpoint {self._endpoint_name(e)}) is outside "
                             f"0..{2 * self.max_delta}")
        md = self.max_delta
        return [v - md for v in values]

    def apply_deltas(self, deltas: np.ndarray) -> List[Any]:
        """Apply instance changes per (region, model): scale-downs first, so their servers count."""
        return self._scale(np.asarray(deltas).reshape(-1).tolist(), deltas.shape[1])

    def _scale(self, flat: List[int], n_m: int) -> List[Any]:
        """``apply_deltas`` of the changes listed in endpoint order, ``n_m`` models per region."""
        order = sorted(range(len(flat)), key=flat.__getitem__)  # a stable sort, as numpy's "stable" argsort
        return [self.sim.scale(e // n_m, e % n_m, int(flat[e])) for e in order if flat[e]]

    def _endpoint_name(self, e: int) -> str:
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
        md = self.max_delta
        if self.sim is None or self.sim.scaling_level == 0:
            masks = np.zeros((self.n_regions, self.n_models, 2 * md + 1), dtype=bool)
            masks[..., md] = True
            return masks.reshape(-1)
        rows, free = self._view.rows()  # active, starting, draining, spot_own, ... per endpoint
        n_m, k, mi = self.n_models, 2 * md + 1, self.sim.min_instances
        spot = [sum(row[3] for row in rows[r * n_m:(r + 1) * n_m]) for r in range(self.n_regions)]
        level2 = self.sim.scaling_level >= 2
        masks = bytearray(self.n_endpoints * k)
        for e, (active, starting, draining, spot_own, *_) in enumerate(rows):
            r = e // n_m
            up = draining + spot_own + free[r] + (spot[r] - spot_own if level2 else 0)
            down = min(active, active + starting - mi)
            hi, lo = min(md, up), min(md, max(down, 0))
            masks[e * k + md - lo:e * k + md + hi + 1] = b"\x01" * (lo + hi + 1)
        return np.frombuffer(masks, dtype=bool)

    # -- observation, reward, info --------------------------------------------------------
    def _counters(self) -> List[tuple]:
        """Running totals per endpoint: a tuple of Python numbers in ``_COUNTERS`` order each."""
        return [_get_counters(ep) for ep in self.sim.all_endpoints]

    @staticmethod
    def _sum_counters(rows: List[tuple]) -> List[float]:
        """Each counter summed over the endpoints in float64, one endpoint after the other (the
        additions numpy makes reducing the rows over the endpoints)."""
        totals = [float(x) for x in rows[0]]
        for row in rows[1:]:
            totals = [t + x for t, x in zip(totals, row)]
        return totals

    @staticmethod
    def _arrivals(rows: List[tuple]) -> List[float]:
        return [float(row[_C["arrived"]]) for row in rows]

    def _billed_cost(self, gpu_s: np.ndarray) -> float:
        """Cost so far of the active, starting and draining servers, from ``gpu_seconds_by_state()``."""
        billed = np.add.reduce(gpu_s[:, :, :3], axis=(1, 2))  # ndarray.sum, without its Python wrapper
        return float(np.add.reduce(billed / 3600.0 * self.sim.cost_per_gpu_hour))

    def _reward_terms(self, d: List[float], gpu_s: np.ndarray) -> Dict[str, float]:
        """Reward terms from the counters' change over the interval (``_sum_counters`` of the
        endpoints' changes) and the GPU-seconds now."""
        w = self.weights
        cost = self._billed_cost(gpu_s)
        spent, self._last_gpu_cost = cost - self._last_gpu_cost, cost
        s = w["scale"]
        return {
            "cost": -spent * w["cost"] * s,
            "iw_slo_miss": -d[_C["iw_slo_misses"]] * w["iw_slo_miss"] * s,
            "iw_e2e_miss": -d[_C["iw_e2e_misses"]] * w["iw_e2e_miss"] * s,
            "niw_deadline_miss": -d[_C["niw_deadline_misses"]] * w["niw_deadline_miss"] * s,
            "drop": -d[_C["dropped"]] * w["drop"] * s,
        }

    def _overdue_terms(self) -> Dict[str, float]:
        """At the horizon, charge requests still unserved past their SLO or deadline."""
        iw, niw = self.sim.overdue()
        s = self.weights["scale"]
        return {"cost": 0.0, "iw_slo_miss": -iw * self.weights["iw_slo_miss"] * s, "iw_e2e_miss": 0.0,
                "niw_deadline_miss": -niw * self.weights["niw_deadline_miss"] * s, "drop": 0.0}

    def _observation(self, before: List[tuple], after: List[tuple]) -> Dict[str, np.ndarray]:
        """The observation from the counters (``_counters`` rows) at the interval's start and end.

        The raw values are Python floats (the same IEEE operations numpy would do on float64); log1p,
        the divisions by ``den``, the clip and the cast are numpy calls on all entries at once
        (see ``_plan_observation``)."""
        rows, free = self._view.rows()
        now = self.sim.now
        n_m = self.n_models
        src = list(chain.from_iterable(rows))
        # arrival rates per window, from the snapshot at or just after its start
        times = self._snapshot_times
        arrived = self._arrivals(after)
        windows = []
        for window in RATE_WINDOWS_S:
            i = bisect.bisect_left(times, now - window - 1e-9)
            if i == len(times):
                i = 0
            t0 = times[i]
            windows.append((self._snapshots[i], max(now - t0, 1e-9)) if now > t0 else None)
        forecast = self._forecasts.ravel().tolist()
        for e, row in enumerate(rows):
            src += (row[7], row[8])  # queued IW and NIW tokens
            for w in windows:
                src.append((arrived[e] - w[0][e]) / w[1] if w else 0.0)
            src.append(forecast[e])
        # mean TTFT and SLO-miss share of the interval's IW first tokens (0 without any)
        first, ttft, miss = _C["iw_first_tokens"], _C["iw_ttft_sum"], _C["iw_slo_misses"]
        for b, a in zip(before, after):
            firsts = float(a[first]) - float(b[first])
            if firsts > 0:
                src += ((float(a[ttft]) - float(b[ttft])) / firsts, (float(a[miss]) - float(b[miss])) / firsts)
            else:
                src += (0.0, 0.0)
        for r, n_free in enumerate(free):
            src += (n_free, sum(row[3] for row in rows[r * n_m:(r + 1) * n_m]))  # free and spot servers
        day = 2 * math.pi * (now % 86400.0) / 86400.0
        week = 2 * math.pi * ((now + 86400.0 * self.sim_config.workload.start_day) % 604800.0) / 604800.0
        src += (math.sin(day), math.cos(day), math.sin(week), math.cos(week))
        values = np.array(src, dtype=float)
        logs = values[self._obs_logs]
        np.log1p(logs, out=logs)
        flat = values.take(self._obs_perm)
        flat /= self._obs_den
        flat.clip(self._obs_low, self._obs_high, out=flat)
        flat = flat.astype(np.float32)
        return {k: flat[a:b].reshape(shape) for k, a, b, shape in self._obs_layout}

    def _update_forecast(self) -> None:
        """Refresh the coming hour's forecast of IW prompt tokens per minute (hourly)."""
        self._forecast_hour = int(self.sim.now // 3600)
        kind = self.config["forecaster"]
        if kind == "none":
            return
        from sageserve_env.workload.forecast import ArimaForecaster, SeasonalNaiveForecaster

        history = self._view.demand_history()
        for r in range(self.n_regions):
            for m in range(self.n_models):
                fc = self._forecaster_state.get((r, m))
                if fc is None:
                    fc = ArimaForecaster() if kind == "arima" else SeasonalNaiveForecaster()
                    self._forecaster_state[(r, m)] = fc
                self._forecasts[r, m] = float(np.mean(fc.forecast(history[:, r, m], 60))) if len(history) else 0.0

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
        sim = self.sim
        c = self._sum_counters(self._last_rows)
        if gpu_s is None:
            gpu_s = sim.gpu_seconds_by_state()
        gpu_h = (np.add.reduce(gpu_s, axis=(0, 1)) / 3600.0).tolist()
        ups = len(sim.scale_log) - sim.n_scale_downs
        iw_first = c[_C["iw_first_tokens"]]
        return {
            "requests_total": float(sim.arrived),
            "requests_completed": float(sim.n_completed),
            "requests_dropped": float(sim.n_dropped),
            "iw_slo_attainment_served": float(1.0 - c[_C["iw_slo_misses"]] / iw_first) if iw_first else 1.0,
            "iw_ttft_mean": float(c[_C["iw_ttft_sum"]] / iw_first) if iw_first else 0.0,
            "niw_deadline_misses": float(c[_C["niw_deadline_misses"]]),
            "billed_gpu_hours": float(gpu_h[0] + gpu_h[1] + gpu_h[2]),
            "donated_gpu_hours": float(gpu_h[3]),
            "wastage_gpu_hours": float(gpu_h[1]),
            "cost_usd": float(self._last_gpu_cost),
            "scale_ups": float(ups),
            "scale_downs": float(sim.n_scale_downs),
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
        misses = np.array([row[_C["iw_slo_misses"]] for row in self._last_rows], dtype=float)
        return self._renderer.render(view, self.kpis(), misses)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()

    def view(self) -> SimView:
        """Read-only simulator state for heuristic policies."""
        if self.sim is None:
            raise RuntimeError("call reset() first")
        return self._view
