"""The Gymnasium adapter: API conformance, seeding, vectorization, masks, rewards, bad input."""

import hashlib
import multiprocessing

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sageserve_env  # noqa: F401  (registers the IDs)
from sageserve_env.registration import env_ids
from sageserve_env.env.sageserve_env import SageServeEnv

SHORT = {"horizon_s": 600.0}


def _masked_random(env, rng):
    masks = env.action_masks().reshape(env.n_endpoints, -1)
    return np.array([rng.choice(np.flatnonzero(m)) for m in masks])


@pytest.mark.parametrize("env_id", sorted(env_ids()))
def test_gymnasium_check_env(env_id):
    env = gym.make(f"sageserve_env/{env_id}", **SHORT)
    check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("env_id", sorted(env_ids()))
def test_sb3_check_env(env_id):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    sb3_check_env(SageServeEnv(**{**env_ids()[env_id], **SHORT}), warn=True)


def _trajectory_hash(seed, steps=20):
    env = SageServeEnv(scenario="small", horizon_s=3600.0)
    rng = np.random.default_rng(123)
    digest = hashlib.sha256()
    obs, info = env.reset(seed=seed)
    for _ in range(steps):
        for v in obs.values():
            digest.update(v.tobytes())
        obs, reward, term, trunc, info = env.step(_masked_random(env, rng))
        digest.update(np.float64(reward).tobytes())
        digest.update(repr(sorted(info["kpis"].items())).encode())
        digest.update(repr(info["refused"]).encode())
    return digest.hexdigest()


def test_same_seed_same_trajectory_and_different_seeds_differ():
    assert _trajectory_hash(7) == _trajectory_hash(7)
    assert _trajectory_hash(7) != _trajectory_hash(8)


def test_reward_terms_sum_to_reward_and_kpis_present():
    env = SageServeEnv(scenario="small", horizon_s=1800.0, reward="slo")
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    done = False
    while not done:
        _, reward, term, trunc, info = env.step(_masked_random(env, rng))
        assert reward == pytest.approx(sum(info["reward_terms"].values()), abs=1e-12)
        assert info["reward_terms"]["cost"] < 0  # the fleet always costs something
        done = term or trunc
    assert trunc and not term
    for key in ("requests_total", "requests_completed", "billed_gpu_hours", "donated_gpu_hours", "scale_ups"):
        assert key in info["kpis"]


def test_masked_random_steps_keep_invariants():
    env = SageServeEnv(scenario="small", horizon_s=4 * 3600.0, decision_interval_s=30.0)
    rng = np.random.default_rng(1)
    steps, episodes = 0, 0
    while steps < 5000:
        env.reset(seed=episodes)
        episodes += 1
        done = False
        while not done and steps < 5000:
            _, _, term, trunc, info = env.step(_masked_random(env, rng))
            steps += 1
            done = term or trunc
            if steps % 250 == 0:
                env.sim.check_invariants()
        env.sim.check_invariants()
    assert episodes >= 2


def test_masks_mark_min_instances_and_empty_pool():
    env = SageServeEnv(scenario="small", sim_overrides=["scaling.min_instances=4"], horizon_s=600.0)
    env.reset(seed=0)
    masks = env.action_masks().reshape(env.n_endpoints, -1)
    d = env.max_delta
    # every endpoint sits at its minimum: no scale-down is valid
    assert not masks[:, :d].any() and masks[:, d].all()
    # the free servers of the region bound scale-ups
    free = int(env.view().free_servers()[0])
    assert masks[0, d + 1: d + 1 + free].all() and not masks[0, d + free + 1:].any()


def test_refused_actions_are_reported():
    env = SageServeEnv(scenario="small", sim_overrides=["scaling.min_instances=4"], horizon_s=600.0)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.zeros(env.n_endpoints, dtype=np.int64))  # all at -max_delta
    assert len(info["refused"]) == env.n_endpoints
    assert "min_instances" in info["refused"][0]


@pytest.mark.parametrize("action, match", [
    (np.zeros(3, dtype=np.int64), "shape"),
    (np.full(2, 99, dtype=np.int64), "outside"),
    (np.full(2, -1, dtype=np.int64), "outside"),
    (np.array([0.5, 1.0]), "integers"),
])
def test_bad_actions_raise(action, match):
    env = SageServeEnv(scenario="small", horizon_s=600.0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(action)


@pytest.mark.parametrize("kwargs, match", [
    ({"nonsense": 1}, "unknown SageServeEnv option"),
    ({"reward": "generous"}, "unknown reward preset"),
    ({"reward": {"cost": -1.0}}, "must be a finite number"),
    ({"decision_interval_s": 0}, "decision_interval_s"),
    ({"scenario": "nowhere"}, "unknown scenario"),
    ({"sim_overrides": ["scaling.level=7"]}, "scaling.level"),
])
def test_bad_configuration_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SageServeEnv(**kwargs)


def test_reset_options_override_config():
    env = SageServeEnv(scenario="small", horizon_s=600.0)
    env.reset(seed=0, options={"config": {"decision_interval_s": 120.0}})
    _, _, _, _, info = env.step(np.full(env.n_endpoints, env.max_delta))
    assert info["sim_time_s"] == 120.0


def _make_small():
    return gym.make("sageserve_env:SageServeSmall-v0", horizon_s=600.0)


def test_subproc_vec_env_with_spawn():
    from stable_baselines3.common.vec_env import SubprocVecEnv

    assert "spawn" in multiprocessing.get_all_start_methods()
    venv = SubprocVecEnv([_make_small, _make_small], start_method="spawn")
    try:
        venv.seed(3)
        venv.reset()
        for _ in range(3):
            masks = np.stack(venv.env_method("action_masks"))
            assert masks.shape[0] == 2
            _, rewards, _, _ = venv.step(np.full((2, venv.action_space.shape[0]), 4))  # 4 = no change
            assert rewards.shape == (2,)
    finally:
        venv.close()


def test_make_vec():
    venv = gym.make_vec("sageserve_env/SageServeSmall-v0", num_envs=2, vectorization_mode="sync", horizon_s=600.0)
    venv.reset(seed=0)
    for _ in range(3):
        _, rewards, _, _, _ = venv.step(venv.action_space.sample())
        assert rewards.shape == (2,)
    venv.close()


def test_flatten_wrapper_for_mlp_policies():
    env = gym.wrappers.FlattenObservation(SageServeEnv(scenario="small", horizon_s=600.0))
    obs, _ = env.reset(seed=0)
    assert obs.ndim == 1 and env.observation_space.contains(obs)


def test_observation_features_name_each_flat_column():
    """``observation_features``: a name per column of the flat observation, where each entry's
    parts land (``queued.iw`` is the first of ``queued``'s last axis, ``ttft`` has none)."""
    from gymnasium import spaces

    from sageserve_env.env.sageserve_env import observation_features, observation_space

    space = observation_space(2, 3)
    obs = {k: np.arange(np.prod(b.shape), dtype=np.float32).reshape(b.shape) + 100 * i
           for i, (k, b) in enumerate(space.spaces.items())}
    flat = spaces.flatten(space, obs)
    names = np.array(observation_features(space))
    assert len(names) == len(flat)
    np.testing.assert_array_equal(flat[names == "queued.iw"], obs["queued"][..., 0].ravel())
    np.testing.assert_array_equal(flat[names == "utilization.max"], obs["utilization"][..., 1].ravel())
    np.testing.assert_array_equal(flat[names == "region.spot"], obs["region"][:, 1])
    np.testing.assert_array_equal(flat[names == "time.cos_week"], obs["time"][[3]])
    np.testing.assert_array_equal(flat[names == "ttft"], obs["ttft"].ravel())
    assert (names == "arrival_rate.15min").sum() == 6
