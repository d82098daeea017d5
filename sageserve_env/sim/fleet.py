"""The fleet: every region's servers by (model held, state), the scaling rules, GPU-second
accounting, the scaling log and the instance-count timeline.

Both fidelities compose one ``Fleet``. It holds counts, not server objects, so its rules apply
as they are to a fidelity that keeps no servers; what a scaling step does to the traffic (which
instance drains, where its requests go) is the fidelity's, through ``ScalingHooks``.

States (``ACTIVE``, ``STARTING``, ``DRAINING``, ``SPOT``, ``FREE``, ``DOWN``): every server is in
exactly one. A server in ``FREE`` or ``DOWN`` (failed, ``fail``/``restore``) holds no model (model
column ``NO_MODEL``); every other one holds one. Down servers are not billed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import List, Optional, Protocol, Tuple

import numpy as np

from sageserve_env.config import SimConfig

ACTIVE, STARTING, DRAINING, SPOT, FREE, DOWN = range(6)
STATE_NAMES = ("active", "starting", "draining", "spot", "free", "down")
BILLED_STATES = (ACTIVE, STARTING, DRAINING)
NO_MODEL = -1  # model index of a server that holds none (the last model column of the counts)


class ScaleKind(str, Enum):
    """What one applied instance change was."""

    UNDRAIN = "undrain"  # a draining instance kept (immediate)
    RECLAIM = "reclaim"  # a spot server still holding the model (``reclaim_s``)
    LOAD_FREE = "load_free"  # a server holding no model (``spin_up_s``)
    LOAD_OTHER = "load_other"  # scaling level 2: another model's spot server (``spin_up_s``)
    DRAIN = "drain"  # an active instance drains, then goes to spot

    __str__ = str.__str__


SCALE_UPS = (ScaleKind.UNDRAIN, ScaleKind.RECLAIM, ScaleKind.LOAD_FREE, ScaleKind.LOAD_OTHER)


class Refusal(Enum):
    """Why a scaling step was not made."""

    SCALING_DISABLED = "scaling.level is 0: scaling disabled"
    NO_SERVER = "no spot or free server in {region}"
    NO_SERVER_LEVEL_1 = "no spot or free server in {region} (scaling.level 1 cannot take other models' spot servers)"
    MIN_INSTANCES = "endpoint keeps at least scaling.min_instances={min_instances}"
    NOTHING_ACTIVE = "no active instance to drain (the others are still starting)"
    INTERVAL = "scaling.interval_s={interval_s:g}: the endpoint last scaled {ago:g} s ago"


@dataclass(frozen=True)
class ScaleResult:
    """What a scaling request did: ``applied`` of ``requested`` instances, and why not the rest."""

    region: str
    model: str
    requested: int
    applied: int
    kinds: Tuple[ScaleKind, ...]  # one per applied change
    refusal: Optional[Refusal] = None
    refused_reason: str = ""  # ``refusal`` in words, with the region and settings filled in

    @property
    def refused(self) -> int:
        return abs(self.requested) - abs(self.applied)


class ScalingHooks(Protocol):
    """What a fidelity does to its traffic when the fleet makes a scaling step."""

    def undrain(self, r: int, m: int, now: float) -> None:
        """A draining instance of endpoint (r, m) serves again."""

    def start(self, r: int, m: int, ready_at: float) -> None:
        """A new instance of (r, m) starts; it is to be activated (``Fleet.activate``) at ``ready_at``."""

    def drain(self, r: int, m: int, now: float) -> bool:
        """An active instance of (r, m) drains; False if it holds nothing and leaves at once."""

    def fail(self, r: int, m: int, state: int, k: int, now: float) -> None:
        """``k`` servers of endpoint (r, m) in ``state`` (active, starting or draining) fail: their
        instances die and their requests are retried. Called before the counts change."""


class Fleet:
    """Server counts per (region, model or none, state), and the rules that change them."""

    def __init__(self, cfg: SimConfig) -> None:
        self.region_names = list(cfg.region_names)
        self.model_names = list(cfg.model_names)
        n_r, n_m = len(self.region_names), len(self.model_names)
        self.servers = np.array([r.servers for r in cfg.regions], dtype=np.int64)
        self.gpus_per_server = np.array([cfg.hardware[r.hardware].gpus_per_server for r in cfg.regions], float)
        self.cost_per_gpu_hour = np.array([cfg.hardware[r.hardware].cost_per_gpu_hour for r in cfg.regions], float)
        self.level = cfg.scaling.level
        self.reclaim_s = cfg.scaling.reclaim_s
        self.spin_up_s = cfg.scaling.spin_up_s
        self.min_instances = cfg.scaling.min_instances
        self.interval_s = cfg.scaling.interval_s
        self.last_scaled = np.full((n_r, n_m), -np.inf)  # time of each endpoint's last scaling event
        self.counts = np.zeros((n_r, n_m + 1, len(STATE_NAMES)), dtype=np.int64)
        for r, region in enumerate(cfg.regions):
            for m, model in enumerate(self.model_names):
                self.counts[r, m, ACTIVE] = cfg.initial_instances(region.name, model)
            self.counts[r, NO_MODEL, FREE] = region.servers - self.counts[r, :n_m, ACTIVE].sum()
        self._state_seconds = np.zeros(self.counts.shape)  # server-seconds per cell
        self._counted_until = 0.0
        # (time, region, model, active, starting, draining, spot) after every change of an endpoint
        self.timeline: List[Tuple[float, int, int, int, int, int, int]] = []
        self.scale_log: List[Tuple[float, int, int, ScaleKind]] = []
        self.n_scale_downs = 0  # drains among the scale_log entries
        self.fault_log: List[Tuple[float, int, int]] = []  # (time, region, servers: -failed or +restored)
        for r in range(n_r):
            for m in range(n_m):
                self.log(r, m, 0.0)

    # -- scaling --------------------------------------------------------------------------
    def endpoint(self, region: int | str, model: int | str) -> Tuple[int, int]:
        """(region, model) indices of an endpoint given by names or indices."""
        r = region if isinstance(region, int) else _index(self.region_names, region, "region")
        m = model if isinstance(model, int) else _index(self.model_names, model, "model")
        if not (0 <= r < len(self.region_names)) or not (0 <= m < len(self.model_names)):
            raise ValueError(f"no endpoint ({region!r}, {model!r})")
        return r, m

    def scale(self, region: int | str, model: int | str, delta: int, now: float, hooks: ScalingHooks) -> ScaleResult:
        """Ask endpoint (region, model) for ``delta`` more (or, if negative, fewer) instances.

        Up: a draining instance is kept instead (immediate); else a spot server still holding
        the model is reclaimed (``reclaim_s``); else a free server is loaded, or at scaling
        level 2 the spot server of the model with the most of them (``spin_up_s``). Down: an
        active instance drains (finishes its requests, then goes to spot), never below
        ``min_instances`` active + starting. Steps stop at the first refusal.
        """
        r, m = self.endpoint(region, model)
        delta = int(delta)
        kinds: List[ScaleKind] = []
        refusal = Refusal.SCALING_DISABLED if delta and self.level == 0 else None
        if delta and refusal is None and 0 <= self.interval_s and now - self.last_scaled[r, m] < self.interval_s:
            refusal = Refusal.INTERVAL  # the test of may_scale, for one endpoint
        for _ in range(abs(delta) if refusal is None else 0):
            step = self._up(r, m, now, hooks) if delta > 0 else self._down(r, m, now, hooks)
            if isinstance(step, Refusal):
                refusal = step
                break
            kinds.append(step)
            self.scale_log.append((now, r, m, step))
            self.n_scale_downs += step is ScaleKind.DRAIN
            self.log(r, m, now)
        applied = len(kinds) if delta > 0 else -len(kinds)
        reason = refusal.value.format(region=self.region_names[r], min_instances=self.min_instances,
                                      interval_s=self.interval_s, ago=now - self.last_scaled[r, m]) if refusal else ""
        if kinds:
            self.last_scaled[r, m] = now
        return ScaleResult(self.region_names[r], self.model_names[m], delta, applied, tuple(kinds), refusal, reason)

    def may_scale(self, now: float) -> np.ndarray:
        """Endpoints (regions, models) whose ``scaling.interval_s`` since their last scaling
        event has passed (all, with -1: no limit)."""
        if self.interval_s < 0:
            return np.ones(self.last_scaled.shape, dtype=bool)
        return now - self.last_scaled >= self.interval_s

    def _up(self, r: int, m: int, now: float, hooks: ScalingHooks) -> ScaleKind | Refusal:
        c = self.counts[r]
        if c[m, DRAINING]:
            self._move(r, m, DRAINING, m, ACTIVE, now)
            hooks.undrain(r, m, now)
            return ScaleKind.UNDRAIN
        if c[m, SPOT]:
            donor, delay, kind = m, self.reclaim_s, ScaleKind.RECLAIM
        elif c[NO_MODEL, FREE]:
            donor, delay, kind = NO_MODEL, self.spin_up_s, ScaleKind.LOAD_FREE
        elif self.level >= 2 and c[:-1, SPOT].any():
            donor, delay, kind = int(c[:-1, SPOT].argmax()), self.spin_up_s, ScaleKind.LOAD_OTHER
        else:
            return Refusal.NO_SERVER if self.level >= 2 else Refusal.NO_SERVER_LEVEL_1
        self._move(r, donor, FREE if donor == NO_MODEL else SPOT, m, STARTING, now)
        if kind is ScaleKind.LOAD_OTHER:
            self.log(r, donor, now)
        hooks.start(r, m, now + delay)
        return kind

    def _down(self, r: int, m: int, now: float, hooks: ScalingHooks) -> ScaleKind | Refusal:
        c = self.counts[r, m]
        if c[ACTIVE] + c[STARTING] - 1 < self.min_instances:
            return Refusal.MIN_INSTANCES
        if not c[ACTIVE]:
            return Refusal.NOTHING_ACTIVE
        self._move(r, m, ACTIVE, m, DRAINING, now)
        if not hooks.drain(r, m, now):
            self._move(r, m, DRAINING, m, SPOT, now)
        self.log(r, m, now)
        return ScaleKind.DRAIN

    def activate(self, r: int, m: int, now: float) -> None:
        """A starting instance of (r, m) finished loading."""
        self._move(r, m, STARTING, m, ACTIVE, now)
        self.log(r, m, now)

    def release(self, r: int, m: int, now: float) -> None:
        """A draining instance of (r, m) finished its last request: its server goes to spot."""
        self._move(r, m, DRAINING, m, SPOT, now)
        self.log(r, m, now)

    def fail(self, r: int, n: int, now: float, hooks: ScalingHooks) -> int:
        """``n`` of region ``r``'s servers that are up fail (all of them if fewer are up); returns
        how many did. A fault hits servers whatever they hold: the failures are spread over the
        region's (model, state) cells in proportion to their servers (largest remainders, ties
        to the first cell), so both fidelities take the same cells. Instances on them die
        (``hooks.fail``); their servers, spot and free ones too, go ``DOWN`` and hold no model."""
        up = self.counts[r, :, :DOWN].ravel()
        n = int(min(n, up.sum()))
        if n <= 0:
            return 0
        quota = up * n / up.sum()
        take = np.floor(quota).astype(np.int64)
        extra = np.argsort(-(quota - take), kind="stable")[: n - int(take.sum())]
        take[extra] += 1
        self._flush(now)
        n_states = DOWN
        for cell in np.flatnonzero(take):
            m, state, k = int(cell) // n_states, int(cell) % n_states, int(take[cell])
            model = NO_MODEL if m == len(self.model_names) else m
            if state in BILLED_STATES:
                hooks.fail(r, model, state, k, now)
            self.counts[r, model, state] -= k
            self.counts[r, NO_MODEL, DOWN] += k
            if model != NO_MODEL:
                self.log(r, model, now)
        self.fault_log.append((now, r, -n))
        return n

    def restore(self, r: int, n: int, now: float) -> None:
        """``n`` down servers of region ``r`` are repaired. They come back ``FREE``: a failed
        server is reimaged, so it holds no model and serves again only after a full load
        (``spin_up_s``), not a reclaim."""
        if not 0 <= n <= self.counts[r, NO_MODEL, DOWN]:
            raise ValueError(f"cannot restore {n} servers of region {self.region_names[r]}: "
                             f"{int(self.counts[r, NO_MODEL, DOWN])} are down")
        self._flush(now)
        self.counts[r, NO_MODEL, DOWN] -= n
        self.counts[r, NO_MODEL, FREE] += n
        self.fault_log.append((now, r, n))

    def down(self) -> np.ndarray:
        """Servers down per region."""
        return self.counts[:, NO_MODEL, DOWN].copy()

    def _move(self, r: int, model_from: int, state_from: int, model_to: int, state_to: int, now: float) -> None:
        self._flush(now)
        self.counts[r, model_from, state_from] -= 1
        self.counts[r, model_to, state_to] += 1

    # -- accounting -----------------------------------------------------------------------
    def _flush(self, now: float) -> None:
        """Add ``counts x (now - counted_until)`` to the server-second integrals."""
        if now > self._counted_until:
            self._state_seconds += self.counts * (now - self._counted_until)
            self._counted_until = now

    def gpu_seconds_by_state(self, now: float) -> np.ndarray:
        """GPU-seconds up to ``now`` per (region, model or none, state)."""
        self._flush(now)
        return self._state_seconds * self.gpus_per_server[:, None, None]

    def log(self, r: int, m: int, now: float) -> None:
        """Append endpoint (r, m)'s instance counts at ``now`` to the timeline."""
        c = self.counts[r, m]
        self.timeline.append((now, r, m, int(c[ACTIVE]), int(c[STARTING]), int(c[DRAINING]), int(c[SPOT])))

    def check(self, now: float) -> Optional[str]:
        """What is wrong with the counts (None if nothing): negative cells, a region's servers
        not adding up, a model-less server in a state other than free, or GPU-seconds by state
        that do not add up to fleet x duration."""
        c = self.counts
        if (c < 0).any():
            return "a server count is negative"
        if not np.array_equal(c.sum(axis=(1, 2)), self.servers):
            return f"servers per region {c.sum(axis=(1, 2)).tolist()} != {self.servers.tolist()}"
        if c[:, NO_MODEL, :FREE].any() or c[:, :-1, FREE:].any():
            return "a server holding no model is not free or down, or a free or down server holds a model"
        gpu_s = float(self.gpu_seconds_by_state(now).sum())
        fleet_gpu_s = float((self.gpus_per_server * self.servers).sum() * now)
        if not np.isclose(gpu_s, fleet_gpu_s, rtol=1e-9, atol=1e-6):
            return f"GPU-seconds by state {gpu_s} != fleet x duration {fleet_gpu_s}"
        return None


def _index(names: List[str], name: str, what: str) -> int:
    if name not in names:
        raise ValueError(f"unknown {what} {name!r}; known: {names}")
    return names.index(name)
