"""Pieces of RL training that are not stable-baselines3's: wrappers and behaviour cloning."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback

from agents.base import Policy
from sageserve_env.env.sageserve_env import observation_features

TRAIN_SEED_LIMIT = 1000  # training days come from seeds below; evaluation uses 1000 and up
V0_VALIDATION_FROM = 900  # the v0 IDs' validation days: 900 .. 999 (Minari datasets stay below)


def seed_splits(env_id: str) -> Tuple[range, range]:
    """(training seeds, validation seeds) of ``env_id``: a benchmark task's own splits
    (``sageserve_env.tasks``), else the v0 rule (training below ``TRAIN_SEED_LIMIT``,
    validation from ``V0_VALIDATION_FROM`` to it)."""
    from sageserve_env.tasks import task

    try:
        seeds = task(env_id).seeds
    except ValueError:  # not a benchmark task: a v0 ID
        return range(TRAIN_SEED_LIMIT), range(V0_VALIDATION_FROM, TRAIN_SEED_LIMIT)
    return seeds.seeds("train"), seeds.seeds("validation")


class ValidationDays(gym.Wrapper):
    """Resets cycle through fixed seeds, so evaluations always replay the same held-out days."""

    def __init__(self, env: gym.Env, seeds: Sequence[int]):
        super().__init__(env)
        if not seeds:
            raise ValueError("ValidationDays needs at least one seed")
        self._seeds = list(seeds)
        self._next = 0

    def reset(self, *, seed=None, options=None):
        seed = self._seeds[self._next % len(self._seeds)]
        self._next += 1
        return self.env.reset(seed=seed, options=options)


class SaveNormalizerOnBest(BaseCallback):
    """For ``EvalCallback(callback_on_new_best=...)``: saves the VecNormalize statistics the new
    best model was evaluated with beside it, since the run's statistics keep moving afterwards."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)

    def _on_step(self) -> bool:
        self.model.get_vec_normalize_env().save(str(self.path))
        return True


class PhaseClock(BaseCallback):
    """Wall seconds of ``learn`` spent collecting rollouts and the rest (the updates):
    ``seconds()`` -> (rollout s, update s). Callbacks that run during a rollout (evaluation,
    checkpoints) count as rollout."""

    def __init__(self):
        super().__init__()
        self.rollout_s, self.total_s, self._mark, self._start = 0.0, 0.0, 0.0, None

    def _on_training_start(self) -> None:
        self._start = time.perf_counter()

    def _on_rollout_start(self) -> None:
        self._mark = time.perf_counter()

    def _on_rollout_end(self) -> None:
        self.rollout_s += time.perf_counter() - self._mark

    def _on_training_end(self) -> None:
        self.total_s = time.perf_counter() - self._start

    def _on_step(self) -> bool:
        return True

    def seconds(self):
        return self.rollout_s, self.total_s - self.rollout_s


def residual_change(plan: np.ndarray, adjustment: np.ndarray, reach: int, max_delta: int) -> np.ndarray:
    """The base env's action: the planner's change plus the agent's adjustment (``a - reach``)."""
    change = np.asarray(plan) + np.asarray(adjustment) - reach
    return np.clip(change, -max_delta, max_delta) + max_delta


def residual_masks(full: np.ndarray, plan: np.ndarray, reach: int, max_delta: int) -> np.ndarray:
    """Adjustments whose combined change the base env's masks allow (no change always allowed);
    ``plan`` (..., E) with any leading axes (worlds), ``full`` its masks, (..., E x choices)."""
    plan = np.asarray(plan)
    full = np.asarray(full).reshape(plan.shape + (-1,))
    adjust = np.arange(2 * reach + 1) - reach
    change = np.clip(plan[..., None] + adjust, -max_delta, max_delta) + max_delta
    masks = np.take_along_axis(full, change, axis=-1)
    masks[~masks.any(axis=-1), reach] = True
    return masks.reshape(plan.shape[:-1] + (-1,))


class ResidualPlan(gym.Wrapper):
    """The agent adjusts a planner's decision by at most ``reach`` instances per endpoint.

    The planner (``lt_i``: the hourly ILP on ARIMA forecasts) owns the long timescale; the
    agent's action ``a`` adds ``a - reach`` to the planner's change for every endpoint. The
    planner decides once per step, before the agent.
    """

    def __init__(self, env: gym.Env, planner: Policy, reach: int = 2):
        super().__init__(env)
        self.planner = planner
        self.reach = reach
        self.action_space = spaces.MultiDiscrete(np.full(env.unwrapped.n_endpoints, 2 * reach + 1, dtype=np.int64))
        self._plan = np.zeros(env.unwrapped.n_endpoints, dtype=np.int64)

    def _decide(self, obs) -> None:
        base = self.env.unwrapped
        self._plan = np.asarray(self.planner.act(obs, base)) - base.max_delta

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.planner.reset(self.env.unwrapped, seed)
        self._decide(obs)
        return obs, info

    def step(self, action):
        base = self.env.unwrapped
        obs, reward, terminated, truncated, info = self.env.step(
            residual_change(self._plan, action, self.reach, base.max_delta))
        if not (terminated or truncated):
            self._decide(obs)
        return obs, reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        base = self.env.unwrapped
        return residual_masks(base.action_masks(), self._plan, self.reach, base.max_delta)

    def adjustment_towards(self, action: np.ndarray) -> np.ndarray:
        """The agent's action that comes closest to the base env's ``action`` from this plan:
        how a demonstration by another policy reads in residual terms."""
        change = np.asarray(action).reshape(-1) - self.env.unwrapped.max_delta
        return np.clip(change - self._plan, -self.reach, self.reach) + self.reach


def find_residual(env: gym.Env) -> Optional[ResidualPlan]:
    """The ``ResidualPlan`` wrapper inside ``env``, if any."""
    while isinstance(env, gym.Wrapper):
        if isinstance(env, ResidualPlan):
            return env
        env = env.env
    return None


def flat_observation(env: gym.Env, obs: Dict[str, np.ndarray]) -> np.ndarray:
    """The Dict observation as the flat vector FlattenObservation produces."""
    return spaces.flatten(env.unwrapped.observation_space, obs)


def hidden_columns(space: spaces.Dict, features: Sequence[str]) -> np.ndarray:
    """The columns of the flat observation of ``space`` that hold ``features`` (names of
    ``observation_features``: ``queued.iw``, ``ttft``): what an agent trained with
    ``hidden_features`` sees as 0, in training, validation and when it acts (a feature the fast
    fidelity reproduces badly is one it would learn to trust wrongly). ValueError for a name
    the space does not have."""
    names = observation_features(space)
    unknown = [f for f in features if f not in names]
    if unknown:
        raise ValueError(f"unknown observation feature(s) {unknown}: the features are "
                         f"{list(dict.fromkeys(names))}")
    return np.flatnonzero(np.isin(names, list(features)))


def collect_demonstrations(make_env: Callable[[], gym.Env], expert: Policy, episodes: int,
                           seeds: Sequence[int]) -> tuple:
    """(flat observations, actions) of ``expert`` over ``episodes`` generated days.

    In a ``ResidualPlan`` env the actions are the adjustments of the plan closest to the
    expert's decisions, and the episode follows them (the states a residual agent imitating the
    expert would meet).
    """
    observations: List[np.ndarray] = []
    actions: List[np.ndarray] = []
    env = make_env()
    residual = find_residual(env)
    for i in range(episodes):
        obs, _ = env.reset(seed=int(seeds[i % len(seeds)]))
        base = env.unwrapped
        expert.reset(base, int(seeds[i % len(seeds)]))
        done = False
        while not done:
            action = np.asarray(expert.act(obs, base))
            if residual is not None:
                action = residual.adjustment_towards(action)
            observations.append(flat_observation(env, obs) if isinstance(obs, dict) else np.asarray(obs))
            actions.append(action)
            obs, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
    env.close()
    return np.asarray(observations, dtype=np.float32), np.asarray(actions, dtype=np.int64)


def behaviour_clone(model: Any, observations: np.ndarray, actions: np.ndarray, epochs: int,
                    normalize: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                    batch_size: int = 256, lr: float = 1e-3, seed: int = 0) -> List[float]:
    """Fit the policy head of an SB3 actor-critic to the expert's actions (max log-likelihood).

    Returns the mean negative log-likelihood per epoch.
    """
    policy = model.policy
    obs = normalize(observations) if normalize is not None else observations
    obs_t = torch.as_tensor(obs, dtype=torch.float32, device=policy.device)
    act_t = torch.as_tensor(actions, device=policy.device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    policy.set_training_mode(True)
    for _ in range(epochs):
        order = torch.randperm(len(obs_t), generator=generator)
        total = 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start: start + batch_size]
            log_prob = policy.get_distribution(obs_t[idx]).log_prob(act_t[idx])
            loss = -log_prob.mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        losses.append(total / len(order))
    policy.set_training_mode(False)
    return losses
