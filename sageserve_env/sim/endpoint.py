"""An endpoint: the instances of one model in one region, their router and the NIW queue."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, List

if TYPE_CHECKING:
    from sageserve_env.sim.instance import Instance
    from sageserve_env.sim.simulator import Simulator


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
    """

    __slots__ = (
        "sim", "index", "region", "model", "capacity", "active", "starting", "draining",
        "backlog", "niw_queue", "niw_queue_tokens", "committed",
        "arrived", "arrived_prompt_tokens", "completed", "iw_first_tokens", "iw_ttft_sum",
        "iw_slo_misses", "iw_e2e_misses", "niw_completed", "niw_deadline_misses", "dropped",
    )

    def __init__(self, sim: "Simulator", index: int, region: int, model: int, capacity: int) -> None:
        self.sim = sim
        self.index = index
        self.region = region
        self.model = model
        self.capacity = capacity  # KV tokens per instance
        self.active: List["Instance"] = []
        self.starting: List["Instance"] = []
        self.draining: List["Instance"] = []
        self.backlog: deque = deque()
        self.niw_queue: deque = deque()
        self.niw_queue_tokens = 0
        self.committed = 0  # pending tokens of the active instances
        # running totals (the env differences them per step)
        self.arrived = 0
        self.arrived_prompt_tokens = 0
        self.completed = 0
        self.iw_first_tokens = 0
        self.iw_ttft_sum = 0.0
        self.iw_slo_misses = 0
        self.iw_e2e_misses = 0
        self.niw_completed = 0
        self.niw_deadline_misses = 0
        self.dropped = 0

    def utilization(self) -> float:
        """Mean memory utilization of the active instances; 1.0 when none is active."""
        n = len(self.active)
        return self.committed / (n * self.capacity) if n else 1.0

    def route(self, rid: int, now: float) -> None:
        """Send a request to the active instance with the fewest pending tokens."""
        sim = self.sim
        need = sim.prompt[rid] + sim.output[rid]
        if need > self.capacity:
            sim.drop(rid, "too_large", self)
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
        self.niw_queue.append(rid)
        self.niw_queue_tokens += self.sim.prompt[rid] + self.sim.output[rid]
        self.feed(now)

    def feed(self, now: float) -> None:
        """SageServe ``feed_async``: g requests at utilization <= low, 2g up to high, none above."""
        if not self.active:
            return
        sim = self.sim
        util = self.committed / (len(self.active) * self.capacity)
        if util <= sim.niw_low_util:
            n = sim.niw_granularity
        elif util <= sim.niw_high_util:
            n = 2 * sim.niw_granularity
        else:
            return
        queue = self.niw_queue
        while queue and n:
            rid = queue.popleft()
            self.niw_queue_tokens -= sim.prompt[rid] + sim.output[rid]
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
