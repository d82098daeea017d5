"""Instance life cycle: drain, spot, reclaim, load from a free or another model's spot server,
the scaling levels, min_instances, ScaleResult and what each state bills."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import IW, NIW, make_workload
from sageserve_env.config import load_config
from sageserve_env.sim.fleet import ACTIVE, DRAINING, FREE, SPOT, STARTING
from sageserve_env.sim.fleet import ScaleResult
from sageserve_env.sim.simulator import Simulator

GPUS = 8


def _sim(level=2, servers=8, initial=4, arrival=(), prompt=(), output=(), tier=IW, model="A", **extra):
    """westus with models A and C, ``initial`` instances each; ``servers - 2 * initial`` are free."""
    over = {"regions": [{"name": "westus", "servers": servers}],
            "scaling": {"level": level, "initial_instances": initial, "min_instances": 1,
                        "reclaim_s": 65.0, "spin_up_s": 155.0}}
    over.update(extra)
    cfg = load_config("small", over)
    w = make_workload(cfg, list(arrival), list(prompt), list(output), tier=tier, model=model)
    return Simulator(cfg, w)


def _state(sim, model):
    ep = sim.endpoints[0][sim.model_names.index(model)]
    return len(ep.active), len(ep.starting), len(ep.draining), int(sim.fleet.counts[0, ep.model, SPOT])


def _idle_drain(sim, model):
    """Drain an instance with no requests: it goes to spot at once."""
    res = sim.scale("westus", model, -1)
    assert res.kinds == ("drain",)
    return res


def test_scale_result_fields():
    sim = _sim()
    res = sim.scale("westus", "A", -2)
    assert isinstance(res, ScaleResult)
    assert (res.region, res.model, res.requested, res.applied, res.kinds, res.refused, res.refused_reason) == \
        ("westus", "A", -2, -2, ("drain", "drain"), 0, "")
    assert sim.scale(0, 0, 0) == ScaleResult("westus", "A", 0, 0, ())
    with pytest.raises(ValueError):
        sim.scale("eastus", "A", 1)
    with pytest.raises(ValueError):
        sim.scale("westus", "Z", 1)


def test_reclaim_own_model_spot_takes_reclaim_s():
    sim = _sim()
    _idle_drain(sim, "A")
    assert _state(sim, "A") == (3, 0, 0, 1)
    sim.run_until(100.0)
    res = sim.scale("westus", "A", 1)
    assert res.kinds == ("reclaim",) and res.applied == 1
    assert _state(sim, "A") == (3, 1, 0, 0)
    sim.run_until(100.0 + 65.0 - 1e-9)
    assert _state(sim, "A") == (3, 1, 0, 0)
    sim.run_until(165.0)
    assert _state(sim, "A") == (4, 0, 0, 0)
    sim.check_invariants()


def test_other_model_spot_takes_spin_up_only_at_level_2():
    for level in (1, 2):
        sim = _sim(level=level)  # 8 servers, all active: no free server
        _idle_drain(sim, "C")
        sim.run_until(10.0)
        res = sim.scale("westus", "A", 2)
        if level == 1:
            assert res.applied == 0 and res.refused == 2 and "level 1" in res.refused_reason
            assert _state(sim, "C") == (3, 0, 0, 1) and _state(sim, "A") == (4, 0, 0, 0)
            continue
        assert res.kinds == ("load_other",) and res.refused == 1 and res.refused_reason
        assert _state(sim, "C") == (3, 0, 0, 0) and _state(sim, "A") == (4, 1, 0, 0)
        sim.run_until(10.0 + 155.0 - 1e-9)
        assert _state(sim, "A") == (4, 1, 0, 0)
        sim.run_until(165.0)
        assert _state(sim, "A") == (5, 0, 0, 0)
        sim.check_invariants()


def test_free_servers_load_at_spin_up_even_at_level_1():
    sim = _sim(level=1, servers=10)
    res = sim.scale("westus", "C", 3)
    assert res.kinds == ("load_free", "load_free") and res.refused == 1
    assert "no spot or free server" in res.refused_reason
    sim.run_until(154.0)
    assert _state(sim, "C") == (4, 2, 0, 0)
    sim.run_until(155.0)
    assert _state(sim, "C") == (6, 0, 0, 0)
    assert sim.state_counts()[0, -1, FREE] == 0


def test_scale_up_prefers_own_spot_over_free_and_other_spot():
    sim = _sim(servers=9)  # one free server
    _idle_drain(sim, "C")
    _idle_drain(sim, "A")
    assert sim.scale("westus", "A", 3).kinds == ("reclaim", "load_free", "load_other")


def test_level_0_refuses_everything():
    sim = _sim(level=0, servers=12)
    for delta in (1, -1, 5):
        res = sim.scale("westus", "A", delta)
        assert res.applied == 0 and res.refused == abs(delta) and "level is 0" in res.refused_reason
    assert _state(sim, "A") == (4, 0, 0, 0)


def test_min_instances_refusal_counts_starting():
    sim = _sim(initial=2)
    res = sim.scale("westus", "A", -5)
    assert res.applied == -1 and res.refused == 4 and "min_instances" in res.refused_reason
    assert _state(sim, "A") == (1, 0, 0, 1)
    assert sim.scale("westus", "A", -1).refused == 1
    assert sim.scale("westus", "A", 1).kinds == ("reclaim",)
    # one active + one starting: the active one may go, the starting one keeps the minimum
    assert sim.scale("westus", "A", -1).kinds == ("drain",)
    assert _state(sim, "A") == (0, 1, 0, 1)
    res = sim.scale("westus", "A", -1)
    assert res.applied == 0 and res.refused_reason


def test_drain_picks_the_instance_with_fewest_pending_tokens():
    sim = _sim(initial=1, arrival=[0.0] * 40, prompt=[300] * 40, output=[8000] * 40, model="A")
    ep = sim.endpoints[0][0]
    sim.run_until(1.0)
    busy = ep.active[0]
    assert busy.n_requests == 40
    assert sim.scale("westus", "A", 1).kinds == ("load_free",)
    sim.run_until(200.0)
    assert len(ep.active) == 2
    fresh = next(i for i in ep.active if i is not busy)
    assert fresh.n_requests == 0
    assert sim.scale("westus", "A", -1).kinds == ("drain",)
    assert fresh.state == SPOT and busy.state == ACTIVE  # empty: straight to spot
    sim.run_until(1e4)
    assert sim.n_completed == 40
    sim.check_invariants()


def test_draining_instance_loses_nothing_and_bills_until_empty():
    n = 30
    sim = _sim(initial=2, arrival=[0.01 * i for i in range(n)], prompt=[800] * n, output=[300] * n, model="A")
    sim.run_until(1.0)
    ep = sim.endpoints[0][0]
    busy = [i for i in ep.active if i.n_requests]
    assert len(busy) == 2
    res = sim.scale("westus", "A", -1)
    assert res.kinds == ("drain",)
    inst = ep.draining[0]
    assert inst.state == DRAINING and inst.n_requests > 0
    assert _state(sim, "A") == (1, 0, 1, 0)
    sim.run_until(1e4)
    rec = sim.records()
    assert sim.n_completed == n and (rec["drop_reason"] == 0).all()
    assert inst.state == SPOT and _state(sim, "A") == (1, 0, 0, 1)
    last = max(rec["completion_s"][rid] for rid in range(n))
    g = sim.gpu_seconds_by_state()[0, 0]
    assert 0 < g[DRAINING] <= GPUS * last
    # it stopped billing when its last request completed: drained at a completion time
    drained_at = [t for (t, r, m, a, s, d, sp) in sim.fleet.timeline if m == 0 and sp == 1][0]
    assert drained_at in set(rec["completion_s"].tolist())
    assert g[DRAINING] == pytest.approx(GPUS * (drained_at - 1.0))
    sim.check_invariants()


def test_scale_up_prefers_undraining():
    n = 10
    sim = _sim(initial=2, servers=12, arrival=[0.0] * n, prompt=[800] * n, output=[500] * n, model="A")
    _idle_drain(sim, "C")  # an own spot server for C, free servers too: undrain still comes first
    sim.run_until(1.0)
    assert sim.scale("westus", "A", -1).kinds == ("drain",)
    assert _state(sim, "A") == (1, 0, 1, 0)
    res = sim.scale("westus", "A", 2)
    assert res.kinds == ("undrain", "load_free")
    assert _state(sim, "A") == (2, 1, 0, 0)
    sim.run_until(1e4)
    assert sim.n_completed == n
    sim.check_invariants()


def test_starting_is_billed_spot_is_not():
    """Billed = active + starting + draining GPU-seconds; spot servers are counted apart."""
    sim = _sim()
    a, c = 0, 1
    _idle_drain(sim, "C")  # t=0: C instance straight to spot
    sim.run_until(100.0)
    assert sim.scale("westus", "C", 1).kinds == ("reclaim",)  # starting 100..165
    sim.run_until(300.0)
    g = sim.gpu_seconds_by_state()[0]
    assert g[c, SPOT] == pytest.approx(GPUS * 100.0)
    assert g[c, STARTING] == pytest.approx(GPUS * 65.0)
    assert g[c, ACTIVE] == pytest.approx(GPUS * (3 * 300.0 + 135.0))
    assert g[a, ACTIVE] == pytest.approx(GPUS * 4 * 300.0)
    billed = g[:, [ACTIVE, STARTING, DRAINING]].sum()
    assert billed == pytest.approx(GPUS * (8 * 300.0 - 100.0))
    assert g.sum() == pytest.approx(GPUS * 8 * 300.0)
    assert np.all(g[:, FREE] == 0)
    sim.check_invariants()


def test_requests_wait_for_a_starting_instance():
    """With every instance still starting, IW wait in the endpoint backlog and are served on
    activation; nothing is lost."""
    sim = _sim(initial=1, servers=4, arrival=[10.0, 20.0, 30.0], prompt=[100] * 3, output=[20] * 3,
               tier=[IW, NIW, IW], model="C")
    assert sim.scale("westus", "C", 1).kinds == ("load_free",)
    assert sim.scale("westus", "C", -1).kinds == ("drain",)
    sim.run_until(100.0)
    ep = sim.endpoints[0][1]
    assert not ep.active and len(ep.backlog) == 2 and len(ep.niw_queue) == 1
    sim.run_until(1e4)
    rec = sim.records()
    assert (rec["first_token_s"] >= 155.0).all() and sim.n_completed == 3
    sim.check_invariants()


@pytest.mark.parametrize("fidelity", ["detailed", "fast"])
def test_scaling_interval_refuses_until_it_has_passed(fidelity):
    """scaling.interval_s: a second scaling event of one endpoint within the interval is
    refused with its reason, in both fidelities (they share the fleet); other endpoints and a
    call after the interval are not; the env's masks leave only the no-op meanwhile."""
    from sageserve_env.env.sageserve_env import SageServeEnv
    from sageserve_env.sim import make_simulator
    from sageserve_env.sim.fleet import Refusal

    cfg = load_config("small", ["scaling.interval_s=100"])
    sim = make_simulator(cfg, make_workload(cfg, [], [], []), fidelity)
    assert sim.scale("westus", "A", -2).applied == -2  # one event, however many instances
    sim.run_until(50.0)
    res = sim.scale("westus", "A", 1)
    assert res.applied == 0 and res.refusal is Refusal.INTERVAL and "last scaled 50 s ago" in res.refused_reason
    assert sim.scale("westus", "C", -1).applied == -1  # another endpoint
    assert sim.scale("westus", "A", 0).refusal is None  # asking for nothing is no event
    sim.run_until(100.0)
    assert sim.scale("westus", "A", 1).applied == 1
    sim.check_invariants()

    env = SageServeEnv(scenario="small", fidelity=fidelity, horizon_s=600.0, sim_overrides=["scaling.interval_s=120"])
    env.reset(seed=0)
    md = env.max_delta
    action = np.full(env.n_endpoints, md)
    action[0] = md - 1
    env.step(action)  # endpoint 0 scales at t=0
    masks = env.action_masks().reshape(env.n_endpoints, -1)
    assert masks[0].sum() == 1 and masks[0, md] and masks[1].sum() > 1
    env.step(np.full(env.n_endpoints, md))
    assert env.action_masks().reshape(env.n_endpoints, -1)[0].sum() > 1  # 120 s have passed


def test_scaling_interval_minus_one_is_no_limit():
    sim = _sim()
    for _ in range(3):
        assert sim.scale("westus", "A", -1).applied == -1
    cfg_error = pytest.raises(Exception, match="scaling.interval_s")
    with cfg_error:
        load_config("small", ["scaling.interval_s=-5"])
