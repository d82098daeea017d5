"""The interface instances and endpoints use to reach the simulator that holds them."""

from __future__ import annotations

from typing import Optional, Protocol

from sageserve_env.sim.events import EventTarget
from sageserve_env.sim.requests import Requests


class Host(Protocol):
    """What an ``Instance`` or ``Endpoint`` reads and calls of its simulator: the requests, the
    batching and NIW settings, the event queue, and the two fleet transitions it triggers."""

    requests: Requests
    max_batch_size: int
    max_batch_tokens: int
    drop_iw_after_s: Optional[float]
    iw_e2e_s: Optional[float]
    niw_granularity: int
    niw_low_util: float
    niw_high_util: float

    def schedule(self, t: float, target: EventTarget) -> None:
        """Call ``target.on_event(t)`` at ``t`` (the simulator's event queue)."""

    def arrivals_at(self, now: float) -> bool:
        """More requests reach the router at ``now`` (not yet routed)."""

    def activated(self, instance, now: float) -> None:
        """A starting ``instance`` finished loading."""

    def drained(self, instance, now: float) -> None:
        """A draining ``instance`` finished its last request."""
