"""The detailed (request-level) simulator: regions of servers, endpoints, routing, scaling.

A plain library (no gymnasium): build a ``Simulator`` from a ``SimConfig`` and a ``Workload``,
then alternate ``scale(...)`` decisions with ``run_until(t)``. Requests stream from the
workload in arrival order; the event queue only holds instance iterations and start-ups, so
the number of events grows with requests, not with generated tokens. The fleet (server counts,
scaling rules, GPU-seconds, logs) is a ``Fleet``; per-endpoint figures come out as the
statistics array (``statistics()``, columns ``Stat``), the same in both fidelities.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Dict, List, Optional, Tuple

import numpy as np

from sageserve_env.config import SimConfig
from sageserve_env.sim.endpoint import Endpoint
from sageserve_env.sim.base import SimulatorBase
from sageserve_env.sim.faults import failover_region
from sageserve_env.sim.fleet import ACTIVE, DOWN, DRAINING, SPOT, STARTING, STATE_NAMES, ScaleResult
from sageserve_env.sim.instance import Instance
from sageserve_env.sim.metrics import RecordMetrics
from sageserve_env.sim.requests import DropReason, Requests
from sageserve_env.sim.stats import N_TOTALS, Stat
from sageserve_env.workload.workload import NIW, Workload

_ARRIVED, _ARRIVED_PROMPT_TOKENS, _RETRIED = int(Stat.ARRIVED), int(Stat.ARRIVED_PROMPT_TOKENS), int(Stat.RETRIED)


class InvariantError(AssertionError):
    """The simulator's bookkeeping disagrees with itself (a bug, never a user error)."""


class _IwTimeouts:
    """``slo.drop_iw_after_s``: every IW request in arrival order, and one event at the moment
    the oldest one not yet looked at has waited that long; then, if it is still waiting for a
    batch slot (at an instance or in a backlog), it is dropped there."""

    __slots__ = ("sim", "limit", "queue", "version")

    def __init__(self, sim: "Simulator", limit: float) -> None:
        self.sim, self.limit, self.queue, self.version = sim, limit, deque(), 0

    def add(self, rid: int, now: float) -> None:
        self.queue.append(rid)
        if len(self.queue) == 1:
            self._arm(now)

    def _arm(self, now: float) -> None:
        due = self.sim.requests.arrival[self.queue[0]] + self.limit
        self.sim.schedule(max(math.nextafter(due, math.inf), now), self)

    def on_event(self, now: float) -> None:
        arrival, queue = self.sim.requests.arrival, self.queue
        while queue and now > arrival[queue[0]] + self.limit:  # the test that _arm's time passes
            self.sim.expire(queue.popleft(), now)
        if queue:
            self._arm(now)


class Simulator(SimulatorBase):
    """LLM serving across regions, advanced by ``run_until`` and steered by ``scale``."""

    fidelity = "detailed"

    def __init__(self, config: SimConfig, workload: Workload) -> None:
        super().__init__(config, workload)
        self.schedule = self.events.push
        self.requests = Requests(workload, self.region_names, self.model_names, config.routing.delay_s)
        self._next_arrival = 0  # the first request not yet routed
        self.next_arrival_s = self.requests.stream[0] if self.requests.n else math.inf
        self.endpoints: List[List[Endpoint]] = [
            [Endpoint(self, r * len(self.model_names) + m, r, m, int(self.kv_capacity[r * len(self.model_names) + m]))
             for m in range(len(self.model_names))] for r in range(len(self.region_names))]
        self.all_endpoints: List[Endpoint] = [ep for eps in self.endpoints for ep in eps]
        limit = config.slo.drop_iw_after_s
        self._timeouts = _IwTimeouts(self, limit) if limit is not None else None
        self._retried: set = set()  # requests retried after a fault
        for ep in self.all_endpoints:
            for _ in range(int(self.fleet.counts[ep.region, ep.model, ACTIVE])):
                ep.active.append(Instance(self, ep, self.perf[ep.region][ep.model], ACTIVE))

    # -- the event loop -----------------------------------------------------------------
    def run_until(self, t_end: float) -> None:
        """Process every arrival and event up to and including ``t_end``; then ``now = t_end``."""
        self._advance(t_end)
        self._next_arrival = self.events.run_through(t_end, self.requests.stream, self._next_arrival, self._arrive)
        self.now = t_end

    def _arrive(self, rid: int, now: float) -> None:
        """Route request ``rid``, reaching the router at ``now``."""
        req = self.requests
        self._next_arrival = nxt = rid + 1
        self.next_arrival_s = req.stream[nxt] if nxt < req.n else math.inf
        eps = self.endpoints
        m = req.model[rid]
        if req.tier[rid] == NIW:
            ep = eps[req.region[rid]][m]
            ep.stats[_ARRIVED] += 1
            if self.feed_async:
                ep.enqueue_niw(rid, now)
            else:
                ep.route(rid, now)
            return
        if self.no_reroute:
            ep = eps[req.region[rid]][m]
        else:
            ep = None
            best = math.inf
            threshold = self.util_threshold
            for r in req.order[rid]:
                cand = eps[r][m]
                # cand.utilization(), inline: IW requests ask up to once per region
                n = len(cand.active)
                util = cand.committed / (n * cand.capacity) if n else 1.0
                if util < threshold:
                    ep = cand
                    break
                if util < best:
                    best = util
                    ep = cand
            if ep is None:
                ep = eps[req.order[rid][0]][m]
        stats = ep.stats
        stats[_ARRIVED] += 1
        stats[_ARRIVED_PROMPT_TOKENS] += req.prompt[rid]
        ep.route(rid, now)
        if self._timeouts is not None:
            self._timeouts.add(rid, now)

    def expire(self, rid: int, now: float) -> None:
        """IW request ``rid`` has waited ``slo.drop_iw_after_s``: drop it if it still waits for
        a batch slot. It is the oldest of its queue (every queue is first come first served and
        the older ones were looked at first), so only queue fronts are searched; but a request
        retried after a fault joined its new queue at the back, so its queues are searched whole."""
        req = self.requests
        if req.drop_reason[rid] or not math.isnan(req.first_token_s[rid]):  # dropped, or served
            return
        whole = rid in self._retried
        for ep in (self.endpoints[r][req.model[rid]] for r in req.order[rid]):
            if ep.backlog and (ep.backlog[0] == rid or (whole and rid in ep.backlog)):
                ep.backlog.remove(rid)
                req.drop_reason[rid] = int(DropReason.IW_TIMEOUT)
                ep.stats[Stat.DROPPED] += 1
                return
            for inst in ep.active + ep.draining:
                if inst.wait_iw and (inst.wait_iw[0] == rid or (whole and rid in inst.wait_iw)):
                    inst.expire(rid, now)
                    return

    # -- the fleet ------------------------------------------------------------------------
    def scale(self, region: int | str, model: int | str, delta: int) -> ScaleResult:
        """Ask endpoint (region, model) for ``delta`` more (or fewer) instances (``Fleet.scale``
        has the rules). The instance that drains is the active one with the fewest pending
        tokens; it finishes its requests, so none is lost."""
        self.changes += 1
        return self.fleet.scale(region, model, delta, self.now, self)

    def undrain(self, r: int, m: int, now: float) -> None:
        ep = self.endpoints[r][m]
        inst = ep.draining.pop()
        inst.state = ACTIVE
        ep.active.append(inst)
        ep.committed += inst.pending_tokens
        ep.on_activated(now)

    def start(self, r: int, m: int, ready_at: float) -> None:
        ep = self.endpoints[r][m]
        inst = Instance(self, ep, self.perf[r][m], STARTING)
        ep.starting.append(inst)
        inst.start(ready_at)

    def drain(self, r: int, m: int, now: float) -> bool:
        ep = self.endpoints[r][m]
        inst = min(ep.active, key=_pending_tokens)
        ep.active.remove(inst)
        ep.committed -= inst.pending_tokens
        if not inst.n_requests:
            inst.state = SPOT  # its server is donated at once
            return False
        inst.state = DRAINING
        ep.draining.append(inst)
        return True

    def fail(self, r: int, m: int, state: int, k: int, now: float) -> None:
        """``k`` of endpoint (r, m)'s instances in ``state`` die in a fault, the last ones of
        their list (the most recently started); their requests are retried (``sim/faults.py``)."""
        ep = self.endpoints[r][m]
        group = {ACTIVE: ep.active, STARTING: ep.starting, DRAINING: ep.draining}[state]
        dead = group[len(group) - k:]
        del group[len(group) - k:]
        retried = []
        for inst in dead:
            inst.version += 1  # cancels its scheduled iteration or start-up
            inst.state = DOWN
            if state == ACTIVE:
                ep.committed -= inst.pending_tokens
            retried += inst.held()
        retried.sort()  # in arrival order
        ep.stats[_RETRIED] += len(retried)
        self._retried.update(retried)
        req = self.requests
        niw = [rid for rid in retried if req.tier[rid] == NIW]
        if self.feed_async and niw:  # back to the front of the NIW queue, in arrival order
            ep.niw_queue.extendleft(reversed(niw))
            ep.niw_queue_tokens += sum(req.prompt[rid] + req.output[rid] for rid in niw)
            ep.feed(now)
        for rid in retried:
            if req.tier[rid] != NIW:
                self._failover(rid, r).route(rid, now)
            elif not self.feed_async:
                ep.route(rid, now)

    def _failover(self, rid: int, failed: int) -> Endpoint:
        """The endpoint a retried IW request goes to (``failover_region``; its home region with
        ``routing.no_reroute``)."""
        req = self.requests
        eps = [row[req.model[rid]] for row in self.endpoints]
        if self.no_reroute:
            return eps[req.region[rid]]
        return eps[failover_region(req.order[rid], failed, lambda r: eps[r].utilization(), self.util_threshold)]

    def activated(self, inst: Instance, now: float) -> None:
        """A starting instance finished loading."""
        ep = inst.endpoint
        ep.starting.remove(inst)
        ep.active.append(inst)
        inst.state = ACTIVE
        self.fleet.activate(ep.region, ep.model, now)
        ep.on_activated(now)

    def drained(self, inst: Instance, now: float) -> None:
        """A draining instance finished its last request: its server goes to spot."""
        ep = inst.endpoint
        ep.draining.remove(inst)
        inst.state = SPOT
        self.fleet.release(ep.region, ep.model, now)

    # -- read-only views ----------------------------------------------------------------
    def statistics(self) -> np.ndarray:
        """The statistics array (endpoints, ``len(Stat)``): running totals and present gauges."""
        out = np.zeros((len(self.all_endpoints), len(Stat)))
        out[:, :N_TOTALS] = [ep.stats for ep in self.all_endpoints]
        counts = self.fleet.counts[:, :-1].reshape(len(self.all_endpoints), -1)
        out[:, Stat.ACTIVE] = counts[:, ACTIVE]
        out[:, Stat.STARTING] = counts[:, STARTING]
        out[:, Stat.DRAINING] = counts[:, DRAINING]
        out[:, Stat.SPOT_OWN] = counts[:, SPOT]
        req = self.requests
        for e, ep in enumerate(self.all_endpoints):
            active = ep.active
            n = len(active)
            queued_iw = sum(i.waiting_tokens for i in active) + sum(i.waiting_tokens for i in ep.draining)
            queued_iw += sum(req.prompt[r] + req.output[r] for r in ep.backlog)
            row = out[e]
            row[Stat.UTILIZATION] = ep.utilization()
            row[Stat.UTILIZATION_MAX] = max(i.utilization for i in active) if n else 1.0
            row[Stat.BUSY_FRACTION] = sum(1 for i in active if i.pending_tokens) / n if n else 1.0
            row[Stat.QUEUED_IW_TOKENS] = queued_iw
            row[Stat.QUEUED_NIW_TOKENS] = ep.niw_queue_tokens
            row[Stat.NIW_QUEUE_REQUESTS] = len(ep.niw_queue)
            row[Stat.QUEUED_REQUESTS] = ep.queued_requests
            row[Stat.IN_FLIGHT_REQUESTS] = ep.in_flight
        return out

    @property
    def n_requests(self) -> int:
        """Requests in the workload."""
        return self.requests.n

    @property
    def arrived(self) -> int:
        """Requests routed so far (in arrival order)."""
        return self._next_arrival

    @property
    def n_completed(self) -> int:
        return int(sum(ep.stats[Stat.COMPLETED] for ep in self.all_endpoints))

    @property
    def n_dropped(self) -> int:
        return int(sum(ep.stats[Stat.DROPPED] for ep in self.all_endpoints))

    def in_flight(self) -> int:
        """Requests admitted to a batch and not completed."""
        return sum(ep.in_flight for ep in self.all_endpoints)

    def queued(self) -> int:
        """Requests arrived and waiting: at instances, in backlogs and in NIW queues."""
        return sum(ep.queued_requests for ep in self.all_endpoints)

    def overdue(self) -> Tuple[int, int]:
        """IW requests with no first token past their SLO, NIW requests unfinished past their
        deadline (neither dropped), as of now."""
        return self.requests.overdue(self.arrived, self.now)

    def records(self) -> Optional[Dict[str, np.ndarray]]:
        """Per-request columns of the requests arrived so far (NaN where a time is not reached yet)."""
        return self.requests.records(self.arrived)

    def request_metrics(self):
        """Latency percentiles and SLO figures per endpoint and region, for ``metrics.summarize``."""
        return RecordMetrics(self.records(), self.now)

    def check_invariants(self) -> None:
        """Raise InvariantError if any request or server is unaccounted for."""
        arrived, done, dropped = self.arrived, self.n_completed, self.n_dropped
        flight, queued = self.in_flight(), self.queued()
        if arrived != done + flight + queued + dropped:
            raise InvariantError(f"arrived {arrived} != completed {done} + in flight {flight} + "
                                 f"queued {queued} + dropped {dropped}")
        problem = self.fleet.check(self.now)
        if problem:
            raise InvariantError(problem)
        counts = self.fleet.counts
        for ep in self.all_endpoints:
            name = f"{self.region_names[ep.region]}/{self.model_names[ep.model]}"
            for state, group in ((ACTIVE, ep.active), (STARTING, ep.starting), (DRAINING, ep.draining)):
                if any(i.state != state or i.endpoint is not ep for i in group) or \
                        counts[ep.region, ep.model, state] != len(group):
                    raise InvariantError(f"{name}: {STATE_NAMES[state]} instances disagree with the fleet's count")
            if ep.committed != sum(i.pending_tokens for i in ep.active):
                raise InvariantError(f"{name}: committed KV drifted")
            for inst in ep.active + ep.starting + ep.draining:
                if not 0 <= inst.reserved <= inst.capacity or inst.pending_tokens != inst.reserved + inst.waiting_tokens:
                    raise InvariantError(f"{name}: an instance reserves {inst.reserved} of {inst.capacity} KV tokens")


def _pending_tokens(inst: Instance) -> int:
    return inst.pending_tokens
