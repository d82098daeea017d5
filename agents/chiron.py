"""A Chiron-style arbiter (Patke et al., 2024: hierarchical autoscaling for LLM serving).

Chiron keeps an interactive pool, scaled on the share of its instances that are busy, and a
batch pool, scaled so the queue of batch work drains before its deadline. This env has one pool
per endpoint serving both tiers, so each endpoint gets two votes of -1, 0 or +1 and takes the
larger (a scale-down needs both pools to agree):

- interactive: the busy share of the interactive pool, estimated as its offered load over its
  capacity (the share of busy servers of a queue equals offered load / capacity): IW prompt
  tokens per second of the last completed minute / (active instances x prompt tokens per second
  of one instance, from the performance model, ``agents.throughput``). Above ``busy_up`` votes
  +1, below ``busy_down`` votes -1. (The view's ``busy_fraction`` cannot be used: it counts
  instances holding NIW work too, and NIW feeding keeps every instance busy whenever batch work
  is queued, which scaled endpoints to the whole fleet.)
- batch: the time to drain the queued NIW tokens at the instances' capacity (tokens per second)
  is compared with ``deadline_slack`` x the NIW deadline: longer with the current instances
  votes +1, still shorter with one instance fewer (or nothing queued) votes -1, else 0.

Cool-downs are those of ``ReactivePolicy``.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from agents.base import Policy, deltas_to_action
from agents.reactive import Cooldown
from agents.throughput import TokenSizes, endpoint_capacities


class ChironPolicy(Policy):
    """Interactive vote on the pool's busy share, batch vote on NIW drain time; the larger wins.

    ``busy_down`` is a hysteresis band of ours: Chiron's code scaled down whenever the busy
    share was at most ``busy_up``.
    """

    name = "chiron"

    def __init__(self, decision_interval_s: float = 10.0, busy_up: float = 0.6, busy_down: float = 0.3,
                 deadline_slack: float = 0.5, down_cooldown_s: Optional[float] = None) -> None:
        self.decision_interval_s = decision_interval_s
        self.busy_up = busy_up
        self.busy_down = busy_down
        self.deadline_slack = deadline_slack
        self.down_cooldown_s = down_cooldown_s

    def reset(self, env, seed=None):
        self._cooldown = Cooldown(env, self.down_cooldown_s)
        self._slack_s = self.deadline_slack * env.sim_config.niw.deadline_s
        self._sizes = TokenSizes(env)
        self._hour = -1

    def act(self, obs, env):
        view = env.view()
        now = view.now
        if int(now // 3600) != self._hour:  # token sizes drift slowly: refresh capacities hourly
            self._hour = int(now // 3600)
            caps = endpoint_capacities(env, self._sizes)
            self._prompt_tokens_per_s = np.vectorize(lambda c: c.prompt_tokens_per_s, otypes=[float])(caps)
            self._tokens_per_s = np.vectorize(lambda c: c.tokens_per_s, otypes=[float])(caps)
        st = view.endpoints()
        n = st.active + st.starting
        history = view.demand_history()
        iw_rate = history[-1] / 60.0 if len(history) else np.zeros(n.shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            busy = np.where(iw_rate > 0, iw_rate / (st.active * self._prompt_tokens_per_s), 0.0)
        interactive = np.where(busy > self.busy_up, 1, np.where(busy < self.busy_down, -1, 0))
        with np.errstate(divide="ignore", invalid="ignore"):
            drain_now = st.queued_niw_tokens / (n * self._tokens_per_s)
            drain_fewer = st.queued_niw_tokens / ((n - 1) * self._tokens_per_s)
        queued = st.queued_niw_tokens > 0
        batch = np.where(queued & (drain_now > self._slack_s), 1,
                         np.where(~queued | (drain_fewer <= self._slack_s), -1, 0))
        vote = np.maximum(interactive, batch)
        up, down = self._cooldown.changes(view, st, vote > 0, vote < 0)
        return deltas_to_action(env, up.astype(np.int64) - down.astype(np.int64))
