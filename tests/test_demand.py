"""agents/demand.py: the demand planner's targets, and the residual action over it in the
vectorized worlds against the planner acting alone in one-world envs."""

import gymnasium as gym
import numpy as np
import pytest

import sageserve_env  # noqa: F401  (registers the IDs)
from agents import make_policy
from agents.demand import RATE_SCALE, DemandPlan, ResidualDemand, requests_per_instance
from agents.training import residual_masks
from agents.vector_training import make_vector_env

ENV = "sageserve_env/SageServeSmall-fast-v1"
KWARGS = {"horizon_s": 1800.0, "max_delta": 2}


def _obs(plan, rate, have, servers):
    """An observation of one env whose endpoints get ``rate`` requests/s and hold ``have``."""
    shape = rate.shape
    obs = {"arrival_rate": np.zeros(shape + (3,), dtype=np.float32), "instances": np.zeros(shape + (4,), dtype=np.float32)}
    obs["arrival_rate"][..., plan.window] = np.log1p(rate) / RATE_SCALE
    obs["instances"][..., 0] = have / servers
    return obs


def test_targets_are_the_instances_the_arrivals_need_within_the_bounds():
    env = gym.make(ENV, **KWARGS).unwrapped
    cfg = env.sim_config
    plan = DemandPlan(cfg)
    capacity = requests_per_instance(cfg)
    assert capacity.shape == (env.n_regions, env.n_models) and (capacity > 0).all()
    servers = plan.servers
    k = np.arange(env.n_endpoints).reshape(capacity.shape) % 3 + 2.5  # 2.5, 3.5, 4.5 instances of load
    obs = _obs(plan, k * capacity, np.ones(capacity.shape), servers)
    np.testing.assert_array_equal(plan.targets(obs), np.ceil(k))
    np.testing.assert_array_equal(plan.changes(obs), (np.ceil(k) - 1).reshape(-1))
    idle = _obs(plan, np.zeros(capacity.shape), np.ones(capacity.shape), servers)
    np.testing.assert_array_equal(plan.targets(idle), cfg.scaling.min_instances)
    flood = _obs(plan, 1e6 * capacity, np.ones(capacity.shape), servers)
    np.testing.assert_array_equal(plan.targets(flood), np.broadcast_to(servers, capacity.shape))


def test_plan_rejects_what_it_cannot_read():
    cfg = gym.make(ENV, **KWARGS).unwrapped.sim_config
    with pytest.raises(ValueError, match="rate windows"):
        DemandPlan(cfg, window_s=120.0)
    with pytest.raises(ValueError, match="headroom"):
        DemandPlan(cfg, headroom=0.0)
    with pytest.raises(ValueError, match="rate windows"):
        make_policy("demand", window_s=120.0)  # refused when built, before any episode


def test_no_adjustment_in_the_worlds_is_the_planner_alone_in_one_world_envs():
    """Every world of ``ResidualDemand`` playing "no adjustment" follows the trajectory of
    ``DemandPolicy`` in the one-world env of the same day, to the last digit."""
    worlds = make_vector_env(ENV, KWARGS, 2, reach=2)
    worlds.reset(seed=900)
    middle = np.full((2, worlds.n_endpoints), 2)
    returns = np.zeros(2)
    while True:
        _, reward, _, truncated, info = worlds.step(middle)
        returns += reward
        if truncated.all():
            break
    kpis = info["final_info"]["kpis"]
    policy = make_policy("demand")
    for i in range(2):
        env = gym.make(ENV, **KWARGS)
        obs, _ = env.reset(seed=900 + i)
        policy.reset(env.unwrapped, 900 + i)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, step_info = env.step(policy.act(obs, env.unwrapped))
            total += reward
            done = terminated or truncated
        assert total == returns[i]
        assert step_info["kpis"]["billed_gpu_hours"] == kpis["billed_gpu_hours"][i]
        for name in ("scale_ups", "scale_downs", "iw_slo_attainment_served"):
            assert step_info["kpis"][name] == kpis[name][i]
        assert kpis["scale_downs"][i] > 0  # the plan acted


def test_residual_masks_are_the_one_env_rule_world_by_world_with_no_adjustment_always_allowed():
    worlds = make_vector_env(ENV, KWARGS, 3, reach=2)
    obs, _ = worlds.reset(seed=900)
    masks = worlds.action_masks()
    assert masks.shape == (3, worlds.n_endpoints * 5) and masks.reshape(3, -1, 5)[..., 2].all()
    full = worlds.unwrapped.action_masks()
    changes = np.clip(worlds.plan.changes(obs), -2, 2)
    for i in range(3):
        np.testing.assert_array_equal(masks[i], residual_masks(full[i], changes[i], 2, 2))


@pytest.mark.parametrize("actions, match", [
    (np.full((2, 3), 2), "shape"),
    (None, "0..4"),
    ("float", "integers"),
])
def test_residual_actions_are_checked(actions, match):
    worlds = make_vector_env(ENV, KWARGS, 2, reach=2)
    worlds.reset(seed=900)
    if actions is None:
        actions = np.full((2, worlds.n_endpoints), 5)
    elif isinstance(actions, str):
        actions = np.full((2, worlds.n_endpoints), 2.0)
    with pytest.raises(ValueError, match=match):
        worlds.step(actions)


def test_reach_must_be_a_positive_integer():
    base = gym.make_vec(ENV, num_envs=1, vectorization_mode="vector_entry_point", **KWARGS)
    for bad in (0, True, 1.5):
        with pytest.raises(ValueError, match="reach"):
            ResidualDemand(base, reach=bad)
