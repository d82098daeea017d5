"""The fast fidelity over N independent worlds at once: one array program, a leading world axis.

``VectorFlow`` runs ``FlowSimulator``'s tick (``sageserve_env/sim/flow.py``: arrivals, routing,
NIW feed, admission, prefill, decode, latency model, SLO misses) over N worlds of E endpoints:
every per-endpoint array of the flows has N x E entries, world ``n``'s endpoint ``e`` at index
``n * E + e``, so one numpy operation advances every endpoint of every world and there is no
Python loop over worlds or endpoints inside a tick. What the single-world fast fidelity keeps as
objects or per-tick history is here an array of fixed size:

* the fleet (``VectorFleet``): counts per (world, region, model or none, state) with the rules
  of ``Fleet`` (the same delays, refusals and order of sources), start-ups as pending counts
  per tick in a ring (not events), GPU-seconds by state exact to the start-up's time;
* draining instances: one pool per endpoint (requests and KV tokens per tier) that decodes like
  the drained instances' batches and gives instances back to spot as it empties (``_drain_step``);
* traffic (``GeneratedTraffic``): per-tick aggregates drawn from the generator's distributions,
  produced a chunk at a time (memory does not grow with the horizon);
* the FIFO wait of IW requests: queued IW requests over the smoothed IW arrival rate (Little's
  law; exact for a constant rate), instead of the arrival curves of every past tick; NIW deadlines
  from cumulative NIW arrivals at checkpoints every ``CHECKPOINT_S``.

All worlds advance in lockstep (one clock); world ``n`` draws from its own generators only, so
world ``n`` of a batch equals a batch of one seeded like it. No gymnasium import here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from sageserve_env.config import SimConfig
from sageserve_env.sim.fleet import ACTIVE, DRAINING, FREE, NO_MODEL, SPOT, STARTING, Fleet, Refusal
from sageserve_env.sim.flow import (BOUNDARY_WAIT, HIST_EDGES_S, HOME_COLS, LOAD_SMOOTHING_S, RHO_MAX, D, FlowRequests,
                                    FlowSimulator, P, W, histogram_bins, ttft_points)
from sageserve_env.sim.host import serving_settings
from sageserve_env.sim.perf_model import build_perf_models, kv_capacity
from sageserve_env.sim.stats import Stat
from sageserve_env.workload.generator import JOB_SPREAD_S, expected_counts, generate, uses_v1_process, v1_rates
from sageserve_env.workload.readers import model_popularity, nearest_first_orders
from sageserve_env.workload.workload import IW, NIW

REFUSALS = tuple(Refusal)  # refusal codes of ``ScaleOutcome.refusal`` index this (-1: none)
N_KINDS = 5  # undrain, reclaim, load_free, load_other, drain: the ``ScaleKind`` order
SIZE_SEED = 20250214  # the fixed sample the size constants come from: a constant of the world
SIZE_REQUESTS = 300_000  # requests of that sample (a generated stretch of the scenario's days)
CHECKPOINT_S = 300.0  # NIW deadline misses read cumulative NIW arrivals at this spacing
CHUNK_ELEMENTS = 1 << 14  # ticks x worlds of traffic drawn at a time (memory and speed, not results)
CHUNK_TICKS = 64  # at least this many ticks a chunk (each chunk costs two generator calls per world)


# -- the fleet ----------------------------------------------------------------------------
@dataclass
class ScaleOutcome:
    """What ``VectorFleet.scale`` did per (world, endpoint): instances applied (signed), the
    changes by kind (``ScaleKind`` order), and the refusal of the rest (index into ``REFUSALS``,
    -1 for none)."""

    applied: np.ndarray  # (N, E) int
    kinds: np.ndarray  # (N, E, N_KINDS) int
    refusal: np.ndarray  # (N, E) int

    @property
    def refused(self) -> np.ndarray:
        return (self.refusal >= 0)


class VectorFleet:
    """``Fleet`` for N worlds: server counts (N, R, M + 1, states) and the same scaling rules.

    Start-ups wait as counts in a ring of ticks (the tick a start-up completes in), with the sum
    of their ready times, so that GPU-seconds by state stay exact to the start-up's time.
    """

    def __init__(self, cfg: SimConfig, n_worlds: int, tick_s: float, initial: Optional[np.ndarray] = None) -> None:
        """``initial``: active instances per (world, region, model) at t = 0, each world's own
        ``scaling.initial_overrides`` (default: the config's counts in every world)."""
        one = Fleet(cfg)  # the initial counts and the settings, as the detailed fidelity has them
        self.n_worlds, self.tick_s = int(n_worlds), float(tick_s)
        self.n_regions, self.n_models = len(one.region_names), len(one.model_names)
        self.n_endpoints = self.n_regions * self.n_models
        self.level, self.min_instances = one.level, one.min_instances
        self.reclaim_s, self.spin_up_s = float(one.reclaim_s), float(one.spin_up_s)
        self.servers = one.servers
        self.gpus_per_server, self.cost_per_gpu_hour = one.gpus_per_server, one.cost_per_gpu_hour
        self.grid = np.repeat(one.counts[None], self.n_worlds, axis=0)  # (N, R, M + 1, states)
        if initial is not None:
            self._place(np.asarray(initial))
        self.counts = self.grid.reshape(-1, *one.counts.shape[1:])  # a view: (N R, M + 1, states)
        self._seconds = np.zeros(self.grid.shape)
        self._counted_until = 0.0
        self._ring_len = int(math.ceil(max(self.reclaim_s, self.spin_up_s) / self.tick_s)) + 2
        self._pending = np.zeros((self._ring_len, self.n_worlds, self.n_endpoints))  # start-ups per tick
        self._pending_t = np.zeros_like(self._pending)  # the sum of their ready times
        self.n_scale_ups = np.zeros(self.n_worlds, dtype=np.int64)
        self.n_scale_downs = np.zeros(self.n_worlds, dtype=np.int64)

    def _place(self, initial: np.ndarray) -> None:
        """Every world's start: ``initial`` active per endpoint, the rest of a region's servers free."""
        N, R, M = self.n_worlds, self.n_regions, self.n_models
        if initial.shape != (N, R, M) or initial.dtype.kind not in "iu":
            raise ValueError(f"initial instances must be integers of shape (worlds, regions, models) = {(N, R, M)}, "
                             f"got {initial.dtype} {initial.shape}")
        if (initial < 0).any() or (initial.sum(2) > self.servers).any():
            n, r = np.argwhere((initial < 0).any(2) | (initial.sum(2) > self.servers))[0]
            raise ValueError(f"initial instances of world {n}, region {r}: {initial[n, r].tolist()} "
                             f"do not fit its {self.servers[r]} servers")
        self.grid[...] = 0
        self.grid[:, :, :M, ACTIVE] = initial
        self.grid[:, :, NO_MODEL, FREE] = self.servers - initial.sum(2)

    def endpoint_counts(self, state: int) -> np.ndarray:
        """Instances of every endpoint in ``state``, (N, E) int."""
        return self.grid[:, :, :-1, state].reshape(self.n_worlds, -1)

    def flush(self, now: float) -> None:
        """Add counts x (now - counted until) to the server-second integrals."""
        if now > self._counted_until:
            self._seconds += self.grid * (now - self._counted_until)
            self._counted_until = now

    def gpu_seconds_by_state(self, now: float) -> np.ndarray:
        """GPU-seconds up to ``now`` per (world, region, model or none, state)."""
        self.flush(now)
        return self._seconds * self.gpus_per_server[None, :, None, None]

    def scale(self, deltas: np.ndarray, now: float,
              drain: Callable[[np.ndarray], np.ndarray],
              undrain: Callable[[np.ndarray, np.ndarray], None]) -> ScaleOutcome:
        """Ask every endpoint of every world for ``deltas`` (N, E) more or fewer instances.

        Per world, endpoints are taken in the order of their deltas (scale-downs first, stable),
        as the env orders its calls of ``Fleet.scale``, and each follows ``Fleet``'s rules:
        up, a draining instance is kept, else a spot server holding the model is reclaimed
        (``reclaim_s``), else a free server is loaded, else at level 2 the spot server of the
        model with the most of them (``spin_up_s``); down, an active instance drains, never
        below ``min_instances`` active + starting nor without an active instance. ``drain(n)``
        says how many of the ``n`` (N, E) new drains hold nothing and go to spot at once;
        ``undrain(u, k)`` gives ``u`` of the ``k`` draining instances their work back.
        """
        N, E, M = self.n_worlds, self.n_endpoints, self.n_models
        deltas = np.asarray(deltas, dtype=np.int64)
        self.flush(now)
        applied = np.zeros((N, E), dtype=np.int64)
        kinds = np.zeros((N, E, N_KINDS), dtype=np.int64)
        refusal = np.full((N, E), -1, dtype=np.int64)
        if self.level == 0:
            refusal[deltas != 0] = REFUSALS.index(Refusal.SCALING_DISABLED)
            return ScaleOutcome(applied, kinds, refusal)
        # downs: independent of each other (an endpoint's drains read only its own counts)
        want = np.maximum(-deltas, 0)
        active, starting = self.endpoint_counts(ACTIVE), self.endpoint_counts(STARTING)
        n = np.minimum(np.minimum(want, np.maximum(active + starting - self.min_instances, 0)), active)
        short = want > n
        by_min = active + starting - n - 1 < self.min_instances
        refusal[short] = np.where(by_min, REFUSALS.index(Refusal.MIN_INSTANCES),
                                  REFUSALS.index(Refusal.NOTHING_ACTIVE))[short]
        if n.any():
            to_spot = np.minimum(np.asarray(drain(n), dtype=np.int64), n)
            g = self.grid[:, :, :-1]
            shape = (N, self.n_regions, M)
            g[..., ACTIVE] -= n.reshape(shape)
            g[..., DRAINING] += (n - to_spot).reshape(shape)
            g[..., SPOT] += to_spot.reshape(shape)
            applied -= n
            kinds[..., 4] += n
            self.n_scale_downs += n.sum(1)
        # ups: in delta order per world, since endpoints of a region share its spot and free servers
        if (deltas > 0).any():
            self._ups(deltas, now, applied, kinds, refusal, undrain)
        return ScaleOutcome(applied, kinds, refusal)

    def _ups(self, deltas, now, applied, kinds, refusal, undrain) -> None:
        """Scale-ups in delta order within each region of each world: only an endpoint's own
        region's servers serve it, so the regions of all worlds are taken at once, rank by rank
        (a rank's (world, region) rows are distinct, so flat indices address each cell once)."""
        N, R, M = self.n_worlds, self.n_regions, self.n_models
        S = self.grid.shape[-1]
        order = np.argsort(deltas.reshape(N * R, M), axis=1, kind="stable")  # per (world, region)
        rows = np.arange(N * R)  # (world, region), world-major
        drained = np.zeros_like(applied)
        draining_before = self.endpoint_counts(DRAINING).copy()
        g, spot = self.grid.reshape(-1), self.grid.reshape(N * R, M + 1, S)[:, :-1, SPOT]  # views
        free = rows * ((M + 1) * S) + NO_MODEL % (M + 1) * S + FREE  # each row's free servers in ``g``
        flat_deltas, flat_applied, flat_drained = deltas.reshape(-1), applied.reshape(-1), drained.reshape(-1)
        flat_kinds, flat_refusal = kinds.reshape(-1), refusal.reshape(-1)
        for j in range(M):  # ranks, not models: each rank is every region's j-th endpoint
            m = order[:, j]
            we = rows * M + m  # (world, endpoint) in (N, E)
            d = flat_deltas[we]
            if not (d > 0).any():
                continue
            cell = (rows * (M + 1) + m) * S  # the endpoint's states in ``g``
            d = np.maximum(d, 0)
            u_drain = np.minimum(d, g[cell + DRAINING])
            rest = d - u_drain
            u_spot = np.minimum(rest, g[cell + SPOT])
            rest = rest - u_spot
            u_free = np.minimum(rest, g[free])
            rest = rest - u_free
            g[cell + DRAINING] -= u_drain
            g[cell + ACTIVE] += u_drain
            g[cell + SPOT] -= u_spot
            g[free] -= u_free
            g[cell + STARTING] += u_spot + u_free
            u_other = np.zeros_like(rest)
            short = np.flatnonzero(rest > 0) if self.level >= 2 else ()
            if len(short):  # other models' spot servers, the most held first, for the rows still short
                taken = take_from_largest(spot[short], rest[short])
                spot[short] -= taken
                u_other[short] = taken.sum(1)
                g[cell + STARTING] += u_other
                rest = rest - u_other
            flat_refusal[we[rest > 0]] = REFUSALS.index(Refusal.NO_SERVER if self.level >= 2
                                                        else Refusal.NO_SERVER_LEVEL_1)
            up = d - rest
            flat_applied[we] += up
            for kind, n in enumerate((u_drain, u_spot, u_free, u_other)):
                flat_kinds[we * N_KINDS + kind] += n
            flat_drained[we] += u_drain
            self._pend(we, u_spot, now + self.reclaim_s)
            self._pend(we, u_free + u_other, now + self.spin_up_s)
            self.n_scale_ups += up.reshape(N, R).sum(1)
        if drained.any():
            undrain(drained, draining_before)

    def _pend(self, we: np.ndarray, n: np.ndarray, ready: float) -> None:
        """``n`` start-ups of the (world, endpoint)s ``we`` (flat, distinct), ready at ``ready``."""
        k = int(math.ceil(ready / self.tick_s - 1e-9)) - 1  # the tick (k dt, (k + 1) dt] holding ``ready``
        slot = k % self._ring_len
        self._pending[slot].reshape(-1)[we] += n
        self._pending_t[slot].reshape(-1)[we] += n * ready

    def activate_due(self, k: int, t0: float) -> bool:
        """Start-ups completing in tick ``k`` (``t0`` its start) become active; they serve from
        the tick's start and count as starting up to their ready time. True if any did."""
        slot = k % self._ring_len
        n = self._pending[slot]
        if not n.any():
            return False
        self.flush(t0)
        shape = (self.n_worlds, self.n_regions, self.n_models)
        early = (self._pending_t[slot] - n * t0).reshape(shape)  # server-seconds still starting
        g, s = self.grid[:, :, :-1], self._seconds[:, :, :-1]
        s[..., STARTING] += early
        s[..., ACTIVE] -= early
        n_i = n.reshape(shape).astype(np.int64)
        g[..., STARTING] -= n_i
        g[..., ACTIVE] += n_i
        n[...] = 0.0
        self._pending_t[slot] = 0.0
        return True

    def release(self, n: np.ndarray, now: float) -> None:
        """``n`` (N, E) draining instances finished their last requests: to spot."""
        self.flush(now)
        shape = (self.n_worlds, self.n_regions, self.n_models)
        g = self.grid[:, :, :-1]
        n = n.reshape(shape).astype(np.int64)
        g[..., DRAINING] -= n
        g[..., SPOT] += n

    def check(self, now: float) -> List[Optional[str]]:
        """Per world, what is wrong with the counts (None if nothing): as ``Fleet.check``, plus
        the pending start-ups equal to the starting instances."""
        out: List[Optional[str]] = []
        c = self.grid
        gpu_s = self.gpu_seconds_by_state(now).sum(axis=(1, 2, 3))
        fleet_gpu_s = float((self.gpus_per_server * self.servers).sum() * now)
        pending = self._pending.sum(0)
        for n in range(self.n_worlds):
            problem = None
            if (c[n] < 0).any():
                problem = "a server count is negative"
            elif not np.array_equal(c[n].sum(axis=(1, 2)), self.servers):
                problem = f"servers per region {c[n].sum(axis=(1, 2)).tolist()} != {self.servers.tolist()}"
            elif c[n, :, NO_MODEL, :FREE].any() or c[n, :, :-1, FREE].any():
                problem = "a server holding no model is not free, or a free server holds a model"
            elif not np.isclose(gpu_s[n], fleet_gpu_s, rtol=1e-9, atol=1e-6):
                problem = f"GPU-seconds by state {gpu_s[n]} != fleet x duration {fleet_gpu_s}"
            elif not np.array_equal(pending[n], c[n, :, :-1, STARTING].reshape(-1)):
                problem = f"pending start-ups {pending[n].tolist()} != starting instances"
            out.append(problem)
        return out


def take_from_largest(counts: np.ndarray, k: np.ndarray) -> np.ndarray:
    """What taking ``k`` (rows) items one at a time from the column holding the most (the first
    on ties) takes from each column of ``counts`` (rows, columns), in closed form: every column
    down to a level L, then one more from the first columns at L. Returns (rows, columns)."""
    counts = np.asarray(counts, dtype=np.int64)
    k = np.minimum(np.asarray(k, dtype=np.int64), counts.sum(1))
    lo, hi = np.zeros_like(k), counts.max(1, initial=0)
    while (lo < hi).any():  # the lowest level L with sum(max(counts - L, 0)) <= k
        mid = (lo + hi) // 2
        fits = np.maximum(counts - mid[:, None], 0).sum(1) <= k
        lo, hi = np.where(fits, lo, mid + 1), np.where(fits, mid, hi)
    taken = np.maximum(counts - lo[:, None], 0)
    at = (counts >= lo[:, None]) & (lo[:, None] > 0)
    return taken + (at & (np.cumsum(at, 1) <= (k - taken.sum(1))[:, None]))


# -- traffic ------------------------------------------------------------------------------
class GeneratedTraffic:
    """Per-tick arrival aggregates of N generated worlds, in ``FlowSimulator``'s table layout.

    Per tick and world: IW requests per (home region, model) with their prompt and KV tokens, and
    per home endpoint ``HOME_COLS`` (NIW requests and tokens, dropped IW and NIW, dropped tokens
    and prompt tokens). Drawn from the generator's distributions (``workload/generator.py``):
    Poisson IW arrivals at the diurnal rate of each minute, the model by popularity; NIW jobs
    Poisson at the same shape, their sizes with the generator's job-size moments, each job's
    requests spread evenly over ``JOB_SPREAD_S``; a tick's token masses normal with the moments
    of the fitted token mixture (its sum over the tick's requests); requests larger than an
    instance's KV capacity as Poisson thinning of the arrivals. World ``n`` draws from its own
    two generators (counts, normals) only, a chunk of ticks at a time.

    When the config uses the v1 process (``uses_v1_process``), each world has its own rates:
    ``iw_rates`` (N, minutes, R, M) IW requests and ``job_rates`` (N, minutes, R) NIW jobs per
    second, the episode part of ``v1_rates`` drawn at every ``reseed`` from a third generator of
    the world's seed (day-to-day variation, log-rate AR(1), flash crowds, growth, weekends), kept
    as float32 (Week at N = 256: about 160 MB). The v0 path (one diurnal curve) draws nothing more.
    """

    def __init__(self, cfg: SimConfig, tick_s: float, horizon_s: float, seeds: Sequence[int],
                 reference, cap: np.ndarray) -> None:
        w = cfg.workload
        self.dt = float(tick_s)
        self.n_worlds = len(seeds)
        self.n_regions, self.n_models = len(cfg.regions), len(cfg.model_names)
        R, M = self.n_regions, self.n_models
        E = R * M
        self.n_ticks = int(math.ceil(horizon_s / self.dt - 1e-9))
        self._config, self._days = cfg, (self.n_ticks + 1) * self.dt / 86400.0
        self.iw_rates = self.job_rates = None  # per world, set by ``reseed`` in the v1 process
        self._v1 = uses_v1_process(cfg)
        if not self._v1:
            _, widths, counts = expected_counts(cfg, self._days, w.start_day)
            rate = counts / widths  # requests per second per region, per minute
            if w.burst_factor > 1:
                rate[:, (np.arange(rate.shape[1]) % 60) == 0] *= w.burst_factor
            self._rate = rate
        self._pop = model_popularity(cfg)
        self._iw_share = w.iw_share
        self._job_mean = w.niw_job_size_mean
        self._spread = max(1, int(round(JOB_SPREAD_S / self.dt)))
        # token moments per endpoint, of the requests that fit an instance and of those that do not
        prompt = reference.prompt_tokens.astype(float)
        output = reference.output_tokens.astype(float)
        need = prompt + output
        ok = need[None, :] <= cap[:, None]  # (E, requests)
        frac = ok.mean(1)
        self._p_big = 1.0 - frac
        def moments(x):
            mean = (x * ok).sum(1) / np.maximum(ok.sum(1), 1)
            var = ((x - mean[:, None]) ** 2 * ok).sum(1) / np.maximum(ok.sum(1), 1)
            return mean, np.sqrt(var)
        (self._mu_p, self._sd_p), (self._mu_o, self._sd_o), (self._mu_n, self._sd_n) = (
            moments(prompt), moments(output), moments(need))
        cov = ((prompt - self._mu_p[:, None]) * (output - self._mu_o[:, None]) * ok).sum(1) / np.maximum(ok.sum(1), 1)
        self._rho = np.clip(cov / np.maximum(self._sd_p * self._sd_o, 1e-12), -1.0, 1.0)
        big = ~ok
        self._big_prompt = (prompt * big).sum(1) / np.maximum(big.sum(1), 1)
        self._big_need = (need * big).sum(1) / np.maximum(big.sum(1), 1)
        sizes = np.bincount(reference.batch_id[reference.batch_id >= 0]).astype(float)
        sizes = sizes[sizes > 0] if (sizes > 0).any() else np.ones(1)
        self._job_mu, self._job_sd = float(sizes.mean()), float(sizes.std())
        # ``bench/bench_vector_env.py --traffic``, CPU ms per tick for 16 / 64 / 128 / 512-tick chunks:
        # paper N = 256 0.79 / 0.73 / 0.91 / 1.09, small N = 1,024 1.21 / 0.75 / 0.75 / 0.86
        self.chunk = min(self.n_ticks + 1, max(CHUNK_TICKS, CHUNK_ELEMENTS // max(self.n_worlds, 1)))
        self._n_iw = R * M * 3
        self.columns = self._n_iw + E * HOME_COLS
        self.reseed(seeds)

    def reseed(self, seeds: Sequence[int]) -> None:
        """Start every world's traffic over from its seed (an episode start)."""
        if len(seeds) != self.n_worlds:
            raise ValueError(f"need one seed per world ({self.n_worlds}), got {len(seeds)}")
        if self._v1:
            # a third generator per world for its rates: the first two are the v0 path's own
            streams = [np.random.default_rng(s).spawn(3) for s in seeds]
            self._rngs = [(c, z) for c, z, _ in streams]
            self._draw_rates([r for _, _, r in streams])
        else:
            self._rngs = [tuple(np.random.default_rng(s).spawn(2)) for s in seeds]
        self._carry = np.zeros((self.n_worlds, self._spread, self.n_regions * self.n_models))
        self._table = None
        self._first = 0
        self._buffers = None  # (counts, normals, table, NIW requests, live columns) of a chunk, reused

    def token_means(self) -> Tuple[np.ndarray, np.ndarray]:
        """Mean prompt and output tokens per endpoint, (E,), of the requests that fit an instance."""
        return self._mu_p, self._mu_o

    def first_hour_requests(self) -> np.ndarray:
        """Expected IW requests per minute of the first hour, (N, 60, R, M), by home region."""
        ticks = int(round(60.0 / self.dt))
        if abs(ticks * self.dt - 60.0) > 1e-9:
            raise ValueError(f"the first-hour demand needs ticks that divide a minute, got tick_s={self.dt:g}")
        iw, _, _ = self._lambdas(0, 60 * ticks)
        iw = np.broadcast_to(iw, (self.n_worlds,) + iw.shape[-3:])
        return iw.reshape(self.n_worlds, 60, ticks, self.n_regions, self.n_models).sum(2)

    def _draw_rates(self, rngs) -> None:
        """Each world's v1 rates over the episode (the history bins before t = 0 dropped)."""
        cfg = self._config
        iw_rates, job_rates = None, None
        for i, rng in enumerate(rngs):
            starts, widths, iw, jobs, _ = v1_rates(cfg, rng, self._days, cfg.workload.start_day)
            ep = starts >= -1e-9
            if iw_rates is None:
                n_min = int(ep.sum())
                iw_rates = np.empty((self.n_worlds, n_min, self.n_regions, self.n_models), dtype=np.float32)
                job_rates = np.empty((self.n_worlds, n_min, self.n_regions), dtype=np.float32)
            iw_rates[i] = (iw[..., ep] / widths[ep]).transpose(2, 0, 1)
            job_rates[i] = (jobs[:, ep] / widths[ep]).T
        self.iw_rates, self.job_rates = iw_rates, job_rates

    def row(self, k: int) -> np.ndarray:
        """Arrivals of tick ``k`` (``(k dt, (k + 1) dt]``), (N, columns): a view of the chunk,
        valid until the next chunk is drawn."""
        if self._table is None or not (self._first <= k < self._first + self._table.shape[1]):
            if self._table is not None and k != self._first + self._table.shape[1]:
                raise ValueError(f"traffic is drawn in order: tick {k} after ticks up to "
                                 f"{self._first + self._table.shape[1] - 1}")
            self._first = 0 if self._table is None else k
            self._table = self._draw(self._first, self.chunk)
        return self._table[:, k - self._first]

    def _lambdas(self, k0: int, n: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Expected IW requests (ticks, R, M), NIW jobs and NIW requests (ticks, R, M) per tick;
        in the v1 process per world, (N, ticks, R, M)."""
        mid = (np.arange(k0, k0 + n) + 0.5) * self.dt
        if self._v1:
            minute = np.minimum((mid // 60.0).astype(np.int64), self.iw_rates.shape[1] - 1)
            iw = self.iw_rates[:, minute].astype(float) * self.dt
            jobs = self.job_rates[:, minute].astype(float)[..., None] * self.dt * self._pop
            return iw, jobs, jobs * self._job_mean
        minute = np.minimum((mid // 60.0).astype(np.int64), self._rate.shape[1] - 1)
        per_tick = (self._rate[:, minute].T * self.dt)[:, :, None] * self._pop  # (ticks, R, M)
        niw = (1.0 - self._iw_share) * per_tick
        return self._iw_share * per_tick, niw / self._job_mean, niw

    def _draw(self, k0: int, n: int) -> np.ndarray:
        """Ticks ``k0 .. k0 + n - 1`` of every world, (N, n, columns), into buffers reused from
        chunk to chunk (fresh ones of megabytes are paged in anew at every chunk)."""
        N, R, M = self.n_worlds, self.n_regions, self.n_models
        E = R * M
        iw_lam, job_lam, niw_lam = self._lambdas(k0, n)
        pb = self._p_big.reshape(R, M)
        lead = iw_lam.shape[:-2]  # (n,) or, per world, (N, n)
        lam = np.concatenate([(iw_lam * (1 - pb)).reshape(*lead, E), (iw_lam * pb).reshape(*lead, E),
                              job_lam.reshape(*lead, E), (niw_lam * pb).reshape(*lead, E)], axis=-1)
        # a Poisson draw of mean 0 is 0 and consumes nothing: columns of zero means are skipped
        # (and hold the zeros of a fresh buffer)
        live = np.flatnonzero(lam.reshape(-1, 4 * E).any(0))
        lam = lam if self._v1 else lam[None]  # means per world, or one row for all
        whole = len(live) == lam.shape[1]
        if self._buffers is None or self._buffers[0].shape[1] != n or not np.array_equal(self._buffers[4], live):
            self._buffers = (np.zeros((N, n, 4 * E)), np.empty((N, n, 4 * E)), np.zeros((N, n, self.columns)),
                             np.empty((N, n, E)), live)
        counts, z, table, tmp, _ = self._buffers
        lam = lam if whole else lam[..., live]
        for i, (count_rng, normal_rng) in enumerate(self._rngs):  # per chunk, not per tick
            mean = lam[i if self._v1 else 0]
            if whole:
                counts[i] = count_rng.poisson(mean)
            else:
                counts[i][:, live] = count_rng.poisson(mean)
            normal_rng.standard_normal(out=z[i])
        iw_n, iw_big, jobs, niw_big = (counts[..., j * E:(j + 1) * E] for j in range(4))
        z1, z2, z3, z4 = (z[..., j * E:(j + 1) * E] for j in range(4))
        iw = table[..., :self._n_iw].reshape(N, n, E, 3)
        home = table[..., self._n_iw:].reshape(N, n, E, HOME_COLS)
        root = np.sqrt(iw_n)
        iw[..., 0] = iw_n
        iw[..., 1] = np.maximum(np.rint(iw_n * self._mu_p + root * self._sd_p * z1), iw_n)
        out = np.maximum(np.rint(iw_n * self._mu_o + root * self._sd_o *
                                 (self._rho * z1 + np.sqrt(1 - self._rho ** 2) * z2)), iw_n)
        np.add(iw[..., 1], out, out=iw[..., 2])
        niw_n = tmp
        self._carry = self._deliver(jobs, z3, niw_n)
        home[..., 0] = niw_n
        home[..., 1] = np.maximum(np.rint(niw_n * self._mu_n + np.sqrt(niw_n) * self._sd_n * z4), niw_n)
        if self._p_big.any():  # else no request is too large: these columns stay 0 from the first chunk
            home[..., 2] = iw_big
            home[..., 3] = niw_big
            home[..., 4] = np.rint((iw_big + niw_big) * self._big_need)
            home[..., 5] = np.rint(iw_big * self._big_prompt)
        return table

    def _deliver(self, jobs: np.ndarray, z: np.ndarray, niw_n: np.ndarray) -> np.ndarray:
        """Write into ``niw_n`` (N, n, E) the NIW requests arriving per tick: the carry of earlier
        chunks and the requests of ``jobs`` (N, n, E), each job's evenly over ``JOB_SPREAD_S``
        (its size from ``z``); returns what falls after the chunk, the next carry (N, spread, E).
        Jobs are rare: only the (world, tick, endpoint) cells holding one are visited."""
        N, n, E = jobs.shape
        s = self._spread
        w, k, e = np.nonzero(jobs)
        j = jobs[w, k, e]
        size = np.maximum(np.rint(j * self._job_mu + np.sqrt(j) * self._job_sd * z[w, k, e]), j)
        per, extra = size // s, size % s
        steps = np.arange(s)
        amount = per[:, None] + (steps < extra[:, None])
        cell = (w[:, None] * (n + s) + k[:, None] + steps) * E + e[:, None]  # in (N, n + s, E)
        deliver = np.bincount(cell.ravel(), amount.ravel(), N * (n + s) * E).astype(float).reshape(N, n + s, E)
        deliver[:, :s] += self._carry
        niw_n[...] = deliver[:, :n]
        return deliver[:, n:].copy()


def reference_workload(cfg: SimConfig):
    """The fixed generated sample the size constants and token moments come from."""
    days = min(1.0, max(SIZE_REQUESTS / cfg.workload.requests_per_day, 600.0 / 86400.0))
    return generate(cfg, np.random.default_rng(SIZE_SEED), days=days)


# -- the flows --------------------------------------------------------------------------
class VectorFlow(FlowSimulator):
    """N worlds of the fast fidelity in lockstep (see the module docstring); the per-endpoint
    arrays of ``FlowSimulator`` with N x E entries, world-major."""

    fidelity = "fast"

    def __init__(self, config: SimConfig, seeds: Sequence[int], horizon_s: float, tick_s: float = 5.0,
                 reference=None, ttft_histogram: bool = False, first_hour: bool = False) -> None:
        """``first_hour``: each world starts from instances sized for its own expected first hour
        (``capacity.instances_for_demand`` on its IW rates times the mean prompt tokens), as
        ``initial_allocation="first_hour"`` sizes the other fidelities' start from their requests."""
        if not (math.isfinite(tick_s) and tick_s > 0):
            raise ValueError(f"tick_s must be a positive number of seconds, got {tick_s!r}")
        self.check_config(config)
        self.tick_s = float(tick_s)
        self.config = config
        self.region_names, self.model_names = config.region_names, config.model_names
        self.now = 0.0
        self.changes = 0
        vars(self).update(serving_settings(config))
        self.n_worlds = N = len(seeds)
        if N < 1:
            raise ValueError("VectorFlow needs at least one world (one seed)")
        n_r, n_m = len(self.region_names), len(self.model_names)
        self.n_endpoints = E1 = n_r * n_m
        self.horizon_s = float(horizon_s)
        self.perf = build_perf_models(config)
        self.kv_capacity = np.array([kv_capacity(config, r, m) for r in range(n_r) for m in range(n_m)], dtype=np.int64)
        self.workload = reference_workload(config) if reference is None else reference
        self.n_requests = len(self.workload)
        self.req_region, self.req_model, self._orders = self.workload.indexed(self.region_names, self.model_names)
        self._E = N * E1
        self._cap = np.tile(self.kv_capacity.astype(float), N)
        perf = [self.perf[e // n_m][e % n_m] for e in range(E1)]
        coef = lambda k: np.tile(np.array([getattr(p, k) for p in perf], dtype=float), N)  # noqa: E731
        self._db, self._ds, self._dk = coef("decode_base_s"), coef("decode_per_seq_s"), coef("decode_per_kv_token_s")
        self._pb, self._pt, self._pq = coef("prefill_base_s"), coef("prefill_per_token_s"), coef("prefill_per_token_sq_s")
        self._mixed = config.perf.mixed_prefill_factor or 1.0
        self._sizes = self._size_constants(np.tile(np.arange(E1) % n_m, N))
        self._niw_sla, self._iw_sla = float(config.niw.deadline_s), float(config.slo.iw_ttft_s)
        self._delay = config.routing.delay_s
        orders = nearest_first_orders([r.utc_offset_h for r in config.regions])
        self._key_regions = (np.arange(n_r)[:, None] if self.no_reroute else np.array(orders, dtype=np.int64))
        self._n_iw = n_r * n_m * 3
        keys = self._key_regions  # (keys, candidates): each key's regions, nearest first
        n_k, n_c = keys.shape
        # routing tables over (world, key, model, candidate): the endpoint each choice reads the
        # utilization of, in a world's row of endpoints, and the three bins (requests, prompt,
        # tokens) its IW columns go to, in the (world, endpoint, column) bins of ``_arrive``
        cand = keys[:, None, :] * n_m + np.arange(n_m)[:, None]  # (keys, models, candidates)
        self._route_cand = cand.reshape(-1)
        world_e = np.arange(N)[:, None, None, None] * E1 + cand[None]
        self._route_bins = (3 * world_e[..., None] + np.arange(3)).reshape(-1, 3)
        self._route_rows = np.arange(N * n_k * n_m).reshape(N, n_k, n_m) * n_c
        self.traffic = GeneratedTraffic(config, self.tick_s, self.horizon_s, seeds, self.workload,
                                        self.kv_capacity.astype(float))
        self.fleet = VectorFleet(config, N, self.tick_s, self.first_hour_instances() if first_hour else None)
        self._build_state()
        # per world, the IW TTFT histogram over HIST_EDGES_S of every tick's estimate (``ttft_points``,
        # weighted by first tokens), for ``world_ttft_percentiles``; off by default (it costs a tick's time)
        self._ttft_hist = np.zeros((N, len(HIST_EDGES_S) - 1)) if ttft_histogram else None

    @staticmethod
    def check_config(config: SimConfig) -> None:
        """Refuse, by name, what the vectorized fast fidelity does not simulate."""
        if config.workload.source != "generator":
            raise ValueError("the vectorized fast fidelity draws generated days; workload.source="
                             f"{config.workload.source!r} is not supported")
        if config.slo.drop_iw_after_s is not None:
            raise ValueError("slo.drop_iw_after_s is not supported by the vectorized fast fidelity")
        if config.faults.outages or config.faults.generated:
            raise ValueError("faults (faults.outages, faults.generated) are not supported by the vectorized fast "
                             "fidelity; use SageServeEnv with fidelity=fast (the <Task>-fast-v1 task IDs)")
        if config.deployment.mode != "unified":
            raise ValueError(f"deployment.mode={config.deployment.mode!r} is not supported by the vectorized fast "
                             "fidelity (it draws unified endpoints' traffic); use the fast or detailed fidelity")

    def first_hour_instances(self) -> np.ndarray:
        """Active instances per (world, region, model) sized for each world's expected first hour."""
        from sageserve_env.capacity import instances_for_demand

        shape = (len(self.region_names), len(self.model_names))
        prompt, output = (m.reshape(shape) for m in self.traffic.token_means())
        tokens = self.traffic.first_hour_requests() * prompt[None, None]
        return instances_for_demand(self.config, tokens, prompt, output)

    def _build_history(self) -> None:
        """What replaces the per-tick history: fixed-size state per endpoint."""
        E = self._E
        self._iw_rate = np.zeros(E)  # smoothed IW requests routed per second
        self._held = np.zeros((2, 2, E))  # draining instances' requests and KV tokens per tier
        self._held_carry = np.zeros((2, E))
        self._unit = np.zeros(E)  # the largest share of requests a draining instance took
        n_ck = int(math.ceil(self._niw_sla / CHECKPOINT_S)) + 2
        self._ck_niw = np.zeros((n_ck, E))  # cumulative NIW arrivals at checkpoints, a ring
        self._ck_count = 1  # checkpoints written (the first: 0 at t = 0)

    # -- the tick loop ----------------------------------------------------------------------
    def run_until(self, t_end: float) -> None:
        """Advance every world tick by tick to ``t_end``, a tick boundary."""
        dt = self.tick_s
        k_end = int(round(t_end / dt))
        if not (math.isfinite(t_end) and abs(k_end * dt - t_end) < 1e-6 * dt):
            raise ValueError(f"run_until({t_end}): the vectorized fast fidelity runs whole ticks of {dt:g} s")
        if t_end < self.now - 1e-9:
            raise ValueError(f"run_until({t_end}) is before the current time {self.now}")
        self.changes += 1
        k = int(round(self.now / dt))
        while k < k_end:
            t0 = k * dt
            if self.fleet.activate_due(k, t0):
                self._fleet_changed = True
            self.now = (k + 1) * dt
            self._tick(dt, self.traffic.row(k))
            k += 1
        self.now = k_end * dt
        self.fleet.flush(self.now)

    def _tick(self, dt: float, row: np.ndarray) -> None:
        """One tick over every world: ``FlowSimulator``'s steps, each decision elementwise."""
        if self._fleet_changed:
            self._recount()
        committed = self._Q[:, 1].sum(axis=(0, 1))
        util = committed * self._inv_kv + self._no_instance
        routed, niw_arrivals = self._arrive(row, util)
        if self.feed_async:
            self._feed(util, committed + routed[:, 2], niw_arrivals)
        room, admitted = self._admit_all()
        fluid_queue = self._Q[W, 0, IW] > 0
        b, marg, x, t, saturated = self._iteration(dt)
        inflow = self._prefill_limited(self._A * x * dt / t, ~saturated & self._has)
        p, wait = self._prefill_queue(dt, admitted / (self._A1 * dt), marg)
        p_s, wait_s = self._slot_queue(t, 1.0 - room * self._inv_limits)
        queue_p = 1.0 - (1.0 - p) * (1.0 - p_s)
        queue_m = (wait + wait_s) / np.maximum(queue_p, 1e-12)
        queue_p = queue_p * ~(fluid_queue | saturated)
        done = self._decode(dt, inflow, t)
        if self._unit.any():
            done = done + self._drain_step(dt)
        self._latencies(inflow[0, IW], done[NIW], b, marg, t, queue_p, queue_m)

    def _arrive(self, row: np.ndarray, util: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Step 1 for every world: route the IW columns on ``util`` (SageServe's rule), add the
        arrivals to the pools; returns the routed IW (requests, prompt, tokens) and NIW requests."""
        N, n_m = self.n_worlds, len(self.model_names)
        n_k, n_c = self._key_regions.shape
        iw = row[:, : self._n_iw]
        if util.max() < self.util_threshold:
            pos = 0  # every key's first candidate: home
        else:  # the first candidate below the threshold, else the least utilized (first on ties)
            u = util.reshape(N, -1)[:, self._route_cand].reshape(N, n_k, n_m, n_c)
            below = u < self.util_threshold
            pos = np.where(below.any(3), below.argmax(3), u.argmin(3))
        routed = np.bincount(self._route_bins[self._route_rows + pos].ravel(), iw.ravel(), 3 * self._E).reshape(-1, 3)
        home = row[:, self._n_iw:].reshape(-1, HOME_COLS)
        self._add_arrivals(routed, home)
        self._iw_rate += (routed[:, 0] / self.tick_s - self._iw_rate) * -math.expm1(-self.tick_s / LOAD_SMOOTHING_S)
        return routed, home[:, 0]

    def _latencies(self, ft, niw_done, b, marg, t, queue_p, queue_m) -> None:
        """Step 6 for every world: the FIFO wait from the IW queue and arrival rate, expected
        IW SLO / e2e misses, NIW deadline misses from the checkpoints, the TTFT sum."""
        sz, m, Q = self._sizes, self._expected, self._Q
        w0 = self._wait
        self._served[IW] += ft
        queued = Q[W, 0, IW] + Q[P, 0, IW]
        self._wait = np.where(queued > 0, np.minimum(queued / np.maximum(self._iw_rate, 1e-9), self.now), 0.0)
        bnd = BOUNDARY_WAIT * t * np.minimum(b, 1.0)
        mean_ttft = bnd + self._ttft_mean_base + self._chunks_mean * marg
        worst = np.maximum(w0, self._wait) + bnd + self._ttft_max_base + self._chunks_max * marg + 15.0 * queue_m
        late = np.flatnonzero((worst > self._iw_sla) & (ft > 0))
        if len(late):  # the closed form only where a first token can be late
            ttft = (self._delay + bnd[late])[:, None] + sz.prefill[late] + sz.chunks[late] * marg[late, None]
            p_late = self._late(w0[late], self._wait[late], queue_p[late], queue_m[late], self._iw_sla - ttft)
            m[0, late] += ft[late] * (p_late @ sz.weights)
        if self.iw_e2e_s is not None:
            e2e = mean_ttft[:, None] + (sz.output_q - 1) * t[:, None]
            m[1] += ft * (self._late(w0, self._wait, queue_p, queue_m, self.iw_e2e_s - e2e) @ sz.weights)
        self._checkpoint()
        if self.now > self._niw_sla:
            due = self._niw_arrived_at(self.now - self._niw_sla)
            m[2] += np.maximum(np.minimum(self._served[NIW] + niw_done, due) - self._served[NIW], 0.0)
        self._served[NIW] += niw_done
        m[3] += ft * (0.5 * (w0 + self._wait) + queue_p * queue_m + mean_ttft)
        if self._ttft_hist is not None:
            self._add_ttft(ft, w0, bnd, marg, queue_p, queue_m)

    def _add_ttft(self, ft, w0, bnd, marg, queue_p, queue_m) -> None:
        """This tick's first tokens into the TTFT histograms of their worlds."""
        sz, hist = self._sizes, self._ttft_hist
        wait, weight, base = ttft_points(ft, w0, self._wait, bnd, marg, queue_p, queue_m, sz.prefill, sz.chunks,
                                         self._delay)
        at = histogram_bins(wait[:, :, None] + base[:, None, :])  # (N E, points, K)
        at += (np.arange(self._E) // self.n_endpoints * hist.shape[1])[:, None, None]
        hist += np.bincount(at.ravel(), (weight[:, :, None] * sz.weights).ravel(), hist.size).reshape(hist.shape)

    def _checkpoint(self) -> None:
        """At every CHECKPOINT_S boundary, the cumulative NIW arrivals into the ring."""
        if self.now >= self._ck_count * CHECKPOINT_S - 1e-9:
            self._ck_niw[self._ck_count % len(self._ck_niw)] = self._home[:, 0]
            self._ck_count += 1

    def _niw_arrived_at(self, t: float) -> np.ndarray:
        """Cumulative NIW arrivals per endpoint at ``t`` (linear between checkpoints, the
        arrivals so far after the last one)."""
        j = int(t // CHECKPOINT_S)
        ring = self._ck_niw
        if j + 1 < self._ck_count:
            frac = (t - j * CHECKPOINT_S) / CHECKPOINT_S
            lo, hi = ring[j % len(ring)], ring[(j + 1) % len(ring)]
            return lo + frac * (hi - lo)
        return ring[(self._ck_count - 1) % len(ring)].copy()

    def _slot_queue(self, t: np.ndarray, occupancy: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """``FlowSimulator._slot_queue`` with rho^power as exp(power log rho) floored at
        exp(-700): the same figure, without the slow subnormal results of a tiny rho to a large
        power (they took a quarter of a tick)."""
        rho_s = np.minimum(occupancy.max(0), RHO_MAX)
        p_s = np.exp(np.maximum(self._slot_power * np.log(np.maximum(rho_s, 1e-300)), -700.0))
        return p_s, p_s * self._slot_service * t / (1.0 - rho_s)

    # -- draining: one pool per endpoint ------------------------------------------------------
    def _drain_hook(self, n: np.ndarray) -> np.ndarray:
        """``n`` (N, E) instances drain: idle ones first (to spot at once), then busy ones, which
        take their share of the endpoint's decoding requests; returns how many go to spot."""
        n = n.reshape(-1).astype(float)
        active = self.fleet.endpoint_counts(ACTIVE).reshape(-1).astype(float)
        requests, reserved, _ = self._endpoint_pools()
        busy = self._busy(requests, reserved, active, self._cap)
        n_idle = np.minimum(n, active - busy)
        n_busy = n - n_idle
        share = np.where(busy > 0, n_busy / np.maximum(busy, 1.0), 0.0)
        dec = self._Q[D]
        req = np.floor(dec[0] * share)
        tok = np.where(req == dec[0], dec[1], np.maximum(np.floor(dec[1] * share), req))
        moved = req.sum(0) > 0
        req, tok = req * moved, tok * moved
        dec -= np.stack([req, tok])
        self._held += np.stack([req, tok])
        self._unit = np.where(moved, np.maximum(self._unit, req.sum(0) / np.maximum(n_busy, 1.0)), self._unit)
        self._fleet_changed = True
        return (n_idle + np.where(moved, 0.0, n_busy)).reshape(self.n_worlds, -1).astype(np.int64)

    def _undrain_hook(self, u: np.ndarray, k: np.ndarray) -> None:
        """``u`` of the ``k`` (N, E) draining instances serve again: their share back to D."""
        u, k = u.reshape(-1).astype(float), k.reshape(-1).astype(float)
        frac = np.where(k > 0, u / np.maximum(k, 1.0), 0.0)
        back = np.where(u >= k, self._held, np.floor(self._held * frac))
        self._held -= back
        self._Q[D] += back
        self._unit = np.where(self._held[0].sum(0) > 0, self._unit, 0.0)
        self._fleet_changed = True

    def _drain_step(self, dt: float) -> np.ndarray:
        """Advance the draining pools like D (at the batch per draining instance); instances the
        pool no longer needs go to spot at the tick's end. Returns the completions per tier.
        Only the endpoints with draining instances, a pool or a carried fraction change, and
        they are few (drains finish within ticks): the step runs over those alone."""
        sz = self._sizes
        k_all = self.fleet.endpoint_counts(DRAINING).reshape(-1)
        at = np.flatnonzero(k_all | (self._unit > 0) | self._held_carry.any(0))
        out = np.zeros((2, self._E))
        if not len(at):
            return out
        k = k_all[at].astype(float)
        req, tok = self._held[0][:, at], self._held[1][:, at]
        carry = self._held_carry[:, at]
        k1 = np.maximum(k, 1.0)
        t = self._db[at] + (self._ds[at] * req.sum(0) + self._dk_context[at] * tok.sum(0)) / k1
        done = self._integral(req * -np.expm1(-dt / (sz.output[at] * t)), req, carry)
        self._held_carry[:, at] = carry
        left = req - done
        gone = np.where(left == 0, tok, np.minimum(np.rint(tok * -np.expm1(-dt / (sz.token_iters[at] * t))),
                                                   tok - left))
        self._held[0][:, at], self._held[1][:, at] = left, tok - gone
        self._done[0][:, at] += done
        self._done[1][:, at] += gone
        rest = left.sum(0)
        unit = self._unit[at]
        needed = np.where(rest > 0, np.minimum(k, np.ceil(rest / np.maximum(unit, 1.0))), 0.0)
        release = k - needed
        if release.any():  # draining -> spot: the active instances, all ``_recount`` reads, stay
            every = np.zeros(self._E)
            every[at] = release
            self.fleet.release(every.reshape(self.n_worlds, -1), self.now)
        self._unit[at] = np.where(rest > 0, unit, 0.0)
        out[:, at] = done
        return out

    # -- scaling ------------------------------------------------------------------------------
    def scale_all(self, deltas: np.ndarray) -> ScaleOutcome:
        """Every endpoint of every world asks for ``deltas`` (N, E) more or fewer instances
        (``VectorFleet.scale``; the traffic follows through the drain and undrain hooks)."""
        self.changes += 1
        out = self.fleet.scale(deltas, self.now, self._drain_hook, self._undrain_hook)
        if out.applied.any():
            self._fleet_changed = True
        return out

    # -- what the env reads ---------------------------------------------------------------
    def world_statistics(self) -> np.ndarray:
        """The statistics array of every world, (N, E, ``len(Stat)``)."""
        return self.statistics().reshape(self.n_worlds, self.n_endpoints, -1)

    def world_gpu_seconds(self) -> np.ndarray:
        """GPU-seconds so far per (world, region, model or none, state)."""
        return self.fleet.gpu_seconds_by_state(self.now)

    def endpoint_overdue(self) -> np.ndarray:
        """Per world and endpoint, IW requests without a first token past their SLO (FIFO at the
        smoothed arrival rate) and NIW requests unfinished past their deadline: (N, E, 2)."""
        queued = self._Q[W, 0, IW] + self._Q[P, 0, IW]
        iw = np.floor(np.maximum(queued - self._iw_rate * self._iw_sla, 0.0))
        due = self._niw_arrived_at(self.now - self._niw_sla) if self.now > self._niw_sla else np.zeros(self._E)
        niw = np.floor(np.maximum(due - self._served[NIW], 0.0))
        return np.stack([iw.reshape(self.n_worlds, -1), niw.reshape(self.n_worlds, -1)], axis=2)

    def world_overdue(self) -> np.ndarray:
        """``endpoint_overdue`` summed over each world's endpoints: (N, 2)."""
        return self.endpoint_overdue().sum(1)

    def world_ttft_histograms(self) -> np.ndarray:
        """Per world, IW first tokens per TTFT bin of HIST_EDGES_S (``ttft_histogram=True``): (N, bins)."""
        if self._ttft_hist is None:
            raise ValueError("TTFT histograms need VectorFlow(..., ttft_histogram=True)")
        return self._ttft_hist.copy()

    def world_ttft_percentiles(self) -> List[dict]:
        """Per world, the IW TTFT percentiles (``iw_ttft_p50`` ...) of ``metrics.summarize``, from the
        histogram of the per-tick estimates (``ttft_histogram=True``)."""
        return [FlowRequests.percentiles("iw_ttft", h) for h in self.world_ttft_histograms()]

    def world_iw_slo(self) -> np.ndarray:
        """Per world, IW requests that met their TTFT SLO and that missed it (late first token,
        dropped, or unserved past it), as ``metrics.summarize`` counts them: (N, 2)."""
        c = self._totals()
        late = self.statistics()[:, Stat.IW_SLO_MISSES]
        met = (c["iw_first_tokens"] - late).reshape(self.n_worlds, -1).sum(1)
        missed = (late + self._home[:, 2]).reshape(self.n_worlds, -1).sum(1) + self.world_overdue()[:, 0]
        return np.stack([met, missed], axis=1)

    def world_problems(self) -> List[Optional[str]]:
        """Per world, what breaks an invariant (None if nothing): requests and tokens conserved
        per endpoint, no pool negative or fractional, the fleet's counts, the draining pools."""
        N, E1 = self.n_worlds, self.n_endpoints
        problems = self.fleet.check(self.now)
        pools = np.concatenate([self._Q.reshape(-1, self._E), self._F, self._held.reshape(-1, self._E)])
        bad_pool = ((pools < 0) | (pools != np.floor(pools))).reshape(-1, N, E1).any(axis=(0, 2))
        held = self._Q.sum(axis=(0, 2)) + self._F + self._held.sum(1)
        c = self._totals()
        arrived = np.stack([c["arrived"], c["arrived_tokens"]])
        accounted = held + self._done.sum(1) + np.stack([c["dropped"], c["dropped_tokens"]])
        lost = (arrived != accounted).reshape(2, N, E1).any(axis=(0, 2))
        draining = self.fleet.endpoint_counts(DRAINING).reshape(-1)
        orphan = ((self._held[0].sum(0) > 0) & (draining == 0)).reshape(N, E1).any(1)
        for n in range(N):
            if problems[n] is None:
                problems[n] = ("a flow pool is negative or fractional" if bad_pool[n] else
                               "requests or tokens not conserved" if lost[n] else
                               "a draining pool holds requests without a draining instance" if orphan[n] else None)
        return problems
