"""SageServe's basic arbiter: scale each endpoint on its memory utilization, one step at a time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from agents.base import Policy, deltas_to_action
from sageserve_env.config import ArbiterConfig
from sageserve_env.env.view import EndpointState, SimView
from sageserve_env.sim.stats import Stat


@dataclass(frozen=True)
class UpWaits:
    """Seconds an arbiter waits after each kind of scale-up before acting on that endpoint
    again: keeping a draining instance, reclaiming an own-model spot server, loading a server."""

    undrain: float
    reclaim: float
    spin_up: float

    @classmethod
    def of(cls, view: SimView, arbiter: Optional[ArbiterConfig] = None) -> "UpWaits":
        """The simulator's own delays (ours), or the arbiter's fixed waits where ``arbiter``
        sets them (SageServe's ``overheads``: 65 s after a reclaim, 155 s after a spin-up,
        whatever the allocator's delay; an instance it gave away is reclaimed from spot)."""
        if arbiter is None or arbiter.reclaim_wait_s is None:
            undrain, reclaim = 0.0, view.reclaim_s
        else:
            undrain = reclaim = arbiter.reclaim_wait_s
        spin_up = view.spin_up_s if arbiter is None or arbiter.spin_up_wait_s is None else arbiter.spin_up_wait_s
        return cls(undrain, reclaim, spin_up)


def scale_up_delays(view: SimView, st: EndpointState, want: np.ndarray, waits: Optional[UpWaits] = None) -> np.ndarray:
    """Seconds until one more instance would serve, for each endpoint in ``want`` (inf where
    its region has nothing left or scaling is off), following the simulator's order: keep a
    draining instance (0 s), reclaim a spot server still holding the model (``reclaim_s``),
    load a free server or, at scaling level 2, another model's spot server (``spin_up_s``).
    Endpoints of one region draw on one pool, in (region, model) order. ``waits`` replaces
    the three delays (an arbiter's own waits, ``UpWaits.of``)."""
    w = waits or UpWaits.of(view)
    delays = np.full(want.shape, np.inf)
    if view.scaling_level == 0:
        return delays
    spot, free = view.spot_servers(), view.free_servers()
    for r, m in zip(*np.nonzero(want)):
        if st.draining[r, m] > 0:
            delays[r, m] = w.undrain
        elif spot[r, m] > 0:
            spot[r, m] -= 1
            delays[r, m] = w.reclaim
        elif free[r] > 0:
            free[r] -= 1
            delays[r, m] = w.spin_up
        elif view.scaling_level >= 2 and spot[r].sum() > 0:
            spot[r, np.argmax(spot[r])] -= 1
            delays[r, m] = w.spin_up
    return delays


class Trigger:
    """Which endpoints an arbiter considers at a step. ``interval`` (ours): every endpoint at
    every step. ``arrival`` (SageServe: the endpoint router calls the arbiter for each request
    it routes, ``model_endpoint_router.RoundRobin.route``): only endpoints that requests reached
    since the previous step (``Stat.ARRIVED``), so an idle endpoint never scales."""

    def __init__(self, env, mode: str) -> None:
        self.mode = mode
        self._shape = (env.n_regions, env.n_models)
        self._seen = np.zeros(self._shape)

    def decisions(self, view: SimView) -> np.ndarray:
        """Decisions each endpoint takes at this step (int array): one each (``interval``), or
        one per request that reached it since the previous step (``arrival``)."""
        if self.mode == "interval":
            return np.ones(self._shape, dtype=np.int64)
        arrived = view.statistics()[:, Stat.ARRIVED].reshape(self._shape)
        n = (arrived - self._seen).astype(np.int64)
        self._seen = arrived.copy()
        return n


def can_scale_down(view: SimView, st: EndpointState) -> np.ndarray:
    """Endpoints that may drain one instance without going below ``min_instances``."""
    return (st.active >= 1) & (st.active + st.starting - 1 >= view.min_instances) & (view.scaling_level > 0)


class Cooldown:
    """Per-endpoint waits between changes, as SageServe's arbiters keep them: after a scale-up
    the endpoint waits out that change's delay (``reclaim_s`` or ``spin_up_s``, or ``up_waits``),
    after a scale-down ``down_cooldown_s`` (default ``reclaim_s``)."""

    def __init__(self, env, down_cooldown_s: Optional[float] = None, up_waits: Optional[UpWaits] = None) -> None:
        view = env.view()
        self._until = np.zeros((env.n_regions, env.n_models))
        self._down_wait = view.reclaim_s if down_cooldown_s is None else down_cooldown_s
        self._up_waits = up_waits

    def changes(self, view: SimView, st: EndpointState, want_up: np.ndarray, want_down: np.ndarray):
        """The wanted scale-ups and scale-downs (boolean arrays) that are not waiting and can be
        made; starts their waits."""
        now = view.now
        ready = now >= self._until
        up = ready & want_up
        delays = scale_up_delays(view, st, up, self._up_waits)
        up &= np.isfinite(delays)
        down = ready & want_down & can_scale_down(view, st)
        self._until = np.where(up, now + delays, np.where(down, now + self._down_wait, self._until))
        return up, down


class ReactivePolicy(Policy):
    """Per endpoint: memory utilization above ``up_threshold`` adds an instance, below
    ``down_threshold`` drains one; after acting on an endpoint the policy leaves it alone until
    that action has taken effect.

    The wait after a scale-up is the action's own delay (0 s to keep a draining instance,
    ``reclaim_s`` for an own-model spot server, ``spin_up_s`` otherwise), as in SageServe. A
    scale-down waits ``down_cooldown_s`` (default: ``reclaim_s``, the time to undo it; SageServe
    used 0 s but decided on every arrival). Decisions are taken every ``decision_interval_s``
    (SageServe reacted on every request arrival; 10 s keeps runs fast and is well below every
    scaling delay).

    The scenario's ``arbiter`` section can make it decide as SageServe's ``BasicArbiter`` does
    (``docs/compat.md``): only where requests arrived (``trigger: arrival``: one decision per
    request that reached the endpoint since the last step, so with no wait after a scale-down
    as many instances may go as requests came, each decision reading the utilization of the
    step: with join-shortest-queue routing an instance leaves with its share of the load and of
    the memory alike), fixed waits after a scale-up (``reclaim_wait_s``, ``spin_up_wait_s``) and
    ``down_wait_s`` after a scale-down (an explicit ``down_cooldown_s`` wins).
    """

    name = "reactive"

    def __init__(self, decision_interval_s: float = 10.0, up_threshold: float = 0.5,
                 down_threshold: float = 0.25, down_cooldown_s: Optional[float] = None) -> None:
        self.decision_interval_s = decision_interval_s
        self.up_threshold = up_threshold
        self.down_threshold = down_threshold
        self.down_cooldown_s = down_cooldown_s

    def reset(self, env, seed=None):
        arbiter = env.sim_config.arbiter
        down = self.down_cooldown_s if self.down_cooldown_s is not None else arbiter.down_wait_s
        down = env.view().reclaim_s if down is None else down
        self._cooldown = Cooldown(env, down, UpWaits.of(env.view(), arbiter))
        self._trigger = Trigger(env, arbiter.trigger)
        self._repeat_downs = arbiter.trigger == "arrival" and down == 0  # one scale-down per arrival
        self._ups = self._downs = 0

    def act(self, obs, env):
        view = env.view()
        st = view.endpoints()
        decisions = self._trigger.decisions(view)
        due = decisions > 0
        up, down = self._cooldown.changes(view, st, due & (st.utilization > self.up_threshold),
                                          due & (st.utilization < self.down_threshold))
        downs = down.astype(np.int64)
        if self._repeat_downs:
            room = np.minimum(st.active, st.active + st.starting - view.min_instances)
            downs = np.where(down, np.minimum(decisions, room), 0)
        self._ups += int(up.sum())
        self._downs += int(downs.sum())
        return deltas_to_action(env, up.astype(np.int64) - downs)

    def stats(self):
        return {"scale_up_requests": self._ups, "scale_down_requests": self._downs}
