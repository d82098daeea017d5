"""An endpoint: the instances of one model in one region, their router and the NIW queue."""

from __future__ import annotations

from collections import deque
from typing import List

from sageserve_env.sim.host import Host
from sageserve_env.sim.requests import DropReason
from sageserve_env.sim.stats import N_TOTALS, Stat

_DROPPED = int(Stat.DROPPED)


class Endpoint:
    """One (region, model) pair.

    Routing inside the endpoint is join-shortest-queue on pending tokens (prompt + output of
    requests assigned and not completed). Memory utilization is the KV tokens committed on
    the active instances (reserved by admitted requests plus needed by those routed there and
    waiting for a batch slot) over their capacity; it drives region routing, NIW feeding and
    the reactive arbiters. Counting the waiting requests matters: with grouped-query attention a
    70B model's KV pool cannot fill at ``max_batch_size`` 512, so reserved memory alone would
    never show overload. Interactive requests that arrive while no instance is active wait in
    ``backlog`` until one is.

    ``stats`` holds the endpoint's running totals (the first ``N_TOTALS`` columns of the
    statistics array, ``sageserve_env.sim.stats``).
    """

    __slots__ = (
        "host", "requests", "index", "region", "model", "capacity", "active", "starting", "draining",
        "backlog", "niw_queue", "niw_queue_tokens", "committed", "stats",
    )

    def __init__(self, host: Host, index: int, region: int, model: int, capacity: int) -> None:
        self.host = host
        self.requests = host.requests
        self.index = index
        self.region = region
        self.model = model
        self.capacity = capacity  # KV tokens per instance
        self.active: List = []  # Instance objects, in the order they became active
        self.starting: List = []
        self.draining: List = []
        self.backlog: deque = deque()
        self.niw_queue: deque = deque()
        self.niw_queue_tokens = 0
        self.committed = 0  # pending tokens of the active instances
        self.stats: List[float] = [0] * N_TOTALS

    def utilization(self) -> float:
        """Mean memory utilization of the active instances; 1.0 when none is active."""
        n = len(self.active)
        return self.committed / (n * self.capacity) if n else 1.0

    def route(self, rid: int, now: float) -> None:
        """Send a request to the active instance with the fewest pending tokens."""
        req = self.requests
        need = req.prompt[rid] + req.output[rid]
        if need > self.capacity:
            req.drop_reason[rid] = int(DropReason.TOO_LARGE)
            self.stats[_DROPPED] += 1
            return
        best = None
        least = 1 << 62
        for inst in self.active:
            if inst.pending_tokens < least:
                least = inst.pending_tokens
                best = inst
        if best is None:
            self.backlog.append(rid)
        else:
            self.committed += need
            best.assign(rid, need, now)

    def enqueue_niw(self, rid: int, now: float) -> None:
        """Hold a non-interactive request until utilization lets it in."""
        req = self.requests
        self.niw_queue.append(rid)
        self.niw_queue_tokens += req.prompt[rid] + req.output[rid]
        self.feed(now)

    def feed(self, now: float) -> None:
        """SageServe ``feed_async``: g requests at utilization <= low, 2g up to high, none above."""
        if not self.active:
            return
        host = self.host
        util = self.committed / (len(self.active) * self.capacity)
        if util <= host.niw_low_util:
            n = host.niw_granularity
        elif util <= host.niw_high_util:
            n = 2 * host.niw_granularity
        else:
            return
        req = self.requests
        queue = self.niw_queue
        while queue and n:
            rid = queue.popleft()
            self.niw_queue_tokens -= req.prompt[rid] + req.output[rid]
            n -= 1
            self.route(rid, now)

    def on_activated(self, now: float) -> None:
        """An instance became active: serve the backlog, then feed NIW work."""
        backlog = self.backlog
        while backlog:
            self.route(backlog.popleft(), now)
        if self.niw_queue:
            self.feed(now)

    @property
    def queued_requests(self) -> int:
        """Requests waiting anywhere in the endpoint (not admitted to a batch)."""
        waiting = sum(len(i.wait_iw) + len(i.wait_niw) for i in self.active + self.draining)
        return waiting + len(self.backlog) + len(self.niw_queue)

    @property
    def in_flight(self) -> int:
        """Requests admitted to a batch of one of its instances."""
        return sum(i.in_flight for i in self.active + self.draining)
