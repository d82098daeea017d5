"""The fast fidelity (``sageserve_env/sim/flow.py``): same env surface, its own invariants,
determinism, and agreement with the detailed simulator on a small, loaded preset."""

import hashlib

import numpy as np
import pytest

from agents import make_policy
from agents.runner import run_episode
from sageserve_env.env.sageserve_env import SageServeEnv
from sageserve_env.sim.metrics import summarize

# small preset loaded enough that one instance of A falls behind at night: a cost/SLO trade-off
LOADED = ["workload.requests_per_day=1.2e6"]


def _masked_random(env, rng):
    masks = env.action_masks().reshape(env.n_endpoints, -1)
    return np.array([rng.choice(np.flatnonzero(m)) for m in masks])


def test_same_spaces_in_both_fidelities():
    detailed = SageServeEnv(scenario="small", horizon_s=600.0)
    fast = SageServeEnv(scenario="small", horizon_s=600.0, fidelity="fast")
    assert fast.observation_space == detailed.observation_space
    assert fast.action_space == detailed.action_space
    assert fast.reset(seed=0)[0].keys() == detailed.reset(seed=0)[0].keys()


def test_bad_fidelity_is_refused():
    with pytest.raises(ValueError, match="fidelity"):
        SageServeEnv(scenario="small", fidelity="coarse")
    with pytest.raises(ValueError, match="fidelity_tick_s"):
        SageServeEnv(scenario="small", fidelity="fast", fidelity_tick_s=0)


@pytest.mark.parametrize("overrides", [[], ["scaling.min_instances=0", "routing.delay_s=1", "slo.drop_iw_after_s=20",
                                            "slo.iw_e2e_s=30", "niw.feed_async=false"] + LOADED])
def test_random_scaling_keeps_invariants_and_reward_terms(overrides):
    env = SageServeEnv(scenario="small", horizon_s=3600.0, decision_interval_s=30.0, fidelity="fast",
                       sim_overrides=overrides, reward="slo")
    rng = np.random.default_rng(0)
    obs, info = env.reset(seed=1)
    done = False
    while not done:
        obs, reward, _, done, info = env.step(_masked_random(env, rng))
        assert env.observation_space.contains(obs)
        assert sum(info["reward_terms"].values()) == pytest.approx(reward, abs=1e-9)
        env.sim.check_invariants()
    assert env.sim.fleet.scale_log and info["kpis"]["requests_total"] == env.sim.arrived


def _trajectory_hash(seed):
    env = SageServeEnv(scenario="small", horizon_s=1800.0, fidelity="fast", sim_overrides=LOADED)
    rng = np.random.default_rng(123)
    digest = hashlib.sha256()
    obs, _ = env.reset(seed=seed)
    done = False
    while not done:
        obs, reward, _, done, info = env.step(_masked_random(env, rng))
        for v in obs.values():
            digest.update(v.tobytes())
        digest.update(repr((reward, sorted(info["kpis"].items()))).encode())
    return digest.hexdigest()


def test_same_seed_same_trajectory():
    assert _trajectory_hash(3) == _trajectory_hash(3)
    assert _trajectory_hash(3) != _trajectory_hash(4)


def test_decision_points_off_the_tick_grid():
    """A partial tick (decision interval off the tick grid) processes exactly the arrivals up to now."""
    env = SageServeEnv(scenario="small", horizon_s=1800.0, decision_interval_s=7.0, fidelity="fast")
    env.reset(seed=0)
    done = False
    while not done:
        done = env.step(np.full(env.n_endpoints, env.max_delta))[3]
        env.sim.check_invariants()
    assert env.sim.arrived == int(np.searchsorted(env.sim.workload.arrival_s, env.sim.now, side="right"))


def _run(spec, fidelity):
    name, _, k = spec.partition("@")
    policy = make_policy(name)
    overrides = LOADED + ([f"scaling.initial_instances={k}"] if k else [])
    env = SageServeEnv(**{**policy.env_kwargs(), "scenario": "small", "horizon_s": 3 * 3600.0,
                          "fidelity": fidelity, "sim_overrides": overrides})
    result = run_episode(env, policy, seed=0)
    summary = summarize(env.sim, result.wall_seconds)
    return result.kpis["billed_gpu_hours"], summary["iw_slo_attainment"], result.reward


@pytest.fixture(scope="module")
def agreement():
    specs = ("static@1", "static@2", "static@4", "reactive")
    return {spec: {fid: _run(spec, fid) for fid in ("detailed", "fast")} for spec in specs}


def test_billed_gpu_hours_agree(agreement):
    for spec, by in agreement.items():
        assert by["fast"][0] == pytest.approx(by["detailed"][0], rel=0.05), spec


def test_static_allocations_rank_alike(agreement):
    """More instances: more cost and no worse SLO, in both fidelities; attainment close."""
    for fid in ("detailed", "fast"):
        cost = [agreement[f"static@{k}"][fid][0] for k in (1, 2, 4)]
        slo = [agreement[f"static@{k}"][fid][1] for k in (1, 2, 4)]
        assert cost[0] < cost[1] < cost[2], fid
        assert slo[0] < slo[1] <= slo[2], fid
    for spec, by in agreement.items():
        assert by["fast"][1] == pytest.approx(by["detailed"][1], abs=0.05), spec
