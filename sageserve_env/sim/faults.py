"""Server faults: partial region outages, scheduled in either fidelity's event queue.

An outage (``OutageConfig``: region, share, start, duration) takes ``round(share x servers)`` of
the region's servers that are up at its start (``Fleet.fail``: spread over what they hold).
Instances on them die; each fidelity retries their requests (``ScalingHooks.fail``): an IW
request goes through the global router again over its priority order without the failed region
(the failover a health check triggers), an NIW request goes back to the front of its
endpoint's NIW queue. A retried request keeps its arrival time and, if it had one, its first
token; its KV cache is lost, so it is prefilled again and regenerates its output. At the end of
the outage the same number of servers come back, free (``Fleet.restore``).

``draw_outages`` draws an episode's generated outages (``faults.generated``) from its seed.
"""

from __future__ import annotations

import math
from typing import Callable, List, Sequence

import numpy as np

from sageserve_env.config import OutageConfig, SimConfig


class Outage:
    """One outage in the event queue: its start takes the servers, its end gives them back."""

    __slots__ = ("sim", "region", "servers", "duration_s", "taken", "version")

    def __init__(self, sim, region: int, servers: int, duration_s: float) -> None:
        self.sim, self.region, self.servers, self.duration_s = sim, region, servers, duration_s
        self.taken = -1  # servers it took (-1: not started)
        self.version = 0

    def on_event(self, now: float) -> None:
        fleet = self.sim.fleet
        if self.taken < 0:
            self.taken = fleet.fail(self.region, self.servers, now, self.sim)
            self.sim.events.push(now + self.duration_s, self)
        else:
            fleet.restore(self.region, self.taken, now)


def schedule_outages(sim) -> None:
    """Put every outage of ``sim.config.faults.outages`` in ``sim.events``."""
    cfg: SimConfig = sim.config
    if cfg.faults.generated:
        raise ValueError(f"faults.generated={cfg.faults.generated}: generated outages are drawn per episode "
                         "(SageServeEnv.reset, or sageserve_env.sim.faults.draw_outages) into faults.outages "
                         "before a simulator is built")
    names = cfg.region_names
    for o in cfg.faults.outages:
        r = names.index(o.region)
        sim.events.push(o.start_s, Outage(sim, r, round(o.share * cfg.regions[r].servers), o.duration_s))


def draw_outages(cfg: SimConfig, rng: np.random.Generator, horizon_s: float) -> List[OutageConfig]:
    """``faults.generated`` outages of ``faults.generated_share`` for ``generated_duration_s``:
    each in a region drawn uniformly, starting at a whole minute drawn uniformly from
    [``generated_earliest_s``, ``generated_latest_s``] (default: the last start that ends within
    ``horizon_s``). A window set past a shortened horizon gives an outage after the episode's end,
    which the episode does not reach (the task's window belongs to its day, not to the horizon)."""
    f = cfg.faults
    latest = horizon_s - f.generated_duration_s if f.generated_latest_s is None else f.generated_latest_s
    first = int(math.ceil(f.generated_earliest_s / 60.0))
    if first * 60.0 > latest:
        raise ValueError(f"faults.generated: no whole minute in [generated_earliest_s={f.generated_earliest_s:g}, "
                         f"{latest:g}] to start an outage (generated_latest_s null: the horizon {horizon_s:g} s minus "
                         f"generated_duration_s={f.generated_duration_s:g})")
    minutes = int(math.floor(latest / 60.0)) - first + 1
    out = []
    for _ in range(f.generated):
        region = cfg.regions[int(rng.integers(len(cfg.regions)))].name
        start_s = 60.0 * (first + int(rng.integers(minutes)))
        out.append(OutageConfig(region=region, share=f.generated_share, start_s=start_s,
                                duration_s=f.generated_duration_s))
    return out


def failover_region(order: Sequence[int], failed: int, utilization: Callable[[int], float], threshold: float) -> int:
    """The region a retried IW request goes to: the global router's rule (the first region below
    ``threshold``, else the least utilized; ``Simulator._arrive`` inlines it for arrivals) over its
    priority order without the failed region (the order itself if that is all it has)."""
    candidates = [r for r in order if r != failed] or list(order)
    for r in candidates:
        if utilization(r) < threshold:
            return r
    return min(candidates, key=utilization)
