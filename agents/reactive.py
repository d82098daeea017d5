"""SageServe's basic arbiter: scale each endpoint on its memory utilization, one step at a time."""

from __future__ import annotations

from typing import Optional

import numpy as np

from agents.base import Policy, deltas_to_action
from sageserve_env.env.view import EndpointState, SimView


def scale_up_delays(view: SimView, st: EndpointState, want: np.ndarray) -> np.ndarray:
    """Seconds until one more instance would serve, for each endpoint in ``want`` (inf where
    its region has nothing left or scaling is off), following the simulator's order: keep a
    draining instance (0 s), reclaim a spot server still holding the model (``reclaim_s``),
    load a free server or, at scaling level 2, another model's spot server (``spin_up_s``).
    Endpoints of one region draw on one pool, in (region, model) order."""
    delays = np.full(want.shape, np.inf)
    if view.scaling_level == 0:
        return delays
    spot, free = view.spot_servers(), view.free_servers()
    for r, m in zip(*np.nonzero(want)):
        if st.draining[r, m] > 0:
            delays[r, m] = 0.0
        elif spot[r, m] > 0:
            spot[r, m] -= 1
            delays[r, m] = view.reclaim_s
        elif free[r] > 0:
            free[r] -= 1
            delays[r, m] = view.spin_up_s
        elif view.scaling_level >= 2 and spot[r].sum() > 0:
            spot[r, np.argmax(spot[r])] -= 1
            delays[r, m] = view.spin_up_s
    return delays


def can_scale_down(view: SimView, st: EndpointState) -> np.ndarray:
    """Endpoints that may drain one instance without going below ``min_instances``."""
    return (st.active >= 1) & (st.active + st.starting - 1 >= view.min_instances) & (view.scaling_level > 0)


class Cooldown:
    """Per-endpoint waits between changes, as SageServe's arbiters keep them: after a scale-up
    the endpoint waits out that change's delay (``reclaim_s`` or ``spin_up_s``), after a
    scale-down ``down_cooldown_s`` (default ``reclaim_s``)."""

    def __init__(self, env, down_cooldown_s: Optional[float] = None) -> None:
        view = env.view()
        self._until = np.zeros((env.n_regions, env.n_models))
        self._down_wait = view.reclaim_s if down_cooldown_s is None else down_cooldown_s

    def changes(self, view: SimView, st: EndpointState, want_up: np.ndarray, want_down: np.ndarray):
        """The wanted scale-ups and scale-downs (boolean arrays) that are not waiting and can be
        made; starts their waits."""
        now = view.now
        ready = now >= self._until
        up = ready & want_up
        delays = scale_up_delays(view, st, up)
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
    """

    name = "reactive"

    def __init__(self, decision_interval_s: float = 10.0, up_threshold: float = 0.5,
                 down_threshold: float = 0.25, down_cooldown_s: Optional[float] = None) -> None:
        self.decision_interval_s = decision_interval_s
        self.up_threshold = up_threshold
        self.down_threshold = down_threshold
        self.down_cooldown_s = down_cooldown_s

    def reset(self, env, seed=None):
        self._cooldown = Cooldown(env, self.down_cooldown_s)
        self._ups = self._downs = 0

    def act(self, obs, env):
        view = env.view()
        st = view.endpoints()
        up, down = self._cooldown.changes(view, st, st.utilization > self.up_threshold,
                                          st.utilization < self.down_threshold)
        self._ups += int(up.sum())
        self._downs += int(down.sum())
        return deltas_to_action(env, up.astype(np.int64) - down.astype(np.int64))

    def stats(self):
        return {"scale_up_requests": self._ups, "scale_down_requests": self._downs}
