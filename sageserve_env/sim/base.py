"""What both fidelities are built on: the config, the workload, the fleet, the event queue,
the performance models and the serving settings, and the read-only figures they share."""

from __future__ import annotations

import numpy as np

from sageserve_env.config import SimConfig
from sageserve_env.sim.events import EventQueue, check_time
from sageserve_env.sim.faults import schedule_outages
from sageserve_env.sim.fleet import Fleet
from sageserve_env.sim.host import serving_settings
from sageserve_env.sim.perf_model import build_perf_models, kv_capacity
from sageserve_env.workload.workload import Workload


class SimulatorBase:
    """The parts of the state contract (``docs/architecture.md``) that do not depend on how
    traffic is simulated. ``changes`` counts the calls of ``run_until`` and ``scale``: views
    taken at the same count are current."""

    fidelity = ""

    def __init__(self, config: SimConfig, workload: Workload) -> None:
        self.config = config
        self.workload = workload
        self.region_names = config.region_names
        self.model_names = config.model_names
        self.now = 0.0
        self.changes = 0
        self.events = EventQueue()
        self.fleet = Fleet(config)
        self.perf = build_perf_models(config)
        n_r, n_m = len(self.region_names), len(self.model_names)
        self.kv_capacity = np.array([kv_capacity(config, r, m) for r in range(n_r) for m in range(n_m)], dtype=np.int64)
        vars(self).update(serving_settings(config))
        schedule_outages(self)  # fires from the first run_until, once the fidelity is built

    def _advance(self, t_end: float) -> None:
        """Check that the simulation can run until ``t_end`` and count the change."""
        check_time(t_end, self.now)
        self.changes += 1

    def gpu_seconds_by_state(self) -> np.ndarray:
        """GPU-seconds so far per (region, model or none, state); model column -1 is 'no model'."""
        return self.fleet.gpu_seconds_by_state(self.now)

    def state_counts(self) -> np.ndarray:
        """Servers per (region, model or none, state)."""
        return self.fleet.counts.copy()
