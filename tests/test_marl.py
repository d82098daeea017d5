"""The per-region PettingZoo env: API test, seeding, how it splits observations, actions, rewards."""

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test

from sageserve_env.env.sageserve_env import SageServeEnv
from sageserve_env.marl import SageServeParallelEnv, parallel_env

# two regions, so that the split is not trivial; short episodes
TWO_REGIONS = {"scenario": "small", "horizon_s": 1200.0,
               "sim_overrides": {"regions": [{"name": "westus", "servers": 12}, {"name": "eastus", "servers": 12}]}}


def test_parallel_api_test_passes():
    parallel_api_test(parallel_env(**TWO_REGIONS), num_cycles=40)


def test_seeds_fix_the_trajectory():
    parallel_seed_test(lambda: parallel_env(**TWO_REGIONS), num_cycles=40)


def _hold(env):
    return {a: np.full(env.n_models, env.env.max_delta) for a in env.agents}


def test_agents_see_their_regions_endpoints_and_the_global_features():
    env = parallel_env(**TWO_REGIONS)
    obs, infos = env.reset(seed=3)
    base = SageServeEnv(**TWO_REGIONS)
    full, _ = base.reset(seed=3)
    assert env.agents == ["westus", "eastus"]
    for r, agent in enumerate(env.agents):
        assert env.observation_space(agent).contains(obs[agent])
        np.testing.assert_array_equal(obs[agent]["instances"], full["instances"][r])
        np.testing.assert_array_equal(obs[agent]["region"], full["region"])  # shared
        np.testing.assert_array_equal(obs[agent]["time"], full["time"])
        np.testing.assert_array_equal(infos[agent]["action_mask"],
                                      base.action_masks().reshape(2, -1)[r])
    np.testing.assert_array_equal(env.state(), np.concatenate([v.ravel() for v in full.values()]))


def test_joint_step_is_the_base_step_and_region_rewards_sum_to_its_reward():
    env = parallel_env(**TWO_REGIONS)
    base = SageServeEnv(**TWO_REGIONS)
    env.reset(seed=5)
    base.reset(seed=5)
    md = base.max_delta
    total_marl, total_base = 0.0, 0.0
    for step in range(20):
        actions = {"westus": np.array([md - 1 if step == 0 else md, md]), "eastus": np.array([md, md])}
        obs, rewards, _, trunc, infos = env.step(actions)
        full, reward, _, _, info = base.step(np.concatenate([actions["westus"], actions["eastus"]]))
        np.testing.assert_array_equal(obs["eastus"]["instances"], full["instances"][1])
        assert sum(rewards.values()) == pytest.approx(reward, rel=1e-9, abs=1e-12)
        for k, v in info["reward_terms"].items():
            assert sum(infos[a]["reward_terms"][k] for a in env.possible_agents) == pytest.approx(v, abs=1e-12)
        total_marl += rewards["westus"]
        total_base += rewards["eastus"]
    # westus drained an instance of model A: it pays less for GPUs than eastus
    westus_cost = infos["westus"]["reward_terms"]["cost"]
    assert westus_cost > infos["eastus"]["reward_terms"]["cost"]  # costs are negative terms
    assert trunc == {"westus": True, "eastus": True} and env.agents == []
    with pytest.raises(RuntimeError, match="reset"):
        env.step(actions)


def test_full_service_share_gives_every_region_the_whole_penalty():
    split = parallel_env(**TWO_REGIONS, reward="slo")
    full = parallel_env(**TWO_REGIONS, reward="slo", service_share="full")
    split.reset(seed=2)
    full.reset(seed=2)
    for _ in range(20):
        low = {a: np.zeros(split.n_models, dtype=np.int64) for a in split.agents}  # drain all it can
        _, _, _, _, i_split = split.step(low)
        _, _, _, _, i_full = full.step(low)
        for a in split.possible_agents:
            assert i_full[a]["reward_terms"]["cost"] == i_split[a]["reward_terms"]["cost"]
            for k in ("iw_slo_miss", "niw_deadline_miss", "drop"):
                assert i_full[a]["reward_terms"][k] == pytest.approx(2 * i_split[a]["reward_terms"][k])


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="service_share"):
        SageServeParallelEnv(service_share="half", **TWO_REGIONS)
    with pytest.raises(ValueError, match="either"):
        SageServeParallelEnv(env=SageServeEnv(scenario="small"), scenario="small")
    env = parallel_env(**TWO_REGIONS)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="eastus"):
        env.step({"westus": np.zeros(env.n_models, dtype=np.int64)})
