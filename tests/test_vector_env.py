"""SageServeVectorEnv: make_vec, masks, autoreset, bad input, checkers."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sageserve_env  # noqa: F401  (registers the IDs)
from sageserve_env.env.vector_env import SageServeFastEnv, SageServeVectorEnv

SMALL = "sageserve_env/SageServeSmall-fast-v1"
SHORT = {"horizon_s": 1800.0}


def _random_masked(env, rng):
    m = env.action_masks().reshape(env.num_envs, env.n_endpoints, -1)
    choice = rng.random(m.shape) * m
    return choice.argmax(2)


def test_make_vec_gives_the_native_vector_env():
    env = gym.make_vec(SMALL, num_envs=5, vectorization_mode="vector_entry_point", **SHORT)
    assert isinstance(env, SageServeVectorEnv) and env.num_envs == 5
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert info["kpis"]["billed_gpu_hours"].shape == (5,) and info["_kpis"].all()
    single = SageServeFastEnv(scenario="small", **SHORT)
    assert env.single_observation_space == single.observation_space
    assert env.single_action_space == single.action_space


def test_masks_predict_refusals_exactly():
    """One endpoint per world changes at a time: refused exactly when the mask says invalid."""
    env = SageServeVectorEnv(16, scenario="small", sim_overrides=["scaling.level=2"], **SHORT)
    env.reset(seed=1)
    rng = np.random.default_rng(1)
    md, seen = env.max_delta, {True: 0, False: 0}
    for _ in range(25):
        masks = env.action_masks().reshape(16, env.n_endpoints, -1)
        e = rng.integers(env.n_endpoints, size=16)
        choice = rng.integers(2 * md + 1, size=16)
        action = np.full((16, env.n_endpoints), md)
        action[np.arange(16), e] = choice
        valid = masks[np.arange(16), e, choice]
        _, _, _, _, info = env.step(action)
        assert np.array_equal(info["refused"] > 0, ~valid)
        for v in valid:
            seen[bool(v)] += 1
    assert seen[True] and seen[False]


def test_same_step_autoreset_and_seeding():
    """At the horizon every world truncates, the final observation is in info, the next episode
    starts at once; world i of reset(seed=s) replays a one-world env reset with s + i."""
    env = SageServeVectorEnv(3, scenario="small", horizon_s=600.0)
    one = SageServeFastEnv(scenario="small", horizon_s=600.0)
    obs, _ = env.reset(seed=10)
    obs1, _ = one.reset(seed=12)
    rng = np.random.default_rng(0)
    for step in range(10):
        action = _random_masked(env, rng)
        obs, reward, term, trunc, info = env.step(action)
        obs1, reward1, _, trunc1, info1 = one.step(action[2])
        assert not term.any()
        assert np.isclose(reward[2], reward1, rtol=1e-9, atol=1e-12)
        if step < 9:
            assert not trunc.any() and not trunc1
            for k in obs:
                np.testing.assert_allclose(obs[k][2], obs1[k], rtol=1e-6)
    assert trunc.all() and trunc1 and info["_final_obs"].all()
    for k in obs1:
        np.testing.assert_allclose(info["final_obs"][k][2], obs1[k], rtol=1e-6)
    assert info["final_info"]["kpis"]["sim_seconds"].tolist() == [600.0] * 3
    assert env.sim.now == 0.0  # the next episodes began
    obs, *_ = env.step(_random_masked(env, rng))
    assert env.sim.now == 60.0 and env.observation_space.contains(obs)


def test_bad_actions_name_world_and_endpoint():
    env = SageServeVectorEnv(2, scenario="small", **SHORT)
    env.reset(seed=0)
    md = env.max_delta
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        env.step(np.zeros(2, dtype=np.int64))
    bad = np.full((2, 2), md)
    bad[1, 0] = 2 * md + 1
    with pytest.raises(ValueError, match=r"actions\[1, 0\].*world 1, endpoint westus/A.*outside"):
        env.step(bad)
    with pytest.raises(ValueError, match="integers"):
        env.step(np.full((2, 2), md + 0.5))
    with pytest.raises(ValueError, match="num_envs"):
        SageServeVectorEnv(0, scenario="small")
    with pytest.raises(ValueError, match="multiple|whole number"):
        SageServeVectorEnv(1, scenario="small", decision_interval_s=7.0)


def test_one_world_env_passes_gymnasium_checker():
    check_env(gym.make("sageserve_env/SageServeSmall-fast-v1", **SHORT).unwrapped, skip_render_check=True)


def test_sb3_adapter_passes_vecenv_checks_and_trains():
    """SB3's VecEnv contract: flat observations as ``spaces.flatten``, terminal observations,
    masks per world; MaskablePPO learns a few steps on it."""
    from sb3_contrib import MaskablePPO
    from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported
    from gymnasium import spaces

    from agents.vector_training import SB3VectorEnv

    venv = SB3VectorEnv(gym.make_vec(SMALL, num_envs=4, vectorization_mode="vector_entry_point", horizon_s=300.0))
    venv.seed(5)
    obs = venv.reset()
    assert obs.shape == (4,) + venv.observation_space.shape and venv.observation_space.contains(obs[0])
    inner = venv.parts[0]
    first = {k: v[1] for k, v in inner._observation(inner._last, inner._last).items()}
    np.testing.assert_allclose(obs[1], spaces.flatten(inner.single_observation_space, first))
    assert is_masking_supported(venv) and get_action_masks(venv).shape == (4, inner.n_endpoints * (2 * inner.max_delta + 1))
    rng = np.random.default_rng(0)
    for step in range(5):
        obs, reward, dones, infos = venv.step(_random_masked(inner, rng))
        assert reward.shape == (4,) and dones.dtype == bool
    assert dones.all() and all("terminal_observation" in i and i["TimeLimit.truncated"] for i in infos)
    assert all(i["episode"]["l"] == 5 for i in infos)
    model = MaskablePPO("MlpPolicy", venv, n_steps=8, batch_size=16, n_epochs=1, seed=0)
    model.learn(64)



def test_sb3_adapter_joins_vector_envs_world_by_world():
    """Several vector envs in one adapter (several tasks, one agent): world j of part k is world j
    of that part alone under the same seed and actions; other spaces are refused."""
    from agents.vector_training import SB3VectorEnv

    def make(n, **kw):
        return gym.make_vec(SMALL, num_envs=n, vectorization_mode="vector_entry_point", horizon_s=300.0, **kw)

    joined = SB3VectorEnv(make(2), make(3, decision_interval_s=30.0))
    alone = [SB3VectorEnv(make(2)), SB3VectorEnv(make(3, decision_interval_s=30.0))]
    assert joined.num_envs == 5
    for venv in (joined, *alone):
        venv.seed(7)
    obs = [joined.reset(), *(venv.reset() for venv in alone)]
    np.testing.assert_array_equal(obs[0], np.concatenate(obs[1:]))
    rng = np.random.default_rng(3)
    ends = np.zeros(5, dtype=int)
    for _ in range(12):
        masks = [venv.action_masks() for venv in alone]
        np.testing.assert_array_equal(joined.action_masks(), np.concatenate(masks))
        actions = [_random_masked(venv.parts[0], rng) for venv in alone]
        out = joined.step(np.concatenate(actions))
        parts = [venv.step(a) for venv, a in zip(alone, actions)]
        for got, want in zip(out[:3], zip(*(p[:3] for p in parts))):
            np.testing.assert_array_equal(got, np.concatenate(want))
        assert [sorted(i) for i in out[3]] == [sorted(i) for p in parts for i in p[3]]
        ends += out[2]
    np.testing.assert_array_equal(ends, [2, 2, 1, 1, 1])  # 300 s: 5 decisions of 60 s, 10 of 30 s
    with pytest.raises(ValueError, match="other spaces"):
        SB3VectorEnv(make(1), make(1, max_delta=1))


def test_sb3_adapter_weights_scale_what_the_agent_learns_not_the_episode_records():
    """``weights``: part k's rewards times its weight; the ``episode`` returns stay the env's."""
    from agents.vector_training import SB3VectorEnv

    def make(n):
        return gym.make_vec(SMALL, num_envs=n, vectorization_mode="vector_entry_point", horizon_s=300.0)

    plain, weighted = SB3VectorEnv(make(2), make(1)), SB3VectorEnv(make(2), make(1), weights=[1.0, 4.0])
    for venv in (plain, weighted):
        venv.seed(5)
        venv.reset()
    rng = np.random.default_rng(0)
    for _ in range(5):
        actions = np.concatenate([_random_masked(part, rng) for part in plain.parts])
        (_, r_plain, done, info_plain), (_, r_weighted, _, info_weighted) = plain.step(actions), weighted.step(actions)
        np.testing.assert_allclose(r_weighted, r_plain * np.array([1.0, 1.0, 4.0], dtype=np.float32), rtol=1e-6)
    assert done.all()
    assert [i["episode"]["r"] for i in info_weighted] == [i["episode"]["r"] for i in info_plain]
    for bad in ([1.0], [1.0, 0.0], [1.0, float("nan")]):
        with pytest.raises(ValueError, match="weights"):
            SB3VectorEnv(make(1), make(1), weights=bad)

def test_sb3_env_checker_and_vec_check_nan():
    """SB3's own checks: ``check_env`` on the one-world env, ``VecCheckNan`` (raising) over an
    episode of the SB3 adapter."""
    from stable_baselines3.common.env_checker import check_env as sb3_check_env
    from stable_baselines3.common.vec_env import VecCheckNan

    from agents.vector_training import SB3VectorEnv

    sb3_check_env(gym.make("sageserve_env/SageServeSmall-fast-v1", **SHORT).unwrapped, warn=True)
    venv = SB3VectorEnv(gym.make_vec(SMALL, num_envs=3, vectorization_mode="vector_entry_point", horizon_s=300.0))
    checked = VecCheckNan(venv, raise_exception=True)
    checked.seed(2)
    checked.reset()
    rng = np.random.default_rng(1)
    for _ in range(5):
        obs, reward, dones, infos = checked.step(_random_masked(venv.parts[0], rng))
    assert dones.all() and np.isfinite(obs).all()


VEC_TASKS = ("Day-vec-v1", "DayLight-vec-v1", "Week-vec-v1", "Burst-vec-v1")


@pytest.mark.parametrize("env_id", VEC_TASKS)
def test_vec_task_ids_have_the_detailed_tasks_spaces(env_id):
    """make_vec and make of each vec task ID work; their spaces are the detailed task's, so an
    agent trained on the vec ID runs in ``<Task>-v1``."""
    detailed = gym.make(f"sageserve_env/{env_id.replace('-vec-', '-')}")
    vec = gym.make_vec(f"sageserve_env/{env_id}", num_envs=2, vectorization_mode="vector_entry_point")
    one = gym.make(f"sageserve_env/{env_id}")
    assert isinstance(vec.unwrapped, SageServeVectorEnv) and isinstance(one.unwrapped, SageServeFastEnv)
    assert vec.single_observation_space == detailed.observation_space == one.observation_space
    assert vec.single_action_space == detailed.action_space == one.action_space
    assert vec.unwrapped.horizon == detailed.unwrapped.horizon
    obs, _ = vec.reset(seed=3)
    assert vec.observation_space.contains(obs)
    assert vec.unwrapped.sim.traffic.iw_rates is not None  # the task's v1 process
    obs, *_ = vec.step(_random_masked(vec.unwrapped, np.random.default_rng(0)))
    assert vec.observation_space.contains(obs)


def test_vec_task_world_equals_one_world_seeded_alike():
    """World i of a batch of 4 on a vec task ID equals one world seeded s + i, to 1e-9."""
    batch = gym.make_vec("sageserve_env/DayLight-vec-v1", num_envs=4, vectorization_mode="vector_entry_point")
    rng = np.random.default_rng(5)
    batch.reset(seed=30)
    steps = []
    for _ in range(40):
        a = _random_masked(batch.unwrapped, rng)
        obs, reward, *_ = batch.step(a)
        steps.append((a, obs, reward))
    for i in (0, 2, 3):
        one = SageServeVectorEnv(1, **gym.spec("sageserve_env/DayLight-vec-v1").kwargs)
        o, _ = one.reset(seed=30 + i)
        for a, obs, reward in steps:
            o, r, *_ = one.step(a[i: i + 1])
            np.testing.assert_allclose(r[0], reward[i], rtol=1e-9, atol=1e-9)
            for k in obs:
                np.testing.assert_allclose(o[k][0], obs[k][i], rtol=1e-9, atol=1e-9)


def test_vector_env_refuses_traces_and_faults_by_name():
    from pathlib import Path

    trace = str(Path(__file__).resolve().parents[1] / "traces" / "sample_small.csv")
    with pytest.raises(ValueError, match="workload.source='trace'"):
        SageServeVectorEnv(2, scenario="small", sim_overrides=["workload.source=trace", f"workload.trace={trace}"])
    with pytest.raises(ValueError, match="faults"):
        SageServeVectorEnv(2, **gym.spec("sageserve_env/Outage-fast-v1").kwargs)
    assert "sageserve_env/Outage-vec-v1" not in gym.registry


def test_endpoint_rewards_sum_to_the_world_reward():
    """``info["endpoint_reward_terms"]``: every step, the horizon's overdue charge included, each
    world's endpoint parts sum to its terms."""
    env = gym.make_vec("sageserve_env/Burst-vec-v1", num_envs=2, vectorization_mode="vector_entry_point",
                       horizon_s=1200.0, autoreset=False)
    base = env.unwrapped
    env.reset(seed=10000)
    rng = np.random.default_rng(0)
    truncated = np.zeros(2, dtype=bool)
    while not truncated.all():
        _, reward, _, truncated, info = env.step(_random_masked(base, rng))
        parts = info["endpoint_reward_terms"]
        for term, world in info["reward_terms"].items():
            if not term.startswith("_"):
                assert parts[term].shape == (2, base.n_endpoints)
                np.testing.assert_allclose(parts[term].sum(1), world, rtol=1e-12, atol=1e-12)
    overdue = base.sim.endpoint_overdue()
    np.testing.assert_array_equal(overdue.sum(1), base.sim.world_overdue())
