"""The simulator core (no gymnasium): both fidelities and what they share."""

from __future__ import annotations

from sageserve_env.config import SimConfig
from sageserve_env.workload.workload import Workload

FIDELITIES = ("detailed", "fast")


def make_simulator(config: SimConfig, workload: Workload, fidelity: str = "detailed", tick_s: float = 5.0):
    """A ``Simulator`` (``detailed``: request by request) or a ``FlowSimulator`` (``fast``:
    token flows per tick of ``tick_s`` seconds) of ``workload`` on ``config``, its requests
    assigned to the endpoints of the config's deployment (``workload.deployment.assign``)."""
    from sageserve_env.workload.deployment import assign

    workload = assign(config, workload)
    if fidelity == "detailed":
        from sageserve_env.sim.simulator import Simulator

        return Simulator(config, workload)
    if fidelity == "fast":
        from sageserve_env.sim.flow import FlowSimulator

        return FlowSimulator(config, workload, tick_s=tick_s)
    raise ValueError(f"fidelity must be one of {list(FIDELITIES)}, got {fidelity!r}")
