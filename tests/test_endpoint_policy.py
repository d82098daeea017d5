"""The endpoint-shared actor-critic policies (agents/endpoint_policy.py) and the vectorized
training callbacks (agents/vector_training.py)."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

import sageserve_env  # noqa: F401
from agents.endpoint_policy import EndpointPolicy, MaskableEndpointPolicy, endpoint_layout
from agents.vector_training import SB3VectorEnv, VectorValidation
from sageserve_env.env.sageserve_env import observation_space


@pytest.mark.parametrize("n_regions,n_models", [(1, 2), (3, 4), (2, 2), (4, 1), (4, 2)])
def test_layout_gathers_each_endpoints_own_numbers(n_regions, n_models):
    space = observation_space(n_regions, n_models)
    sample = {k: np.random.default_rng(0).random(s.shape).astype(np.float32) for k, s in space.spaces.items()}
    flat = spaces.flatten(space, sample)
    own, shared, r_, m_ = endpoint_layout(len(flat), n_regions * n_models)
    assert (r_, m_) == (n_regions, n_models)
    np.testing.assert_array_equal(flat[shared], sample["time"])
    for e in range(n_regions * n_models):
        r, m = divmod(e, n_models)
        expected = np.concatenate([sample[k][r].ravel() if k == "region" else sample[k][r, m].ravel()
                                   for k in space.spaces if k != "time"])
        np.testing.assert_array_equal(flat[own[e]], expected)


def test_layout_refuses_an_observation_that_is_not_the_envs():
    with pytest.raises(ValueError, match="FlattenObservation"):
        endpoint_layout(17, 12)


def _policy(cls, n_regions=3, n_models=4, **kwargs):
    obs = spaces.flatten_space(observation_space(n_regions, n_models))
    act = spaces.MultiDiscrete(np.full(n_regions * n_models, 9))
    return cls(obs, act, lambda _: 3e-4, **kwargs)


def test_without_ids_permuting_endpoints_permutes_the_logits():
    """Equivariance: the same endpoint rule for every endpoint, context by a mean."""
    torch.manual_seed(0)
    policy = _policy(EndpointPolicy, n_regions=1, n_models=4, endpoint_ids=False)
    space = observation_space(1, 4)
    sample = {k: np.random.default_rng(1).random(s.shape).astype(np.float32) for k, s in space.spaces.items()}
    perm = np.array([2, 0, 3, 1])
    swapped = {k: (v if k in ("region", "time") else v[:, perm]) for k, v in sample.items()}
    x = torch.as_tensor(np.stack([spaces.flatten(space, sample), spaces.flatten(space, swapped)]))
    with torch.no_grad():
        latent_pi, latent_vf = policy.mlp_extractor(policy.extract_features(x))
        logits = policy.action_net(latent_pi).view(2, 4, 9)
        values = policy.value_net(latent_vf)
    torch.testing.assert_close(logits[1], logits[0][perm])
    torch.testing.assert_close(values[1], values[0])


def test_the_blind_agents_do_not_read_the_week():
    from agents import make_policy

    assert make_policy("rl_v1_mix4").model.policy.week_phase is False
    assert make_policy("rl_v1_mix5").model.policy.week_phase is False
    assert make_policy("rl_v1_scratch").model.policy.week_phase is False
    assert make_policy("rl_v1_mix3").model.policy.week_phase is True


def test_without_week_phase_the_week_changes_nothing_and_the_weights_still_fit():
    from sageserve_env.env.sageserve_env import TIME_FEATURES

    torch.manual_seed(0)
    seeing, blind = _policy(EndpointPolicy, hidden=16), _policy(EndpointPolicy, hidden=16, week_phase=False)
    blind.load_state_dict(seeing.state_dict())  # the same parameters: the trained agent loads either way
    space = observation_space(3, 4)
    sample = {k: np.random.default_rng(2).random(s.shape).astype(np.float32) for k, s in space.spaces.items()}
    sunday = {**sample, "time": sample["time"].copy()}
    sunday["time"][[TIME_FEATURES.index("sin_week"), TIME_FEATURES.index("cos_week")]] = [-0.8, 0.6]
    later = {**sample, "time": sample["time"].copy()}
    later["time"][TIME_FEATURES.index("sin_day")] = -0.5
    x = torch.as_tensor(np.stack([spaces.flatten(space, d) for d in (sample, sunday, later)]))

    def logits(policy):
        with torch.no_grad():
            return policy.action_net(policy.mlp_extractor.forward_actor(policy.extract_features(x)))

    seen, unseen = logits(seeing), logits(blind)
    assert not torch.allclose(seen[0], seen[1])  # the week's phase moves the agent that reads it
    torch.testing.assert_close(unseen[0], unseen[1])  # and not the blind one
    assert not torch.allclose(unseen[0], unseen[2])  # which still reads the time of day


def test_week_phase_must_be_a_boolean():
    with pytest.raises(ValueError, match="week_phase must be true or false, got 'flase'"):
        _policy(EndpointPolicy, hidden=8, week_phase="flase")


def test_hold_prior_starts_at_no_change_and_survives_save_and_load(tmp_path):
    from sb3_contrib import MaskablePPO

    venv = SB3VectorEnv(gym.make_vec("sageserve_env/SageServeSmall-fast-v1", num_envs=2,
                                     vectorization_mode="vector_entry_point", max_delta=2))
    model = MaskablePPO(MaskableEndpointPolicy, venv, n_steps=8, batch_size=16, device="cpu", seed=0,
                        policy_kwargs={"hidden": 16, "hold_prior": 3.0})
    obs = venv.reset()
    action, _ = model.predict(obs, deterministic=True, action_masks=venv.action_masks())
    assert (action == 2).all()  # the middle of 2 max_delta + 1 choices: no change
    model.learn(32)
    model.save(tmp_path / "m.zip")
    loaded = MaskablePPO.load(tmp_path / "m.zip", device="cpu")
    assert type(loaded.policy) is MaskableEndpointPolicy and loaded.policy.hidden == 16
    masks = venv.action_masks()
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True, action_masks=masks)[0],
                                  model.predict(obs, deterministic=True, action_masks=masks)[0])
    venv.close()


def test_endpoint_policy_needs_one_choice_count_per_endpoint():
    obs = spaces.flatten_space(observation_space(1, 2))
    with pytest.raises(ValueError, match="MultiDiscrete"):
        EndpointPolicy(obs, spaces.MultiDiscrete([3, 5]), lambda _: 3e-4)


def test_vector_validation_replays_the_same_days_and_keeps_the_best(tmp_path):
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.logger import configure

    def make(n):
        return gym.make_vec("sageserve_env/SageServeSmall-fast-v1", num_envs=n, vectorization_mode="vector_entry_point",
                            max_delta=2, horizon_s=1800.0)

    model = MaskablePPO(MaskableEndpointPolicy, SB3VectorEnv(make(2)), n_steps=8, batch_size=16, device="cpu", seed=0,
                        policy_kwargs={"hidden": 16})
    model.set_logger(configure(None, []))
    check = VectorValidation({"SageServeSmall-fast-v1": make}, first_seed=900, n_days=3, every=10**9, out=tmp_path, masked=True)
    check.init_callback(model)
    check.on_training_start(locals(), globals())
    first, again = check.evaluate(), check.evaluate()
    assert first["reward"] == again["reward"] and first["billed_gpu_hours"] == again["billed_gpu_hours"] > 0
    assert 0.0 <= first["iw_slo_attainment"] <= 1.0
    assert (tmp_path / "best_model.zip").exists()
    rows = (tmp_path / "validation.csv").read_text().splitlines()
    assert rows[0].startswith("timesteps,reward") and len(rows) == 3


@pytest.mark.parametrize("name, env_id", [("rl_v1", "Burst-v1"), ("rl_v1", "Day-fast-v1"), ("rl_v1_mix", "DayLight-v1"),
                                          ("rl_v1_mix", "Outage-fast-v1"),
                                          ("rl_v1_mix3", "Day-v1"), ("rl_v1_mix4", "Week-v1"),
                                          ("rl_v1_mix5", "DayLight-fast-v1"), ("rl_v1_scratch", "Outage-v1"),
                                          ("rl_v1_budget", "Week-fast-v1"), ("rl_v1_transfer", "Burst-v1"),
                                          ("rl_v1_burst", "Burst-fast-v1"), ("rl_v1_demand", "Day-v1"),
                                          ("rl_v1_demand", "Week-fast-v1"), ("rl_v1_headroom", "Burst-v1"),
                                          ("rl_v1_headroom", "DayLight-fast-v1"), ("rl_v1_headroom96", "Day-v1"),
                                          ("rl_v1_headroom96", "Week-fast-v1")])
def test_the_shipped_v1_agents_run_in_the_task_envs(name, env_id):
    """rl_v1 and the agents trained on from it were trained in Burst-vec-v1 (rl_v1_mix also in
    DayLight-vec-v1, rl_v1_mix3 in Day-vec-v1 and DayLight-vec-v1 too, rl_v1_mix4 and rl_v1_mix5 in
    Week-vec-v1 as well; rl_v1_scratch in those four from the start, rl_v1_budget from it,
    rl_v1_transfer from that, rl_v1_burst from that in Burst-vec-v1 alone; rl_v1_demand from
    nothing in the four, adjusting the demand planner's changes, rl_v1_headroom the same over the
    planner at 0.95 of the arrivals, rl_v1_headroom96 over it at 0.96); the detailed and
    fast task envs give them the same spaces, and they act within their masks (max_delta 4, 60 s
    decisions from their metadata)."""
    from agents import make_policy
    from agents.runner import make_env_for, run_episode
    from sageserve_env.tasks import task

    policy = make_policy(name)
    env = make_env_for(policy, {**task(env_id).env_kwargs(), "horizon_s": 600.0})
    policy.check_env(env)
    assert env.max_delta == 4 and env.interval == 60.0
    result = run_episode(env, policy, seed=20000)
    assert result.steps == 10 and result.kpis["refused_changes"] == 0
    assert result.kpis["billed_gpu_hours"] > 0
