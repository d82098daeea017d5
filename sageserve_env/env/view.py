"""A read-only view of the simulator for heuristic policies.

Heuristics (reactive, long-term planners, Chiron) need more than the observation: exact
instance counts, spot pools, delays and the past demand. ``SimView`` exposes those as numpy
arrays shaped (regions, models) and never lets a policy change the simulator or see the future.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from sageserve_env.sim.simulator import Simulator
from sageserve_env.workload.workload import IW


@dataclass(frozen=True)
class EndpointState:
    """Per-endpoint arrays, shape (regions, models), taken at one instant."""

    active: np.ndarray
    starting: np.ndarray
    draining: np.ndarray
    spot_own: np.ndarray  # spot servers in the region still holding this model
    utilization: np.ndarray  # memory utilization of the active instances (1.0 when none)
    utilization_max: np.ndarray
    busy_fraction: np.ndarray  # share of active instances holding any request
    queued_iw_tokens: np.ndarray
    queued_niw_tokens: np.ndarray
    niw_queue_requests: np.ndarray


_FIELDS = tuple(EndpointState.__dataclass_fields__)


class SimView:
    """Read-only accessors over a running ``Simulator``."""

    def __init__(self, sim: Simulator, demand_per_minute: np.ndarray) -> None:
        self._sim = sim
        self._demand = demand_per_minute  # (minutes, regions, models): IW prompt tokens by home region
        self._shape = (len(sim.region_names), len(sim.model_names))
        self._rows_at = None  # ``sim.changes`` when ``_rows`` were taken
        self._rows: Optional[Tuple[List[tuple], List[int]]] = None
        self._arrays_at = None
        self._arrays: Optional[Tuple[EndpointState, np.ndarray, np.ndarray]] = None

    @property
    def now(self) -> float:
        return self._sim.now

    @property
    def region_names(self) -> List[str]:
        return list(self._sim.region_names)

    @property
    def model_names(self) -> List[str]:
        return list(self._sim.model_names)

    @property
    def scaling_level(self) -> int:
        return self._sim.scaling_level

    @property
    def reclaim_s(self) -> float:
        return self._sim.reclaim_s

    @property
    def spin_up_s(self) -> float:
        return self._sim.spin_up_s

    @property
    def min_instances(self) -> int:
        return self._sim.min_instances

    def servers(self) -> np.ndarray:
        """Servers per region."""
        return np.array([len(f) for f in self._sim.servers])

    def free_servers(self) -> np.ndarray:
        """Servers holding no model, per region."""
        return np.array([len(f) for f in self._sim.free])

    def spot_servers(self) -> np.ndarray:
        """Spot servers per (region, model held)."""
        return np.array([[len(s) for s in spots] for spots in self._sim.spot])

    def gpus_per_server(self) -> np.ndarray:
        return self._sim.gpus_per_server.copy()

    def cost_per_gpu_hour(self) -> np.ndarray:
        return self._sim.cost_per_gpu_hour.copy()

    def endpoints(self) -> EndpointState:
        """Instance counts, utilization and queues of every endpoint now."""
        return EndpointState(*self.current()[1].copy())  # a copy: the caller may write to it

    def current(self) -> Tuple[EndpointState, np.ndarray, np.ndarray]:
        """``endpoints()``, the same fields stacked in one (fields, regions, models) block, and
        ``free_servers()`` as floats; shared and read-only, built once per change of the simulator
        (``sim.changes``) from ``rows()``."""
        rows, free = self.rows()
        if self._arrays_at != self._rows_at:
            block = np.array(rows, dtype=float).T.reshape(len(_FIELDS), *self._shape)
            block.flags.writeable = False
            free_array = np.array(free, dtype=float)
            free_array.flags.writeable = False
            self._arrays = EndpointState(*block), block, free_array
            self._arrays_at = self._rows_at
        return self._arrays

    def rows(self) -> Tuple[List[tuple], List[int]]:
        """The ``EndpointState`` fields per endpoint (a tuple in field order per endpoint, endpoint
        ``e`` = region ``e // models``, model ``e % models``) as Python numbers, and the free servers
        per region; shared, not to be modified. Taken once per change of the simulator
        (``sim.changes``), so the env's observation, its action masks and the policies pay for one
        pass over the endpoints per step."""
        sim = self._sim
        if self._rows_at != sim.changes:
            self._rows = self._take()
            self._rows_at = sim.changes
        return self._rows

    def _take(self) -> Tuple[List[tuple], List[int]]:
        sim = self._sim
        spot = sim.spot
        rows = []
        for ep in sim.all_endpoints:
            active, draining = ep.active, ep.draining
            n = len(active)
            queued_iw = busy = 0
            util_max = 1.0 if not n else -math.inf
            for i in active:
                queued_iw += i.waiting_tokens
                if i.pending_tokens:
                    busy += 1
                u = i.utilization
                if u > util_max:
                    util_max = u
            for i in draining:
                queued_iw += i.waiting_tokens
            if ep.backlog:
                prompt, output = sim.prompt, sim.output
                queued_iw += sum(prompt[r] + output[r] for r in ep.backlog)
            rows.append((n, len(ep.starting), len(draining), len(spot[ep.region][ep.model]),
                         ep.committed / (n * ep.capacity) if n else 1.0,  # ep.utilization()
                         util_max, busy / n if n else 1.0, queued_iw, ep.niw_queue_tokens, len(ep.niw_queue)))
        return rows, [len(f) for f in sim.free]

    def demand_history(self) -> np.ndarray:
        """IW prompt tokens per completed minute so far, shape (minutes, regions, models)."""
        return self._demand[: int(self._sim.now // 60)].copy()

    def future_demand(self, minutes: int) -> np.ndarray:
        """IW prompt tokens per minute for the next ``minutes``: privileged, for the oracle only."""
        start = int(self._sim.now // 60)
        return self._demand[start: start + minutes].copy()

    def perf_model(self, region: int, model: int):
        """The performance model of an endpoint's instances (for throughput estimates)."""
        return self._sim.perf[region][model]

    def kv_capacity_tokens(self) -> np.ndarray:
        """KV tokens one instance of each endpoint can hold."""
        sim = self._sim
        return np.array([[ep.capacity for ep in eps] for eps in sim.endpoints], dtype=float)


def demand_per_minute(sim: Simulator, minutes: int) -> np.ndarray:
    """IW prompt tokens per minute per (home region, model), for the whole episode.

    Policies see it only up to the current minute through ``SimView.demand_history``.
    """
    n_r, n_m = len(sim.region_names), len(sim.model_names)
    w = sim.workload
    iw = w.tier == IW
    minute = np.minimum((w.arrival_s[iw] // 60).astype(np.int64), minutes - 1)
    # the simulator's indices of the requests' home regions and models (as in ``req_region`` and
    # ``req_model``), from the workload's columns rather than the simulator's lists
    region = np.array([sim.region_names.index(n) for n in w.regions], dtype=np.int64)[w.region[iw]]
    model = np.array([sim.model_names.index(n) for n in w.models], dtype=np.int64)[w.model[iw]]
    flat = (minute * n_r + region) * n_m + model
    counts = np.bincount(flat, weights=w.prompt_tokens[iw], minlength=minutes * n_r * n_m)
    return counts.reshape(minutes, n_r, n_m)

