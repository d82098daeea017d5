"""The endpoints of vectorized worlds as agents of one shared policy (agents/endpoint_agents.py)."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

import sageserve_env  # noqa: F401  (registers the IDs)
import train
from agents import make_policy
from agents.endpoint_agents import EndpointAgents, EndpointFeatures, agent_rewards
from agents.runner import make_env_for, run_episode
from agents.vector_training import SB3VectorEnv
from sageserve_env.env.sageserve_env import observation_space

BURST = "sageserve_env/Burst-vec-v1"


def _worlds(n, **kw):
    return SB3VectorEnv(gym.make_vec(BURST, num_envs=n, vectorization_mode="vector_entry_point", max_delta=4,
                                     horizon_s=600.0, **kw))


def test_features_hold_the_endpoints_own_entries_its_models_mean_and_its_ids():
    R, M = 3, 4
    space = observation_space(R, M)
    rm = np.arange(R)[:, None] * 10.0 + np.arange(M)[None, :]  # endpoint (r, m) -> 10 r + m
    obs = {k: np.zeros(s.shape, dtype=np.float32) for k, s in space.spaces.items()}
    obs["ttft"] = rm.astype(np.float32)
    region = np.array([100.0, 103.0, 109.0])  # the model mean of the region entry: 104
    obs["region"][:, 0] = region
    obs["time"][:] = [0.1, 0.2, 0.3, 0.4]
    flat = spaces.flatten(space, obs)
    features = EndpointFeatures(flat.size, R * M)
    x = features(flat[None])[0]
    assert x.shape == (R * M, features.size)
    for r in range(R):
        for m in range(M):
            row = x[r * M + m]
            assert 10 * r + m in row and rm[:, m].mean() in row  # its TTFT and its model's mean TTFT
            assert region[r] in row and 104.0 in row and not (set(np.delete(region, r)) & set(row.tolist()))
            np.testing.assert_array_equal(row[-(R + M):], np.r_[np.eye(R)[r], np.eye(M)[m]])
            assert {0.1, 0.2, 0.3, 0.4} <= {round(v, 6) for v in row.tolist()}


def test_agents_split_each_world_and_share_their_models_misses():
    worlds, alone = _worlds(2), _worlds(2)
    agents = EndpointAgents(worlds)
    E = agents.n_endpoints
    agents.seed(10000)
    alone.seed(10000)
    obs = agents.reset()
    np.testing.assert_array_equal(obs.reshape(2, E, -1), agents.features(alone.reset()))
    assert agents.observation_space.contains(obs[0]) and agents.action_space == spaces.Discrete(9)
    rng = np.random.default_rng(0)
    for step in range(10):
        masks = agents.action_masks()
        np.testing.assert_array_equal(masks.reshape(2, -1), alone.action_masks())
        action = (rng.random(masks.shape) * masks).argmax(1)
        obs, reward, dones, infos = agents.step(action)
        _, world_reward, world_dones, world_infos = alone.step(action.reshape(2, E))
        world_cost = alone.endpoint_terms["cost"].sum(1)
        np.testing.assert_allclose(reward.reshape(2, E).sum(1), world_cost + 3 * (world_reward - world_cost), rtol=1e-5)
        np.testing.assert_array_equal(dones, np.repeat(world_dones, E))
        service = sum(v for k, v in alone.endpoint_terms.items() if k != "cost").reshape(2, 3, 4).sum(1)
        team = reward.reshape(2, 3, 4) - alone.endpoint_terms["cost"].reshape(2, 3, 4)
        np.testing.assert_allclose(team, np.broadcast_to(service[:, None], team.shape), rtol=1e-5, atol=1e-7)
    assert dones.all() and all(i["TimeLimit.truncated"] and "terminal_observation" in i for i in infos)
    assert [i["kpis"] for i in infos[:E]] == [world_infos[0]["kpis"]] * E


def test_agent_rewards_give_each_endpoint_its_cost_and_all_of_its_models_misses():
    terms = {k: np.zeros((1, 6)) for k in ("cost", "iw_slo_miss", "iw_e2e_miss", "niw_deadline_miss", "drop")}
    terms["cost"][0] = [-1, -2, -3, -4, -5, -6]      # 2 regions x 3 models
    terms["iw_slo_miss"][0] = [-10, 0, 0, -30, 0, -6]
    terms["drop"][0, 1] = -0.5
    np.testing.assert_allclose(agent_rewards(terms, 2, 3)[0], [-41, -2.5, -9, -44, -5.5, -12])


def test_a_trained_endpoint_agent_acts_in_the_task_envs(tmp_path):
    """train.py endpoint_agents=true trains, validates in world steps, and the saved model runs as
    a policy in the detailed-or-fast single env of the same spaces (``ckpt:``)."""
    assert train.main([f"log_folder={tmp_path}", "env=sageserve_env/SageServeSmall-fast-v1", "endpoint_agents=true",
                       "hyperparams=endpoint_agents", "n_envs=4", "hyperparams.n_steps=8", "hyperparams.batch_size=32",
                       "n_timesteps=64", "eval_freq=32", "validation_seeds=[900,901]", "save_freq=0",
                       "progress_bar=false", "tensorboard=false", "env_kwargs={horizon_s: 600, max_delta: 2}"]) == 0
    run = next(tmp_path.glob("*/*"))
    rows = (run / "validation.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["4", "36", "64"]  # world steps: after the first step of 4 worlds, then every 32
    policy = make_policy(f"ckpt:{run / 'model.zip'}")
    env = make_env_for(policy, {"scenario": "small", "horizon_s": 600.0})
    result = run_episode(env, policy, seed=1001)
    assert result.steps == 10
    with pytest.raises(ValueError, match="expects observations"):
        policy.check_env(make_env_for(policy, {"scenario": "paper", "horizon_s": 600.0}))


def test_endpoint_agents_need_a_vectorized_env(tmp_path, capsys):
    assert train.main([f"log_folder={tmp_path}", "endpoint_agents=true"]) == 2
    assert "endpoint_agents needs a vectorized env" in capsys.readouterr().err
