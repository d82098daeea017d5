"""The discrete-event simulator: regions of servers, endpoints, routing, scaling, accounting.

A plain library (no gymnasium): build a ``Simulator`` from a ``SimConfig`` and a ``Workload``,
then alternate ``scale(...)`` decisions with ``run_until(t)``. Requests stream from the
workload in arrival order; the event list only holds instance iterations and start-ups, so
the number of events grows with requests, not with generated tokens.
"""

from __future__ import annotations

import math
from bisect import insort
from dataclasses import dataclass
from itertools import count
from operator import attrgetter
from typing import Dict, List, Sequence, Tuple

import numpy as np

from sageserve_env.config import SimConfig
from sageserve_env.sim.endpoint import Endpoint
from sageserve_env.sim.instance import ACTIVE, DRAINING, FREE, SPOT, STARTING, STATE_NAMES, Instance
from sageserve_env.sim.perf_model import PerfModel, build_perf_model
from sageserve_env.workload.workload import IW, NIW, Workload, WorkloadError

DROP_REASONS = ("", "too_large", "iw_timeout")
FREE_MODEL = -1  # model index of a server that holds no model
_pending_tokens = attrgetter("pending_tokens")


class InvariantError(AssertionError):
    """The simulator's bookkeeping disagrees with itself (a bug, never a user error)."""


@dataclass(frozen=True)
class ScaleResult:
    """What a scaling request did: ``applied`` of ``requested`` instances, and why not the rest."""

    region: str
    model: str
    requested: int
    applied: int
    kinds: Tuple[str, ...]  # one per applied change: undrain, reclaim, load_free, load_other, drain
    refused_reason: str = ""

    @property
    def refused(self) -> int:
        return abs(self.requested) - abs(self.applied)


class Simulator:
    """LLM serving across regions, advanced by ``run_until`` and steered by ``scale``."""

    keeps_records = True  # per-request records (``records()``) exist

    def __init__(self, config: SimConfig, workload: Workload) -> None:
        self.config = config
        self.workload = workload
        self.region_names = config.region_names
        self.model_names = config.model_names
        self.now = 0.0
        self.changes = 0  # calls of run_until and scale: views taken at the same count are current
        # (time, sequence number, instance, its version) sorted: the next event is first. A sorted
        # list rather than a heap: it holds about one entry per busy instance, so an insertion
        # (bisect, then a short memmove) plus a pop from the front cost fewer tuple comparisons
        # than a heap push and pop.
        self._events: list = []
        self._seq = count()
        self._load_requests(workload)
        self._copy_knobs(config)
        self._build_fleet(config)

    # -- construction -------------------------------------------------------------------
    def _load_requests(self, w: Workload) -> None:
        def remap(names: Sequence[str], known: List[str], what: str) -> np.ndarray:
            missing = [n for n in names if n not in known]
            if missing:
                raise WorkloadError(f"{w.source}: {what} {missing} not in the config's {what}s {known}")
            return np.array([known.index(n) for n in names], dtype=np.int64)

        region_map = remap(w.regions, self.region_names, "region")
        model_map = remap(w.models, self.model_names, "model")
        self.n_requests = len(w)
        self.arrival: List[float] = w.arrival_s.tolist()
        self.prompt: List[int] = w.prompt_tokens.astype(np.int64).tolist()
        self.output: List[int] = w.output_tokens.astype(np.int64).tolist()
        self.tier: List[int] = w.tier.astype(np.int64).tolist()
        self.sla: List[float] = w.sla_s.tolist()
        self.req_model: List[int] = model_map[w.model].tolist()
        self.req_region: List[int] = region_map[w.region].tolist()
        orders = [tuple(int(region_map[r]) for r in o) for o in w.priority_orders]
        self.req_order: List[Tuple[int, ...]] = [orders[p] for p in w.priority.tolist()]
        delay = self.config.routing.delay_s
        self._stream: List[float] = (w.arrival_s + delay).tolist() if delay else self.arrival
        self._next_arrival = 0
        n = self.n_requests
        self.first_token_s: List[float] = [math.nan] * n
        self.completion_s: List[float] = [math.nan] * n
        self.served_region: List[int] = [-1] * n
        self.drop_reason: List[int] = [0] * n
        self.n_first_tokens = self.n_completed = self.n_dropped = 0

    def _copy_knobs(self, cfg: SimConfig) -> None:
        """Hot-path settings as plain attributes (the event loop never reads the config)."""
        self.max_batch_size = cfg.batching.max_batch_size
        self.max_batch_tokens = cfg.batching.max_batch_tokens
        self.drop_iw_after_s = cfg.slo.drop_iw_after_s
        self.iw_e2e_s = cfg.slo.iw_e2e_s
        self.feed_async = cfg.niw.feed_async
        self.niw_granularity = cfg.niw.granularity
        self.niw_low_util = cfg.niw.low_util
        self.niw_high_util = cfg.niw.high_util
        self.util_threshold = cfg.routing.util_threshold
        self.no_reroute = cfg.routing.no_reroute
        self.scaling_level = cfg.scaling.level
        self.reclaim_s = cfg.scaling.reclaim_s
        self.spin_up_s = cfg.scaling.spin_up_s
        self.min_instances = cfg.scaling.min_instances

    def _build_fleet(self, cfg: SimConfig) -> None:
        n_r, n_m = len(self.region_names), len(self.model_names)
        self.perf: List[List[PerfModel]] = []
        self.endpoints: List[List[Endpoint]] = []
        self.gpus_per_server = np.array([cfg.hardware[r.hardware].gpus_per_server for r in cfg.regions], float)
        self.cost_per_gpu_hour = np.array([cfg.hardware[r.hardware].cost_per_gpu_hour for r in cfg.regions], float)
        self.servers: List[List[Instance]] = []
        self.spot: List[List[List[Instance]]] = []  # [region][model]: spot servers holding it
        self.free: List[List[Instance]] = []
        # servers per (region, model, state) (model column n_m = no model) and their time
        # integrals, as flat Python lists in the row-major order of ``state_counts()``: a state
        # change then updates two list items instead of indexing numpy scalars (see ``_cell``)
        self._shape = (n_r, n_m + 1, len(STATE_NAMES))
        self._counts: List[int] = [0] * (n_r * (n_m + 1) * len(STATE_NAMES))
        self._state_seconds: List[float] = [0.0] * len(self._counts)
        self._gpus_per_cell = np.repeat(self.gpus_per_server, len(self._counts) // n_r)
        self._counted_until = 0.0
        self.timeline: List[Tuple[float, int, int, int, int, int, int]] = []
        self.scale_log: List[Tuple[float, int, int, str]] = []
        self.n_scale_downs = 0  # drains among the scale_log entries
        index = 0
        for r, region in enumerate(cfg.regions):
            hw = cfg.hardware[region.hardware]
            perfs, eps = [], []
            for m, name in enumerate(self.model_names):
                model = cfg.models[name]
                kv_bytes = model.kv_bytes_per_token(cfg.perf.kv_bytes_rule)
                perfs.append(build_perf_model(model, hw, cfg.perf, kv_bytes))
                capacity = int((model.tp * hw.gpu_memory_gb * 1e9 - model.weight_bytes) // kv_bytes)
                eps.append(Endpoint(self, r * n_m + m, r, m, capacity))
            self.perf.append(perfs)
            self.endpoints.append(eps)
            fleet: List[Instance] = []
            for m, ep in enumerate(eps):
                for _ in range(cfg.initial_instances(region.name, self.model_names[m])):
                    inst = Instance(self, index, r, m, ACTIVE)
                    inst.load(ep, perfs[m], ep.capacity)
                    ep.active.append(inst)
                    fleet.append(inst)
                    index += 1
            free = []
            while len(fleet) < region.servers:
                inst = Instance(self, index, r, FREE_MODEL, FREE)
                fleet.append(inst)
                free.append(inst)
                index += 1
            for inst in fleet:
                self._counts[self._cell(r, inst.model, inst.state)] += 1
            self.servers.append(fleet)
            self.spot.append([[] for _ in range(n_m)])
            self.free.append(free)
        self.all_endpoints: List[Endpoint] = [ep for eps in self.endpoints for ep in eps]
        for ep in self.all_endpoints:
            self._log_endpoint(ep.region, ep.model)

    # -- the event loop -----------------------------------------------------------------
    def schedule(self, t: float, inst: Instance) -> None:
        """Call ``inst.on_event`` at ``t`` unless ``inst.version`` changes before then."""
        insort(self._events, (t, next(self._seq), inst, inst.version))

    def run_until(self, t_end: float) -> None:
        """Process every arrival and event up to and including ``t_end``; then ``now = t_end``."""
        if t_end < self.now:
            raise ValueError(f"run_until({t_end}) is before the current time {self.now}")
        self.changes += 1
        events, stream = self._events, self._stream
        n = self.n_requests
        i = self._next_arrival
        arrive = self._arrive
        while i < n and stream[i] <= t_end:
            ta = stream[i]
            while events and events[0][0] < ta:  # events before the arrival (it goes first at a tie)
                t, _, inst, version = events.pop(0)
                if version == inst.version:
                    self.now = t
                    inst.on_event(t)
            self.now = ta
            i += 1
            self._next_arrival = i
            arrive(i - 1, ta)
        while events and events[0][0] <= t_end:
            t, _, inst, version = events.pop(0)
            if version == inst.version:
                self.now = t
                inst.on_event(t)
        self.now = t_end

    def _arrive(self, rid: int, now: float) -> None:
        eps = self.endpoints
        m = self.req_model[rid]
        if self.tier[rid] == NIW:
            ep = eps[self.req_region[rid]][m]
            ep.arrived += 1
            if self.feed_async:
                ep.enqueue_niw(rid, now)
            else:
                ep.route(rid, now)
            return
        if self.no_reroute:
            ep = eps[self.req_region[rid]][m]
        else:
            ep = None
            best = math.inf
            threshold = self.util_threshold
            for r in self.req_order[rid]:
                cand = eps[r][m]
                n = len(cand.active)
                util = cand.committed / (n * cand.capacity) if n else 1.0  # cand.utilization()
                if util < threshold:
                    ep = cand
                    break
                if util < best:
                    best = util
                    ep = cand
            if ep is None:
                ep = eps[self.req_order[rid][0]][m]
        ep.arrived += 1
        ep.arrived_prompt_tokens += self.prompt[rid]
        ep.route(rid, now)

    # -- callbacks from instances ---------------------------------------------------------
    # A request's first token is accounted in ``Instance.on_event``; its completion here, and
    # inline (the same statements) in ``Instance._boundary``, the hot path.
    def complete(self, rid: int, now: float, inst: Instance) -> None:
        self.completion_s[rid] = now
        self.n_completed += 1
        ep = inst.endpoint
        ep.completed += 1
        if self.tier[rid] == NIW:
            ep.niw_completed += 1
            if now - self.arrival[rid] > self.sla[rid]:
                ep.niw_deadline_misses += 1
        elif self.iw_e2e_s is not None and now - self.arrival[rid] > self.iw_e2e_s:
            ep.iw_e2e_misses += 1

    def drop(self, rid: int, reason: str, endpoint: Endpoint) -> None:
        """Give up on a request; counted by the endpoint it was routed to (like its arrival)."""
        self.drop_reason[rid] = DROP_REASONS.index(reason)
        self.n_dropped += 1
        endpoint.dropped += 1

    # -- scaling --------------------------------------------------------------------------
    def scale(self, region: int | str, model: int | str, delta: int) -> ScaleResult:
        """Ask endpoint (region, model) for ``delta`` more (or, if negative, fewer) instances.

        Up: a draining instance is kept instead (immediate); else a spot server still holding
        the model is reclaimed (``reclaim_s``); else a free server is loaded, or at scaling
        level 2 a spot server holding another model (``spin_up_s``). Down: the active instance
        with the fewest pending tokens drains (finishes its requests, then goes to spot), never
        below ``min_instances`` active + starting. Requests are never lost.
        """
        self.changes += 1
        r = region if isinstance(region, int) else self._index(self.region_names, region, "region")
        m = model if isinstance(model, int) else self._index(self.model_names, model, "model")
        if not (0 <= r < len(self.region_names)) or not (0 <= m < len(self.model_names)):
            raise ValueError(f"no endpoint ({region!r}, {model!r})")
        delta = int(delta)
        kinds: List[str] = []
        reason = ""
        if delta and self.scaling_level == 0:
            reason = "scaling.level is 0: scaling disabled"
        for _ in range(abs(delta) if not reason else 0):
            kind = self._scale_up(r, m) if delta > 0 else self._scale_down(r, m)
            if kind.startswith("refused:"):
                reason = kind[len("refused:"):]
                break
            kinds.append(kind)
        applied = len(kinds) if delta > 0 else -len(kinds)
        return ScaleResult(self.region_names[r], self.model_names[m], delta, applied, tuple(kinds), reason)

    @staticmethod
    def _index(names: List[str], name: str, what: str) -> int:
        if name not in names:
            raise ValueError(f"unknown {what} {name!r}; known: {names}")
        return names.index(name)

    def _scale_up(self, r: int, m: int) -> str:
        ep = self.endpoints[r][m]
        now = self.now
        if ep.draining:
            inst = ep.draining.pop()
            self._set_state(inst, ACTIVE, m)
            ep.active.append(inst)
            ep.committed += inst.pending_tokens
            ep.on_activated(now)
            return self._logged(r, m, "undrain")
        if self.spot[r][m]:
            inst, delay, kind = self.spot[r][m].pop(), self.reclaim_s, "reclaim"
        elif self.free[r]:
            inst, delay, kind = self.free[r].pop(), self.spin_up_s, "load_free"
        elif self.scaling_level >= 2 and any(self.spot[r]):
            donor = max(range(len(self.model_names)), key=lambda j: len(self.spot[r][j]))
            inst, delay, kind = self.spot[r][donor].pop(), self.spin_up_s, "load_other"
            self._log_endpoint(r, donor)
        else:
            level = "" if self.scaling_level >= 2 else " (scaling.level 1 cannot take other models' spot servers)"
            return f"refused:no spot or free server in {self.region_names[r]}{level}"
        self._set_state(inst, STARTING, m)
        inst.load(ep, self.perf[r][m], ep.capacity)
        inst.ready_at = now + delay
        inst.run_iters = -1  # its next event is not the end of an iteration (see Instance.on_event)
        inst.version += 1
        ep.starting.append(inst)
        self.schedule(inst.ready_at, inst)
        return self._logged(r, m, kind)

    def _scale_down(self, r: int, m: int) -> str:
        ep = self.endpoints[r][m]
        if len(ep.active) + len(ep.starting) - 1 < self.min_instances:
            return f"refused:endpoint keeps at least scaling.min_instances={self.min_instances}"
        if not ep.active:
            return "refused:no active instance to drain (the others are still starting)"
        inst = min(ep.active, key=_pending_tokens)
        ep.active.remove(inst)
        ep.committed -= inst.pending_tokens
        ep.draining.append(inst)
        self._set_state(inst, DRAINING, m)
        if not inst.n_requests:
            self.drained(inst, self.now)
        else:
            self._log_endpoint(r, m)
        return self._logged(r, m, "drain")

    def activate(self, inst: Instance, now: float) -> None:
        """A starting instance finished loading."""
        ep = inst.endpoint
        ep.starting.remove(inst)
        ep.active.append(inst)
        self._set_state(inst, ACTIVE, inst.model)
        self._log_endpoint(inst.region, inst.model)
        ep.on_activated(now)

    def drained(self, inst: Instance, now: float) -> None:
        """A draining instance finished its last request: donate its server to the spot pool."""
        ep = inst.endpoint
        ep.draining.remove(inst)
        self._set_state(inst, SPOT, inst.model)
        self.spot[inst.region][inst.model].append(inst)
        self._log_endpoint(inst.region, inst.model)

    def _cell(self, r: int, model: int, state: int) -> int:
        """Index of (region, model or -1 for none, state) in ``_counts`` and ``_state_seconds``."""
        cols = self._shape[1]
        return (r * cols + model % cols) * len(STATE_NAMES) + state

    def _set_state(self, inst: Instance, state: int, model: int) -> None:
        self._flush_state_time()
        counts = self._counts
        counts[self._cell(inst.region, inst.model, inst.state)] -= 1
        inst.state, inst.model = state, model
        counts[self._cell(inst.region, model, state)] += 1

    def _logged(self, r: int, m: int, kind: str) -> str:
        self.scale_log.append((self.now, r, m, kind))
        self.n_scale_downs += kind == "drain"
        self._log_endpoint(r, m)
        return kind

    def _log_endpoint(self, r: int, m: int) -> None:
        ep = self.endpoints[r][m]
        self.timeline.append((self.now, r, m, len(ep.active), len(ep.starting), len(ep.draining),
                              len(self.spot[r][m])))

    def _flush_state_time(self) -> None:
        """Add ``counts x (now - counted_until)`` to the integrals: per cell the same IEEE
        operations as numpy's ``seconds += counts * dt`` (empty cells, which would add 0.0, are
        left as they are)."""
        now = self.now
        if now > self._counted_until:
            dt = now - self._counted_until
            self._state_seconds = [s + n * dt if n else s for s, n in zip(self._state_seconds, self._counts)]
            self._counted_until = now

    # -- read-only views ----------------------------------------------------------------
    def state_counts(self) -> np.ndarray:
        """Servers per (region, model or none, state); model column -1 is 'no model'."""
        return np.array(self._counts, dtype=np.int64).reshape(self._shape)

    def gpu_seconds_by_state(self) -> np.ndarray:
        """GPU-seconds so far per (region, model or none, state)."""
        self._flush_state_time()
        return (np.array(self._state_seconds) * self._gpus_per_cell).reshape(self._shape)

    def in_flight(self) -> int:
        """Requests admitted to a batch and not completed."""
        return sum(len(i.prefill) + len(i.decoders) for fleet in self.servers for i in fleet)

    def queued(self) -> int:
        """Requests arrived and waiting: at instances, in backlogs and in NIW queues."""
        return sum(ep.queued_requests for ep in self.all_endpoints)

    @property
    def arrived(self) -> int:
        return self._next_arrival

    def check_invariants(self) -> None:
        """Raise InvariantError if any request or server is unaccounted for."""
        arrived, done, dropped = self.arrived, self.n_completed, self.n_dropped
        flight, queued = self.in_flight(), self.queued()
        if arrived != done + flight + queued + dropped:
            raise InvariantError(f"arrived {arrived} != completed {done} + in flight {flight} + "
                                 f"queued {queued} + dropped {dropped}")
        own = self.state_counts()
        for r, fleet in enumerate(self.servers):
            if len({i.index for i in fleet}) != len(fleet) or len(fleet) != self.config.regions[r].servers:
                raise InvariantError(f"region {r}: fleet has {len(fleet)} servers")
            counts = np.zeros_like(own[r])
            for inst in fleet:
                counts[inst.model, inst.state] += 1
            if not np.array_equal(counts, own[r]):
                raise InvariantError(f"region {r}: state counts drifted")
            for m, ep in enumerate(self.endpoints[r]):
                for state, group in ((ACTIVE, ep.active), (STARTING, ep.starting), (DRAINING, ep.draining),
                                     (SPOT, self.spot[r][m])):
                    if any(i.state != state or i.model != m for i in group) or counts[m, state] != len(group):
                        raise InvariantError(f"{self.region_names[r]}/{self.model_names[m]}: "
                                             f"{STATE_NAMES[state]} list disagrees with server states")
                if ep.committed != sum(i.pending_tokens for i in ep.active):
                    raise InvariantError(f"{self.region_names[r]}/{self.model_names[m]}: committed KV drifted")
            if len(self.free[r]) != counts[FREE_MODEL, FREE] or counts[:, FREE].sum() != counts[FREE_MODEL, FREE]:
                raise InvariantError(f"region {r}: free servers disagree")
            for inst in fleet:
                if not 0 <= inst.reserved <= inst.capacity or inst.pending_tokens != inst.reserved + inst.waiting_tokens:
                    raise InvariantError(f"server {inst.index}: KV reserved {inst.reserved} of {inst.capacity}")
        gpu_s = self.gpu_seconds_by_state().sum()
        fleet_gpu_s = float((self.gpus_per_server * [len(f) for f in self.servers]).sum() * self.now)
        if not math.isclose(gpu_s, fleet_gpu_s, rel_tol=1e-9, abs_tol=1e-6):
            raise InvariantError(f"GPU-seconds by state {gpu_s} != fleet x duration {fleet_gpu_s}")

    def overdue(self) -> Tuple[int, int]:
        """IW requests with no first token past their SLO, NIW requests unfinished past their
        deadline (neither dropped), as of now."""
        n = self.arrived
        w = self.workload
        late = w.arrival_s[:n] + w.sla_s[:n] < self.now
        alive = np.asarray(self.drop_reason[:n]) == 0
        iw = late & alive & (w.tier[:n] == IW) & np.isnan(np.asarray(self.first_token_s[:n]))
        niw = late & alive & (w.tier[:n] == NIW) & np.isnan(np.asarray(self.completion_s[:n]))
        return int(iw.sum()), int(niw.sum())

    def records(self) -> Dict[str, np.ndarray]:
        """Per-request columns (NaN where a time is not reached yet)."""
        w = self.workload
        return {
            "arrival_s": w.arrival_s,
            "region": np.asarray(self.req_region, dtype=np.int16),
            "model": np.asarray(self.req_model, dtype=np.int16),
            "tier": w.tier,
            "prompt_tokens": w.prompt_tokens,
            "output_tokens": w.output_tokens,
            "sla_s": w.sla_s,
            "batch_id": w.batch_id,
            "served_region": np.asarray(self.served_region, dtype=np.int16),
            "first_token_s": np.asarray(self.first_token_s),
            "completion_s": np.asarray(self.completion_s),
            "drop_reason": np.asarray(self.drop_reason, dtype=np.int8),
        }
