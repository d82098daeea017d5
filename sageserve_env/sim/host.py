"""The interface instances and endpoints use to reach the simulator that holds them."""

from __future__ import annotations

from typing import Any, Dict, Optional, Protocol

from sageserve_env.config import SimConfig

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

    next_arrival_s: float  # when the next request not yet routed reaches the router (inf: none left)

    def activated(self, instance, now: float) -> None:
        """A starting ``instance`` finished loading."""

    def drained(self, instance, now: float) -> None:
        """A draining ``instance`` finished its last request."""


def serving_settings(cfg: SimConfig) -> Dict[str, Any]:
    """The batching, SLO, NIW-feed and routing settings both fidelities read while they run, as
    plain attributes (the hot path never reads the config): the numbers of ``Host``."""
    return {
        "max_batch_size": cfg.batching.max_batch_size, "max_batch_tokens": cfg.batching.max_batch_tokens,
        "drop_iw_after_s": cfg.slo.drop_iw_after_s, "iw_e2e_s": cfg.slo.iw_e2e_s,
        "feed_async": cfg.niw.feed_async, "niw_granularity": cfg.niw.granularity,
        "niw_low_util": cfg.niw.low_util, "niw_high_util": cfg.niw.high_util,
        "util_threshold": cfg.routing.util_threshold, "no_reroute": cfg.routing.no_reroute,
    }
