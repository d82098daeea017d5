"""SageServe's long-term scaling (LT-I, LT-U, LT-UA) and the oracle: one hourly ILP, four ways to act.

At every hour boundary of simulated time the policy forecasts each endpoint's interactive demand
for the coming hour, adds a share of the queued NIW work, converts it into required prompt tokens
per second, and lets the ILP (``agents.planner``) choose instance counts; a post-processing
strategy turns the new plan and the previous one into targets; the mode decides when scale-ups
are released. See ``docs/policies.md`` for the rules in full.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from agents.base import Policy, deltas_to_action
from agents.reactive import Trigger, UpWaits, can_scale_down, scale_up_delays
from agents.throughput import TokenSizes, endpoint_capacities
from sageserve_env.workload.forecast import FORECASTERS, EndpointForecasters, SageServeForecasts

MODES = ("lt_i", "lt_u", "lt_ua", "oracle")
STRATEGIES = ("immediate", "delay_changes", "keep_maximum_instances", "keep_minimum_instances")
UP_UTILIZATION = 0.5  # LT-U, LT-UA: planned scale-ups wait for this memory utilization
DOWN_UTILIZATION = 0.25  # instances added beyond the plan are given back below this
OVERRIDE_UTILIZATION = 0.9  # LT-U: scale up beyond the plan above this
# SageServe's demand for the hour (``plan_demand: window_max``, ``global_arbiter.py``,
# ``MilpGlobalArbiter.get_ilp_forecast``): the largest prediction among the minutes 20 to 60
# ahead, plus this share of the largest dev prompt of the past hour (of the first hour before
# it has passed).
WINDOW_MINUTES = (20, 60)
DEV_SHARE = 0.1


@dataclass(frozen=True)
class Targets:
    """What one hour's plan asks of each endpoint after post-processing, arrays (R, M).

    Move to ``now`` at once and to ``later`` once the change delay has passed; scale-ups above
    those, up to ``on_need``, are made only while the endpoint's utilization exceeds 0.5.
    """

    now: np.ndarray
    later: np.ndarray
    on_need: np.ndarray


def post_process(strategy: str, previous: np.ndarray, new: np.ndarray) -> Targets:
    """Targets for the hour from the previous plan and the new one.

    ``immediate``: the new plan now. ``delay_changes``: scale-ups now, scale-downs after the
    delay. ``keep_maximum_instances``: never below either plan this hour.
    ``keep_minimum_instances``: the smaller of the two now, scale-ups to the new plan on need.
    """
    previous, new = np.asarray(previous), np.asarray(new)
    high, low = np.maximum(previous, new), np.minimum(previous, new)
    if strategy == "immediate":
        return Targets(new, new, new)
    if strategy == "delay_changes":
        return Targets(high, new, new)
    if strategy == "keep_maximum_instances":
        return Targets(high, high, high)
    if strategy == "keep_minimum_instances":
        return Targets(low, low, new)
    raise ValueError(f"unknown post_processing {strategy!r}; known: {list(STRATEGIES)}")


def peak_rate(minutes: np.ndarray, window: int) -> np.ndarray:
    """Highest ``window``-minute mean of per-minute token counts (T, R, M), in tokens/s."""
    w = max(1, min(window, len(minutes)))
    c = np.cumsum(np.concatenate([np.zeros((1,) + minutes.shape[1:]), minutes]), axis=0)
    return ((c[w:] - c[:-w]) / w).max(axis=0) / 60.0


class LongTermPolicy(Policy):
    """Hourly ILP planning; ``mode`` is ``lt_i``, ``lt_u``, ``lt_ua`` or ``oracle``.

    - ``lt_i``: move to the (post-processed) plan at once.
    - ``lt_u``: scale-downs at once; each planned scale-up waits until utilization > 0.5; above
      0.9 one instance is added beyond the plan, given back when utilization < 0.25.
    - ``lt_ua``: like ``lt_u``, but the beyond-plan instance is added when the IW prompt
      tokens of the last minute exceed ``ua_threshold`` x that minute's forecast (SageServe's
      ARIMA checking).
    - ``oracle``: ``lt_i`` fed the true demand of the coming hour. An upper bound only.

    ``forecaster``: ``arima`` (order (3, 1, 2), fitted on past minutes only, parameters
    re-estimated every ``refit_every_minutes`` and only filtered in between) or
    ``seasonal_naive``. Plans are made at hour boundaries, and once more as soon as
    ``min_history_minutes`` of history exist if no plan was made yet; until then the
    allocation is kept. ``niw_share`` of the queued NIW tokens is planned for each hour
    (default 2 / deadline hours: by Little's law the backlog then waits half the deadline).
    A plan covers the hour's peak ``smoothing_minutes`` mean demand. ``change_delay_s`` is the
    delay of ``delay_changes``. ``window_minutes`` (default 60, SageServe's hour) is the planning
    window: a plan is made at every window boundary for the forecast of the window's minutes.
    Capacity limits go to ``agents.throughput.instance_capacity``.

    The scenario's ``arbiter`` section can make it plan and act as SageServe's global arbiter
    and its regional arbiters do (``docs/compat.md``): decisions only where requests arrived,
    fixed waits after scale-ups, none after a scale-down (``trigger``, ``*_wait_s``); the
    original's precomputed forecast files (``forecasts``), read from t = 0 without history;
    its demand rule (``plan_demand: window_max``) and per-instance throughputs
    (``plan_throughput: fixed``); every endpoint down to ``start_instances`` before the first
    plan; LT-UA's check on the region's tokens against one forecast (``ua_tokens: region``).
    """

    def __init__(self, mode: str = "lt_i", post_processing: str = "immediate", decision_interval_s: float = 60.0,
                 forecaster: str = "arima", refit_every_minutes: int = 180, ua_threshold: float = 5.0,
                 niw_share: Optional[float] = None, change_delay_s: float = 900.0, min_history_minutes: int = 15,
                 smoothing_minutes: int = 5, target_utilization: float = 0.5, max_iteration_s: float = 0.15,
                 window_minutes: int = 60) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; known: {list(MODES)}")
        post_process(post_processing, np.zeros(1), np.zeros(1))  # validates the name
        if forecaster not in FORECASTERS:
            raise ValueError(f"forecaster must be arima or seasonal_naive, got {forecaster!r}")
        if not isinstance(window_minutes, int) or isinstance(window_minutes, bool) or window_minutes < 1:
            raise ValueError(f"window_minutes must be a positive whole number of minutes, got {window_minutes!r}")
        self.name = mode
        self.window_minutes = window_minutes
        self.mode = mode
        self.post_processing = post_processing
        self.decision_interval_s = decision_interval_s
        self.forecaster = forecaster
        self.refit_every_minutes = refit_every_minutes
        self.ua_threshold = ua_threshold
        self.niw_share = niw_share
        self.change_delay_s = change_delay_s
        self.min_history_minutes = min_history_minutes
        self.smoothing_minutes = smoothing_minutes
        self.capacity_limits = {"target_utilization": target_utilization, "max_iteration_s": max_iteration_s}

    # -- episode --------------------------------------------------------------------------
    def check_env(self, env):
        """The original's demand rule needs its precomputed forecast files (``docs/compat.md``)."""
        a = env.unwrapped.sim_config.arbiter
        if a.plan_demand == "window_max" and a.forecasts is None and self.mode != "oracle":
            raise ValueError("arbiter.plan_demand=window_max reads SageServe's precomputed forecasts: "
                             "set arbiter.forecasts to the directory of the trace's forecast files")

    def reset(self, env, seed=None):
        shape = (env.n_regions, env.n_models)
        self._view = env.view()
        self._sizes = TokenSizes(env)
        self._forecasters = EndpointForecasters(self.forecaster, (3, 1, 2), self.refit_every_minutes)
        self._hour: Optional[int] = None
        self._last_plan: Optional[np.ndarray] = None
        self._targets: Optional[Targets] = None
        self._goal = np.zeros(shape, dtype=np.int64)
        self._bump = np.zeros(shape, dtype=np.int64)  # instances added beyond the plan
        self._cool_until = np.zeros(shape)
        self._plan_time = 0.0
        self._delay_pending = False
        self._forecast: Optional[np.ndarray] = None  # (window_minutes, R, M) this window's per-minute forecast
        self._plan_minute = 0
        self._to_score = []  # (first minute, forecast) waiting for their minutes to pass
        self._errors = []
        self._solve_times = []
        self.plan_log = []  # (time, ILP instances) of every solve
        a = self._arbiter = env.sim_config.arbiter
        self._trigger = Trigger(env, a.trigger)
        self._up_waits = UpWaits.of(self._view, a)
        self._down_wait = self._view.reclaim_s if a.down_wait_s is None else a.down_wait_s
        self.check_env(env)
        self._precomputed = (None if a.forecasts is None else
                             SageServeForecasts.read(a.forecasts, env.n_regions, self._view.model_names))
        region_check = self.mode == "lt_ua" and a.ua_tokens == "region"
        self._recent = RecentTokens(env.n_regions) if region_check else None

    def act(self, obs, env):
        view = env.view()
        st = view.endpoints()
        now = view.now
        current = (st.active + st.starting).astype(np.int64)
        planned_from = current
        if self._hour is None and self._arbiter.start_instances is not None:  # SageServe's start_with_8_each
            planned_from = np.minimum(current, self._arbiter.start_instances)
        first = self._last_plan is None and now >= 60.0 * self.min_history_minutes
        if int(now // (60.0 * self.window_minutes)) != self._hour or first:
            self._hour = int(now // (60.0 * self.window_minutes))
            self._plan(env, view, st, planned_from, now)
        if self._recent is not None:
            self._recent.add(view)
        self._release(view, st, current, now)
        return deltas_to_action(env, self._goal - current)

    # -- hourly planning ------------------------------------------------------------------
    def _plan(self, env, view, st, current, now):
        from agents.planner import plan_instances

        self._score_forecasts()
        minutes = self._demand_minutes(view)
        if minutes is None:  # too little history to forecast: keep the allocation
            self._targets = Targets(current, current, current)
            self._goal = current.copy()
            return
        per_instance = self._instance_throughput(env)
        if self._arbiter.plan_demand == "window_max" and self.mode != "oracle":
            demand = self._window_max_demand(now)
        else:
            prompt, output = self._sizes.means()
            share = self.niw_share if self.niw_share is not None else 2.0 * 3600.0 / env.sim_config.niw.deadline_s
            niw = st.queued_niw_tokens * share / 3600.0 * prompt / (prompt + output)
            demand = peak_rate(minutes, self.smoothing_minutes) + niw
        gpus = np.broadcast_to(view.gpus_per_server()[:, None], demand.shape)  # an instance fills a server
        hourly = gpus * view.cost_per_gpu_hour()[:, None]
        result = plan_instances(demand, per_instance, gpus, view.cost_per_gpu_hour(), view.servers(), current,
                                startup_cost=hourly * view.reclaim_s / 3600.0, min_instances=view.min_instances)
        plan = np.asarray(result.instances, dtype=np.int64)
        self._solve_times.append(result.solve_time_s)
        self.plan_log.append((now, plan.copy()))
        previous = current if self._last_plan is None else self._last_plan
        self._last_plan = plan
        self._targets = t = post_process(self.post_processing, previous, plan)
        on_need_ups = self.mode in ("lt_u", "lt_ua")
        self._goal = np.minimum(t.now, current) if on_need_ups else t.now.copy()
        self._bump[:] = 0
        self._plan_time = now
        self._delay_pending = not np.array_equal(t.now, t.later)

    def _instance_throughput(self, env) -> np.ndarray:
        """Prompt tokens per second one instance of each endpoint is planned to serve: from
        the performance model, or (``plan_throughput: fixed``) ``arbiter.instance_tokens_per_min``."""
        fixed = self._arbiter.instance_tokens_per_min
        if self._arbiter.plan_throughput == "fixed":
            per_model = np.array([fixed[m] for m in self._view.model_names]) / 60.0
            return np.broadcast_to(per_model, (env.n_regions, env.n_models)).copy()
        caps = endpoint_capacities(env, self._sizes, **self.capacity_limits)
        return np.vectorize(lambda c: c.prompt_tokens_per_s, otypes=[float])(caps)

    def _window_max_demand(self, now: float) -> np.ndarray:
        """SageServe's demand for the hour, tokens per second (``WINDOW_MINUTES``, ``DEV_SHARE``)."""
        f = self._precomputed
        first, last = WINDOW_MINUTES
        prod = f.window_max(now + 60.0 * first, now + 60.0 * last)
        dev = f.dev_max_prompt(0.0, 3600.0) if now < 3600.0 else f.dev_max_prompt(now - 3600.0, now)
        return (prod + DEV_SHARE * dev) / 60.0

    def _demand_minutes(self, view) -> Optional[np.ndarray]:
        """Per-minute IW prompt tokens expected in the coming window, (window_minutes, R, M); None if the
        history is too short. The oracle reads the true future; the others forecast it, or
        read the precomputed forecasts (``arbiter.forecasts``) of the minutes to come."""
        self._plan_minute = view.history_minutes()  # index of the coming minute in demand_history()
        if self.mode == "oracle":
            w = self.window_minutes
            future = view.future_demand(w)
            self._forecast = np.concatenate([future, np.zeros((w - len(future),) + future.shape[1:])])
            return self._forecast
        if self._precomputed is not None:
            start = int(view.now // 60)
            w = self.window_minutes
            ahead = self._precomputed.prod_tokens_per_min[start:start + w]
            self._forecast = np.concatenate([ahead, np.zeros((w - len(ahead),) + ahead.shape[1:])])
            return self._forecast
        history = view.demand_history()
        if len(history) < self.min_history_minutes:
            self._forecast = None
            return None
        fc = self._forecasters.forecast(history, self.window_minutes)
        self._forecast = fc
        self._to_score.append((self._plan_minute, fc))
        return fc

    def _score_forecasts(self) -> None:
        """Normalized MAE of every past hour's forecast whose minutes have all passed."""
        from sageserve_env.workload.forecast import normalized_mae

        history = self._view.demand_history()
        waiting = []
        for start, fc in self._to_score:
            if start + len(fc) > len(history):
                waiting.append((start, fc))
                continue
            actual = history[start:start + len(fc)]
            for r, m in np.ndindex(actual.shape[1:]):
                err = normalized_mae(actual[:, r, m], fc[:, r, m])
                if np.isfinite(err):
                    self._errors.append(float(err))
        self._to_score = waiting

    # -- within the hour ------------------------------------------------------------------
    def _release(self, view, st, current, now):
        """Apply the delayed scale-downs, release scale-ups on need, add or give back
        instances beyond the plan (LT-U, LT-UA)."""
        t = self._targets
        delayed = now >= self._plan_time + self.change_delay_s
        if self._delay_pending and delayed:
            self._goal = np.minimum(self._goal, t.later + self._bump)
            self._delay_pending = False
        ceiling = np.maximum(t.later if delayed else t.now, t.on_need) + self._bump
        due = (self._trigger.decisions(view) > 0) & (now >= self._cool_until)
        ready = due & (current >= self._goal)
        util = st.utilization
        on_need = ready & (util > UP_UTILIZATION) & (self._goal < ceiling)
        over = ready & (self._goal >= ceiling) & self._override(view, util)
        give_back = due & (self._bump > 0) & (util < DOWN_UTILIZATION) & can_scale_down(view, st)
        up = on_need | over
        delays = scale_up_delays(view, st, up, self._up_waits)
        up &= np.isfinite(delays)
        over &= up
        self._goal += up.astype(np.int64) - give_back.astype(np.int64)
        self._bump += over.astype(np.int64) - give_back.astype(np.int64)
        self._cool_until = np.where(up, now + delays, np.where(give_back, now + self._down_wait, self._cool_until))

    def _override(self, view, util) -> np.ndarray:
        """Where LT-U / LT-UA add an instance beyond the plan."""
        if self.mode == "lt_u":
            return util > OVERRIDE_UTILIZATION
        if self.mode == "lt_ua" and self._arbiter.ua_tokens == "region":
            return self._region_check(view, util.shape)
        if self.mode == "lt_ua" and self._forecast is not None:
            history = view.demand_history()
            k = len(history) - 1 - self._plan_minute  # the last full minute, within this hour's forecast
            if 0 <= k < len(self._forecast):
                return history[-1] > self.ua_threshold * self._forecast[k]
        return np.zeros(util.shape, dtype=bool)

    def _region_check(self, view, shape) -> np.ndarray:
        """SageServe's ARIMA check (``GlobalArbiterARIMAChecking``): one per region, it counts the
        prompt tokens of every request of the region in the last 60 s and divides them by the
        prediction for the next minute of the forecast it was given last, the region's last
        model's (``load_predicted_traces`` sets each model's in turn)."""
        if self._precomputed is not None:
            minutes = self._precomputed.prod_tokens_per_min
            k = int(view.now // 60) + 1
            predicted = minutes[k, :, -1] if k < len(minutes) else np.zeros(shape[0])
        elif self._forecast is not None:
            k = min(max(view.history_minutes() - self._plan_minute, 0), len(self._forecast) - 1)
            predicted = self._forecast[k, :, -1]
        else:
            return np.zeros(shape, dtype=bool)
        tokens = self._recent.tokens(view.now)
        with np.errstate(divide="ignore", invalid="ignore"):
            over = tokens > self.ua_threshold * predicted
        return np.broadcast_to(over[:, None], shape)

    def stats(self):
        self._score_forecasts()
        solves = np.asarray(self._solve_times)
        return {
            "ilp_solves": len(solves),
            "ilp_solve_s_mean": float(solves.mean()) if len(solves) else 0.0,
            "ilp_solve_s_max": float(solves.max()) if len(solves) else 0.0,
            "forecast_nmae": float(np.mean(self._errors)) if self._errors else float("nan"),
            "forecast_series_scored": len(self._errors),
            "arima_fallbacks": sum(getattr(f, "fallbacks", 0) for f in self._forecasters.models.values()),
        }


class RecentTokens:
    """Prompt tokens of every request (any tier) per home region that arrived in the last 60 s,
    from the arrivals the simulator has let in (``SimView.arrived_since``)."""

    WINDOW_S = 60.0

    def __init__(self, n_regions: int) -> None:
        self._n_regions = n_regions
        self._seen = 0
        self._at = np.zeros(0)
        self._region = np.zeros(0, dtype=np.int64)
        self._tokens = np.zeros(0)

    def add(self, view) -> None:
        """Take in the requests that arrived since the last call; forget those older than 60 s."""
        self._seen, new = view.arrived_since(self._seen)
        keep = self._at > view.now - self.WINDOW_S
        self._at = np.concatenate([self._at[keep], new["arrival_s"]])
        self._region = np.concatenate([self._region[keep], new["region"].astype(np.int64)])
        self._tokens = np.concatenate([self._tokens[keep], new["prompt_tokens"].astype(float)])

    def tokens(self, now: float) -> np.ndarray:
        """Tokens per region of the arrivals in (now - 60 s, now], (R,)."""
        inside = self._at > now - self.WINDOW_S
        return np.bincount(self._region[inside], weights=self._tokens[inside], minlength=self._n_regions)
