"""The simulator core: bookkeeping invariants, isolation, determinism, accounting, routing,
NIW feeding, routing delay and drops."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import IW, NIW, capacity_memory_gb, make_workload, random_workload, records_equal
from sageserve_env.config import load_config
from sageserve_env.sim.fleet import ACTIVE, DRAINING, SPOT, STARTING
from sageserve_env.sim.requests import DROP_REASONS
from sageserve_env.sim.stats import Stat
from sageserve_env.sim.simulator import Simulator

EXAMPLES = int(os.environ.get("SIM_TEST_EXAMPLES", 40))
SMALL = load_config("small")  # westus: 12 servers, models A and C with 4 instances each


def _all_served(sim: Simulator) -> None:
    """Every request finished or dropped, nothing left anywhere, times consistent."""
    sim.check_invariants()
    rec = sim.records()
    n = sim.requests.n
    dropped = rec["drop_reason"] != 0
    done = ~np.isnan(rec["completion_s"])
    assert sim.arrived == n
    assert (dropped ^ done).all(), "every request is either completed or dropped, never both"
    assert sim.n_completed == done.sum() and sim.n_dropped == dropped.sum()
    assert sim.in_flight() == 0 and sim.queued() == 0
    assert (rec["first_token_s"][done] >= rec["arrival_s"][done]).all()
    assert (rec["completion_s"][done] >= rec["first_token_s"][done]).all()
    assert np.isnan(rec["first_token_s"][dropped]).all()
    assert (rec["served_region"][done] >= 0).all() and (rec["served_region"][dropped] == -1).all()
    for ep in sim.all_endpoints:
        for inst in ep.active + ep.starting + ep.draining:
            assert inst.reserved == 0 and inst.pending_tokens == 0 and inst.waiting_tokens == 0
            assert inst.batch_kv == 0 and not inst.decoders and not inst.prefill
    for ep in sim.all_endpoints:
        assert ep.committed == 0 and not ep.backlog and not ep.niw_queue and ep.niw_queue_tokens == 0
    assert sum(ep.stats[Stat.COMPLETED] for ep in sim.all_endpoints) == sim.n_completed
    assert sum(ep.stats[Stat.DROPPED] for ep in sim.all_endpoints) == sim.n_dropped
    assert sum(ep.stats[Stat.ARRIVED] for ep in sim.all_endpoints) == n


# -- invariants under random scaling -------------------------------------------------------------
actions = st.lists(st.tuples(st.floats(1.0, 120.0), st.sampled_from(["A", "C"]), st.integers(-3, 3)),
                   min_size=1, max_size=12)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), plan=actions, level=st.sampled_from([1, 2]),
       memory_gb=st.sampled_from([80.0, 18.0]), max_batch_size=st.sampled_from([4, 64]))
def test_invariants_hold_under_random_scaling(seed, plan, level, memory_gb, max_batch_size):
    cfg = load_config("small", {"scaling": {"level": level, "initial_instances": 2},
                                "hardware": {"dgx-a100": {"gpu_memory_gb": memory_gb}},
                                "batching": {"max_batch_size": max_batch_size}})
    w = random_workload(cfg, 300, 600.0, seed=seed, prompt_mean=800, output_mean=80)
    sim = Simulator(cfg, w)
    t = 0.0
    for dt, model, delta in plan:
        t += dt
        sim.run_until(t)
        sim.check_invariants()
        res = sim.scale("westus", model, delta)
        assert res.requested == delta and abs(res.applied) <= abs(delta)
        assert res.applied * delta >= 0 and len(res.kinds) == abs(res.applied)
        assert (res.refused == 0) == (res.refused_reason == "")
        ep = sim.endpoints[0][cfg.model_names.index(model)]
        assert len(ep.active) + len(ep.starting) >= cfg.scaling.min_instances
        sim.check_invariants()
    sim.run_until(t + 1e5)
    _all_served(sim)
    gpu_s = sim.gpu_seconds_by_state()
    assert gpu_s.sum() == pytest.approx(12 * 8 * sim.now, rel=1e-9)


def test_state_counts_and_scale_log_track_the_plan():
    cfg = load_config("small", {"scaling": {"initial_instances": 2}})
    sim = Simulator(cfg, random_workload(cfg, 200, 300.0, seed=3))
    sim.run_until(10.0)
    assert sim.scale("westus", "A", 3).kinds == ("load_free", "load_free", "load_free")
    assert sim.scale("westus", "C", -1).kinds == ("drain",)
    counts = sim.state_counts()
    a, c = cfg.model_names.index("A"), cfg.model_names.index("C")
    assert counts[0, a, STARTING] == 3 and counts[0, a, ACTIVE] == 2
    assert counts[0, c, ACTIVE] == 1 and counts[0, c, DRAINING] + counts[0, c, SPOT] == 1
    assert [k for (_, _, _, k) in sim.fleet.scale_log] == ["load_free"] * 3 + ["drain"]
    sim.run_until(1e5)
    _all_served(sim)


# -- isolation and determinism -------------------------------------------------------------------
def _steps(sim: Simulator, plan, t_end: float):
    """Generator: advance ``sim`` one step per next(), applying the scaling plan."""
    t = 0.0
    for dt, model, delta in plan:
        t += dt
        sim.run_until(t)
        sim.scale(0, model, delta)
        yield
    sim.run_until(t_end)
    yield


PLAN_A = [(30.0, 0, 2), (40.0, 1, -1), (25.0, 0, -3), (60.0, 1, 3), (10.0, 0, 1)]
PLAN_B = [(17.0, 1, 1), (33.0, 0, -1), (50.0, 1, -2), (5.0, 0, 2)]


def _sim_a():
    cfg = load_config("small", {"scaling": {"initial_instances": 2}})
    return Simulator(cfg, random_workload(cfg, 800, 300.0, seed=11))


def _sim_b():
    cfg = load_config("small", {"scaling": {"initial_instances": 3, "level": 2}, "routing": {"delay_s": 0.5},
                                "batching": {"max_batch_size": 8}})
    return Simulator(cfg, random_workload(cfg, 800, 300.0, seed=12, iw_share=0.5))


def test_two_simulators_do_not_interfere():
    alone = _sim_a()
    for _ in _steps(alone, PLAN_A, 1e5):
        pass
    a, b = _sim_a(), _sim_b()
    for _ in zip(_steps(a, PLAN_A, 1e5), _steps(b, PLAN_B, 1e5)):
        pass
    assert records_equal(alone.records(), a.records())
    assert np.array_equal(alone.gpu_seconds_by_state(), a.gpu_seconds_by_state())
    assert alone.fleet.scale_log == a.fleet.scale_log and alone.fleet.timeline == a.fleet.timeline
    _all_served(a)
    _all_served(b)


def test_same_inputs_same_records():
    runs = []
    for _ in range(2):
        sim = _sim_b()
        for _ in _steps(sim, PLAN_B, 1e5):
            pass
        runs.append(sim)
    assert records_equal(runs[0].records(), runs[1].records())
    assert np.array_equal(runs[0].gpu_seconds_by_state(), runs[1].gpu_seconds_by_state())
    assert runs[0].fleet.timeline == runs[1].fleet.timeline
    # and a different workload seed gives different times
    cfg = runs[0].config
    other = Simulator(cfg, random_workload(cfg, 800, 300.0, seed=13, iw_share=0.5))
    other.run_until(1e5)
    assert not records_equal(runs[0].records(), other.records())


def test_run_until_granularity_does_not_change_results():
    coarse, fine = _sim_a(), _sim_a()
    coarse.run_until(1e5)
    for t in np.arange(0.0, 400.0, 0.37):
        fine.run_until(float(t))
    fine.run_until(1e5)
    assert records_equal(coarse.records(), fine.records())
    with pytest.raises(ValueError):
        fine.run_until(10.0)


# -- GPU-seconds ---------------------------------------------------------------------------------
def test_gpu_seconds_add_up_to_fleet_times_duration():
    cfg = load_config("small", {"scaling": {"initial_instances": 3}})
    sim = Simulator(cfg, random_workload(cfg, 300, 500.0, seed=5))
    a, c = cfg.model_names.index("A"), cfg.model_names.index("C")
    sim.run_until(100.0)
    g = sim.gpu_seconds_by_state()
    assert g[0, a, ACTIVE] == pytest.approx(3 * 8 * 100.0) and g[0, c, ACTIVE] == pytest.approx(3 * 8 * 100.0)
    assert g[0, -1].sum() == pytest.approx(6 * 8 * 100.0)  # free servers, no model
    sim.scale("westus", "A", 2)
    sim.scale("westus", "C", -2)
    for t in (150.0, 400.0, 900.0, 5000.0):
        sim.run_until(t)
        g = sim.gpu_seconds_by_state()
        assert g.sum() == pytest.approx(12 * 8 * t, rel=1e-12)
        assert (g >= 0).all()
    assert g[0, a, STARTING] == pytest.approx(2 * 8 * cfg.scaling.spin_up_s)
    sim.check_invariants()


# -- routing -------------------------------------------------------------------------------------
CAP = 10000  # KV tokens per instance in the routing and feeding cases


def _three_regions(**extra):
    base = load_config("small", {"models": {"A": None}})
    over = {
        "regions": [{"name": n, "servers": 2} for n in ("westus", "centralus", "eastus")],
        "models": {"A": None},
        "scaling": {"initial_instances": 1},
        "hardware": {"dgx-a100": {"gpu_memory_gb": capacity_memory_gb(base, "C", CAP)}},
    }
    over.update(extra)
    return load_config("small", over)


@pytest.mark.parametrize("fill, order, expected", [
    ((8000, 0, 0), (0, 1, 2), 1),  # home at 0.8: first region below 0.7
    ((6999, 0, 0), (0, 1, 2), 0),  # home just below 0.7: stays home
    ((7000, 0, 0), (0, 1, 2), 1),  # exactly 0.7 is not below 0.7
    ((7500, 7000, 6000), (0, 1, 2), 2),
    ((8000, 7500, 9000), (2, 0, 1), 1),  # nobody below 0.7: least utilized, not the first
    ((8000, 9000, 7200), (0, 1, 2), 2),
])
def test_iw_routing_picks_first_region_below_threshold_else_least_utilized(fill, order, expected):
    cfg = _three_regions()
    fills = [(r, f) for r, f in enumerate(fill) if f]
    # one long request per filled region, pinned to its region by a one-region priority order
    arrival = [0.0] * len(fills) + [1.0]
    prompt = [10] * len(fills) + [50]
    output = [f - 10 for _, f in fills] + [5]
    orders = [(0,), (1,), (2,), order]
    w = make_workload(cfg, arrival, prompt, output, region=[r for r, _ in fills] + [order[0]],
                      priority=[r for r, _ in fills] + [3], orders=orders)
    sim = Simulator(cfg, w)
    sim.run_until(0.5)
    utils = [sim.endpoints[r][0].utilization() for r in range(3)]
    assert utils == pytest.approx([f / CAP for f in fill])
    sim.run_until(1e5)
    probe = sim.requests.n - 1
    assert sim.records()["served_region"][probe] == expected
    _all_served(sim)


def test_no_reroute_keeps_iw_home():
    cfg = _three_regions(routing={"no_reroute": True})
    w = make_workload(cfg, [0.0, 1.0], [10, 50], [7990, 5], region=[0, 0], priority=[0, 1],
                      orders=[(0,), (0, 1, 2)])
    sim = Simulator(cfg, w)
    sim.run_until(0.5)
    assert sim.endpoints[0][0].utilization() == pytest.approx(0.8)
    sim.run_until(1e5)
    assert sim.records()["served_region"].tolist() == [0, 0]


def test_iw_waits_in_backlog_when_no_instance_is_active():
    cfg = _three_regions(scaling={"initial_instances": 1, "min_instances": 1, "reclaim_s": 20.0},
                         routing={"no_reroute": True})
    w = make_workload(cfg, [5.0, 6.0, 6.0], [100, 100, 100], [10, 10, 10], tier=[IW, IW, NIW])
    sim = Simulator(cfg, w)
    sim.scale("westus", "C", 1)  # a free server, spin_up_s
    assert sim.scale("westus", "C", -1).kinds == ("drain",)  # the active one leaves at once
    ep = sim.endpoints[0][0]
    assert not ep.active and len(ep.starting) == 1 and ep.utilization() == 1.0
    sim.run_until(10.0)
    assert len(ep.backlog) == 2 and len(ep.niw_queue) == 1
    sim.run_until(1e4)
    rec = sim.records()
    assert (rec["first_token_s"] >= cfg.scaling.spin_up_s).all()
    _all_served(sim)


# -- NIW feeding ---------------------------------------------------------------------------------
G = 3


@pytest.mark.parametrize("long, short, fed", [
    (4500, 2000, G),  # after the short one completes: 0.45
    (5000, 1500, G),  # exactly 0.5 still feeds g
    (5500, 1000, 2 * G),  # 0.55
    (6000, 1000, 2 * G),  # exactly 0.6 still feeds 2g
    (6200, 500, 0),  # 0.62: none
])
def test_niw_feeding_rule(long, short, fed):
    """Utilization 0.65 holds 20 NIW requests in the queue; when the short IW completes, the
    endpoint feeds g, 2g or none depending on the utilization it leaves behind."""
    cfg = _three_regions(regions=[{"name": "westus", "servers": 1}], niw={"feed_async": True, "granularity": G})
    k = 20
    arrival = [0.0, 0.0] + [1.0 + 0.01 * i for i in range(k)]
    prompt = [100, 100] + [10] * k
    output = [long - 100, short - 100] + [10] * k
    tier = [IW, IW] + [NIW] * k

    def build():
        return Simulator(cfg, make_workload(cfg, arrival, prompt, output, tier=tier))

    dry = build()
    dry.run_until(1e5)
    _all_served(dry)
    t_short = dry.records()["completion_s"][1]
    assert t_short < dry.records()["first_token_s"][2:].min()

    sim = build()
    ep = sim.endpoints[0][0]
    sim.run_until(0.9)
    assert ep.utilization() == pytest.approx((long + short) / CAP)
    sim.run_until(t_short - 1e-6)
    assert len(ep.niw_queue) == k
    sim.run_until(t_short)
    assert len(ep.niw_queue) == k - fed
    assert ep.utilization() == pytest.approx((long + 20 * fed) / CAP)  # the fed ones are committed
    inst = ep.active[0]
    # the oldest are fed, and join the iteration that starts at this instant
    assert [e[0] for e in inst.prefill] == list(range(2, 2 + fed)) and not inst.wait_niw


def test_niw_feed_on_arrival_at_low_utilization():
    cfg = _three_regions(regions=[{"name": "westus", "servers": 1}], niw={"feed_async": True, "granularity": 2})
    w = make_workload(cfg, [0.0, 0.1, 0.2], [100] * 3, [50] * 3, tier=NIW)
    sim = Simulator(cfg, w)
    sim.run_until(0.15)
    assert not sim.endpoints[0][0].niw_queue and sim.in_flight() == 2
    sim.run_until(1e4)
    _all_served(sim)


# -- routing delay -------------------------------------------------------------------------------
def test_routing_delay_shifts_every_time_by_the_delay():
    d = 1.0
    results = []
    for delay in (0.0, d):
        cfg = load_config("small", {"routing": {"delay_s": delay}, "scaling": {"initial_instances": 2},
                                    "batching": {"max_batch_size": 16}})
        sim = Simulator(cfg, random_workload(cfg, 600, 300.0, seed=21))
        sim.run_until(1e5)
        _all_served(sim)
        results.append(sim.records())
    base, late = results
    assert np.array_equal(base["served_region"], late["served_region"])
    assert late["first_token_s"] - d == pytest.approx(base["first_token_s"], abs=1e-6, rel=0)
    assert late["completion_s"] - d == pytest.approx(base["completion_s"], abs=1e-6, rel=0)
    # requests are not visible before their delayed arrival
    cfg = load_config("small", {"routing": {"delay_s": 5.0}})
    sim = Simulator(cfg, make_workload(cfg, [1.0], [10], [10]))
    sim.run_until(5.9)
    assert sim.arrived == 0
    sim.run_until(6.0)
    assert sim.arrived == 1


# -- drops ---------------------------------------------------------------------------------------
def test_too_large_requests_are_dropped_and_counted():
    cfg = _three_regions(regions=[{"name": "westus", "servers": 1}], niw={"feed_async": True})
    w = make_workload(cfg, [0.0, 0.5, 1.0, 1.5], [100, CAP, 5000, CAP - 10], [10, 1, 5001, 10],
                      tier=[IW, IW, NIW, NIW])
    sim = Simulator(cfg, w)
    sim.run_until(1e4)
    rec = sim.records()
    assert [DROP_REASONS[r] for r in rec["drop_reason"]] == ["", "too_large", "too_large", ""]
    assert sim.n_dropped == 2 and sim.endpoints[0][0].stats[Stat.DROPPED] == 2
    assert np.isnan(rec["completion_s"][[1, 2]]).all()
    _all_served(sim)


def test_iw_waiting_too_long_is_dropped():
    cfg = _three_regions(regions=[{"name": "westus", "servers": 1}], slo={"drop_iw_after_s": 1.0},
                         batching={"max_batch_size": 1})
    # the first request holds the only batch slot for seconds; IW 1 times out, NIW 2 never does
    w = make_workload(cfg, [0.0, 0.1, 0.2, 30.0], [100, 100, 100, 100], [500, 10, 10, 10],
                      tier=[IW, IW, NIW, IW])
    sim = Simulator(cfg, w)
    sim.run_until(1e4)
    rec = sim.records()
    assert rec["completion_s"][0] > 1.1
    assert [DROP_REASONS[r] for r in rec["drop_reason"]] == ["", "iw_timeout", "", ""]
    _all_served(sim)


def test_overdue_counts_unserved_past_slo():
    cfg = _three_regions(regions=[{"name": "westus", "servers": 1}], batching={"max_batch_size": 1},
                         niw={"feed_async": False})
    w = make_workload(cfg, [0.0, 0.1, 0.2], [100] * 3, [3000, 10, 10], tier=[IW, IW, NIW], sla=[10.0, 2.0, 5.0])
    sim = Simulator(cfg, w)
    sim.run_until(1.0)
    assert sim.overdue() == (0, 0)
    sim.run_until(6.0)
    assert sim.overdue() == (1, 1)
    sim.run_until(1e4)
    assert sim.overdue() == (0, 0)
    assert sim.endpoints[0][0].stats[Stat.IW_SLO_MISSES] == 1 and sim.endpoints[0][0].stats[Stat.NIW_DEADLINE_MISSES] == 1
    _all_served(sim)


def test_iw_timeout_is_exact_and_reaches_the_backlog():
    """slo.drop_iw_after_s drops a waiting IW request at the moment it has waited that long,
    wherever it waits: behind a busy instance's batch, or in a backlog with no instance active."""
    cfg = _three_regions(regions=[{"name": "westus", "servers": 1}], slo={"drop_iw_after_s": 1.0},
                         batching={"max_batch_size": 1})
    w = make_workload(cfg, [0.0, 0.1], [100, 100], [500, 10], tier=[IW, IW])
    sim = Simulator(cfg, w)
    sim.run_until(1.1)
    assert sim.n_dropped == 0 and sim.queued() == 1
    sim.run_until(1.1 + 1e-9)  # 0.1 + 1.0: the second has now waited longer than 1 s
    assert sim.n_dropped == 1 and sim.queued() == 0
    sim.check_invariants()
    # no active instance: the request waits in the backlog and still times out
    cfg = load_config("small", ["scaling.min_instances=0", "slo.drop_iw_after_s=5"])
    w = make_workload(cfg, [20.0, 21.0, 40.0], [100] * 3, [10] * 3, tier=IW, model="A")
    sim = Simulator(cfg, w)
    sim.scale("westus", "A", -4)
    sim.run_until(24.0)
    assert sim.queued() == 2 and sim.n_dropped == 0
    sim.run_until(60.0)
    assert sim.n_dropped == 3 and sim.queued() == 0
    sim.check_invariants()


def test_iw_timeouts_agree_across_fidelities():
    """With every instance drained, both fidelities drop the IW requests that wait too long."""
    from sageserve_env.cli import build_workload
    from sageserve_env.sim.flow import FlowSimulator

    cfg = load_config("small", ["scaling.level=1", "scaling.min_instances=0", "duration_s=600",
                                "slo.drop_iw_after_s=30"])
    w = build_workload(cfg, 0)
    dropped = {}
    for name, make in (("detailed", Simulator), ("fast", FlowSimulator)):
        sim = make(cfg, w)
        sim.run_until(10.0)
        sim.scale("westus", "A", -4)
        sim.scale("westus", "C", -4)
        sim.run_until(600.0)
        sim.check_invariants()
        dropped[name] = sim.n_dropped
    # IW requests that arrived with no instance left and waited 30 s before the end
    iw_late = int(((w.tier == IW) & (w.arrival_s > 10.0) & (w.arrival_s + 30.0 < cfg.duration_s)).sum())
    assert dropped["detailed"] == pytest.approx(iw_late, abs=3)
    assert dropped["fast"] == pytest.approx(dropped["detailed"], rel=0.05)
