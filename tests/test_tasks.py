"""The v1 workload process, the tasks and the fair start."""

import hashlib

import gymnasium as gym
import numpy as np
import pytest

import sageserve_env  # noqa: F401
from sageserve_env.capacity import first_hour_instances
from sageserve_env.config import ConfigError, load_config, preset_names
from sageserve_env.env.sageserve_env import SageServeEnv
from sageserve_env.registration import env_ids
from sageserve_env.tasks import task, tasks
from sageserve_env.workload.generator import generate, generate_with_history, uses_v1_process, v1_rates

# sha256 of each task's first test workload (requests and history), recorded at release.
FIRST_TEST_WORKLOAD = {
    "Day-v1": "3d3ec1843db8529c739256c3b4910e618332de6f6f1aa886638950bf7ea5340b",
    "DayLight-v1": "b6657df079e864b573bedb9666c82632f9a6d199680ccd471fa18c10e0fdab34",
    "Week-v1": "ec32746b9e385d171e76ba95b3f0c0d1d2b998c747968901f85c700aa428dd0d",
    "Burst-v1": "2daa40242943d722ace2f453ddb1ecd2950730bb2dd940ab5d5e47290e083314",
    "Outage-v1": "8d7e2578fa2496853246b6b844fe3dbbd9321d2461da083541447f79ec9a35ff",
}


def workload_hash(workload, history, outages=()) -> str:
    h = hashlib.sha256()
    h.update(np.round(workload.arrival_s * 1e6).astype(np.int64).tobytes())
    for col in (workload.region, workload.model, workload.tier, workload.prompt_tokens, workload.output_tokens,
                workload.batch_id):
        h.update(np.ascontiguousarray(col).tobytes())
    h.update(np.round(history).astype(np.int64).tobytes())
    for o in outages:  # the episode's drawn outages, where the task has any
        h.update(f"{o.region}/{o.share!r}/{o.start_s!r}/{o.duration_s!r}".encode())
    return h.hexdigest()


def first_test_workload(spec):
    """The first test episode's workload, history and outages, as ``reset`` draws them."""
    env = SageServeEnv(**spec.env_kwargs())
    workload, history = env.draw_episode(spec.seeds.test[0])
    return workload, history, env.draw_outages()


def test_fast_task_draws_the_same_episode():
    """A fast task's episode is its detailed task's: the same workload, history and outages."""
    spec = task("DayLight-fast-v1")
    workload, history, outages = first_test_workload(spec)
    assert spec.fidelity == "fast" and not outages
    assert workload_hash(workload, history) == FIRST_TEST_WORKLOAD["DayLight-v1"]


@pytest.mark.parametrize("env_id", sorted(FIRST_TEST_WORKLOAD))
def test_first_test_workload_is_pinned(env_id):
    spec = tasks()[env_id]
    workload, history, outages = first_test_workload(spec)
    assert len(history) == 3 * 1440 and len(workload) > 1e6
    assert len(outages) == (env_id == "Outage-v1")
    assert workload_hash(workload, history, outages) == FIRST_TEST_WORKLOAD[env_id]


def test_task_seed_ranges_are_disjoint_and_ids_registered():
    assert {"Day-v1", "DayLight-v1", "Week-v1", "Burst-v1", "Outage-v1"} <= set(tasks())
    assert set(tasks("v1-fast")) == {k.replace("-v1", "-fast-v1") for k in tasks()}
    for env_id, spec in {**tasks(), **tasks("v1-fast")}.items():
        ranges = [spec.seeds.seeds(s) for s in ("train", "validation", "test")]
        for i, a in enumerate(ranges):
            assert len(a) > 0
            for b in ranges[i + 1:]:
                assert not set(a) & set(b), env_id
        assert gym.spec(f"sageserve_env/{env_id}").kwargs == spec.env_kwargs()
        assert gym.spec(f"sageserve_env/{env_id}").entry_point.endswith(":SageServeEnv")
    assert tasks()["Week-v1"].horizon_s == 604800.0
    # the vectorized suite: every task without server faults, the fast kwargs, the vector entry points
    assert set(tasks("v1-vec")) == {"Day-vec-v1", "DayLight-vec-v1", "Week-vec-v1", "Burst-vec-v1"}
    for env_id, spec in tasks("v1-vec").items():
        fast = tasks("v1-fast")[env_id.replace("-vec-", "-fast-")]
        assert spec.env_kwargs() == fast.env_kwargs() and task(env_id) == spec
        for name in (f"sageserve_env/{env_id}", env_id):
            assert gym.spec(name).kwargs == spec.env_kwargs()
            assert gym.spec(name).vector_entry_point.endswith(":SageServeVectorEnv")
            assert gym.spec(name).entry_point.endswith(":SageServeFastEnv")
    with pytest.raises(ValueError, match="faults"):
        tasks()["Outage-v1"].in_vector_fidelity()
    for env_id, spec in tasks().items():  # the fast task is the same spec, run by the fast fidelity
        fast = tasks("v1-fast")[env_id.replace("-v1", "-fast-v1")]
        assert fast.fidelity == "fast" and spec.fidelity == "detailed"
        assert {**fast.env_kwargs(), "fidelity": "detailed"} == spec.env_kwargs()
        assert task(fast.env_id) == fast and task(f"sageserve_env/{env_id}") == spec


def test_v0_ids_keep_their_kwargs_and_process():
    ids = env_ids()
    assert ids["SageServe-v0"] == {"scenario": "paper"}
    assert ids["SageServeSmall-fast-v0"] == {"scenario": "small", "fidelity": "fast"}
    for preset in preset_names():
        assert not uses_v1_process(load_config(preset))
    assert SageServeEnv.default_config()["initial_allocation"] == "scenario"


def small(*overrides):
    return load_config("small", list(overrides))


def _idc(t, window, span):
    c = np.bincount((t // window).astype(int), minlength=int(span // window))[: int(span // window)]
    return c.var(ddof=1) / c.mean()


def test_rate_noise_makes_counts_overdispersed():
    base = ["workload.requests_per_day=2e6", "workload.peak_to_trough=1", "workload.iw_share=1"]
    flat = generate(small(*base), np.random.default_rng(3), days=0.25)
    noisy = generate(small(*base, "workload.rate_sigma=0.22", "workload.rate_tau_s=246"),
                     np.random.default_rng(3), days=0.25)
    span = 0.25 * 86400
    one = lambda w: w.arrival_s[(w.model == 0) & (w.tier == 0)]  # noqa: E731
    assert _idc(one(flat), 300, span) < 2.0  # Poisson
    assert _idc(one(noisy), 300, span) > 8.0  # the AR(1) of the calibrated sd and time


def test_flash_crowd_multiplies_its_target_only():
    knobs = ["workload.flash_per_day=4", "workload.flash_duration_s=600", "workload.rate_sigma=0.1"]
    with_flash = v1_rates(small(*knobs, "workload.flash_factor=6"), np.random.default_rng(5), 1.0, 0)
    without = v1_rates(small(*knobs, "workload.flash_factor=1"), np.random.default_rng(5), 1.0, 0)
    starts, _, iw6, _, flashes = with_flash
    iw1 = without[2]
    assert flashes
    ratio = iw6 / iw1
    s, d, r, m = flashes[0]
    inside = (starts >= s + 60) & (starts + 60 <= s + d)
    assert np.allclose(ratio[r, m, inside], 6.0)
    other = 1 - m
    covered = np.zeros(len(starts), dtype=bool)
    for s2, d2, r2, m2 in flashes:
        if m2 == other:
            covered |= (starts + 60 > s2) & (starts < s2 + d2)
    assert np.allclose(ratio[r, other, ~covered], 1.0)


def test_history_continues_the_process_and_growth_compounds():
    cfg = small("workload.history_days=2", "workload.growth_per_day=0.1", "workload.start_day=3",
                "workload.iw_share=1")
    w, hist = generate_with_history(cfg, np.random.default_rng(0), days=1.0)
    assert hist.shape == (2 * 1440, 1, 2)  # Tuesday and Wednesday before a Thursday
    day = np.bincount((w.arrival_s // 60).astype(int), weights=w.prompt_tokens, minlength=1440).sum()
    before = hist[1440:].sum(), hist[:1440].sum()  # yesterday, the day before
    assert before[0] / day == pytest.approx(1 / 1.1, rel=0.05)
    assert before[1] / before[0] == pytest.approx(1 / 1.1, rel=0.05)


@pytest.mark.parametrize("key,value", [("workload.rate_sigma", -0.1), ("workload.flash_factor", 0.5),
                                       ("workload.flash_scope", "planet"), ("workload.history_days", 40),
                                       ("workload.growth_per_day", -1.5), ("workload.rate_tau_s", 0)])
def test_bad_v1_knob_names_key_and_value(key, value):
    with pytest.raises(ConfigError, match=key.split(".")[1]) as exc:
        load_config("small", [f"{key}={value}"])
    assert str(value) in str(exc.value)


def test_first_hour_allocation_follows_demand():
    light = small("workload.requests_per_day=2e5")
    heavy = small("workload.requests_per_day=4e6", "workload.peak_to_trough=1")
    a = first_hour_instances(light, generate(light, np.random.default_rng(1), days=1 / 24))
    b = first_hour_instances(heavy, generate(heavy, np.random.default_rng(1), days=1 / 24))
    assert all(n >= light.scaling.min_instances for n in a.values())
    assert sum(b.values()) > sum(a.values()) and sum(b.values()) <= heavy.regions[0].servers


@pytest.mark.parametrize("fidelity", ["detailed", "fast"])
def test_v1_episode_plans_at_start(fidelity):
    from agents import make_policy
    from agents.runner import run_episode

    kw = {"scenario": "small", "horizon_s": 1800.0, "initial_allocation": "first_hour", "fidelity": fidelity,
          "sim_overrides": ["workload.history_days=1", "workload.rate_sigma=0.2"]}
    plans = {}
    for name, extra in (("v1", kw), ("v0", {"scenario": "small", "horizon_s": 1800.0, "fidelity": fidelity})):
        policy = make_policy("lt_i", forecaster="seasonal_naive")
        env = SageServeEnv(**policy.env_kwargs(), **extra)
        if name == "v1":  # the start: the first hour's allocation, the preceding day as history
            workload, history = env.draw_episode(7)
            env.reset(seed=7)
            wanted = first_hour_instances(env.sim_config, workload)
            assert {f"westus/{m}": int(n) for m, n in zip(env.sim_config.model_names,
                                                          env.sim.fleet.counts[0, :-1, 0])} == wanted
            assert env.sim.fidelity == fidelity and env.view().history_minutes() == len(history) == 1440
        run_episode(env, policy, seed=7)
        plans[name] = [t for t, _ in policy.plan_log]
    assert plans["v1"][0] == 0.0  # the forecaster has the preceding day from the start
    assert plans["v0"][0] >= 900.0  # 15 minutes of history first


def test_suite_arguments():
    import evaluate
    from sageserve_env.config import ConfigError as CE

    cfg = evaluate.parse_args(["suite=v1", "tasks=[Burst-v1]"])
    assert cfg.scenarios == ["Burst-v1"] and cfg.policies == evaluate.SUITE_POLICIES
    assert evaluate.seeds_of(cfg, "Burst-v1") == list(range(20000, 20010))
    cfg = evaluate.parse_args(["suite=v1-fast", "tasks=[Outage-fast-v1]"])
    assert cfg.scenarios == ["Outage-fast-v1"] and evaluate.env_kwargs(cfg, "Outage-fast-v1")["fidelity"] == "fast"
    assert evaluate.seeds_of(cfg, "Outage-fast-v1") == list(range(20000, 20010))
    cfg = evaluate.parse_args(["suite=v1", "seeds=[5]", "policies=[reactive,oracle]"])
    assert evaluate.seeds_of(cfg, "Day-v1") == [5] and cfg.policies == ["reactive", "oracle"]
    assert evaluate.env_kwargs(cfg, "Day-v1") == tasks()["Day-v1"].env_kwargs()
    for bad in (["suite=v2"], ["suite=v1-vec"], ["suite=v1", "tasks=[Nope-v1]"], ["suite=v1", "scenario=paper"], ["tasks=[Day-v1]"]):
        with pytest.raises(CE):
            evaluate.parse_args(bad)


def test_episode_scores_and_aggregates():
    import pandas as pd

    import evaluate
    from sageserve_env.aggregate import iqm, prob_improvement

    ep = pd.DataFrame({"task": ["A"] * 6, "seed": [1, 1, 1, 2, 2, 2],
                       "policy": ["reactive", "oracle", "x"] * 2, "reward": [-10.0, 0.0, -5.0, -20.0, -10.0, -5.0]})
    assert evaluate.episode_scores(ep).tolist() == [0.0, 1.0, 0.5, 0.0, 1.0, 1.5]
    assert iqm(np.array([0.0, 1.0, 2.0, 3.0, 100.0, -100.0, 1.5, 2.5])) == pytest.approx(1.75)
    assert prob_improvement([np.array([1.0, 2.0])], [np.array([0.0, 2.0])]) == pytest.approx(0.625)
    ep["normalized_score"] = evaluate.episode_scores(ep)
    agg = evaluate.suite_aggregates(ep, 50).set_index("policy")
    assert agg.loc["x", "iqm"] == pytest.approx(1.0) and agg.loc["x", "p_improve_over_reactive"] == 1.0
