"""Server faults (``sageserve_env/sim/faults.py``): outages take servers down and give them back,
every request survives them (served, retried, dropped with a reason), both fidelities."""

import copy
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sageserve_env.config import ConfigError, load_config
from sageserve_env.env.sageserve_env import SageServeEnv
from sageserve_env.sim import make_simulator
from sageserve_env.sim.fleet import ACTIVE, BILLED_STATES, DOWN, DRAINING, FREE, NO_MODEL, STARTING, Fleet
from sageserve_env.sim.metrics import summarize
from sageserve_env.sim.simulator import Simulator
from sageserve_env.sim.stats import Stat
from sageserve_env.workload.generator import generate
from sageserve_env.workload.workload import IW

PARTS = ("requests_completed", "requests_dropped", "requests_queued", "requests_in_flight")
TWO_REGIONS = {"regions": [{"name": "westus", "servers": 12, "hardware": "dgx-a100", "utc_offset_h": -8},
                           {"name": "eastus", "servers": 12, "hardware": "dgx-a100", "utc_offset_h": -5}]}


def two_regions(*overrides, outage=None):
    """The small scenario over two regions; ``outage``: (region, share, start, duration)."""
    cfg = load_config("small", TWO_REGIONS)
    items = ["workload.requests_per_day=1.2e6", *overrides]
    if outage is not None:
        region, share, start, duration = outage
        items.append(f"faults.outages=[{{region: {region}, share: {share}, start_s: {start}, duration_s: {duration}}}]")
    return load_config(cfg, items)


class Recorder:
    """ScalingHooks that record the fault calls (and refuse nothing)."""

    def __init__(self):
        self.failed = []

    def fail(self, r, m, state, k, now):
        self.failed.append((r, m, state, k))


def test_fleet_fail_spreads_over_cells_and_restore_frees():
    cfg = load_config("small", ["scaling.initial_overrides={westus/A: 5, westus/C: 3}"])  # 8 of 12 busy, 4 free
    fleet = Fleet(cfg)
    hooks = Recorder()
    assert fleet.fail(0, 6, 100.0, hooks) == 6
    c = fleet.counts[0]
    # 5 : 3 : 4 servers, 6 of 12 fail: quotas 2.5, 1.5, 2 -> largest remainders, ties to the first cell
    assert (c[0, ACTIVE], c[1, ACTIVE], c[NO_MODEL, FREE], c[NO_MODEL, DOWN]) == (2, 2, 2, 6)
    assert hooks.failed == [(0, 0, ACTIVE, 3), (0, 1, ACTIVE, 1)]
    assert fleet.check(100.0) is None
    assert fleet.fail(0, 100, 200.0, hooks) == 6  # only the servers still up
    assert fleet.counts[0, NO_MODEL, DOWN] == 12 and fleet.check(200.0) is None
    fleet.restore(0, 12, 300.0)
    assert fleet.counts[0, NO_MODEL, FREE] == 12 and fleet.down().sum() == 0
    with pytest.raises(ValueError, match="1 servers of region westus: 0 are down"):
        fleet.restore(0, 1, 300.0)
    gpu_s = fleet.gpu_seconds_by_state(400.0)
    assert gpu_s[0, NO_MODEL, DOWN] == pytest.approx((6 * 100 + 12 * 100) * 8)  # GPU-seconds down, not billed
    assert DOWN not in BILLED_STATES and fleet.check(400.0) is None
    assert fleet.fault_log == [(100.0, 0, -6), (200.0, 0, -6), (300.0, 0, 12)]


@pytest.mark.parametrize("fidelity", ["detailed", "fast"])
def test_outage_conserves_requests_and_servers_return(fidelity):
    cfg = two_regions(outage=("westus", 0.5, 300, 600))
    w = generate(cfg, np.random.default_rng(4), days=1800 / 86400)
    sim = make_simulator(cfg, w, fidelity)
    before = sim.fleet.counts.copy()
    down = []
    for t in range(60, 1801, 60):
        sim.run_until(float(t))
        sim.check_invariants()
        down.append(int(sim.fleet.down()[0]))
        assert sim.arrived == sim.n_completed + sim.in_flight() + sim.queued() + sim.n_dropped
    assert down[3] == 0 and set(down[4:14]) == {6} and set(down[14:]) == {0}  # [300, 900) s
    # the six servers come back free, holding no model; the instances they held are gone
    after = sim.fleet.counts
    lost = before[0, :-1, ACTIVE].sum() - after[0, :-1, ACTIVE].sum()
    assert lost == 6 - (before[0, NO_MODEL, FREE] - (after[0, NO_MODEL, FREE] - 6))
    stats = sim.statistics()
    n_m = len(cfg.model_names)
    assert stats[:n_m, Stat.RETRIED].sum() > 0 and stats[n_m:, Stat.RETRIED].sum() == 0  # retried where they failed
    summary = summarize(sim, 0.0)
    assert summary["requests_total"] == sum(summary[k] for k in PARTS)
    assert summary["requests_retried"] == stats[:, Stat.RETRIED].sum()
    assert summary["down_gpu_hours"] == pytest.approx(6 * 600 * 8 / 3600)
    assert summary["iw_slo_attainment"] is not None and 0 <= summary["iw_slo_attainment"] <= 1


def test_retried_requests_fail_over_and_keep_their_first_token():
    cfg = two_regions(outage=("westus", 1.0, 300, 600))
    w = generate(cfg, np.random.default_rng(5), days=1200 / 86400)
    held = {}

    class Probe(Simulator):
        def fail(self, r, m, state, k, now):  # what the dying instances hold, as the fault strikes
            group = {ACTIVE: self.endpoints[r][m].active, DRAINING: self.endpoints[r][m].draining}.get(state, [])
            held.update({rid: self.requests.first_token_s[rid] for i in group[len(group) - k:] for rid in i.held()})
            super().fail(r, m, state, k, now)

    sim = Probe(cfg, w)
    sim.run_until(1200.0)
    sim.check_invariants()
    rec = sim.records()
    assert len(held) == sim.statistics()[:, Stat.RETRIED].sum() > 0
    iw = [rid for rid in held if rec["tier"][rid] == IW]
    assert iw
    for rid in iw:
        if math.isnan(held[rid]):  # no first token before the fault: served in the other region
            assert rec["served_region"][rid] in (1, -1)
        else:  # its first token stands; it completes after a second prefill
            assert rec["first_token_s"][rid] == held[rid]
    # first tokens counted once each: the statistics agree with the records
    first = np.isfinite(rec["first_token_s"]) & (rec["tier"] == IW)
    assert sim.statistics()[:, Stat.IW_FIRST_TOKENS].sum() == first.sum()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fidelity=st.sampled_from(["detailed", "fast"]), seed=st.integers(0, 1000),
       share=st.sampled_from([0.25, 0.5, 1.0]), start=st.integers(0, 600), drop_after=st.sampled_from([None, 30.0]))
def test_every_request_in_one_state_through_an_outage(fidelity, seed, share, start, drop_after):
    overrides = [] if drop_after is None else [f"slo.drop_iw_after_s={drop_after}"]
    cfg = two_regions(*overrides, outage=("eastus", share, start, 300))
    env = SageServeEnv(scenario=cfg, fidelity=fidelity, horizon_s=1200.0)
    rng = np.random.default_rng(seed)
    _, info = env.reset(seed=seed)
    done, steps = False, 0
    while not done:
        masks = env.action_masks().reshape(env.n_endpoints, -1)
        action = np.array([rng.choice(np.flatnonzero(m)) for m in masks])
        _, _, _, done, info = env.step(action)
        env.sim.check_invariants()
        k = info["kpis"]
        assert k["requests_total"] == sum(k[p] for p in PARTS), k
        steps += 1
        assert k["servers_down"] == (round(share * 12) if start <= 60 * steps < start + 300 else 0)
    summary = summarize(env.sim, 0.0)
    assert summary["requests_total"] == sum(summary[k] for k in PARTS)
    assert summary["requests_dropped"] == summary["requests_dropped_too_large"] + summary["requests_dropped_iw_timeout"]


@pytest.mark.parametrize("fidelity", ["detailed", "fast"])
def test_masks_predict_refusals_during_an_outage(fidelity):
    cfg = two_regions("scaling.initial_instances=2", outage=("westus", 0.75, 0, 3600))
    env = SageServeEnv(scenario=cfg, fidelity=fidelity, horizon_s=3600.0)
    env.reset(seed=1)
    env.step(np.full(env.n_endpoints, env.max_delta))  # outage under way: 9 of westus's 12 servers down
    assert env.view().servers().tolist() == [3, 12] and env.view().down_servers().tolist() == [9, 0]
    env.sim.run_until(env.sim.now + 200.0)  # start-ups done
    masks = env.action_masks().reshape(env.n_endpoints, -1)
    for e in range(env.n_endpoints):  # each endpoint alone: the mask's maximum is made, one more is refused
        hi = int(np.flatnonzero(masks[e]).max()) - env.max_delta
        region, model = divmod(e, env.n_models)
        assert copy.deepcopy(env.sim).scale(region, model, hi).refused == 0
        if hi < env.max_delta:
            assert copy.deepcopy(env.sim).scale(region, model, hi + 1).refused == 1
    assert masks.reshape(2, env.n_models, -1)[0].sum() < masks.reshape(2, env.n_models, -1)[1].sum()


def test_outage_knobs_are_validated_with_their_key():
    bad = [("{region: mars, share: 0.5, start_s: 0, duration_s: 60}", "faults.outages.0.region"),
           ("{region: westus, share: 0, start_s: 0, duration_s: 60}", "faults.outages.0.share"),
           ("{region: westus, share: 1.5, start_s: 0, duration_s: 60}", "faults.outages.0.share"),
           ("{region: westus, share: 0.5, start_s: -1, duration_s: 60}", "faults.outages.0.start_s"),
           ("{region: westus, share: 0.5, start_s: 0, duration_s: 0}", "faults.outages.0.duration_s")]
    for outage, key in bad:
        with pytest.raises(ConfigError, match=key):
            load_config("small", [f"faults.outages=[{outage}]"])
    with pytest.raises(ConfigError, match="faults.generated_latest_s"):
        load_config("small", ["faults.generated_earliest_s=600", "faults.generated_latest_s=60"])
    with pytest.raises(ConfigError, match="faults.generated"):
        load_config("small", ["faults.generated=-1"])
    late = ["faults.outages=[{region: westus, share: 0.5, start_s: 7200, duration_s: 60}]"]
    with pytest.raises(ValueError, match="faults.outages.0.start_s=7200 is not before horizon_s=3600"):
        SageServeEnv(scenario="small", sim_overrides=late, horizon_s=3600.0)
    cfg = load_config("small", ["faults.generated=1"])
    with pytest.raises(ValueError, match="faults.generated=1: generated outages are drawn per episode"):
        make_simulator(cfg, generate(cfg, np.random.default_rng(0), days=0.01))


def test_generated_outages_follow_the_seed_and_the_window():
    kw = {"scenario": "small", "horizon_s": 7200.0,
          "sim_overrides": ["faults.generated=2", "faults.generated_duration_s=600",
                            "faults.generated_earliest_s=1800"]}
    env = SageServeEnv(**kw)
    drawn = {}
    for seed in range(6):
        env.reset(seed=seed)
        drawn[seed] = [(o.region, o.start_s) for o in env.sim.config.faults.outages]
        env.draw_episode(seed)
        assert [(o.region, o.start_s) for o in env.draw_outages()] == drawn[seed]  # what reset drew
        assert all(1800 <= s <= 6600 and s % 60 == 0 for _, s in drawn[seed])
    assert len(set(map(tuple, drawn.values()))) > 1
    with pytest.raises(ValueError, match="no whole minute"):
        SageServeEnv(**{**kw, "horizon_s": 1200.0}).reset(seed=0)


def test_vectorized_fast_fidelity_refuses_faults():
    from sageserve_env.sim.vector import VectorFlow

    cfg = load_config("small", ["faults.generated=1"])
    with pytest.raises(ValueError, match="faults .* are not supported by the vectorized fast fidelity"):
        VectorFlow(cfg, [0], 600.0)


def test_no_fault_no_down_state():
    cfg = two_regions()
    sim = make_simulator(cfg, generate(cfg, np.random.default_rng(0), days=0.005), "fast")
    sim.run_until(300.0)
    assert sim.fleet.down().sum() == 0 and sim.statistics()[:, Stat.RETRIED].sum() == 0
    assert sim.fleet.counts[:, :, STARTING].sum() == 0
