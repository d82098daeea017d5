"""SageServe's hourly instance planner: an integer program solved with HiGHS (scipy.optimize.milp).

For the coming hour it chooses the number of instances ``n[r, m]`` of every endpoint (region
``r``, model ``m``) so that each endpoint's forecast demand is served at the least cost:

    minimize    sum  cost_per_gpu_hour * gpus_per_instance * n          (GPU cost of the hour)
              + sum  startup_cost * added                               (instances started)
    subject to  n * throughput + unmet >= demand * headroom             (every endpoint)
                sum_m servers_per_instance * n <= servers               (every region)
                added >= n - current,  added >= 0,  unmet >= 0
                min_instances <= n <= max_instances,  n integer

Units: ``demand`` and ``throughput`` in the same rate (the long-term policies use IW prompt
tokens per second: the forecast for the hour, plus a share of the NIW backlog, and what one
instance sustains at its operating point, derived upstream from the performance model);
``cost_per_gpu_hour`` per GPU-hour; ``startup_cost`` in the same currency per instance started
(e.g. the GPU-hours an instance spends loading before it serves).

Demand the region's servers cannot hold does not make the problem infeasible: ``unmet`` takes the
rest, and it is minimized FIRST (lexicographically: a first solve finds the least total unmet
rate, a second the cheapest plan with that much unmet). That is the penalty formulation with an
unbounded penalty, without a big constant that would blur the cost terms or leave tiny
remainders unserved. Unmet demand is counted in rate units (tokens/s), so under contention the
servers go where they serve the most tokens, and among plans leaving as much unmet, to the
cheapest (including keeping running instances over starting new ones).

Consequences the callers should know:
- scaling down is free, and keeping an instance has no value, so whenever the servers suffice
  the plan is exactly ``max(min_instances, ceil(demand * headroom / throughput))``, whatever the
  start-up cost; start-up cost only decides between plans that leave the same demand unmet;
- demand is per endpoint: the plan does not move demand between regions (routing spill happens
  in the simulator, not in the plan), as in SageServe's per-region formulation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

REGIONS, MODELS = 0, 1  # which axis a 1-D argument runs along


@dataclass(frozen=True)
class PlanResult:
    instances: np.ndarray  # (R, M) int64: instances per endpoint for the hour
    unmet: np.ndarray  # (R, M) demand * headroom - instances * throughput where positive (rate units)
    objective: float  # GPU cost of the hour + start-up cost of the instances added
    solve_time_s: float  # wall time of both HiGHS solves
    status: str  # HiGHS's message for the final solve


def _grid(x, shape, vector_axis: int, name: str) -> np.ndarray:
    """``x`` as a float (R, M) array: a scalar, a vector along ``vector_axis``, or (R, M)."""
    a = np.asarray(x, dtype=float)
    if a.ndim == 1:
        a = a[:, None] if vector_axis == REGIONS else a[None, :]
    try:
        return np.broadcast_to(a, shape).astype(float)
    except ValueError:
        raise ValueError(f"{name}: shape {np.shape(x)} does not fit (regions, models) = {shape}") from None


def plan_instances(demand, throughput, gpus_per_instance, cost_per_gpu_hour, servers, current, startup_cost,
                   min_instances, max_instances=None, headroom: float = 1.0, servers_per_instance=1) -> PlanResult:
    """Instances per endpoint for the coming hour (see the module docstring for the program).

    Shapes: ``demand`` and ``current`` (R, M); ``servers`` (R,); the others a scalar, (R, M), or a
    vector: per model (M,) for ``throughput``, ``gpus_per_instance``, ``startup_cost``,
    ``min_instances``, ``max_instances`` and ``servers_per_instance``; per region (R,) for
    ``cost_per_gpu_hour``. ``max_instances=None``: bounded by the region's servers only.
    Raises ``ValueError`` on malformed inputs, including minimums the servers cannot hold.
    """
    d = np.asarray(demand, dtype=float)
    if d.ndim != 2:
        raise ValueError(f"demand must be (regions, models), got shape {d.shape}")
    shape = d.shape
    R, M = shape
    need = d * headroom
    thr = _grid(throughput, shape, MODELS, "throughput")
    hourly = _grid(cost_per_gpu_hour, shape, REGIONS, "cost_per_gpu_hour") * _grid(
        gpus_per_instance, shape, MODELS, "gpus_per_instance")
    start = _grid(startup_cost, shape, MODELS, "startup_cost")
    cur = _grid(current, shape, MODELS, "current")
    spi = _grid(servers_per_instance, shape, MODELS, "servers_per_instance")
    srv = np.asarray(servers, dtype=float)
    if srv.shape != (R,):
        raise ValueError(f"servers must be ({R},), got shape {srv.shape}")
    if not (np.all(np.isfinite(need)) and np.all(need >= 0)):
        raise ValueError("demand must be finite and non-negative")
    if not (np.all(np.isfinite(thr)) and np.all(thr > 0)):
        raise ValueError("throughput must be finite and positive")
    if np.any(spi < 1):
        raise ValueError("servers_per_instance must be >= 1")
    lo = _grid(min_instances, shape, MODELS, "min_instances")
    hi = np.floor(srv[:, None] / spi)
    if max_instances is not None:
        hi = np.minimum(hi, _grid(max_instances, shape, MODELS, "max_instances"))
    if np.any(lo > hi) or np.any((lo * spi).sum(axis=1) > srv):
        raise ValueError("min_instances cannot be placed within max_instances and the servers")

    # Variables: n, added, unmet; each (R, M) flattened row-major.
    K = R * M
    eye, zero = np.eye(K), np.zeros((K, K))
    region_rows = np.kron(np.eye(R), np.ones(M)) * spi.ravel()
    constraints = [
        LinearConstraint(np.hstack([np.diag(thr.ravel()), zero, eye]), lb=need.ravel()),
        LinearConstraint(np.hstack([-eye, eye, zero]), lb=-cur.ravel()),
        LinearConstraint(np.hstack([region_rows, np.zeros((R, 2 * K))]), ub=srv),
    ]
    bounds = Bounds(np.r_[lo.ravel(), np.zeros(2 * K)], np.r_[hi.ravel(), np.full(K, np.inf), need.ravel()])
    integrality = np.r_[np.ones(K), np.zeros(2 * K)]
    options = {"mip_rel_gap": 1e-9}
    cost = np.r_[hourly.ravel(), start.ravel(), np.zeros(K)]
    unmet_total = np.r_[np.zeros(2 * K), np.ones(K)]

    t0 = time.perf_counter()
    first = milp(unmet_total, constraints=constraints, bounds=bounds, integrality=integrality, options=options)
    if not first.success:
        raise RuntimeError(f"planner: HiGHS failed on the unmet-demand stage: {first.message}")
    slack = 1e-6 * max(1.0, float(need.sum()))
    constraints.append(LinearConstraint(unmet_total, ub=first.fun + slack))
    second = milp(cost, constraints=constraints, bounds=bounds, integrality=integrality, options=options)
    elapsed = time.perf_counter() - t0
    if not second.success:
        raise RuntimeError(f"planner: HiGHS failed on the cost stage: {second.message}")

    n = np.rint(second.x[:K]).reshape(shape).astype(np.int64)
    objective = float((hourly * n).sum() + (start * np.maximum(n - cur, 0)).sum())
    return PlanResult(instances=n, unmet=np.maximum(need - n * thr, 0.0), objective=objective,
                      solve_time_s=elapsed, status=str(second.message))
