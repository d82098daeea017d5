"""The hourly ILP on hand-solvable cases, plus a brute-force check on small random ones."""

import itertools

import numpy as np
import pytest

from agents.planner import plan_instances


def plan(demand, throughput=100.0, gpus=8, cost=1.0, servers=(10,), current=0, startup=0.0, min_instances=0,
         **kw):
    demand = np.atleast_2d(np.asarray(demand, dtype=float))
    current = np.broadcast_to(current, demand.shape)
    return plan_instances(demand=demand, throughput=throughput, gpus_per_instance=gpus, cost_per_gpu_hour=cost,
                          servers=np.asarray(servers), current=current, startup_cost=startup,
                          min_instances=min_instances, **kw)


def test_demand_binds():
    r = plan([[250.0]])
    assert r.instances.tolist() == [[3]]
    assert r.unmet.tolist() == [[0.0]]
    assert r.objective == pytest.approx(3 * 8 * 1.0)
    r = plan([[300.0]])  # exactly three instances' worth
    assert r.instances.tolist() == [[3]]
    assert plan([[250.0]], headroom=1.3).instances.tolist() == [[4]]  # 325 tok/s


def test_capacity_binds_equal_throughput_drops_the_expensive_endpoint():
    """Need 3 + 2 instances on 4 servers: 100 tok/s unmet whichever endpoint is short; A's
    instances cost 8 GPUs, B's 4, so A goes short."""
    r = plan([[300.0, 200.0]], gpus=np.array([8, 4]), servers=(4,))
    assert r.instances.tolist() == [[2, 2]]
    np.testing.assert_allclose(r.unmet, [[100.0, 0.0]])
    assert r.instances.sum() <= 4


def test_capacity_binds_servers_go_where_they_serve_most_tokens():
    """A: 200 tok/s per instance, needs 2; B: 50 tok/s per instance, needs 3 (and is cheaper).
    Short on B leaves 50 tok/s unmet, short on A 200: B goes short despite its lower cost."""
    r = plan([[400.0, 150.0]], throughput=np.array([200.0, 50.0]), gpus=np.array([8, 1]), servers=(4,))
    assert r.instances.tolist() == [[2, 2]]
    np.testing.assert_allclose(r.unmet, [[0.0, 50.0]])


def test_startup_cost():
    # scaling down is free: from 5 to the 3 needed
    assert plan([[250.0]], current=5, startup=100.0).instances.tolist() == [[3]]
    # scaling up adds exactly the one missing instance, paying one start-up
    r = plan([[250.0]], current=2, startup=5.0)
    assert r.instances.tolist() == [[3]]
    assert r.objective == pytest.approx(3 * 8 + 5.0)
    # with servers to spare, no start-up cost changes the plan (demand is a hard bound)
    assert plan([[250.0]], current=0, startup=1e6).instances.tolist() == [[3]]
    # under contention, equal unmet and equal hourly cost: keep the running instances
    for current, expected in (([2, 0], [2, 1]), ([0, 2], [1, 2])):
        r = plan([[200.0, 200.0]], servers=(3,), current=np.array([current]), startup=1.0)
        assert r.instances.tolist() == [expected]
        assert r.unmet.sum() == pytest.approx(100.0)
        assert r.objective == pytest.approx(3 * 8 + 1.0)


def test_min_instances_with_zero_demand():
    r = plan(np.zeros((2, 3)), servers=(10, 10), min_instances=2)
    assert r.instances.tolist() == [[2, 2, 2], [2, 2, 2]]
    assert r.objective == pytest.approx(12 * 8)
    per_endpoint = np.array([[1, 0, 3], [0, 0, 1]])
    assert plan(np.zeros((2, 3)), servers=(10, 10), min_instances=per_endpoint).instances.tolist() == per_endpoint.tolist()


def test_max_instances_and_servers_per_instance():
    r = plan([[550.0]], max_instances=4)
    assert r.instances.tolist() == [[4]]
    np.testing.assert_allclose(r.unmet, [[150.0]])
    r = plan([[550.0]], servers=(7,), servers_per_instance=2)  # 3 instances of 2 servers fit
    assert r.instances.tolist() == [[3]]
    np.testing.assert_allclose(r.unmet, [[250.0]])


def test_solve_time_and_status():
    r = plan([[250.0, 10.0]], servers=(3,))
    assert r.solve_time_s > 0
    assert isinstance(r.status, str) and r.status
    assert r.instances.dtype == np.int64 and r.unmet.dtype == float


def test_argument_shapes():
    demand = np.array([[250.0, 90.0], [120.0, 0.0]])
    kw = dict(gpus_per_instance=8, servers=np.array([5, 5]), current=np.zeros((2, 2)), startup_cost=1.0,
              min_instances=0)
    per_model = plan_instances(demand, np.array([100.0, 50.0]), cost_per_gpu_hour=np.array([1.0, 2.0]), **kw)
    full = plan_instances(demand, np.array([[100.0, 50.0], [100.0, 50.0]]),
                          cost_per_gpu_hour=np.array([[1.0, 1.0], [2.0, 2.0]]), **kw)
    assert per_model.instances.tolist() == full.instances.tolist() == [[3, 2], [2, 0]]
    assert per_model.objective == pytest.approx(full.objective) == pytest.approx(5 * 8 + 2 * 16 + 7)
    with pytest.raises(ValueError, match="throughput"):
        plan_instances(demand, np.ones(3), cost_per_gpu_hour=1.0, **kw)
    with pytest.raises(ValueError, match="min_instances"):
        plan([[0.0, 0.0]], servers=(3,), min_instances=2)


@pytest.mark.parametrize("seed", range(8))
def test_matches_brute_force(seed):
    """Least total unmet first, then least cost: checked by enumerating every plan."""
    rng = np.random.default_rng(seed)
    R, M = 2, 2
    demand = rng.uniform(0, 400, size=(R, M))
    thr = rng.uniform(50, 200, size=(R, M))
    gpus = rng.choice([1, 2, 4, 8], size=M)
    cost = rng.uniform(1, 3, size=R)
    servers = rng.integers(1, 6, size=R)
    current = rng.integers(0, 4, size=(R, M))
    startup = rng.uniform(0, 20)
    r = plan_instances(demand, thr, gpus, cost, servers, current, startup, min_instances=0)

    best = None
    for flat in itertools.product(range(6), repeat=R * M):
        n = np.array(flat).reshape(R, M)
        if np.any(n.sum(axis=1) > servers):
            continue
        unmet = np.maximum(demand - n * thr, 0).sum()
        price = (cost[:, None] * gpus * n).sum() + startup * np.maximum(n - current, 0).sum()
        key = (round(unmet, 6), price)
        if best is None or key < best:
            best = key
    assert r.unmet.sum() == pytest.approx(best[0], abs=1e-4)
    assert r.objective == pytest.approx(best[1], rel=1e-9)
