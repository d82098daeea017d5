"""RLlib on the env: the masked observation, next-step autoreset of the vector env, and PPO smoke
runs on a local Ray (the detailed env in the driver, the vectorized fast one on a Ray env runner)."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.spaces.utils import flatten

import sageserve_env  # noqa: F401
from sageserve_env.rllib import MaskedVectorObservation, make_env

pytest.importorskip("ray.rllib")
import ray  # noqa: E402

SHORT = {"horizon_s": 600.0}  # 10 decisions an episode


def test_masked_observation_is_gymnasiums_flattening_and_the_masks():
    env = make_env({"id": "sageserve_env/SageServeSmall-v0", "kwargs": SHORT})
    base = env.unwrapped
    obs, _ = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    raw = base.observation_space.sample()  # any observation: the wrapper's flattening is gymnasium's
    np.testing.assert_array_equal(env.observation(raw)["observations"], flatten(base.observation_space, raw))
    np.testing.assert_array_equal(obs["action_mask"], base.action_masks().astype(np.float32))
    assert obs["action_mask"].shape == (int(base.action_space.nvec.sum()),)


def test_vector_env_resets_on_the_next_step_with_the_same_worlds():
    """RLlib's vector env against the vector env's own same-step autoreset: the same episodes,
    the next ones' first observations one step later, reward 0 on that step."""
    kwargs = {"horizon_s": 180.0}  # 3 decisions
    ours = make_env({"id": "sageserve_env/SageServeSmall-fast-v1", "kwargs": kwargs, "num_envs": 3})
    theirs = gym.make_vec("sageserve_env/SageServeSmall-fast-v1", num_envs=3, vectorization_mode="vector_entry_point",
                          **kwargs)
    assert isinstance(ours, MaskedVectorObservation)
    space = theirs.single_observation_space
    a, _ = ours.reset(seed=11)
    b, _ = theirs.reset(seed=11)
    rng = np.random.default_rng(0)
    for episode in range(2):
        for step in range(3):
            np.testing.assert_array_equal(a["observations"], np.stack([flatten(space, o) for o in _worlds(b, 3)]))
            actions = np.full((3, ours.unwrapped.n_endpoints), ours.unwrapped.max_delta)
            actions[:, 0] += rng.integers(-1, 2, size=3)
            a, ra, _, ta, _ = ours.step(actions)
            b, rb, _, tb, info = theirs.step(actions)
            np.testing.assert_array_equal(ra, rb)
            assert (ta == tb).all() and ta.all() == (step == 2)
        np.testing.assert_array_equal(a["observations"],
                                      np.stack([flatten(space, o) for o in _worlds(info["final_obs"], 3)]))
        a, r, terminated, truncated, _ = ours.step(actions)  # the reset step: no action taken
        assert not r.any() and not terminated.any() and not truncated.any()
    ours.close()
    theirs.close()


def _worlds(batched, n):
    return [{k: v[i] for k, v in batched.items()} for i in range(n)]


def test_make_env_names_a_bad_id():
    with pytest.raises(ValueError, match="registered env ID, got 'Nowhere-v0'"):
        make_env({"id": "Nowhere-v0"})
    with pytest.raises(ValueError, match="no vector entry point"):
        make_env({"id": "sageserve_env/SageServeSmall-v0", "num_envs": 2})


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()
    assert not ray.is_initialized()


def _small_ppo(env_id, num_envs, num_env_runners):
    from sageserve_env.rllib import ppo_config

    return (ppo_config(env_id, SHORT, num_envs=num_envs, num_env_runners=num_env_runners,
                       model_config={"fcnet_hiddens": [32, 32]})
            .training(train_batch_size_per_learner=200, minibatch_size=100, num_epochs=1)
            .debugging(seed=0))


def test_ppo_trains_on_the_detailed_env_and_obeys_the_masks(local_ray):
    algo = _small_ppo("sageserve_env/SageServeSmall-v0", num_envs=1, num_env_runners=0).build_algo()
    try:
        for _ in range(2):
            result = algo.train()
        runners = result["env_runners"]
        assert runners["num_env_steps_sampled_lifetime"] == 400
        assert runners["episode_len_mean"] == 10 and np.isfinite(runners["episode_return_mean"])
        episodes = algo.env_runner.sample(num_timesteps=30, explore=True)
        assert sum(len(e) for e in episodes) >= 30  # steps where the masks forbid about half the choices
        for episode in episodes:
            masks = np.asarray(episode.get_observations()["action_mask"])[:-1]  # at each action
            actions = np.asarray(episode.get_actions())
            offsets = np.cumsum([0, *algo.env_runner.env.single_action_space.nvec[:-1]])
            assert masks[np.arange(len(actions))[:, None], offsets + actions].all()  # every choice allowed
    finally:
        algo.stop()


def test_ppo_trains_on_the_vectorized_fast_env_on_a_ray_env_runner(local_ray):
    algo = _small_ppo("sageserve_env/SageServeSmall-fast-v1", num_envs=4, num_env_runners=1).build_algo()
    try:
        for _ in range(2):
            result = algo.train()
        runners = result["env_runners"]
        assert runners["num_env_steps_sampled_lifetime"] == 400  # 4 worlds, 50 steps each an iteration
        assert runners["episode_len_mean"] == 10 and np.isfinite(runners["episode_return_mean"])
    finally:
        algo.stop()
