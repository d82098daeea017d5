"""Minari datasets of the baselines: create, load, iterate; the transitions are the rollout's."""

import numpy as np
import pytest

minari = pytest.importorskip("minari")

from agents import make_policy  # noqa: E402
from agents.datasets import dataset_id, demonstrations, record_dataset  # noqa: E402
from agents.runner import make_env_for  # noqa: E402

ENV = "sageserve_env/SageServeSmall-v0"
KWARGS = {"horizon_s": 1200.0}


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return tmp_path / "minari"


def _rollout(policy_name, seed):
    """The same policy's episode without Minari: observations, actions, rewards, masks, kpis."""
    policy = make_policy(policy_name)
    env = make_env_for(policy, {"scenario": "small", **KWARGS})
    obs, info = env.reset(seed=seed)
    policy.reset(env, seed)
    out = {"obs": [obs], "actions": [], "rewards": [], "masks": [env.action_masks()], "kpis": [info["kpis"]]}
    done = False
    while not done:
        action = policy.act(obs, env)
        obs, reward, terminated, truncated, info = env.step(action)
        out["obs"].append(obs)
        out["actions"].append(np.asarray(action))
        out["rewards"].append(reward)
        out["masks"].append(env.action_masks())
        out["kpis"].append(info["kpis"])
        done = terminated or truncated
    return out


def test_dataset_round_trips_the_rollout_that_made_it(data_dir):
    name = dataset_id(ENV, "reactive")
    assert name == "sageserve/SageServeSmall/reactive-v0"
    made = record_dataset("reactive", seeds=[3, 4], env_id=ENV, env_kwargs=KWARGS)
    assert (data_dir / "sageserve" / "SageServeSmall" / "reactive-v0").is_dir()
    assert name in minari.list_local_datasets()
    dataset = minari.load_dataset(name)
    assert dataset.total_episodes == 2 == made.total_episodes
    assert dataset.total_steps == 2 * 120  # reactive decides every 10 s
    for episode, seed in zip(dataset.iterate_episodes(), [3, 4]):
        ref = _rollout("reactive", seed)
        assert len(episode) == len(ref["actions"])
        np.testing.assert_array_equal(episode.actions, np.stack(ref["actions"]))
        np.testing.assert_allclose(episode.rewards, ref["rewards"], rtol=0, atol=0)
        for key, values in episode.observations.items():
            np.testing.assert_array_equal(values, np.stack([o[key] for o in ref["obs"]]))
        np.testing.assert_array_equal(episode.infos["action_mask"], np.stack(ref["masks"]))
        np.testing.assert_array_equal(episode.infos["kpis"]["cost_usd"], [k["cost_usd"] for k in ref["kpis"]])
        assert episode.truncations[-1] and not episode.terminations.any()
        # every recorded action is allowed by the mask it was chosen under
        masks = episode.infos["action_mask"][:-1].reshape(len(episode), episode.actions.shape[1], -1)
        assert np.take_along_axis(masks, episode.actions[..., None], axis=2).all()
    env = dataset.recover_environment()
    assert env.unwrapped.config["horizon_s"] == 1200.0 and env.unwrapped.interval == 10.0


def test_demonstrations_flatten_like_the_training_env(data_dir):
    import gymnasium as gym

    record_dataset("oracle", seeds=[1], env_id=ENV, env_kwargs=KWARGS)
    obs, actions = demonstrations(dataset_id(ENV, "oracle"))
    ref = _rollout("oracle", 1)
    space = gym.make(ENV).observation_space
    np.testing.assert_array_equal(obs, np.stack([gym.spaces.flatten(space, o) for o in ref["obs"][:-1]]))
    np.testing.assert_array_equal(actions, np.stack(ref["actions"]))
    with pytest.raises(ValueError, match="not the env's"):
        demonstrations(dataset_id(ENV, "oracle"), gym.make("sageserve_env/SageServe-v0").observation_space)


def test_existing_datasets_and_held_out_seeds_are_refused(data_dir):
    record_dataset("static", seeds=[0], env_id=ENV, env_kwargs=KWARGS)
    with pytest.raises(ValueError, match="exists"):
        record_dataset("static", seeds=[0], env_id=ENV, env_kwargs=KWARGS)
    assert record_dataset("static", seeds=[1], env_id=ENV, env_kwargs=KWARGS, overwrite=True).total_episodes == 1
    with pytest.raises(ValueError, match="training days"):
        record_dataset("static", seeds=[1001], env_id=ENV, env_kwargs=KWARGS, overwrite=True)


def test_train_behaviour_clones_from_a_dataset(data_dir, tmp_path, capsys):
    import train

    record_dataset("reactive", seeds=[2], env_id=ENV, env_kwargs=KWARGS)
    quick = [f"log_folder={tmp_path / 'logs'}", "n_timesteps=64", "hyperparams.n_steps=64", "hyperparams.batch_size=32",
             "eval_freq=0", "save_freq=0", "progress_bar=false", "tensorboard=false",
             "env_kwargs={horizon_s: 1200, decision_interval_s: 10}", "bc_epochs=30"]
    assert train.main([*quick, f"bc_dataset={dataset_id(ENV, 'reactive')}"]) == 0
    out = capsys.readouterr().out
    assert "behaviour cloning of sageserve/SageServeSmall/reactive-v0: 120 decisions" in out
    first, last = (float(x) for x in out.split("NLL ")[1].split()[0:3:2])
    assert last < first
    # the cloned agent mostly picks the reactive policy's decisions on the day it was cloned from
    # (an untrained one agrees about 1 time in 9, the number of choices per endpoint)
    policy = make_policy(f"ckpt:{next((tmp_path / 'logs').glob('*/*/model.zip'))}")
    obs, actions = demonstrations(dataset_id(ENV, "reactive"))
    if policy.normalizer is not None:
        obs = policy.normalizer.normalize_obs(obs)
    predicted, _ = policy.model.predict(obs, deterministic=True)
    assert (predicted == actions).mean() > 0.8


@pytest.mark.parametrize("extra, match", [
    (["bc_dataset=sageserve/SageServeSmall/nothing-v0"], "no Minari dataset"),
    (["bc_dataset=sageserve/SageServeSmall/static-v0", "bc_policy=reactive"], "excludes"),
    (["bc_dataset=sageserve/SageServeSmall/static-v0", "env=sageserve_env/SageServe-v0"], "observation space"),
])
def test_train_refuses_a_dataset_it_cannot_use(data_dir, tmp_path, capsys, extra, match):
    import train

    record_dataset("static", seeds=[0], env_id=ENV, env_kwargs={"horizon_s": 600.0})
    assert train.main([f"log_folder={tmp_path / 'logs'}", *extra]) == 2
    assert match in capsys.readouterr().err


def test_task_datasets_hold_train_days_and_carry_the_task_version(data_dir):
    task_env = "sageserve_env/DayLight-v1"
    short = {"horizon_s": 300.0}
    with pytest.raises(ValueError, match=r"training days of DayLight-v1 \(in \[0, 10000\)\); got 20000"):
        record_dataset("reactive", seeds=[20000], env_id=task_env, env_kwargs=short)
    made = record_dataset("reactive", seeds=[0], env_id=task_env, env_kwargs=short)
    assert made.spec.dataset_id == "sageserve/DayLight/reactive-v1"
    env = made.recover_environment()
    assert env.unwrapped.config["initial_allocation"] == "first_hour"  # the task's own settings
    episode = next(made.iterate_episodes())
    assert episode.infos["sim_time_s"][-1] == 300.0 and len(episode) == 30  # reactive: 10 s decisions
