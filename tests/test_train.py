"""train.py: each algorithm trains and saves a loadable model; resume; the shipped agent."""

import numpy as np
import pytest

import train
from agents import SHIPPED_AGENTS, make_policy, shipped_agent_path
from agents.learned import normalizer_path
from agents.runner import make_env_for, run_episode

QUICK = ["n_timesteps=256", "hyperparams.n_steps=128", "eval_freq=0", "save_freq=128", "progress_bar=false",
         "tensorboard=false", "env_kwargs={horizon_s: 1800}"]


def _train(tmp_path, *extra):
    assert train.main([f"log_folder={tmp_path}", *QUICK, *extra]) == 0
    runs = sorted(tmp_path.glob("*/*"))
    return runs[-1]


@pytest.mark.parametrize("algo, extra", [
    ("ppo", ["hyperparams.batch_size=64"]),
    ("a2c", ["hyperparams.n_steps=16"]),
    ("maskable_ppo", ["hyperparams.batch_size=64"]),
])
def test_each_algorithm_writes_a_loadable_model(tmp_path, algo, extra):
    run = _train(tmp_path, f"algo={algo}", *extra)
    assert (run / "model.zip").exists() and (run / "model.yaml").exists()
    policy = make_policy(f"ckpt:{run / 'model.zip'}")
    result = run_episode(make_env_for(policy, {"scenario": "small", "horizon_s": 600.0}), policy, seed=1001)
    assert result.steps == 10


def test_resume_continues_the_step_count(tmp_path):
    run = _train(tmp_path, "algo=maskable_ppo", "hyperparams.batch_size=64")
    checkpoint = run / "checkpoints" / "rl_model_256_steps.zip"
    assert checkpoint.exists()
    resumed = _train(tmp_path, "algo=maskable_ppo", "hyperparams.batch_size=64", f"resume={checkpoint}")
    import yaml
    assert yaml.safe_load((resumed / "model.yaml").read_text())["timesteps"] == 512


def test_resume_takes_the_hyperparameters_given(tmp_path):
    """A resumed run trains with the command line's hyperparameters, not silently the checkpoint's."""
    from sb3_contrib import MaskablePPO

    run = _train(tmp_path, "algo=maskable_ppo", "hyperparams.batch_size=64")
    resumed = _train(tmp_path, "algo=maskable_ppo", "hyperparams.batch_size=32", "hyperparams.learning_rate=1e-4",
                     f"resume={run / 'model.zip'}")
    model = MaskablePPO.load(resumed / "model.zip", device="cpu")
    assert model.batch_size == 32 and model.learning_rate == 1e-4 and model.lr_schedule(1.0) == pytest.approx(1e-4)
    assert train.main([f"log_folder={tmp_path / 'x'}", *QUICK, "hyperparams.policy_kwargs={net_arch: [8]}",
                       f"resume={run / 'model.zip'}"]) == 2


def test_resume_can_blind_the_endpoint_network_to_the_week(tmp_path):
    """policy_kwargs on resume go on top of the checkpoint's: the same weights, week_phase off."""
    import torch
    from sb3_contrib import MaskablePPO

    network = ["hyperparams.policy=agents.endpoint_policy:MaskableEndpointPolicy", "hyperparams.batch_size=64",
               "hyperparams.policy_kwargs={hidden: 8}", "env=sageserve_env/SageServeSmall-fast-v1"]
    run = _train(tmp_path, "algo=maskable_ppo", *network)
    checkpoint = run / "checkpoints" / "rl_model_128_steps.zip"
    resumed = _train(tmp_path, "algo=maskable_ppo", *network[1:2], "env=sageserve_env/SageServeSmall-fast-v1",
                     "hyperparams.policy_kwargs={week_phase: false}", f"resume={checkpoint}")
    before = MaskablePPO.load(checkpoint, device="cpu").policy
    after = MaskablePPO.load(resumed / "model.zip", device="cpu").policy
    assert (before.hidden, before.week_phase) == (8, True) and (after.hidden, after.week_phase) == (8, False)
    assert before.state_dict().keys() == after.state_dict().keys()
    assert not all(torch.equal(before.state_dict()[k], after.state_dict()[k]) for k in before.state_dict())


@pytest.mark.parametrize("argv, match", [
    (["algo=dqn"], "unknown algo"),
    (["algo=ppo", "hyperparams.use_masks=true"], "use_masks needs algo=maskable_ppo"),
    (["resume=/nowhere/model.zip"], "does not exist"),
    (["env=sageserve_env/Nope-v0"], "unknown env"),
    (["seed=1234"], "held out"),
    (["mix_envs=[sageserve_env/DayLight-vec-v1]"], "needs a vectorized env"),
    (["env=sageserve_env/SageServeSmall-fast-v1", "mix_envs=[sageserve_env/SageServe-fast-v1]"], "other observation"),
    (["env=sageserve_env/SageServeSmall-fast-v1", "mix_envs=[sageserve_env/Day-vec-v1]"], "other training"),
    (["env=sageserve_env/SageServeSmall-fast-v1", "mix_envs=[sageserve_env/SageServeSmall-fast-v1]"], "more than once"),
    (["env=sageserve_env/SageServeSmall-fast-v1", "mix_envs=[sageserve_env/SageServe-small-fast-v1]", "n_envs=3"],
     "does not split evenly"),
    (["task_weights=[1,5]"], "needs a vectorized env"),
    (["env=sageserve_env/SageServeSmall-fast-v1", "task_weights=[1,5]"], "one per ID of env and mix_envs"),
    (["env=sageserve_env/SageServeSmall-fast-v1", "task_weights=[0]"], "finite numbers > 0"),
    (["env=sageserve_env/SageServeSmall-fast-v1", "task_weights=[2]", "endpoint_agents=true"], "without endpoint_agents"),
    (["task_env_kwargs=[{}]"], "needs a vectorized env"),
    (["env=sageserve_env/SageServeSmall-fast-v1", "task_env_kwargs=[{},{}]"], "one per ID of env and mix_envs"),
    (["env=sageserve_env/SageServeSmall-fast-v1", "task_env_kwargs=[{reward: {cst: 2}}]"], "unknown reward weight"),
    (["env=sageserve_env/SageServeSmall-fast-v1", "task_env_kwargs=[{max_delta: 1}]"], "other observation or action"),
    (["env=sageserve_env/SageServeSmall-fast-v1", "task_env_kwargs=[3]"], "Cannot assign int to Dict"),
    (["bc_envs=[sageserve_env/SageServeSmall-v0]"], "give bc_policy too"),
    (["bc_policy=reactive", "bc_envs=[sageserve_env/Nope-v0]"], "not a registered env"),
    (["bc_policy=reactive", "bc_envs=[sageserve_env/SageServe-v0]"], "other observation or action spaces"),
    (["env=sageserve_env/SageServeSmall-fast-v1", "bc_policy=reactive"], "gives baselines no view"),
    (["hyperparams.policy_kwargs=hidden"], "'policy_kwargs' = 'hidden'"),
    (["validation_workers=2"], "validation_workers must be 0"),
    (["demand_residual=true"], "demand_residual needs a vectorized env"),
    (["env=sageserve_env/SageServeSmall-fast-v1", "demand_residual=true", "endpoint_agents=true"],
     "without endpoint_agents"),
    (["demand_headroom=0"], "demand_headroom must be a number > 0, got 0"),
    (["validation_workers=1"], "validation_workers=1 needs a vectorized env"),
    (["hidden_features=[queued.iw]"], "hidden_features needs a vectorized env"),
    (["env=sageserve_env/SageServeSmall-fast-v1", "hidden_features=[queued.tokens]"],
     "unknown observation feature(s) ['queued.tokens']"),
])
def test_bad_configuration_fails_before_training(tmp_path, capsys, argv, match):
    assert train.main([f"log_folder={tmp_path}", *argv]) == 2
    assert match in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_shipped_agent_loads_runs_and_is_deterministic():
    assert shipped_agent_path().exists()
    rewards = []
    for _ in range(2):
        policy = make_policy("rl")
        env = make_env_for(policy, {"scenario": "paper", "fidelity": "fast", "horizon_s": 3600.0})
        result = run_episode(env, policy, seed=1001)
        rewards.append((result.reward, result.kpis["billed_gpu_hours"]))
    assert rewards[0] == rewards[1]
    assert np.isfinite(rewards[0][0])


@pytest.mark.parametrize("name", sorted(SHIPPED_AGENTS))
def test_every_shipped_agent_ships_its_normalization_and_metadata(name):
    """Every shipped agent was trained under VecNormalize: without its statistics beside it the
    policy would act on raw observations, so a missing file must fail here, not in a result."""
    model = shipped_agent_path(name)
    assert model.is_file() and model.with_suffix(".yaml").is_file()
    assert normalizer_path(model).is_file(), f"{name}: {normalizer_path(model)} is missing"


def test_residual_agent_starts_at_the_plan(tmp_path):
    """With no learning, the residual agent's greedy action is "no adjustment": it acts exactly
    as its planner (lt_i on the forecaster recorded in its metadata)."""
    run = _train(tmp_path, "algo=maskable_ppo", "residual=true", "hyperparams.residual_reach=1",
                 "hyperparams.batch_size=64", "hyperparams.learning_rate=0.0")
    import yaml
    meta = yaml.safe_load((run / "model.yaml").read_text())
    assert meta["residual"] and meta["residual_reach"] == 1 and meta["residual_forecaster"] == "seasonal_naive"
    kwargs = {"scenario": "small", "horizon_s": 7200.0}
    agent = make_policy(f"ckpt:{run / 'model.zip'}")
    planner = make_policy("lt_i", forecaster="seasonal_naive")
    with_agent = run_episode(make_env_for(agent, kwargs), agent, seed=1001).kpis
    alone = run_episode(make_env_for(planner, kwargs), planner, seed=1001).kpis
    assert with_agent == alone


def test_validation_env_takes_its_own_overrides():
    cfg = train.parse_args(["env_kwargs={horizon_s: 1800}", "eval_env_kwargs={fidelity: detailed}",
                            "env=sageserve_env/SageServeSmall-fast-v0"])
    train.resolve(cfg)
    assert cfg.validation_seeds == [900, 901, 902, 903]  # the v0 default
    assert train.env_factory(cfg)().unwrapped.config["fidelity"] == "fast"
    validation = train.env_factory(cfg, validation=True)().unwrapped
    assert validation.config["fidelity"] == "detailed" and validation.config["horizon_s"] == 1800


def test_bad_residual_forecaster_fails(tmp_path, capsys):
    assert train.main([f"log_folder={tmp_path}", "residual=true", "residual_forecaster=prophet"]) == 2
    assert "residual_forecaster" in capsys.readouterr().err


def test_best_model_keeps_the_statistics_it_was_evaluated_with(tmp_path):
    from agents.learned import normalizer_path

    run = _train(tmp_path, "algo=maskable_ppo", "hyperparams.batch_size=64", "eval_freq=128", "eval_episodes=1",
                 "validation_seeds=[900]", "normalize=true")
    best = run / "best_model.zip"
    assert best.exists() and normalizer_path(best) == run / "best_model_vecnormalize.pkl"
    assert normalizer_path(run / "model.zip") == run / "model_vecnormalize.pkl"
    policy = make_policy(f"ckpt:{best}")
    assert policy.normalizer is not None
    assert run_episode(make_env_for(policy, {"scenario": "small", "horizon_s": 600.0}), policy, seed=1001).steps == 10


def test_residual_demonstrations_are_the_adjustments_closest_to_the_expert():
    """In residual mode a demonstration is the expert's change minus the plan's, clipped to the
    reach; following those adjustments reproduces the expert whenever they fit."""
    from agents.training import ResidualPlan, collect_demonstrations

    def make():
        base = make_env_for(make_policy("oracle"), {"scenario": "small", "horizon_s": 3600.0})
        return ResidualPlan(base, make_policy("lt_i", forecaster="seasonal_naive"), reach=1)

    obs, actions = collect_demonstrations(make, make_policy("oracle"), 1, seeds=[7])
    assert actions.shape == (60, 2) and set(np.unique(actions)) <= {0, 1, 2}
    env = make()
    env.reset(seed=7)
    env._plan = np.array([1, -3])
    expert = env.unwrapped.max_delta + np.array([3, -3])
    np.testing.assert_array_equal(env.adjustment_towards(expert), [2, 1])


def test_mixed_tasks_train_one_agent_and_validate_on_each(tmp_path):
    """``mix_envs``: the worlds of two vectorized IDs train one agent; validation has a column
    per task and the overall mean is over every validation world."""
    import csv

    import yaml

    run = _train(tmp_path, "env=sageserve_env/SageServeSmall-fast-v1", "mix_envs=[sageserve_env/SageServe-small-fast-v1]",
                 "n_envs=4", "hyperparams.n_steps=32", "hyperparams.batch_size=64", "eval_freq=128",
                 "validation_seeds=[900,901]", "env_kwargs={horizon_s: 1800, max_delta: 2}")
    rows = list(csv.DictReader((run / "validation.csv").open()))
    assert len(rows) >= 2
    for row in rows:
        parts = [float(row[f"{task}/reward"]) for task in ("SageServeSmall-fast-v1", "SageServe-small-fast-v1")]
        assert float(row["reward"]) == pytest.approx(np.mean(parts))
    assert yaml.safe_load((run / "model.yaml").read_text())["mix_envs"] == ["sageserve_env/SageServe-small-fast-v1"]


def test_a_demand_residual_agent_acts_in_a_one_world_env_as_in_its_validation_worlds(tmp_path):
    """``demand_residual``: the agent adjusts the demand planner's changes in training and
    validation, and the saved model does the same through ``LearnedPolicy`` in a one-world env:
    its validation figures are those of its episodes played one day at a time, with the
    planner's headroom of training."""
    import csv

    import gymnasium as gym
    import yaml

    run = _train(tmp_path, "env=sageserve_env/SageServeSmall-fast-v1", "demand_residual=true", "demand_headroom=10",
                 "n_envs=2", "hyperparams.n_steps=64", "hyperparams.batch_size=64", "hyperparams.residual_reach=1",
                 "eval_freq=128", "validation_seeds=[900,901]", "env_kwargs={horizon_s: 1800, max_delta: 2}")
    meta = yaml.safe_load((run / "model.yaml").read_text())
    assert meta["demand_residual"] is True and meta["residual_reach"] == 1 and meta["demand_headroom"] == 10.0
    last = list(csv.DictReader((run / "validation.csv").open()))[-1]
    assert int(last["timesteps"]) == 256
    policy = make_policy(f"ckpt:{run / 'model.zip'}")
    gpu_hours = []
    for seed in (900, 901):
        env = gym.make("sageserve_env/SageServeSmall-fast-v1", horizon_s=1800, max_delta=2)
        obs, _ = env.reset(seed=seed)
        policy.reset(env.unwrapped, seed)
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(policy.act(obs, env.unwrapped))
            done = terminated or truncated
        gpu_hours.append(info["kpis"]["billed_gpu_hours"])
    assert float(last["billed_gpu_hours"]) == pytest.approx(np.mean(gpu_hours), rel=1e-12)


def test_task_env_kwargs_give_each_task_its_own_training_reward():
    """``task_env_kwargs``: the second ID's training worlds learn from its own reward weights
    (GPU cost counted 30 times), the first ID's from ``env_kwargs``' alone."""
    cfg = train.TrainConfig(env="sageserve_env/SageServeSmall-fast-v1", mix_envs=["sageserve_env/SageServe-small-fast-v1"],
                            env_kwargs={"horizon_s": 1800, "max_delta": 2}, task_env_kwargs=[{}, {"reward": {"cost": 30.0}}])
    plain = train.TrainConfig(**{**vars(cfg), "task_env_kwargs": []})
    rewards, costs = [], []
    for c in (cfg, plain):
        venv = train.vector_training_env(c, 4)
        venv.seed(3)
        venv.reset()
        venv.step_async(np.zeros((4, *venv.action_space.shape), dtype=int))
        _, reward, _, _ = venv.step_wait()
        rewards.append(reward)
        costs.append(venv.endpoint_terms["cost"].sum(axis=1))
        venv.close()
    assert np.array_equal(rewards[0][:2], rewards[1][:2])
    assert np.allclose(costs[0][2:], 30 * costs[1][2:]) and np.all(costs[1][2:] < 0)


def test_hidden_features_read_zero_in_training_validation_and_acting(tmp_path):
    """``hidden_features``: the training and validation worlds show the agent 0 in those columns
    (and only those), its metadata names them, and the loaded agent acts the same whatever
    they hold, in either fidelity."""
    import yaml

    from agents.training import hidden_columns

    cfg = train.TrainConfig(env="sageserve_env/SageServeSmall-fast-v1", env_kwargs={"horizon_s": 1800, "max_delta": 2},
                            hidden_features=["queued.iw", "ttft"])
    plain = train.TrainConfig(**{**vars(cfg), "hidden_features": []})
    obs = []
    for c in (cfg, plain):
        venv = train.vector_training_env(c, 2)
        venv.seed(3)
        venv.reset()
        for _ in range(20):  # a few minutes in: requests are queued, first tokens have a TTFT
            venv.step_async(np.full((2, *venv.action_space.shape), 2))
            flat, _, _, _ = venv.step_wait()
        obs.append(flat)
        venv.close()
    env = make_env_for(make_policy("reactive"), {"scenario": "small", "fidelity": "fast"})
    cols = hidden_columns(env.unwrapped.observation_space, ["queued.iw", "ttft"])
    assert len(cols) == 2 * env.unwrapped.n_endpoints
    assert np.all(obs[0][:, cols] == 0) and np.any(obs[1][:, cols] != 0)
    others = np.setdiff1d(np.arange(obs[0].shape[1]), cols)
    assert np.array_equal(obs[0][:, others], obs[1][:, others])

    run = _train(tmp_path, "env=sageserve_env/SageServeSmall-fast-v1", "n_envs=2", "hyperparams.batch_size=64",
                 "eval_freq=128", "validation_seeds=[900]", "hidden_features=[queued.iw,ttft]")
    assert yaml.safe_load((run / "model.yaml").read_text())["hidden_features"] == ["queued.iw", "ttft"]
    agent = make_policy(f"ckpt:{run / 'model.zip'}")
    for fidelity in ("fast", "detailed"):
        env = make_env_for(agent, {"scenario": "small", "fidelity": fidelity, "horizon_s": 600.0})
        o, _ = env.reset(seed=1001)
        agent.reset(env.unwrapped, 1001)
        shown = {k: v.copy() for k, v in o.items()}
        shown["queued"][..., 0] = 4.0
        shown["ttft"][:] = 10.0
        assert np.array_equal(agent.act(o, env.unwrapped), agent.act(shown, env.unwrapped))


def test_demonstrations_come_from_each_of_bc_envs(tmp_path, capsys):
    """``bc_envs``: the expert plays ``bc_episodes`` days in each ID, here the one-world scalar
    envs of a vectorized ID's spaces (30 decisions a half-hour day)."""
    _train(tmp_path, "env=sageserve_env/SageServeSmall-fast-v1", "n_envs=2", "bc_policy=reactive", "bc_episodes=1",
           "bc_epochs=1", "bc_envs=[sageserve_env/SageServeSmall-fast-v0,sageserve_env/SageServe-small-fast-v0]")
    assert "behaviour cloning of reactive: 60 decisions" in capsys.readouterr().out


def _parameters(path):
    from sb3_contrib import MaskablePPO

    return MaskablePPO.load(path, device="cpu").policy.state_dict()


def test_validation_in_a_worker_process_changes_neither_figures_nor_training(tmp_path):
    """``validation_workers=1`` validates snapshots in a worker process while training goes on:
    the same validation.csv rows (but the seconds), the same best model with the same statistics,
    and the same trained weights as validating in the training process."""
    import csv
    import pickle

    import torch

    argv = ["env=sageserve_env/SageServeSmall-fast-v1", "mix_envs=[sageserve_env/SageServe-small-fast-v1]", "n_envs=4",
            "hyperparams.n_steps=32", "hyperparams.batch_size=64", "eval_freq=128", "validation_seeds=[900,901]",
            "normalize=true", "save_freq=0", "env_kwargs={horizon_s: 1800, max_delta: 2}"]
    runs = [_train(tmp_path / f"workers{n}", *argv, f"validation_workers={n}") for n in (0, 1)]
    rows = [list(csv.DictReader((run / "validation.csv").read_text().splitlines())) for run in runs]
    assert [r["timesteps"] for r in rows[1]] == ["4", "132", "256"] and all(float(r["seconds"]) > 0 for r in rows[1])
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in rows[0]] == \
           [{k: v for k, v in r.items() if k != "seconds"} for r in rows[1]]
    assert not (runs[1] / "validation").exists()  # the snapshots are gone once validated
    for name in ("model.zip", "best_model.zip"):
        sync, worker = (_parameters(run / name) for run in runs)
        assert sync.keys() == worker.keys() and all(torch.equal(sync[k], worker[k]) for k in sync)
    stats = [pickle.loads((run / "best_model_vecnormalize.pkl").read_bytes()).obs_rms for run in runs]
    assert np.array_equal(stats[0].mean, stats[1].mean) and np.array_equal(stats[0].var, stats[1].var)


def test_a_validation_failing_in_the_worker_stops_training_and_names_its_steps(tmp_path):
    import functools

    from sb3_contrib import MaskablePPO

    from agents.vector_training import SB3VectorEnv, VectorValidation, make_vector_env

    kwargs = {"horizon_s": 1800.0, "max_delta": 2}
    model = MaskablePPO("MlpPolicy", SB3VectorEnv(make_vector_env("sageserve_env/SageServeSmall-fast-v1", kwargs, 2)),
                        n_steps=8, batch_size=16, device="cpu", seed=0)
    with pytest.raises(ValueError, match="picklable task constructors"):
        VectorValidation({"x": lambda n: None}, 900, 1, 8, tmp_path, masked=True, workers=1)
    broken = VectorValidation({"Nope": functools.partial(make_vector_env, "sageserve_env/Nope-vec-v1", kwargs)},
                              900, 1, 8, tmp_path, masked=True, workers=1)
    failure = "validation of the model at 2 world steps failed in the validation worker: NameNotFound.*Nope-vec"
    with pytest.raises(RuntimeError, match=failure):
        model.learn(16, callback=broken)
