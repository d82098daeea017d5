"""Siloed deployment: the config's endpoints, routing by tier in both fidelities, per-endpoint
scaling, conservation of requests, and the workload assignment it rests on."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import make_workload
from sageserve_env.config import ConfigError, load_config
from sageserve_env.sim import make_simulator
from sageserve_env.sim.fleet import ACTIVE, SPOT, Refusal, ScaleKind
from sageserve_env.sim.stats import Stat
from sageserve_env.workload.deployment import assign, assign_history
from sageserve_env.workload.generator import generate
from sageserve_env.workload.workload import IW, NIW, WorkloadError

# two regions, so that IW requests can be rerouted; NIW jobs every few minutes
SILOED = ["deployment.mode=siloed", "deployment.prod_instances=2", "deployment.dev_instances=1", "scaling.initial_instances=3",
          "regions=[{name: westus, servers: 6, utc_offset_h: -8}, {name: eastus, servers: 6, utc_offset_h: -5}]",
          "workload.requests_per_day=4e5", "workload.iw_share=0.7", "workload.niw_job_size_mean=20",
          "duration_s=1800"]


@functools.lru_cache(maxsize=None)
def configs():
    """(siloed, unified) configs of the same fleet and catalogue (loaded once: hypothesis calls often)."""
    cfg = load_config("small", SILOED)
    return cfg, load_config(cfg, ["deployment.mode=unified"])


@pytest.fixture(scope="module")
def siloed():
    cfg = load_config("small", SILOED)
    return cfg, generate(cfg, np.random.default_rng(5), days=1800 / 86400)


def test_siloed_config_lays_out_prod_and_dev_endpoints():
    cfg = load_config("small", SILOED)
    assert cfg.model_names == ["A-p", "C-p", "A-d", "C-d"]
    assert cfg.workload_models == ["A", "C"]
    assert [(cfg.models[m].serves, cfg.models[m].tier) for m in cfg.model_names] == \
        [("A", "IW"), ("C", "IW"), ("A", "NIW"), ("C", "NIW")]
    assert [cfg.initial_instances("westus", m) for m in cfg.model_names] == [2, 2, 1, 1]
    assert cfg.models["A-d"].layers == cfg.models["A-p"].layers == load_config("small").models["A"].layers
    again = load_config(cfg, ["scaling.initial_overrides={westus/A-d: 2, westus/A-p: 1}"])  # idempotent, per-endpoint override
    assert again.model_names == cfg.model_names and again.initial_instances("westus", "A-d") == 2
    unified = load_config(cfg, ["deployment.mode=unified"])
    assert unified.model_names == ["A", "C"] and unified.models == load_config("small", SILOED[3:]).models


@pytest.mark.parametrize("override, message", [
    ("deployment.mode=mixed", "deployment.mode"),
    ("deployment.dev_instances=-1", "deployment.dev_instances"),
    ("deployment.prod_instances=3", "fewer servers"),
    ("scaling.initial_overrides={westus/A: 1}", "scaling.initial_overrides.westus/A"),
])
def test_bad_siloed_config_names_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("small", SILOED + [override])


def test_generated_requests_go_to_their_tiers_endpoint(siloed):
    cfg, w = siloed
    unified = load_config(cfg, ["deployment.mode=unified"])
    u = generate(unified, np.random.default_rng(5), days=1800 / 86400)  # the same draws, unified
    np.testing.assert_array_equal(w.arrival_s, u.arrival_s)
    names = np.array(w.models)[w.model]
    base = np.array(u.models)[u.model]
    np.testing.assert_array_equal(names, [f"{b}-p" if t == IW else f"{b}-d" for b, t in zip(base, u.tier)])
    assert (w.tier == NIW).any() and (w.tier == IW).any()


@pytest.mark.parametrize("fidelity", ["detailed", "fast"])
def test_siloed_routing_scaling_and_conservation(siloed, fidelity):
    """IW arrives only at prod endpoints, NIW only at dev ones (at home); every request is
    accounted for; scaling one endpoint leaves the other of its model alone."""
    cfg, w = siloed
    sim = make_simulator(cfg, w, fidelity)
    n_m = len(cfg.model_names)
    prod = np.array([cfg.models[m].tier == "IW" for m in cfg.model_names] * len(cfg.regions))
    sim.run_until(600)
    before = sim.fleet.counts.copy()
    result = sim.scale("westus", "A-d", -1)  # a dev endpoint gives its only instance... refused at the floor
    assert result.refusal is Refusal.MIN_INSTANCES
    up = sim.scale("westus", "A-p", 1)  # no free server, no spot one: refused
    assert up.refusal is Refusal.NO_SERVER and (sim.fleet.counts == before).all()
    down = sim.scale("eastus", "C-p", -1)
    assert down.kinds == (ScaleKind.DRAIN,)
    counts = sim.fleet.counts
    assert counts[1, 1, ACTIVE] == 1 and counts[1, 3, ACTIVE] == 1  # C-p lost one, C-d kept its own
    sim.run_until(1200)
    up = sim.scale("eastus", "C-d", 1)  # C-p's server went to spot holding C-p: C-d loads it (level 2)
    assert up.kinds == (ScaleKind.LOAD_OTHER,) and sim.fleet.counts[1, 1, SPOT] == 0
    sim.run_until(1800)
    sim.check_invariants()
    stats = sim.statistics()
    arrived = stats[:, Stat.ARRIVED]
    assert arrived.sum() == len(w)
    assert stats[~prod, Stat.ARRIVED_PROMPT_TOKENS].sum() == 0  # no IW request at a dev endpoint
    for m, name in enumerate(cfg.model_names):
        mine = w.model == m
        per_region = arrived[[r * n_m + m for r in range(len(cfg.regions))]]
        if cfg.models[name].tier == "NIW":  # NIW is served at home: exactly its home region's requests
            assert (w.tier[mine] == NIW).all()
            np.testing.assert_array_equal(per_region, np.bincount(w.region[mine], minlength=len(cfg.regions)))
        else:  # IW may be rerouted to another region, but keeps its (prod) model
            assert (w.tier[mine] == IW).all() and per_region.sum() == mine.sum()
    rec = sim.records()
    if rec is not None:  # detailed: every completed request was served by its own endpoint model
        done = np.isfinite(rec["completion_s"])
        assert done.any()
        np.testing.assert_array_equal(rec["model"][done], w.model[: len(done)][done])
        niw = done & (rec["tier"] == NIW)
        np.testing.assert_array_equal(rec["served_region"][niw], rec["region"][niw])


def test_detailed_and_fast_agree_on_arrivals_per_endpoint(siloed):
    cfg, w = siloed
    stats = []
    for fidelity in ("detailed", "fast"):
        sim = make_simulator(cfg, w, fidelity)
        sim.run_until(1800)
        stats.append(sim.statistics())
    # NIW arrivals are fixed by the home region; IW ones by the same router on the same utilizations
    # only up to rerouting, so compare the per-model totals
    n_m = len(cfg.model_names)
    for s in stats:
        assert s[:, Stat.ARRIVED].reshape(-1, n_m).sum(0).tolist() == np.bincount(w.model, minlength=n_m).tolist()


def test_assign_rejects_a_request_no_endpoint_serves():
    cfg = load_config("small", SILOED)
    unified = load_config(cfg, ["deployment.mode=unified"])
    base = make_workload(unified, [0.0, 1.0, 2.0], 100, 10, tier=[IW, NIW, IW], model=["A", "C", "C"])
    assigned = assign(cfg, base)
    assert [assigned.models[m] for m in assigned.model] == ["A-p", "C-d", "C-p"]
    assert assign(cfg, assigned) is assigned  # already on the endpoints
    assert assign(unified, base) is base  # a unified deployment keeps the catalogue's names
    wrong = make_workload(cfg, [0.0, 1.0], 100, 10, tier=[IW, IW], model=["A-p", "A-d"])
    with pytest.raises(WorkloadError, match=r"row 1, model 'A-d' tier IW"):
        assign(cfg, wrong)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["A", "C"]), st.sampled_from([IW, NIW])), min_size=1, max_size=40))
def test_assign_maps_every_model_and_tier_to_its_endpoint(requests):
    cfg, unified = configs()
    models, tiers = zip(*requests)
    base = make_workload(unified, np.arange(len(requests), dtype=float), 50, 5, tier=list(tiers), model=list(models))
    out = assign(cfg, base)
    for i, (model, tier) in enumerate(requests):
        endpoint = cfg.models[out.models[out.model[i]]]
        assert endpoint.serves == model and endpoint.tier == ("IW" if tier == IW else "NIW")


def test_history_moves_to_prod_endpoints():
    cfg = load_config("small", SILOED)
    history = np.arange(2 * 2 * 2, dtype=float).reshape(2, 2, 2)  # minutes, regions, (A, C)
    out = assign_history(cfg, history)
    np.testing.assert_array_equal(out[:, :, :2], history)  # A-p, C-p
    assert not out[:, :, 2:].any()  # dev endpoints serve no IW demand


@pytest.mark.parametrize("fidelity", ["detailed", "fast"])
def test_env_treats_silo_endpoints_like_any_other(fidelity):
    from sageserve_env.env.sageserve_env import SageServeEnv

    cfg = load_config("small", SILOED)
    env = SageServeEnv(config={"scenario": cfg, "horizon_s": 600, "fidelity": fidelity})
    obs, _ = env.reset(seed=1)
    assert env.n_endpoints == 2 * 4 and obs["instances"].shape == (2, 4, 4)
    assert env.action_masks().size == 8 * (2 * env.max_delta + 1)
    unified = load_config(cfg, ["deployment.mode=unified"])
    env.reset(seed=1, options={"workload": make_workload(unified, [1.0, 2.0], 100, 10, tier=[IW, NIW])})
    _, _, _, truncated, info = env.step(env.action_space.sample())
    assert env.sim.arrived == 2 and np.isfinite(info["reward_terms"]["cost"])


def test_vectorized_fast_fidelity_names_the_option():
    from sageserve_env.sim.vector import VectorFlow

    with pytest.raises(ValueError, match="deployment.mode='siloed'"):
        VectorFlow(load_config("small", SILOED), [0], 600.0)


def test_tier_utility_weights_served_requests_and_donated_time():
    from sageserve_env.silo import UtilityWeights, tier_utility

    cfg = load_config("small", SILOED)
    summary = {"requests_completed": 110, "niw_completed": 10,
               "per_region": [{"region": "westus", "donated_gpu_hours": 8.0 * 2.5},
                              {"region": "eastus", "donated_gpu_hours": 8.0 * 0.5}]}
    u = tier_utility(summary, cfg)
    assert (u["iw_served"], u["niw_served"], u["spot_server_hours"]) == (100, 10, 3.0)
    assert u["utility_total"] == 3 * 100 + 10 + 1.5 * 4 * 3.0
    assert tier_utility(summary, cfg, UtilityWeights(1, 0, 0))["utility_total"] == 100
    nan = np.nan
    records = {"arrival_s": np.zeros(5), "sla_s": np.array([10.0, 10.0, 10.0, 100.0, 100.0]),
               "tier": np.array([IW, IW, IW, NIW, NIW]), "first_token_s": np.array([5.0, 20.0, 5.0, 1.0, 1.0]),
               "completion_s": np.array([9.0, 30.0, nan, 50.0, 200.0])}  # in SLO, late, unfinished; in, late
    u = tier_utility(summary, cfg, records=records)
    assert (u["iw_served_in_slo"], u["niw_served_in_slo"]) == (1, 1)
    assert u["utility_total_in_slo"] == 3 + 1 + 18.0
    assert tier_utility(summary, cfg)["utility_total_in_slo"] is None


def test_billed_instances_follow_the_fleet(siloed):
    from sageserve_env.sim.fleet import BILLED_STATES
    from sageserve_env.silo import billed_instances

    cfg, w = siloed
    sim = make_simulator(cfg, w, "detailed")
    rng = np.random.default_rng(0)
    seen, times = [], np.arange(60.0, 1800.0, 60.0)
    for t in times:
        sim.run_until(t)
        r, m = int(rng.integers(2)), int(rng.integers(4))
        sim.scale(r, m, int(rng.choice([-1, 1])))
        seen.append(sim.fleet.counts[:, :-1, list(BILLED_STATES)].sum(axis=2).copy())
    np.testing.assert_array_equal(billed_instances(sim.fleet.timeline, 2, 4, times), np.array(seen))


def test_run_comparison_serves_one_workload_in_both_deployments(tmp_path):
    from sageserve_env.cli import build_workload
    from sageserve_env.plots import plot_deployments
    from sageserve_env.silo import comparison_table, deployment_configs, run_comparison

    configs = deployment_configs("small", SILOED[1:] + ["duration_s=600"])
    workload = build_workload(configs["unified"], 3)
    results = run_comparison(configs, workload, "reactive", tmp_path, fidelity="fast", plots=False)
    u, s = results["unified"], results["siloed"]
    assert u["summary"]["iw_requests"] == s["summary"]["iw_requests"] == int((workload.tier == IW).sum())
    assert s["summary"]["niw_requests"] == int((workload.tier == NIW).sum())
    np.testing.assert_array_equal(s["billed"], s["billed_prod"] + s["billed_dev"])
    assert not u["billed_dev"].any() and s["billed_dev"][0] == 4  # one per dev endpoint (2 regions x 2 models) at the start
    assert (tmp_path / "siloed" / "summary.json").is_file()
    assert "utility total" in comparison_table(results)
    assert plot_deployments(results, tmp_path / "cmp.png").stat().st_size > 10_000
