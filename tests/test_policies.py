"""Baseline policies: short episodes keep the simulator sound; each rule does what its docs say."""

import dataclasses

import numpy as np
import pytest

from agents import make_policy
from agents.long_term import LongTermPolicy, Targets, peak_rate, post_process
from agents.reactive import ReactivePolicy
from agents.runner import make_env_for, run_episode
from agents.throughput import TokenSizes, endpoint_capacities
from sageserve_env.env.sageserve_env import SageServeEnv
from sageserve_env.workload.workload import IW, Workload

BASELINES = ["reactive", "lt_i", "lt_u", "lt_ua", "oracle", "chiron"]
DELAY = {"undrain": 0.0, "reclaim": 65.0, "load_free": 155.0, "load_other": 155.0, "drain": 65.0}


def _workload(env, times, model, prompt=1000, output=200, tier=IW):
    """Requests at ``times`` (seconds) for ``model`` in the first region."""
    cfg = env.sim_config
    t = np.sort(np.asarray(times, dtype=float))
    n = len(t)
    tier = np.full(n, tier, dtype=np.int8)
    return Workload(tuple(cfg.region_names), tuple(cfg.model_names), t, np.zeros(n, np.int16), np.zeros(n, np.int16),
                    np.full(n, cfg.model_names.index(model), np.int16), tier, np.full(n, prompt, np.int32),
                    np.full(n, output, np.int32), np.where(tier == IW, 10.0, 86400.0), np.full(n, -1, np.int64),
                    priority_orders=((0,),))


def _steady(env, rate_per_s, horizon_s, model, seed=0, **kw):
    rng = np.random.default_rng(seed)
    return _workload(env, rng.uniform(0.0, horizon_s, int(rate_per_s * horizon_s)), model, **kw)


@pytest.mark.parametrize("name", BASELINES)
def test_short_episode_keeps_invariants(name):
    policy = make_policy(name)
    env = make_env_for(policy, {"scenario": "small", "horizon_s": 5400.0})
    result = run_episode(env, policy, seed=3)
    env.sim.check_invariants()
    assert result.steps == int(5400.0 / policy.decision_interval_s)
    assert result.kpis["requests_total"] > 0
    assert isinstance(result.policy_stats, dict)


def _actions(sim, r, m):
    return [(t, kind) for t, rr, mm, kind in sim.fleet.scale_log if (rr, mm) == (r, m)]


def test_reactive_scales_up_under_overload_then_down_when_idle_with_cooldowns():
    policy = ReactivePolicy()
    env = make_env_for(policy, {"scenario": "small", "horizon_s": 1500.0})
    # 2500 long requests to model A in the first 20 s fill its 4 instances far beyond 0.5; model
    # C gets nothing and is idle all along
    burst = _workload(env, np.linspace(0.0, 20.0, 2500), "A", prompt=3000, output=1000)
    run_episode(env, policy, seed=0, options={"workload": burst})
    sim = env.sim
    b, d = sim.model_names.index("A"), sim.model_names.index("C")
    ups = [t for t, k in _actions(sim, 0, b) if k != "drain"]
    # (at t=0 nothing has arrived yet, so the first decision drains one; then it waits 65 s)
    assert ups and ups[0] <= DELAY["drain"] + policy.decision_interval_s, "the overloaded endpoint scales up"
    assert any(t > ups[-1] and k == "drain" for t, k in _actions(sim, 0, b)), "and down once it is served"
    assert [k for _, k in _actions(sim, 0, d)] == ["drain"] * 3, "the idle endpoint drains to min_instances"
    for r, m in ((0, b), (0, d)):
        acts = _actions(sim, r, m)
        for (t0, kind), (t1, _) in zip(acts, acts[1:]):
            assert t1 - t0 >= DELAY[kind] - 1e-9, f"acted again {t1 - t0:.0f} s after a {kind}"
    sim.check_invariants()


@pytest.mark.parametrize("previous, new, expected", [
    (5, 3, {"immediate": (3, 3, 3), "delay_changes": (5, 3, 3), "keep_maximum_instances": (5, 5, 5),
            "keep_minimum_instances": (3, 3, 3)}),
    (3, 5, {"immediate": (5, 5, 5), "delay_changes": (5, 5, 5), "keep_maximum_instances": (5, 5, 5),
            "keep_minimum_instances": (3, 3, 5)}),
])
def test_post_processing_strategies(previous, new, expected):
    for strategy, (now, later, on_need) in expected.items():
        t = post_process(strategy, np.array([[previous]]), np.array([[new]]))
        assert isinstance(t, Targets)
        assert (t.now.item(), t.later.item(), t.on_need.item()) == (now, later, on_need), strategy
    with pytest.raises(ValueError, match="post_processing"):
        post_process("evenly_distributed", np.zeros(1), np.zeros(1))


def test_peak_rate_is_the_highest_window_mean_per_second():
    minutes = np.zeros((60, 1, 2))
    minutes[10:15, 0, 0] = 600.0
    minutes[:, 0, 1] = 120.0
    np.testing.assert_allclose(peak_rate(minutes, 5), [[10.0, 2.0]])
    np.testing.assert_allclose(peak_rate(minutes, 10), [[5.0, 2.0]])


def _run_until(env, policy, t_end, workload=None, seed=0):
    obs, _ = env.reset(seed=seed, options={"workload": workload} if workload is not None else None)
    policy.reset(env, seed)
    while env.sim.now < t_end:
        obs, *_ = env.step(policy.act(obs, env))


def test_lt_i_reaches_its_plan_within_the_hour():
    policy = LongTermPolicy("lt_i")
    env = make_env_for(policy, {"scenario": "small", "horizon_s": 7200.0})
    _run_until(env, policy, 3600.0 + 600.0, _steady(env, 2.0, 7200.0, "C"))
    assert [t for t, _ in policy.plan_log] == [900.0, 3600.0]  # once 15 min of history exist, then hourly
    t, plan = policy.plan_log[-1]
    st = env.view().endpoints()
    np.testing.assert_array_equal(st.active + st.starting, plan)
    assert policy.stats()["ilp_solves"] == 2


def test_lt_u_releases_planned_scale_ups_on_need_and_lt_i_at_once():
    env = SageServeEnv(scenario="small", horizon_s=600.0)
    env.reset(seed=0, options={"workload": _steady(env, 0.1, 600.0, "C")})
    view = env.view()
    idle = view.endpoints()
    busy = dataclasses.replace(idle, utilization=np.full_like(idle.utilization, 0.6))
    hot = dataclasses.replace(idle, utilization=np.full_like(idle.utilization, 0.95))
    current = (idle.active + idle.starting).astype(np.int64)
    plan = current + 2
    goals = {}
    for mode in ("lt_i", "lt_u"):
        policy = LongTermPolicy(mode)
        policy.reset(env)
        policy._targets = post_process("immediate", current, plan)
        policy._goal = plan.copy() if mode == "lt_i" else current.copy()
        policy._release(view, idle, current, 0.0)
        goals[mode, "idle"] = policy._goal.copy()
        policy._release(view, busy, current, 0.0)
        goals[mode, "busy"] = policy._goal.copy()
    np.testing.assert_array_equal(goals["lt_i", "idle"], plan)
    np.testing.assert_array_equal(goals["lt_u", "idle"], current)  # utilization 0: nothing released
    np.testing.assert_array_equal(goals["lt_u", "busy"], current + 1)  # one at a time, then a cool-down
    # with the plan reached, utilization > 0.9 adds one beyond it, given back below 0.25
    policy = LongTermPolicy("lt_u")
    policy.reset(env)
    policy._targets = post_process("immediate", current, current)
    policy._goal = current.copy()
    policy._release(view, hot, current, 0.0)
    np.testing.assert_array_equal(policy._goal, current + 1)
    policy._release(view, idle, current + 1, 1000.0)
    np.testing.assert_array_equal(policy._goal, current)


def test_oracle_sees_the_next_hour_and_forecasters_do_not():
    env = SageServeEnv(scenario="small", horizon_s=3660.0)
    base = _steady(env, 1.0, 7200.0, "C", seed=1)
    spike_times = np.concatenate([base.arrival_s, np.linspace(4200.0, 4500.0, 6000)])
    spiked = _workload(env, spike_times, "C", prompt=2000)
    base = _workload(env, base.arrival_s, "C", prompt=2000)
    plans = {}
    for mode in ("oracle", "lt_i"):
        for label, w in (("base", base), ("spiked", spiked)):
            policy = LongTermPolicy(mode)
            _run_until(env, policy, 3600.0 + 1.0, w)
            plans[mode, label] = dict((t, p.tolist()) for t, p in policy.plan_log)
    # the oracle plans at t=0 and t=1h; the spike (in the second hour) moves only the 1 h plan
    assert plans["oracle", "base"][0.0] == plans["oracle", "spiked"][0.0]
    assert plans["oracle", "base"][3600.0] != plans["oracle", "spiked"][3600.0]
    # LT-I has no history at t=0 (keeps the allocation until 15 min have passed) and cannot see
    # the spike at t=1h
    assert list(plans["lt_i", "base"]) == [900.0, 3600.0]
    assert plans["lt_i", "base"] == plans["lt_i", "spiked"]


def test_instance_capacity_comes_from_the_perf_model_and_respects_the_memory_target():
    env = SageServeEnv(scenario="small", horizon_s=600.0)
    env.reset(seed=0)
    sizes = TokenSizes(env)
    prompt, output = sizes.means()
    kv = env.view().kv_capacity_tokens()
    low = endpoint_capacities(env, sizes, target_utilization=0.25)
    high = endpoint_capacities(env, sizes, target_utilization=0.5)
    for r, m in np.ndindex(kv.shape):
        assert 0 < low[r, m].prompt_tokens_per_s <= high[r, m].prompt_tokens_per_s
        assert high[r, m].batch == 1 or high[r, m].batch * (prompt[r, m] + output[r, m]) <= 0.5 * kv[r, m]
    # the small model serves more per instance than the big one
    b, d = env.sim_config.model_names.index("A"), env.sim_config.model_names.index("C")
    assert high[0, d].prompt_tokens_per_s > high[0, b].prompt_tokens_per_s


def test_unknown_mode_and_strategy_are_rejected():
    with pytest.raises(ValueError, match="mode"):
        LongTermPolicy("lt_x")
    with pytest.raises(ValueError, match="post_processing"):
        LongTermPolicy("lt_i", post_processing="sometimes")
