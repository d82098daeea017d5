"""The one interface every policy implements, heuristic or learned."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Dict, Optional

import numpy as np

from sageserve_env.env.sageserve_env import SageServeEnv


class Policy(ABC):
    """Maps the env's observation (heuristics may also read ``env.view()``) to an action.

    ``decision_interval_s`` is the policy's natural decision interval (None: the env's);
    ``env_kwargs()`` adds any other env settings the policy depends on (a learned agent needs
    the action bounds it was trained with). ``reset`` is called after every ``env.reset``.
    """

    name = "policy"
    decision_interval_s: Optional[float] = None

    def env_kwargs(self) -> Dict[str, Any]:
        """SageServeEnv keywords this policy needs, beyond the scenario."""
        return {} if self.decision_interval_s is None else {"decision_interval_s": self.decision_interval_s}

    def check_env(self, env: SageServeEnv) -> None:
        """Raise ValueError unless this policy can act in ``env`` (called before any episode
        runs, so that a mismatch is a configuration error, not a failure mid-run)."""

    def reset(self, env: SageServeEnv, seed: Optional[int] = None) -> None:
        """Prepare for a new episode of ``env`` (the unwrapped env)."""

    @abstractmethod
    def act(self, obs: Dict[str, np.ndarray], env: SageServeEnv) -> np.ndarray:
        """The action for this decision point."""

    def stats(self) -> Dict[str, Any]:
        """Figures the policy wants reported with the run (forecast error, solve times...)."""
        return {}


def deltas_to_action(env: SageServeEnv, deltas: np.ndarray) -> np.ndarray:
    """Encode per-(region, model) instance changes as the env's MultiDiscrete action
    (changes beyond ``max_delta`` are clipped; the policy tries again next step)."""
    d = np.clip(np.rint(np.asarray(deltas)).astype(np.int64), -env.max_delta, env.max_delta)
    return (d + env.max_delta).reshape(-1)


class StaticPolicy(Policy):
    """Keeps the initial allocation: never scales."""

    name = "static"

    def act(self, obs, env):
        return deltas_to_action(env, np.zeros((env.n_regions, env.n_models)))


class RandomPolicy(Policy):
    """Uniformly random valid changes (sampled from the action masks)."""

    name = "random"

    def reset(self, env, seed=None):
        self.rng = np.random.default_rng(seed)

    def act(self, obs, env):
        masks = env.action_masks().reshape(env.n_endpoints, -1)
        return np.array([self.rng.choice(np.flatnonzero(m)) for m in masks], dtype=np.int64)
