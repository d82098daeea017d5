"""The fast fidelity: the same fleet and scaling as ``Simulator``, traffic as token flows per tick.

``FlowSimulator`` keeps the parent's servers, spot pools, ``scale`` (with its start-up events and
refusals), state accounting, timeline and scaling log, and replaces per-request events by request
counts and KV-token masses that move once per tick of ``tick_s`` seconds between the pools of
every endpoint (numpy arrays over endpoints, per tier IW / NIW):

    arrivals -> F: NIW feed queue -> W: waiting for a batch slot -> P: admitted, prefilling
             -> D: decoding -> completed;   a draining instance leaves with its share of D.

One tick, with A active instances of ``cap`` KV tokens each (equations in ``docs/fidelity.md``):

1. Arrivals are binned per tick once, at construction. IW counts are kept per (priority order,
   model) and routed with SageServe's rule on the utilization at the tick start: the first
   region of the order below ``routing.util_threshold``, else the least utilized one.
2. NIW moves F -> W by ``feed_async`` at tick granularity: ``granularity`` requests (twice as
   many between ``low_util`` and ``high_util``) per opportunity, an opportunity being a
   completion in the last tick or an NIW arrival, and never past ``high_util``.
3. W -> P, IW first, while the batch has room: ``max_batch_size`` requests and ``cap`` KV tokens
   (prompt + output, reserved at admission) per instance.
4. Iteration time t = decode(b, kv) + prefill of x prompt tokens, b and kv the decoding batch
   per instance, x = min(max_batch_tokens, c t) with c the prompt tokens per second waiting in P.
   P -> D at x tokens per iteration; the first token of a request is its exit from P.
5. D is a linear flow: requests leave at rate D / (E[o] t) and KV tokens at rate
   D_tok / (t E[o (p + o)] / E[p + o]) (long requests stay longer), integrated exactly over the
   tick. Counts stay integral: the fractional part of every outflow is carried to the next tick.
6. Latency: every endpoint is a fluid FIFO. The request getting its first token now arrived
   when the cumulative IW arrivals reached the cumulative first tokens; its wait h is the
   difference (0 when nothing is queued), uniform over a tick between its values at the start
   and the end. Below saturation a stochastic wait stands for what a fluid cannot see (the
   order of arrivals within a tick, the spread of sizes): none, or exponential, from queueing
   approximations of the prefill and the batch slots (``_queueing``). TTFT = routing delay +
   h + stochastic wait + half an iteration + the prefill of its own prompt (chunks of
   ``max_batch_tokens``, each an iteration at the current batch), the prompt drawn from the
   model's prompt-size quantiles. IW SLO misses are the expected number of first tokens with
   TTFT > SLO (fractional). NIW deadline misses: NIW completions (FIFO) past the workload's
   mean NIW deadline.

Request counts are integers and conserved exactly; misses are expected values. The fleet is
the detailed simulator's ``Fleet`` (the same rules, delays and refusals); an instance here is a
position in its endpoint's list, its share of the endpoint's work spread evenly over as many of
the active instances as the endpoint holds requests, as join-shortest-queue would (``_spread``).
The statistics array (``statistics()``) is written from the flows and that spread, so
``SimView``, the env and the utilization-driven policies read the same quantities as in the
detailed fidelity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from sageserve_env.config import SimConfig
from sageserve_env.sim.base import SimulatorBase
from sageserve_env.sim.faults import failover_region
from sageserve_env.sim.fleet import ACTIVE, DRAINING, SPOT, STARTING, ScaleResult
from sageserve_env.sim.metrics import PERCENTILES
from sageserve_env.sim.simulator import InvariantError
from sageserve_env.sim.stats import Stat
from sageserve_env.workload.workload import IW, NIW, Workload

SIZE_SAMPLE = 100_000  # requests per model the size constants are taken from (evenly spaced)
# Quantile bins of token sizes, dense in the tail so that p95 and p99 latencies are resolved.
SIZE_EDGES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.925, 0.95, 0.965, 0.975,
              0.985, 0.99, 0.995, 0.998, 1.0)
BOUNDARY_WAIT = 0.5  # iterations an arriving request waits for the next boundary of a busy instance
LOAD_SMOOTHING_S = 60.0  # time constant of the prefill load behind the stochastic wait
RHO_MAX = 0.98  # load beyond which the stochastic wait stops growing (the fluid queue takes over)
HIST_EDGES_S = np.logspace(-3, 6, 901)  # latency histogram bins (1 ms .. 11.6 days), 1% wide
WAIT_LEVELS = (0.3, 0.75, 0.94, 0.99)  # quantiles standing for the exponential stochastic wait
W, P, D = range(3)  # request pools: waiting for a slot, prefilling, decoding
HOME_COLS = 6  # per endpoint and tick: NIW requests, NIW tokens, dropped IW, NIW, tokens, IW prompt
# statistics columns of the running totals, from ``_totals()`` (counts) and rows of ``_expected``
COUNTED = {Stat.ARRIVED: "arrived", Stat.ARRIVED_PROMPT_TOKENS: "arrived_prompt_tokens", Stat.COMPLETED: "completed",
           Stat.IW_FIRST_TOKENS: "iw_first_tokens", Stat.NIW_COMPLETED: "niw_completed", Stat.DROPPED: "dropped",
           Stat.RETRIED: "retried"}
EXPECTED = (Stat.IW_SLO_MISSES, Stat.IW_E2E_MISSES, Stat.NIW_DEADLINE_MISSES, Stat.IW_TTFT_SUM)


@dataclass(frozen=True)
class _Sizes:
    """Token-size constants per endpoint, from the workload's requests of the endpoint's model."""

    prompt: np.ndarray  # (E,) E[p]
    need: np.ndarray  # (E,) E[p + o]: KV tokens a request reserves
    output: np.ndarray  # (E,) E[o]: decode iterations a request stays
    prompt_var: np.ndarray  # (E,) (1 + SCV of p) / 2: the variability factor of prefill service
    output_var: np.ndarray  # (E,) (1 + SCV of o) / 2: the same for the time in the batch
    token_iters: np.ndarray  # (E,) E[o (p + o)] / E[p + o]: iterations a reserved KV token stays
    context: np.ndarray  # (E,) E[o (p + o / 2)] / E[o (p + o)]: KV read by decoding / KV reserved
    prompt_share: np.ndarray  # (E,) E[p] / E[p + o]
    weights: np.ndarray  # (K,) probability of each quantile bin of SIZE_EDGES
    prefill: np.ndarray  # (E, K) prefill seconds of a prompt at each bin's middle quantile
    chunks: np.ndarray  # (E, K) its chunks of max_batch_tokens (= iterations)
    output_q: np.ndarray  # (E, K) output tokens at each bin's middle quantile


class _StartUp:
    """A starting instance of endpoint (r, m) in the event queue: activated when it fires."""

    __slots__ = ("sim", "r", "m", "version")

    def __init__(self, sim: "FlowSimulator", r: int, m: int) -> None:
        self.sim, self.r, self.m, self.version = sim, r, m, 0

    def on_event(self, now: float) -> None:
        self.sim.started(self, now)


class _Drain:
    """A draining instance: the decoding requests and KV tokens it took along, per tier, and
    the fractional outflow carried between ticks; rows (requests, tokens, carry)."""

    __slots__ = ("endpoint", "held")

    def __init__(self, endpoint: int, held: np.ndarray) -> None:
        self.endpoint, self.held = endpoint, held


class FlowSimulator(SimulatorBase):
    """The fast fidelity: token flows per tick on the detailed simulator's ``Fleet`` (see the
    module docstring); the same interface as ``Simulator`` but per-request records."""

    fidelity = "fast"

    def __init__(self, config: SimConfig, workload: Workload, tick_s: float = 5.0) -> None:
        if not (math.isfinite(tick_s) and tick_s > 0):
            raise ValueError(f"tick_s must be a positive number of seconds, got {tick_s!r}")
        self.tick_s = float(tick_s)
        super().__init__(config, workload)  # its event queue holds the start-ups
        self._load_requests(workload)
        self._build_constants()
        self._build_table()
        self._build_state()

    # -- construction -------------------------------------------------------------------
    def _load_requests(self, w: Workload) -> None:
        """Numpy columns only: the flows never look at a single request."""
        idx = w.indexed(self.region_names, self.model_names)
        self.n_requests = len(w)
        self.req_region, self.req_model, self._orders = idx
        self._stream = w.arrival_s + self.config.routing.delay_s
        self._next_arrival = 0

    def _build_constants(self) -> None:
        """Per-endpoint arrays of what does not change: KV capacity, perf coefficients, sizes."""
        w = self.workload
        n_m = len(self.model_names)
        self._E = len(self.kv_capacity)
        self._cap = self.kv_capacity.astype(float)
        perf = [self.perf[e // n_m][e % n_m] for e in range(self._E)]
        coef = lambda k: np.array([getattr(p, k) for p in perf], dtype=float)  # noqa: E731
        self._db, self._ds, self._dk = coef("decode_base_s"), coef("decode_per_seq_s"), coef("decode_per_kv_token_s")
        self._pb, self._pt = coef("prefill_base_s"), coef("prefill_per_token_s")
        self._pq = coef("prefill_per_token_sq_s")
        self._mixed = self.config.perf.mixed_prefill_factor or 1.0
        self._sizes = self._size_constants(np.arange(self._E) % n_m)
        niw = w.tier == NIW
        self._niw_sla = float(w.sla_s[niw].mean()) if niw.any() else self.config.niw.deadline_s
        self._iw_sla = float(w.sla_s[~niw].mean()) if (~niw).any() else self.config.slo.iw_ttft_s
        self._delay = self.config.routing.delay_s

    def _size_constants(self, ep_model: np.ndarray) -> _Sizes:
        """``_Sizes`` from (an evenly spaced sample of) each model's requests."""
        w = self.workload
        edges = np.array(SIZE_EDGES)
        mids = (edges[1:] + edges[:-1]) / 2
        prompt, output = w.prompt_tokens.astype(float), w.output_tokens.astype(float)
        iw = w.tier == IW
        if not len(w):  # an empty workload: any sizes will do
            prompt, output, iw = np.ones(1), np.ones(1), np.ones(1, dtype=bool)
        rows = []
        for m in range(len(self.model_names)):
            sel = self.req_model == m if len(w) else iw
            sel = sel if sel.any() else np.ones_like(sel)  # a model nobody asks for: all requests' sizes
            q = sel & iw if (sel & iw).any() else sel  # latency quantiles: of IW requests
            sel, q = (np.flatnonzero(x)[:: max(1, int(x.sum()) // SIZE_SAMPLE)] for x in (sel, q))
            p, o, p_q, o_q = prompt[sel], output[sel], prompt[q], output[q]
            need = p + o
            rows.append({
                "prompt": p.mean(), "need": need.mean(), "output": o.mean(),
                "prompt_var": (1 + p.var() / p.mean() ** 2) / 2, "output_var": (1 + o.var() / o.mean() ** 2) / 2,
                "token_iters": (o * need).mean() / need.mean(), "context": (o * (p + o / 2)).mean() / (o * need).mean(),
                "prompt_share": p.mean() / need.mean(), "prompt_q": np.quantile(p_q, mids),
                "output_q": np.quantile(o_q, mids),
            })
        col = {k: np.array([row[k] for row in rows])[ep_model] for k in rows[0]}
        prompt_q = col.pop("prompt_q")
        mbt = self.max_batch_tokens
        full, rest = np.floor(prompt_q / mbt), np.mod(prompt_q, mbt)
        pt, pq = self._pt[:, None], self._pq[:, None]
        chunks = full + (rest > 0)
        prefill = chunks * self._pb[:, None] + self._mixed * (full * (pt + pq * mbt) * mbt + (pt + pq * rest) * rest)
        return _Sizes(weights=np.diff(edges), prefill=prefill, chunks=chunks, **col)

    def _build_table(self) -> None:
        """Arrivals per tick bin (k dt, (k + 1) dt] (the first also holds t = 0), for the workload."""
        if self.no_reroute:  # the routing key is the home region, its only candidate
            self._key, self._key_regions = self.req_region, np.arange(len(self.region_names))[:, None]
        else:
            width = max(len(o) for o in self._orders)
            self._key = self.workload.priority.astype(np.int64)
            self._key_regions = np.array([o + (o[-1],) * (width - len(o)) for o in self._orders], dtype=np.int64)
        n_m = len(self.model_names)
        n_keys = len(self._key_regions)
        self._n_iw = n_keys * n_m * 3
        first = self._key_regions[:, :1] * n_m + np.arange(n_m)
        self._home_dest = (first[..., None] * 3 + np.arange(3)).ravel()  # routing when every region is below
        end = max(float(self._stream[-1]) if self.n_requests else 0.0, self.config.duration_s)
        self._n_bins = int(math.ceil(end / self.tick_s)) + 1
        edges = np.arange(self._n_bins + 1) * self.tick_s
        bins = np.maximum(np.searchsorted(edges, self._stream, side="left") - 1, 0)
        self._table = self._aggregate(0, self.n_requests, bins, self._n_bins)
        self._bin_end = np.searchsorted(self._stream, edges[1:], side="right")

    def _aggregate(self, lo: int, hi: int, bins: np.ndarray, n_bins: int) -> np.ndarray:
        """Arrivals of requests [lo, hi) per ``bins``, shape (n_bins, columns): IW (count, prompt,
        need) per (routing key, model), then HOME_COLS per home endpoint. need = prompt + output;
        requests whose need exceeds an instance's KV capacity are dropped, as ``Endpoint.route``
        does."""
        w = self.workload
        n_m, E = len(self.model_names), self._E
        n_keys = len(self._key_regions)
        home = self.req_region[lo:hi] * n_m + self.req_model[lo:hi]
        prompt = w.prompt_tokens[lo:hi].astype(float)
        need = prompt + w.output_tokens[lo:hi]
        iw = w.tier[lo:hi] == IW
        big = need > self._cap[home]
        ok = iw & ~big
        key = (self._key[lo:hi] * n_m + self.req_model[lo:hi])[ok] * 3
        at = bins[ok] * (n_keys * n_m * 3) + key
        iw_cols = sum(np.bincount(at + j, v, n_bins * n_keys * n_m * 3) for j, v in
                      enumerate((None, prompt[ok], need[ok])))
        home_cols = np.zeros(n_bins * E * HOME_COLS)
        for j, (sel, v) in enumerate(((~iw & ~big, None), (~iw & ~big, need), (iw & big, None), (~iw & big, None),
                                      (big, need), (iw & big, prompt))):
            at = (bins[sel] * E + home[sel]) * HOME_COLS + j
            home_cols += np.bincount(at, None if v is None else v[sel], n_bins * E * HOME_COLS)
        return np.concatenate([iw_cols.reshape(n_bins, -1), home_cols.reshape(n_bins, -1)], axis=1)

    def _build_state(self) -> None:
        """The flows' pools, running totals, arrival curves and per-tick log, all empty."""
        E = self._E
        self._Q = np.zeros((3, 2, 2, E))  # pool (W, P, D) x (requests, KV tokens) x tier x endpoint
        self._F = np.zeros((2, E))  # NIW feed queue: requests, tokens
        self._carry = np.zeros((2, 2, E))  # fractional outflow of P and D per tier, carried over
        self._per_instance = np.stack([np.full(E, float(self.max_batch_size)), self._cap])  # requests, KV tokens
        self._iters = np.stack([self._sizes.output, self._sizes.token_iters])[:, None]  # (2, 1, E)
        self._feed_chances = np.zeros(E)
        self._load = np.zeros((2, E))  # smoothed requests admitted per second per instance, per tier
        self._routed = np.zeros((E, 3))  # cumulative routed IW requests, prompt tokens, tokens
        self._home = np.zeros((E, HOME_COLS))  # cumulative HOME_COLS
        self._done = np.zeros((2, 2, E))  # completed (requests, tokens) per tier
        self._expected = np.zeros((4, E))  # IW SLO, IW e2e and NIW deadline misses; IW TTFT sum
        self._build_history()
        self._served = np.zeros((2, E))  # FIFO departures: IW first tokens and drops, NIW completions
        self._wait = np.zeros(E)  # FIFO wait of the last IW departure
        self._stale = np.zeros((2, E))  # IW dropped by drop_iw_after_s: requests, tokens
        # faults (``sim/faults.py``): retried requests per endpoint; IW (requests, tokens) moved in
        # minus out; IW FIFO departures that are no new first token (retried before theirs, or
        # retried after it and prefilled again); retried IW waiting here that had their first token
        self._retried = np.zeros(E)
        self._moved = np.zeros((2, E))
        self._unfirst = np.zeros(E)
        self._again = np.zeros(E)
        self._starting: List[List[_StartUp]] = [[] for _ in range(E)]  # pending start-ups per endpoint
        self._drains: List[_Drain] = []  # every draining instance, in the order they began
        self._draining: List[List[_Drain]] = [[] for _ in range(E)]  # per endpoint, in that order
        # per-endpoint constants of the tick's arithmetic
        sz = self._sizes
        self._endpoint_index = np.arange(E)
        self._dk_context = self._dk * sz.context
        self._pt_mixed, self._pq_mixed = self._mixed * self._pt, self._mixed * self._pq
        self._prefill_mean, self._chunks_mean = sz.prefill @ sz.weights, sz.chunks @ sz.weights
        self._ttft_mean_base = self._delay + self._prefill_mean
        self._ttft_max_base = self._delay + sz.prefill[:, -1]  # the largest prompt quantile
        self._chunks_max = sz.chunks[:, -1]
        # E[s^2] of the prefill service s = prefill + chunks x marg, as coefficients of 1, marg, marg^2
        self._prefill_sq = np.stack([sz.prefill ** 2 @ sz.weights, 2 * (sz.prefill * sz.chunks) @ sz.weights,
                                     sz.chunks ** 2 @ sz.weights])
        self._no_wait = np.zeros(E)
        self._fleet_changed = True  # active counts to recount at the next tick

    def _build_history(self) -> None:
        """The per-tick history: the FIFO curves and the latency log, one row per tick."""
        E = self._E
        # cumulative IW (routed) and NIW arrivals per endpoint at every tick end: the FIFO curves
        self._hist_t = np.zeros(self._n_bins + 1)
        self._hist = np.zeros((self._n_bins + 1, 2, E))
        self._n_hist = 1
        self._ptr = np.zeros(E, dtype=np.int64)
        # per tick: first tokens, FIFO wait, decode marginal, boundary wait, iteration, P(queue), mean queue
        self._log = np.zeros((self._n_bins + 1, 7, E))
        self._n_log = 0

    # -- the tick loop ------------------------------------------------------------------
    def run_until(self, t_end: float) -> None:
        """Advance tick by tick to ``t_end`` (a partial tick where ``t_end`` is off the grid)."""
        self._advance(t_end)
        dt = self.tick_s
        while self.now < t_end:
            k = int(self.now // dt)
            if (k + 1) * dt <= self.now:
                k += 1
            t0, t1 = self.now, min((k + 1) * dt, t_end)
            if t0 == k * dt and t1 == (k + 1) * dt and k < self._n_bins:
                row, hi = self._table[k], int(self._bin_end[k])
            else:
                lo = self._next_arrival
                hi = int(np.searchsorted(self._stream, t1, side="right"))
                row = self._aggregate(lo, hi, np.zeros(hi - lo, dtype=np.int64), 1)[0]
            self.events.run_through(t1)  # start-ups, each at its own time; they serve from the tick's start
            self.now = t1
            self._next_arrival = hi
            self._tick(t1 - t0, row)
        self.now = t_end

    def _tick(self, dt: float, row: np.ndarray) -> None:
        """One tick of ``dt`` seconds ending at ``now``, ``row`` its arrivals (see the module
        docstring for the steps)."""
        committed, util = self._utilization()
        routed, niw_arrivals = self._arrive(row, util)
        if self.feed_async and self._F[0].max() > 0:
            self._feed(util, committed + routed[:, 2], niw_arrivals)
        if self.drop_iw_after_s is not None:
            self._drop_stale()
        room, admitted = self._admit_all()
        fluid_queue = self._Q[W, 0, IW] > 0
        inflow, b, marg, t, saturated = self._prefill(dt)
        queue_p, queue_m = self._queueing(dt, admitted / (self._A1 * dt), marg, t, 1.0 - room * self._inv_limits)
        queue_p = queue_p * ~(fluid_queue | saturated)  # while the fluid queues, its own wait stands
        done = self._decode(dt, inflow, t)
        first = inflow[0, IW]
        if self._again.any():  # retried requests that had their first token: prefilled again, no new one
            again = np.minimum(first, self._again)
            self._again -= again
            self._unfirst += again
            self._served[IW] += again
            first = first - again
        self._latencies(first, done[NIW], b, marg, t, queue_p, queue_m)

    def _utilization(self) -> Tuple[np.ndarray, np.ndarray]:
        """KV tokens committed per endpoint and the memory utilization of its active instances
        (1.0 where none is active)."""
        if self._fleet_changed:
            self._recount()
        committed = self._Q[:, 1].sum(axis=(0, 1))
        return committed, committed * self._inv_kv + self._no_instance

    def _recount(self) -> None:
        """Per-endpoint figures that change only with the active instances."""
        self._fleet_changed = False
        self._A = A = self.fleet.counts[:, :-1, ACTIVE].reshape(-1).astype(float)
        self._has = A > 0
        self._A1 = np.maximum(A, 1.0)
        self._limits = A * self._per_instance  # (requests, KV tokens) the active instances can batch
        self._inv_kv = np.where(self._has, 1.0 / np.maximum(self._limits[1], 1.0), 0.0)
        self._inv_limits = 1.0 / np.maximum(self._limits, 1.0)
        self._no_instance = (~self._has).astype(float)
        # queueing (``_queueing``): the exponent of P(wait) for the instances' prefill, and the
        # batch slots of the endpoint as a server
        slots = np.maximum(A * np.minimum(self.max_batch_size, self._cap / self._sizes.need), 1.0)
        self._prefill_power = np.sqrt(2.0 * (self._A1 + 1.0)) - 1.0
        self._slot_power = np.sqrt(2.0 * (slots + 1.0)) - 1.0
        self._slot_service = self._sizes.output * self._sizes.output_var / slots  # x iteration / (1 - rho)

    def _arrive(self, row: np.ndarray, util: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Step 1: add the tick's arrivals (IW routed on ``util``) to the pools and the arrival
        curves; returns the routed IW (requests, prompt tokens, tokens) and NIW requests per
        endpoint."""
        dest = self._home_dest if util.max() < self.util_threshold else self._route(util)
        routed = np.bincount(dest, row[: self._n_iw], 3 * self._E).reshape(-1, 3)
        home = row[self._n_iw:].reshape(-1, HOME_COLS)
        self._add_arrivals(routed, home)
        k = self._n_hist
        if k == len(self._hist_t):
            self._hist_t = np.concatenate([self._hist_t, np.zeros(k)])
            self._hist = np.concatenate([self._hist, np.zeros_like(self._hist)])
            self._log = np.concatenate([self._log, np.zeros_like(self._log)])
        self._hist_t[k] = self.now
        self._hist[k, IW] = self._hist[k - 1, IW] + routed[:, 0]
        self._hist[k, NIW] = self._hist[k - 1, NIW] + home[:, 0]
        self._n_hist = k + 1
        return routed, home[:, 0]

    def _add_arrivals(self, routed: np.ndarray, home: np.ndarray) -> None:
        """The routed IW (requests, prompt tokens, tokens) into W, the home columns into the totals
        and their NIW requests and tokens into the feed (or into W without ``feed_async``)."""
        Q = self._Q
        Q[W, :, IW] += routed[:, ::2].T
        self._routed += routed
        self._home += home
        if self.feed_async:
            self._F += home[:, :2].T
        else:
            Q[W, :, NIW] += home[:, :2].T

    def _admit_all(self) -> Tuple[np.ndarray, np.ndarray]:
        """Step 3: W -> P, IW first; returns the room left (requests, KV tokens) and the requests
        admitted per tier."""
        Q = self._Q
        room = self._limits - Q[P:].sum(axis=(0, 2))
        admitted = Q[W, 0].copy()
        waiting = Q[W].sum(1)
        if (waiting <= room).all():
            Q[P] += Q[W]
            Q[W] = 0.0
            return room - waiting, admitted
        for tier in (IW, NIW):
            room = self._admit(tier, room)
        return room, admitted - Q[W, 0]

    def _prefill(self, dt: float):
        """Step 4: the iteration time at the decoding batch with the prefill it absorbs, and
        P -> D (first tokens). Returns the inflow to D (requests, tokens) x tier, the batch per
        instance, the decode marginal, the iteration time and where prefill saturates."""
        Q = self._Q
        b, marg, x, t, saturated = self._iteration(dt)
        if not saturated.any():
            inflow = Q[P] * self._has  # an endpoint without an active instance prefills nothing
            Q[P] -= inflow
        else:
            inflow = self._prefill_limited(self._A * x * dt / t, ~saturated)
        return inflow, b, marg, t, saturated

    def _iteration(self, dt: float):
        """The decoding batch per instance, the decode marginal, the prompt tokens an iteration
        absorbs, the iteration time, and where prefill saturates (``max_batch_tokens``)."""
        Q, A1, mbt = self._Q, self._A1, self.max_batch_tokens
        b, kv = Q[D].sum(1) / A1  # requests and KV tokens per instance
        marg = self._ds * b + self._dk_context * kv  # what the decoding batch adds to an iteration
        t_dec = self._db + marg
        rate = Q[P, 1].sum(0) * self._sizes.prompt_share / (A1 * dt)  # prompt tokens per second per instance
        x = np.minimum(mbt, rate * t_dec / np.maximum(1.0 - self._pt_mixed * rate, 1e-9))
        t = t_dec + (self._pt_mixed + self._pq_mixed * x) * x
        return b, marg, x, t, x >= mbt

    def _decode(self, dt: float, inflow: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Step 5: D -> done, integrated exactly over the tick (requests and tokens together),
        draining instances included; returns the completions per tier."""
        Q = self._Q
        tau = self._iters * t  # (2, 1, E); D is empty where no instance is active
        gone = -np.expm1(-dt / tau)  # the share of what was there at the start that leaves
        out = Q[D] * gone + inflow * (1.0 - tau / dt * gone)
        total = Q[D] + inflow
        done = self._integral(out[0], total[0], self._carry[1])
        left = total[0] - done
        done_t = np.where(left == 0, total[1], np.minimum(np.rint(out[1]), total[1] - left))
        Q[D, 0], Q[D, 1] = left, total[1] - done_t
        self._feed_chances = done[IW] + done[NIW]
        if self._drains:
            done, done_t = self._drain_tick(dt, done, done_t)
        self._done[0] += done
        self._done[1] += done_t
        return done

    def _latencies(self, ft: np.ndarray, niw_done: np.ndarray, b: np.ndarray, marg: np.ndarray, t: np.ndarray,
                   queue_p: np.ndarray, queue_m: np.ndarray) -> None:
        """Step 6: FIFO waits, expected IW SLO / e2e misses of the ``ft`` first tokens, NIW
        deadline misses of the ``niw_done`` completions, the TTFT sum and the tick's log row."""
        sz, m, Q = self._sizes, self._expected, self._Q
        w0 = self._wait
        self._served[IW] += ft
        queued = Q[W, 0, IW] + Q[P, 0, IW] > 0
        if queued.any():
            self._wait = np.where(queued, self.now - self._fifo_arrival(), 0.0)
            self._ptr = np.where(queued, self._ptr, self._n_hist - 1)
        else:
            self._wait = self._no_wait
            self._ptr[:] = self._n_hist - 1
        bnd = BOUNDARY_WAIT * t * np.minimum(b, 1.0)
        mean_ttft = bnd + self._ttft_mean_base + self._chunks_mean * marg
        worst = np.maximum(w0, self._wait) + bnd + self._ttft_max_base + self._chunks_max * marg + 15.0 * queue_m
        if (worst > self._iw_sla).any():
            ttft = (self._delay + bnd)[:, None] + sz.prefill + sz.chunks * marg[:, None]
            m[0] += ft * (self._late(w0, self._wait, queue_p, queue_m, self._iw_sla - ttft) @ sz.weights)
        if self.iw_e2e_s is not None:
            e2e = mean_ttft[:, None] + (sz.output_q - 1) * t[:, None]
            m[1] += ft * (self._late(w0, self._wait, queue_p, queue_m, self.iw_e2e_s - e2e) @ sz.weights)
        if self.now > self._niw_sla:  # NIW completed after their deadline (FIFO): those due by now
            due = self._arrivals_at(self.now - self._niw_sla)[NIW]
            m[2] += np.maximum(np.minimum(self._served[NIW] + niw_done, due) - self._served[NIW], 0.0)
        self._served[NIW] += niw_done
        m[3] += ft * (0.5 * (w0 + self._wait) + queue_p * queue_m + mean_ttft)
        log = self._log[self._n_log]
        log[0], log[1], log[2], log[3], log[4], log[5], log[6] = ft, self._wait, marg, bnd, t, queue_p, queue_m
        self._n_log += 1

    def _queueing(self, dt: float, rate: np.ndarray, marg: np.ndarray, t: np.ndarray,
                  occupancy: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Stochastic waits within a tick, which the fluid misses below saturation: (probability
        of waiting, mean wait when waiting) per endpoint, one queueing approximation per
        bottleneck, combined as independent waits.

        Prefill: service = the iterations that prefill a prompt (the prompt quantiles at the
        current decode batch), arrivals = the requests admitted per second per instance
        (``rate``, per tier, averaged over LOAD_SMOOTHING_S: the fluid already follows the swings
        between ticks), rho = their product. Join-shortest-queue finds an idle instance when
        there is one, so P(wait) is that of c = A pooled servers, rho^(sqrt(2 (c + 1)) - 1)
        (Sakasegawa); but a request that waits waits in one instance's queue (the router sees
        pending tokens, not prefill backlogs), so the mean wait when waiting is the M/G/1 one
        with IW ahead of NIW, E[s^2] / (2 E[s]) / (1 - rho_IW). (Pooled M/G/c waits were a third
        of the detailed mode's, M/G/1 ones 1.4 times.) Batch slots: M/G/c with c = instances x requests that
        fit (``max_batch_size`` or KV), service = the time in the batch, rho = the batch's
        occupancy (requests or KV, whichever is fuller): P(wait) = rho^(sqrt(2 (c + 1)) - 1)
        (Sakasegawa), mean = service (1 + SCV) / 2 / (c (1 - rho)) (Allen-Cunneen). Every rho is
        at most RHO_MAX.
        """
        p, wait = self._prefill_queue(dt, rate, marg)
        p_s, wait_s = self._slot_queue(t, occupancy)
        if p_s.max() > 1e-4:  # else the batch has room for every burst
            wait = wait + wait_s
            p = 1.0 - (1.0 - p) * (1.0 - p_s)
        return p, wait / np.maximum(p, 1e-12)

    def _prefill_queue(self, dt: float, rate: np.ndarray, marg: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """The prefill bottleneck of ``_queueing``: P(wait) and P(wait) x the mean wait when
        waiting; updates the smoothed load."""
        load = self._load
        load += (rate - load) * -math.expm1(-dt / LOAD_SMOOTHING_S)
        service = self._prefill_mean + self._chunks_mean * marg  # E[s]
        residual = (self._prefill_sq[0] + marg * (self._prefill_sq[1] + marg * self._prefill_sq[2])) / (2 * service)
        p = np.minimum((load[IW] + load[NIW]) * service, RHO_MAX) ** self._prefill_power
        return p, p * residual / (1.0 - np.minimum(load[IW] * service, RHO_MAX))

    def _slot_queue(self, t: np.ndarray, occupancy: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """The batch-slot bottleneck of ``_queueing``: P(wait) and P(wait) x the mean wait."""
        rho_s = np.minimum(occupancy.max(0), RHO_MAX)
        p_s = rho_s ** self._slot_power
        return p_s, p_s * self._slot_service * t / (1.0 - rho_s)

    def _route(self, util: np.ndarray) -> np.ndarray:
        """Bin index (destination endpoint x 3 + column) of every IW column of the table:
        the first region of the key's order below the threshold, else the least utilized."""
        n_m = len(self.model_names)
        u = util.reshape(-1, n_m)[self._key_regions]  # (keys, candidates, models)
        below = u < self.util_threshold
        pos = np.where(below.any(1), below.argmax(1), u.argmin(1))
        region = self._key_regions[np.arange(len(pos))[:, None], pos]
        return (((region * n_m + np.arange(n_m)) * 3)[..., None] + np.arange(3)).ravel()

    def _feed(self, util: np.ndarray, committed: np.ndarray, niw_arrivals: np.ndarray) -> None:
        """Step 2, ``feed_async`` at tick granularity: g (2g up to ``high_util``) requests per
        opportunity, at most what brings the utilization to ``high_util``."""
        F, wait, kv_limit = self._F, self._Q[W, :, NIW], self._limits[1]
        per = self.niw_granularity * (2.0 * (util <= self.niw_high_util) - (util <= self.niw_low_util))
        mean = F[1] / np.maximum(F[0], 1.0)
        room = np.ceil((self.niw_high_util * kv_limit - committed) / np.maximum(mean, 1.0))
        n = np.maximum(np.minimum(F[0], np.minimum(per * (self._feed_chances + niw_arrivals), room)), 0.0)
        tok = np.where(n == F[0], F[1], np.floor(n * mean))
        F[0] -= n
        F[1] -= tok
        wait[0] += n
        wait[1] += tok

    def _admit(self, tier: int, room: np.ndarray) -> np.ndarray:
        """Move the tier's waiting requests into the batch as far as ``room`` (requests, KV
        tokens) allows; returns the room left."""
        wait = self._Q[W, :, tier]
        mean = wait[1] / np.maximum(wait[0], 1.0)
        n = np.maximum(np.minimum(wait[0], np.minimum(room[0], np.floor(room[1] / np.maximum(mean, 1.0)))), 0.0)
        moved = np.stack([n, np.where(n == wait[0], wait[1], np.floor(n * mean))])
        wait -= moved
        self._Q[P, :, tier] += moved
        return room - moved

    def _prefill_limited(self, budget: np.ndarray, unlimited: np.ndarray) -> np.ndarray:
        """P -> D when prefill saturates: ``budget`` prompt tokens per endpoint, IW first (an
        instance prefills IW prompts ahead of NIW ones)."""
        pre, share = self._Q[P], self._sizes.prompt_share
        inflow = np.zeros_like(pre)
        for tier in (IW, NIW):
            n_req, n_tok = pre[0, tier], pre[1, tier]
            frac = np.where(unlimited, 1.0, np.minimum(1.0, budget / np.maximum(n_tok * share, 1e-9)))
            n = self._integral(n_req * frac, n_req, self._carry[0, tier])
            inflow[:, tier] = n, np.where(n == n_req, n_tok, np.floor(n * n_tok / np.maximum(n_req, 1.0)))
            budget = budget - inflow[1, tier] * share
        pre -= inflow
        return inflow

    @staticmethod
    def _integral(fluid: np.ndarray, total: np.ndarray, carry: np.ndarray) -> np.ndarray:
        """Whole requests (at most ``total``) for a fluid outflow; the fraction is carried (in place)."""
        want = fluid + carry  # fluid >= 0
        n = np.minimum(np.floor(want), total)
        carry[...] = (want - n) * (n < total)
        return n

    @staticmethod
    def _late(w0: np.ndarray, w1: np.ndarray, p: np.ndarray, mean: np.ndarray, slack: np.ndarray) -> np.ndarray:
        """P(wait > slack) per endpoint (rows of ``slack``): the wait is U + X, U uniform between
        ``w0`` and ``w1`` (the fluid FIFO wait over the tick, at least 1 ms wide), X = 0 with
        probability 1 - ``p``, else exponential with mean ``mean`` (stochastic queueing)."""
        lo = np.minimum(w0, w1)[:, None]
        hi = np.maximum(np.maximum(w0, w1)[:, None], lo + 1e-3)
        m = np.maximum(mean, 1e-9)[:, None]
        beyond = np.maximum(hi - np.maximum(lo, slack), 0.0)  # the part of U past the slack
        tail = m * (np.exp((np.minimum(hi, slack) - slack) / m) - np.exp((np.minimum(lo, slack) - slack) / m))
        return (beyond + p[:, None] * tail) / (hi - lo)

    def _drop_stale(self) -> None:
        """``slo.drop_iw_after_s``: IW requests waiting for a batch slot that long are dropped."""
        wait = self._Q[W, :, IW]
        # arrived that long ago and neither served (first token or dropped) nor prefilling
        stale = self._arrivals_at(self.now - self.drop_iw_after_s)[IW] - self._served[IW] - self._Q[P, 0, IW]
        n = np.minimum(np.floor(np.maximum(stale, 0.0)), wait[0])
        tok = np.where(n == wait[0], wait[1], np.floor(n * wait[1] / np.maximum(wait[0], 1.0)))
        wait -= np.stack([n, tok])
        self._served[IW] += n  # they leave the FIFO
        self._stale[0] += n
        self._stale[1] += tok

    def _fifo_arrival(self) -> np.ndarray:
        """Arrival time of the last IW FIFO departure of each endpoint: where the cumulative
        arrivals reached the departures so far (linear within a tick)."""
        hist, ptr, ep = self._hist, self._ptr, self._endpoint_index
        last = self._n_hist - 1
        served = self._served[IW]
        target = np.maximum(served, 1e-6) - 1e-9  # the last departure (the first arrival if none)
        while True:
            step = (ptr < last) & (hist[ptr, IW, ep] < target)
            if not step.any():
                break
            ptr += step
        before = np.maximum(ptr - 1, 0)
        hi, lo = hist[ptr, IW, ep], hist[before, IW, ep]
        frac = np.minimum(np.maximum((served - lo) / np.maximum(hi - lo, 1e-9), 0.0), 1.0)
        return self._hist_t[before] + frac * (self._hist_t[ptr] - self._hist_t[before])

    def _arrivals_at(self, t: float) -> np.ndarray:
        """Cumulative (IW routed, NIW) arrivals per endpoint at time ``t`` (linear within a tick)."""
        times = self._hist_t[: self._n_hist]
        j = int(np.searchsorted(times, t, side="right"))
        if j <= 0:
            return np.zeros_like(self._hist[0])
        if j >= self._n_hist:
            return self._hist[self._n_hist - 1].copy()
        frac = (t - times[j - 1]) / (times[j] - times[j - 1])
        return self._hist[j - 1] + frac * (self._hist[j] - self._hist[j - 1])

    # -- scaling: the fleet's rules, this fidelity's traffic ------------------------------
    def scale(self, region: int | str, model: int | str, delta: int) -> ScaleResult:
        """Ask endpoint (region, model) for ``delta`` more (or fewer) instances (``Fleet.scale``).
        An instance that drains takes its share of the endpoint's decoding requests along."""
        self.changes += 1
        r, m = self.fleet.endpoint(region, model)
        self._shares = self._spread(r * len(self.model_names) + m)  # the instances' work as it stands
        return self.fleet.scale(r, m, delta, self.now, self)

    def undrain(self, r: int, m: int, now: float) -> None:
        """The last draining instance serves again: its requests go back to D."""
        e = r * len(self.model_names) + m
        drain = self._draining[e].pop()
        self._drains.remove(drain)
        self._Q[D, :, :, e] += drain.held[:2]
        self._fleet_changed = True

    def start(self, r: int, m: int, ready_at: float) -> None:
        start_up = _StartUp(self, r, m)
        self._starting[r * len(self.model_names) + m].append(start_up)
        self.events.push(ready_at, start_up)
        self._fleet_changed = True

    def started(self, start_up: _StartUp, now: float) -> None:
        """A start-up fired: its instance is active."""
        self._starting[start_up.r * len(self.model_names) + start_up.m].remove(start_up)
        self.activate(start_up.r, start_up.m, now)

    def fail(self, r: int, m: int, state: int, k: int, now: float) -> None:
        """``k`` of endpoint (r, m)'s instances in ``state`` die in a fault: starting ones the
        last started; draining ones the last to begin draining, with what they hold; active ones
        the last positions of the spread (``_spread``), with the share of every pool (waiting,
        prefilling, decoding) those hold. Their requests are retried (``sim/faults.py``): IW ones
        wait again at the failover endpoint, NIW ones go back to the NIW feed queue."""
        n_m = len(self.model_names)
        e = r * n_m + m
        if state == STARTING:
            for start_up in self._starting[e][-k:]:
                start_up.version += 1  # cancelled
            del self._starting[e][-k:]
            self._fleet_changed = True
            return
        taken = np.zeros((3, 2, 2))  # pool (W, P, D) x (requests, tokens) x tier
        if state == DRAINING:
            for drain in self._draining[e][-k:]:
                self._drains.remove(drain)
                taken[D] += drain.held[:2]
            del self._draining[e][-k:]
        else:
            pending = self._spread(e)[0]
            held = pending.sum()
            share = 1.0 if k >= len(pending) else (pending[len(pending) - k:].sum() / held if held > 0 else 0.0)
            pools = self._Q[:, :, :, e]
            n = np.floor(pools[:, 0] * share)
            tok = np.where(n == pools[:, 0], pools[:, 1], np.floor(pools[:, 1] * n / np.maximum(pools[:, 0], 1.0)))
            taken[:, 0], taken[:, 1] = n, tok
            pools -= taken
        self._retried[e] += taken[:, 0].sum()
        niw = taken[:, :, NIW].sum(0)
        if self.feed_async:
            self._F[:, e] += niw
        else:
            self._Q[W, :, NIW, e] += niw
        iw = taken[:, :, IW].sum(0)
        if iw[0]:
            d = self._failover(r, m)
            self._Q[W, :, IW, d] += iw
            self._moved[:, e] -= iw
            self._moved[:, d] += iw
            unserved = taken[W, 0, IW] + taken[P, 0, IW]  # they leave this FIFO without a first token
            self._served[IW, e] += unserved
            self._unfirst[e] += unserved
            self._hist[self._n_hist - 1, IW, d] += iw[0]  # and join the failover endpoint's
            self._again[d] += taken[D, 0, IW]
        self._fleet_changed = True

    def _failover(self, r: int, m: int) -> int:
        """The endpoint retried IW requests of (r, m) go to: ``failover_region`` over the priority
        order of the requests homed in ``r`` (``routing.no_reroute``: (r, m) itself)."""
        if self.no_reroute:
            return r * len(self.model_names) + m
        order = next((o for o in self._orders if o[0] == r), tuple(range(len(self.region_names))))
        util = self._utilization()[1].reshape(len(self.region_names), -1)[:, m]
        return failover_region(order, r, lambda c: float(util[c]), self.util_threshold) * len(self.model_names) + m

    def activate(self, r: int, m: int, now: float) -> None:
        """A starting instance finished loading."""
        self.fleet.activate(r, m, now)
        self._fleet_changed = True

    def drain(self, r: int, m: int, now: float) -> bool:
        """The active instance with the fewest pending tokens drains (of the spread as it stood
        when the scale call began): it takes its share of the endpoint's KV-held requests'
        decoding requests (all of them if it is the last active one)."""
        self._fleet_changed = True
        e = r * len(self.model_names) + m
        pending, reserved = self._shares
        i = int(np.argmin(pending))
        share_tokens = reserved[i]
        self._shares = np.delete(pending, i), np.delete(reserved, i)
        dec = self._Q[D, :, :, e]  # (requests, tokens) x tier
        held = self._Q[P:, 1, :, e].sum()
        share = share_tokens / held if held > 0 and len(pending) > 1 else 1.0
        req = np.floor(dec[0] * share)
        if not req.any():
            return False
        tok = np.where(req == dec[0], dec[1], np.maximum(np.floor(dec[1] * share), req))
        dec -= np.stack([req, tok])
        drain = _Drain(e, np.stack([req, tok, np.zeros(2)]))
        self._drains.append(drain)
        self._draining[e].append(drain)
        return True

    def _drain_tick(self, dt: float, done: np.ndarray, done_t: np.ndarray):
        """Advance every draining instance's batch like D; returns ``done`` and ``done_t`` (per
        tier and endpoint) with its completions added."""
        sz = self._sizes
        done, done_t = done.copy(), done_t.copy()
        n_m = len(self.model_names)
        for drain in list(self._drains):
            req, tok, carry = state = drain.held
            e = drain.endpoint
            t = self._db[e] + self._ds[e] * req.sum() + self._dk[e] * tok.sum() * sz.context[e]
            out = self._integral(req * -math.expm1(-dt / (sz.output[e] * t)), req, carry)
            left = req - out
            gone = np.where(left == 0, tok, np.minimum(np.rint(tok * -math.expm1(-dt / (sz.token_iters[e] * t))),
                                                       tok - left))
            state[0], state[1] = left, tok - gone
            done[:, e] += out
            done_t[:, e] += gone
            if not left.any():
                self._drains.remove(drain)
                self._draining[e].remove(drain)
                self.fleet.release(e // n_m, e % n_m, self.now)
                self._fleet_changed = True
        return done, done_t

    # -- statistics -----------------------------------------------------------------------
    @property
    def arrived(self) -> int:
        return self._next_arrival

    @property
    def n_completed(self) -> int:
        return int(self._done[0].sum())

    @property
    def n_dropped(self) -> int:
        return int(self._totals()["dropped"].sum())

    def _totals(self) -> Dict[str, np.ndarray]:
        """Running totals per endpoint: arrivals (IW where routed, NIW and drops at home) and
        what became of them."""
        h, r, stale = self._home, self._routed, self._stale
        iw, niw = r[:, 0] + h[:, 2], h[:, 0] + h[:, 3]
        return {
            "iw_arrived": iw,
            "niw_arrived": niw,
            "arrived": iw + niw,
            "arrived_prompt_tokens": r[:, 1] + h[:, 5],
            "arrived_tokens": r[:, 2] + h[:, 1] + h[:, 4],
            "iw_first_tokens": self._served[IW] - stale[0] - self._unfirst,
            "completed": self._done[0].sum(0),
            "completed_tokens": self._done[1].sum(0),
            "niw_completed": self._done[0, NIW],
            "iw_dropped": h[:, 2] + stale[0],
            "niw_dropped": h[:, 3],
            "dropped": h[:, 2] + h[:, 3] + stale[0],
            "dropped_tokens": h[:, 4] + stale[1],
            "dropped_too_large": h[:, 2] + h[:, 3],
            "dropped_iw_timeout": stale[0],
            "retried": self._retried,
        }

    def _endpoint_pools(self) -> np.ndarray:
        """Requests held, KV tokens reserved (prefilling and decoding) and KV tokens waiting for
        a batch slot, per endpoint, as whole numbers: (3, E)."""
        pools = self._Q.sum(axis=2)  # pool x (requests, tokens) x endpoint
        return np.stack([pools[:, 0].sum(0), np.trunc(pools[P, 1] + pools[D, 1]), np.trunc(pools[W, 1])])

    def _spread(self, e: int) -> Tuple[np.ndarray, np.ndarray]:
        """Pending and reserved KV tokens of each active instance of endpoint ``e``, in order: its
        tokens spread evenly over as many active instances as it holds requests (the first
        ones; a token that does not divide goes to the first)."""
        requests, reserved, waiting = self._endpoint_pools()[:, e]
        n_m = len(self.model_names)
        n = int(self.fleet.counts[e // n_m, e % n_m, ACTIVE])
        busy = self._busy(requests, reserved, n, self._cap[e])
        i = np.arange(n)
        res = np.where(i < busy, reserved // max(busy, 1) + (i < reserved % max(busy, 1)), 0.0)
        wait = np.where(i < busy, waiting // max(busy, 1) + (i < waiting % max(busy, 1)), 0.0)
        return res + wait, np.minimum(res, self._cap[e])

    @staticmethod
    def _busy(requests, reserved, active, cap):
        """Active instances that hold the endpoint's work: as many as it has requests, at least
        the KV tokens' worth, at most all of them."""
        return np.minimum(active, np.maximum(np.maximum(np.floor(requests + 0.5), np.ceil(reserved / cap)),
                                             (requests > 0).astype(float)))

    def statistics(self) -> np.ndarray:
        """The statistics array (endpoints, ``len(Stat)``), from the flows and the even spread
        of every endpoint's work over its active instances (``_spread``)."""
        E = self._E
        out = np.zeros((E, len(Stat)))
        totals = self._totals()
        for col, key in COUNTED.items():
            out[:, col] = np.trunc(totals[key])
        for col, row in zip(EXPECTED, self._expected):
            out[:, col] = row
        counts = self.fleet.counts[:, :-1].reshape(E, -1)
        out[:, Stat.ACTIVE] = n = counts[:, ACTIVE]
        out[:, Stat.STARTING] = counts[:, STARTING]
        out[:, Stat.DRAINING] = counts[:, DRAINING]
        out[:, Stat.SPOT_OWN] = counts[:, SPOT]
        requests, reserved, waiting = self._endpoint_pools()
        busy = self._busy(requests, reserved, n, self._cap)
        b = np.maximum(busy, 1.0)
        res, res_extra = reserved // b, reserved % b
        wait, wait_extra = waiting // b, waiting % b
        has, n1 = n > 0, np.maximum(n, 1)
        out[:, Stat.UTILIZATION] = np.where(has, (reserved + waiting) / (n1 * self._cap), 1.0)
        first = np.where(busy > 0, res + wait + (res_extra > 0) + (wait_extra > 0), 0.0)  # the fullest instance
        out[:, Stat.UTILIZATION_MAX] = np.where(has, first / self._cap, 1.0)
        holding = np.where(res + wait > 0, busy, np.maximum(res_extra, wait_extra))
        out[:, Stat.BUSY_FRACTION] = np.where(has, holding / n1, 1.0)
        # what an instance's share holds beyond its KV capacity waits too; nothing shows without an instance
        over = res_extra * np.maximum(res + 1 - self._cap, 0) + (busy - res_extra) * np.maximum(res - self._cap, 0)
        out[:, Stat.QUEUED_IW_TOKENS] = np.where(busy > 0, waiting + over, 0.0)
        out[:, Stat.QUEUED_NIW_TOKENS] = np.trunc(self._F[1])
        out[:, Stat.NIW_QUEUE_REQUESTS] = self._F[0]
        out[:, Stat.QUEUED_REQUESTS] = self._Q[W, 0].sum(0) + self._F[0]
        in_flight = self._Q[P:, 0].sum(axis=(0, 1))
        for d in self._drains:
            in_flight[d.endpoint] += d.held[0].sum()
        out[:, Stat.IN_FLIGHT_REQUESTS] = in_flight
        return out

    def in_flight(self) -> int:
        """Requests admitted to a batch (prefilling or decoding, draining instances included)."""
        return int(self._Q[P:, 0].sum() + sum(d.held[0].sum() for d in self._drains))

    def queued(self) -> int:
        """Requests arrived and waiting: for a batch slot, in NIW feed queues."""
        return int(self._Q[W, 0].sum() + self._F[0].sum())

    def check_invariants(self) -> None:
        """Requests and tokens conserved per endpoint, no pool negative or fractional, the
        requests overall, the fleet's counts and its draining instances."""
        pools = [self._Q, self._F] + [d.held[:2] for d in self._drains]
        if any((p < 0).any() or (p != np.floor(p)).any() for p in pools):
            raise InvariantError("a flow pool is negative or fractional")
        held = self._Q.sum(axis=(0, 2)) + self._F
        for d in self._drains:
            held[:, d.endpoint] += d.held[:2].sum(1)
        c = self._totals()
        arrived = np.stack([c["arrived"], c["arrived_tokens"]]) + self._moved
        accounted = held + self._done.sum(1) + np.stack([c["dropped"], c["dropped_tokens"]])
        if not np.array_equal(arrived, accounted):
            raise InvariantError(f"requests or tokens not conserved: arrived {arrived} != "
                                 f"held + completed + dropped {accounted}")
        done, flight, queued, dropped = self.n_completed, self.in_flight(), self.queued(), self.n_dropped
        if self.arrived != done + flight + queued + dropped:
            raise InvariantError(f"arrived {self.arrived} != completed {done} + in flight {flight} + "
                                 f"queued {queued} + dropped {dropped}")
        problem = self.fleet.check(self.now)
        if problem:
            raise InvariantError(problem)
        draining = self.fleet.counts[:, :-1, DRAINING].reshape(-1)
        if [len(d) for d in self._draining] != draining.tolist():
            raise InvariantError(f"draining instances {[len(d) for d in self._draining]} != the fleet's {draining}")

    def records(self) -> None:
        """None: the fast fidelity keeps no per-request records (see ``request_metrics``)."""
        return None

    def overdue(self) -> Tuple[int, int]:
        """IW requests without a first token past their SLO, NIW requests unfinished past their
        deadline, as of now (from the FIFO curves, with the workload's mean SLO and deadline)."""
        late = self._overdue()
        return int(late[IW].sum()), int(late[NIW].sum())

    def _overdue(self) -> np.ndarray:
        arrived = np.stack([self._arrivals_at(self.now - self._iw_sla)[IW],
                            self._arrivals_at(self.now - self._niw_sla)[NIW]])
        return np.floor(np.maximum(arrived - self._served, 0.0))

    def request_metrics(self) -> "FlowRequests":
        """Latency percentiles and SLO figures per endpoint, for ``metrics.summarize``."""
        counts = {**self._totals(), "iw_misses": self._expected[0], "niw_misses": self._expected[2]}
        return FlowRequests(len(self.model_names), self._sizes, self._log[: self._n_log], self._delay, counts,
                            self._overdue())


class FlowRequests:
    """What ``metrics.summarize`` reads of the requests, without per-request records.

    Rows are endpoints (``region`` and ``model`` arrays); ``metrics(sel)`` aggregates the rows a
    boolean mask selects, with the keys of the detailed summary. Percentiles come from weighted
    log-spaced histograms (1% bins) of the per-tick estimates, weighted by first tokens: TTFT =
    delay + FIFO wait (at 1/4 and 3/4 of its spread in the tick) + stochastic wait (none, or
    the exponential's WAIT_LEVELS quantiles) + boundary wait + prefill of each prompt-size
    quantile; e2e = the mean TTFT + (output-size quantile - 1) x iteration time; TPOT = the
    iteration time. Attainment counts drops and overdue requests as misses, as the detailed
    summary does.
    """

    def __init__(self, n_models: int, sz: _Sizes, log: np.ndarray, delay_s: float, counts: Dict[str, np.ndarray],
                 overdue: np.ndarray) -> None:
        E = log.shape[2]
        self.region = np.arange(E) // n_models
        self.model = np.arange(E) % n_models
        ft, w1, marg, bnd, t, queue_p, queue_m = (log[:, i] for i in range(7))
        w0 = np.concatenate([np.zeros((1, E)), w1[:-1]])  # a tick starts with the last one's wait
        self._hist = {k: np.zeros((E, len(HIST_EDGES_S) - 1)) for k in ("ttft", "e2e", "tpot")}
        for e in range(E):
            wait, weight, base = ttft_points(ft[:, e], w0[:, e], w1[:, e], bnd[:, e], marg[:, e], queue_p[:, e],
                                             queue_m[:, e], sz.prefill[e], sz.chunks[e], delay_s)
            self._add("ttft", e, wait[:, :, None] + base[:, None, :], weight[:, :, None] * sz.weights)
            decode = (sz.output_q[e] - 1) * t[:, e, None]
            mean_ttft = (wait + (base @ sz.weights)[:, None])
            self._add("e2e", e, mean_ttft[:, :, None] + decode[:, None, :], weight[:, :, None] * sz.weights)
            self._add("tpot", e, t[:, e], ft[:, e])
        self._counts = counts
        self._overdue = overdue

    def _add(self, kind: str, e: int, values: np.ndarray, weights: np.ndarray) -> None:
        n = len(HIST_EDGES_S) - 1
        self._hist[kind][e] += np.bincount(histogram_bins(values).ravel(),
                                           np.broadcast_to(weights, values.shape).ravel(), n)

    @staticmethod
    def percentiles(prefix: str, hist: np.ndarray) -> Dict[str, Optional[float]]:
        """``{prefix}_p{p}`` for every p of PERCENTILES from a histogram over HIST_EDGES_S (log
        interpolation within a bin; None if the histogram is empty)."""
        total = hist.sum()
        if total <= 0:
            return {f"{prefix}_p{p}": None for p in PERCENTILES}
        cum = np.cumsum(hist) / total
        out = {}
        for p in PERCENTILES:
            j = min(int(np.searchsorted(cum, p / 100.0)), len(hist) - 1)
            below = cum[j - 1] if j else 0.0
            frac = (p / 100.0 - below) * total / hist[j] if hist[j] > 0 else 0.0
            lo, hi = np.log(HIST_EDGES_S[j]), np.log(HIST_EDGES_S[j + 1])
            out[f"{prefix}_p{p}"] = float(np.exp(lo + min(max(frac, 0.0), 1.0) * (hi - lo)))
        return out

    def metrics(self, sel: Optional[np.ndarray] = None) -> Dict[str, Any]:
        """The keys of the detailed summary's request metrics over the selected endpoints."""
        rows = np.ones(len(self.region), dtype=bool) if sel is None else np.asarray(sel, dtype=bool)
        s = {k: float(v[rows].sum()) for k, v in self._counts.items()}
        overdue = [float(x) for x in self._overdue[:, rows].sum(1)]
        m: Dict[str, Any] = {
            "requests_total": int(s["arrived"]),
            "requests_completed": int(s["completed"]),
            "requests_dropped": int(s["dropped"]),
            "requests_dropped_too_large": int(s["dropped_too_large"]),
            "requests_dropped_iw_timeout": int(s["dropped_iw_timeout"]),
            "iw_requests": int(s["iw_arrived"]),
        }
        for kind in ("ttft", "e2e", "tpot"):
            m.update(self.percentiles(f"iw_{kind}", self._hist[kind][rows].sum(0)))
        decided = s["iw_first_tokens"] + s["iw_dropped"] + overdue[IW]
        m["iw_slo_attainment"] = (s["iw_first_tokens"] - s["iw_misses"]) / decided if decided else None
        m["niw_requests"] = int(s["niw_arrived"])
        m["niw_completed"] = int(s["niw_completed"])
        m["niw_deadline_misses"] = int(round(s["niw_misses"] + s["niw_dropped"] + overdue[NIW]))
        return m


def ttft_points(ft, w0, w1, bnd, marg, queue_p, queue_m, prefill, chunks, delay_s):
    """The TTFT distribution of rows of ``ft`` first tokens (ticks of one endpoint, or endpoints of
    one tick) as weighted points: the FIFO wait at 1/4 and 3/4 of its spread ``w0`` .. ``w1``,
    plus the stochastic wait (none with probability 1 - ``queue_p``, else the exponential of mean
    ``queue_m`` at WAIT_LEVELS), plus ``base`` = delay + boundary wait + the prefill of each
    prompt-size quantile (``prefill`` and ``chunks``: (K,) or (rows, K)). Returns the waits and
    their weights, (rows, 10), and ``base``, (rows, K); a point's weight times ``_Sizes.weights``
    is that of wait + base."""
    levels = np.array(WAIT_LEVELS)
    level_w = np.diff(np.r_[0.0, (levels[1:] + levels[:-1]) / 2, 1.0])
    fluid = np.stack([0.75 * w0 + 0.25 * w1, 0.25 * w0 + 0.75 * w1], axis=1)
    extra = np.c_[np.zeros(len(ft)), -np.log1p(-levels) * queue_m[:, None]]
    extra_w = np.c_[1.0 - queue_p, queue_p[:, None] * level_w]
    wait = (fluid[:, :, None] + extra[:, None, :]).reshape(len(ft), -1)
    weight = np.tile(0.5 * ft[:, None] * extra_w, 2)  # the two fluid points, halved
    base = delay_s + bnd[:, None] + prefill + chunks * marg[:, None]
    return wait, weight, base


def histogram_bins(values: np.ndarray) -> np.ndarray:
    """The bin of HIST_EDGES_S (log-spaced) holding each of ``values`` (below the first edge: the
    first bin; beyond the last: the last)."""
    n = len(HIST_EDGES_S) - 1
    at = np.log(np.maximum(values, HIST_EDGES_S[0]) / HIST_EDGES_S[0]) / math.log(HIST_EDGES_S[1] / HIST_EDGES_S[0])
    return np.minimum(at.astype(np.int64), n - 1)
