"""A read-only view of the simulator for heuristic policies.

Heuristics (reactive, long-term planners, Chiron) need more than the observation: exact
instance counts, spot pools, delays and the past demand. ``SimView`` exposes those as numpy
arrays shaped (regions, models), read from the fleet and the statistics array that both
fidelities keep, and never lets a policy change the simulator or see the future.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from sageserve_env.sim.fleet import FREE, NO_MODEL, SPOT
from sageserve_env.sim.stats import GAUGES, Stat
from sageserve_env.workload.workload import IW, Indexed, Workload


@dataclass(frozen=True)
class EndpointState:
    """Per-endpoint arrays, shape (regions, models), taken at one instant: the gauge columns
    of the statistics array (``Stat``), in its order."""

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
    queued_requests: np.ndarray  # waiting anywhere: for a batch slot, an active instance, the NIW feed
    in_flight_requests: np.ndarray  # admitted to a batch and not completed


assert tuple(EndpointState.__dataclass_fields__) == tuple(s.name.lower() for s in GAUGES)


class SimView:
    """Read-only accessors over a running simulator of either fidelity."""

    def __init__(self, sim, minutes: int, history: Optional[np.ndarray] = None) -> None:
        self._sim = sim
        self._indexed = sim.workload.indexed(sim.region_names, sim.model_names)
        # (minutes, regions, models): IW prompt tokens per minute by home region, the whole episode
        self._demand = demand_per_minute(sim.workload, self._indexed, minutes, len(sim.region_names),
                                         len(sim.model_names))
        self._shape = (len(sim.region_names), len(sim.model_names))
        # IW prompt tokens per minute of the days before t = 0 (v1 episodes), (minutes, R, M)
        self._history = np.zeros((0,) + self._shape) if history is None else np.asarray(history, dtype=float)
        if self._history.shape[1:] != self._shape:
            raise ValueError(f"history must have shape (minutes, {self._shape[0]}, {self._shape[1]}), "
                             f"got {self._history.shape}")
        self._stats_at: Optional[int] = None  # ``sim.changes`` when ``_stats`` was taken
        self._stats: Optional[np.ndarray] = None

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
        return self._sim.fleet.level

    @property
    def reclaim_s(self) -> float:
        return self._sim.fleet.reclaim_s

    @property
    def spin_up_s(self) -> float:
        return self._sim.fleet.spin_up_s

    @property
    def min_instances(self) -> int:
        return self._sim.fleet.min_instances

    def servers(self) -> np.ndarray:
        """Servers per region in service: the fleet without the servers down in a fault."""
        return self._sim.fleet.servers - self._sim.fleet.down()

    def down_servers(self) -> np.ndarray:
        """Servers per region down in a fault (``sim/faults.py``)."""
        return self._sim.fleet.down()

    def free_servers(self) -> np.ndarray:
        """Servers holding no model, per region."""
        return self._sim.fleet.counts[:, NO_MODEL, FREE].copy()

    def spot_servers(self) -> np.ndarray:
        """Spot servers per (region, model held)."""
        return self._sim.fleet.counts[:, :-1, SPOT].copy()

    def gpus_per_server(self) -> np.ndarray:
        return self._sim.fleet.gpus_per_server.copy()

    def cost_per_gpu_hour(self) -> np.ndarray:
        return self._sim.fleet.cost_per_gpu_hour.copy()

    def statistics(self) -> np.ndarray:
        """The simulator's statistics array (endpoints, ``len(Stat)``), shared and read-only,
        taken once per change of the simulator (``sim.changes``): the env's observation, its
        masks and the policies pay for one pass over the endpoints per step."""
        sim = self._sim
        if self._stats_at != sim.changes:
            self._stats = sim.statistics()
            self._stats.flags.writeable = False
            self._stats_at = sim.changes
        return self._stats

    def endpoints(self) -> EndpointState:
        """Instance counts, utilization and queues of every endpoint now (copies)."""
        gauges = self.statistics()[:, GAUGES[0]:].T.reshape(len(GAUGES), *self._shape)
        return EndpointState(*gauges.copy())

    def demand_history(self) -> np.ndarray:
        """IW prompt tokens per completed minute so far, shape (minutes, regions, models); in a v1
        episode the preceding days' minutes come first."""
        now = self._demand[: int(self._sim.now // 60)]
        if len(self._history):
            return np.concatenate([self._history, now])
        return now.copy()

    def history_minutes(self) -> int:
        """``len(demand_history())`` without the copy."""
        return len(self._history) + int(self._sim.now // 60)

    def future_demand(self, minutes: int) -> np.ndarray:
        """IW prompt tokens per minute for the next ``minutes``: privileged, for the oracle only."""
        start = int(self._sim.now // 60)
        return self._demand[start: start + minutes].copy()

    def perf_model(self, region: int, model: int):
        """The performance model of an endpoint's instances (for throughput estimates)."""
        return self._sim.perf[region][model]

    def kv_capacity_tokens(self) -> np.ndarray:
        """KV tokens one instance of each endpoint can hold."""
        return self._sim.kv_capacity.reshape(self._shape).astype(float)

    def arrived_since(self, start: int) -> Tuple[int, Dict[str, np.ndarray]]:
        """Requests [start, arrived) (indices in arrival order) and the number arrived: their
        home region and model (the config's indices), arrival time, tier, prompt and output tokens."""
        n = self._sim.arrived
        w = self._sim.workload
        return n, {"region": self._indexed.region[start:n], "model": self._indexed.model[start:n],
                   "arrival_s": w.arrival_s[start:n],
                   "tier": w.tier[start:n], "prompt_tokens": w.prompt_tokens[start:n],
                   "output_tokens": w.output_tokens[start:n]}


def demand_per_minute(w: Workload, indexed: Indexed, minutes: int, n_regions: int, n_models: int) -> np.ndarray:
    """IW prompt tokens per minute per (home region, model) of workload ``w`` (``indexed``: its
    requests in the config's indices); policies see it only up to the current minute."""
    iw = w.tier == IW
    minute = np.minimum((w.arrival_s[iw] // 60).astype(np.int64), minutes - 1)
    flat = (minute * n_regions + indexed.region[iw]) * n_models + indexed.model[iw]
    counts = np.bincount(flat, weights=w.prompt_tokens[iw], minlength=minutes * n_regions * n_models)
    return counts.reshape(minutes, n_regions, n_models)
