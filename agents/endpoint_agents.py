"""The endpoints of vectorized worlds as the agents of one shared policy (parameter sharing).

A world's reward sums the outcomes of all its endpoints' decisions: a policy that acts for the 12
endpoints of a paper-scale world at once learns from one number which of its 12 choices was
right, and the signal of one instance too many (0.005 of a reward of about -1 a minute) drowns
in the other endpoints' misses. ``EndpointAgents`` presents the N worlds of an ``SB3VectorEnv``
to stable-baselines3 as N x E environments, one per (world, endpoint), each with a
``Discrete(2 max_delta + 1)`` action (its instance change, masked as in the world) and a reward
of its own: the GPU cost of its own servers plus all the misses and drops of its model's requests
in every region (``info["endpoint_reward_terms"]``). Two other splits were tried and failed
(docs/results.md): 1/R of the model's misses each (the agents' rewards then sum to the world's)
let each agent bear a third of the misses it caused, so it sold SLO for GPU-hours; only the misses
of the requests it served itself taught it to pass its load to the other regions, whose agents
were charged for it. Its observation (``EndpointFeatures``) is
the endpoint's part of the world's, its region's servers, the time, one-hots of its region and
model and the mean of its model's endpoints' entries.

Counting: SB3's timesteps are agent decisions, E per world step; ``train.py`` converts, so that
``n_timesteps``, ``eval_freq`` and the learning curves count world steps as everywhere else.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from agents.endpoint_policy import endpoint_layout
from sageserve_env.env.sageserve_env import REWARD_TERMS


class EndpointFeatures:
    """The map from flat world observations (..., D) to each endpoint's agent input (..., E, F)."""

    def __init__(self, flat_size: int, n_endpoints: int) -> None:
        self.own, self.shared, self.n_regions, self.n_models = endpoint_layout(flat_size, n_endpoints)
        self.n_endpoints = n_endpoints
        self.ids = np.concatenate([np.repeat(np.eye(self.n_regions), self.n_models, axis=0),
                                   np.tile(np.eye(self.n_models), (self.n_regions, 1))], axis=1)
        self.size = 2 * self.own.shape[1] + len(self.shared) + self.ids.shape[1]

    def __call__(self, flat: np.ndarray) -> np.ndarray:
        flat = np.asarray(flat, dtype=np.float32)
        lead, E, R, M = flat.shape[:-1], self.n_endpoints, self.n_regions, self.n_models
        own = flat[..., self.own]  # (..., E, F_e)
        model_mean = np.broadcast_to(own.reshape(lead + (R, M, -1)).mean(axis=-3, keepdims=True),
                                     lead + (R, M, own.shape[-1])).reshape(own.shape)
        shared = np.broadcast_to(flat[..., None, self.shared], lead + (E, len(self.shared)))
        ids = np.broadcast_to(self.ids, lead + self.ids.shape)
        return np.concatenate([own, model_mean, shared, ids], axis=-1).astype(np.float32)

    def space(self, flat_space: spaces.Box) -> spaces.Box:
        """The agents' observation space, from the bounds of the world's flat one (the features
        are selections, means and one-hots of its entries: monotone in them)."""
        return spaces.Box(self(flat_space.low).min(0), self(flat_space.high).max(0), dtype=np.float32)


def agent_rewards(terms: dict, n_regions: int, n_models: int) -> np.ndarray:
    """Each (world, endpoint) agent's reward from the endpoints' reward terms (each (N, E)): the
    cost of its own servers plus all of its model's service terms (the misses and drops of that
    model's requests in every region): the router moves a model's IW requests between regions,
    so an endpoint's shortfall shows as misses of its model anywhere."""
    service = sum(terms[k] for k in REWARD_TERMS if k != "cost")
    n = service.shape[0]
    per_model = service.reshape(n, n_regions, n_models).sum(1, keepdims=True)
    return terms["cost"] + np.broadcast_to(per_model, (n, n_regions, n_models)).reshape(n, -1)


def act_per_endpoint(model: Any, features: EndpointFeatures, flat: np.ndarray, masks: Optional[np.ndarray],
                     normalize: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                     deterministic: bool = True) -> np.ndarray:
    """The (N, E) actions an endpoint-agent ``model`` takes in N worlds with flat observations
    ``flat`` (N, D) and world masks ``masks`` (N, E x choices)."""
    n, E = flat.shape[0], features.n_endpoints
    x = features(flat).reshape(n * E, -1)
    if normalize is not None:
        x = normalize(x)
    kwargs = {} if masks is None else {"action_masks": np.asarray(masks).reshape(n * E, -1)}
    action, _ = model.predict(x, deterministic=deterministic, **kwargs)
    return np.asarray(action).reshape(n, E)


class EndpointAgents(VecEnv):
    """The N x E (world, endpoint) agents of an ``SB3VectorEnv`` as SB3 environments, agent
    ``i * E + e`` being endpoint e of world i."""

    def __init__(self, worlds: Any) -> None:
        nvec = np.asarray(worlds.action_space.nvec)
        self.worlds = worlds
        self.n_worlds, self.n_endpoints, self.choices = worlds.num_envs, len(nvec), int(nvec[0])
        self.features = EndpointFeatures(worlds.observation_space.shape[0], self.n_endpoints)
        super().__init__(self.n_worlds * self.n_endpoints, self.features.space(worlds.observation_space),
                         spaces.Discrete(self.choices))
        self._returns = np.zeros(self.num_envs)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)

    def _agents(self, flat: np.ndarray) -> np.ndarray:
        return self.features(flat).reshape(-1, self.features.size)

    def seed(self, seed: Optional[int] = None) -> Sequence[None]:
        return self.worlds.seed(seed)

    def reset(self) -> np.ndarray:
        self._returns[:] = 0.0
        self._lengths[:] = 0
        return self._agents(self.worlds.reset())

    def step_async(self, actions: np.ndarray) -> None:
        self.worlds.step_async(np.asarray(actions).reshape(self.n_worlds, self.n_endpoints))

    def step_wait(self):
        obs, _, world_dones, world_infos = self.worlds.step_wait()
        f = self.features
        reward = agent_rewards(self.worlds.endpoint_terms, f.n_regions, f.n_models).reshape(-1)
        dones = np.repeat(world_dones, self.n_endpoints)
        self._returns += reward
        self._lengths += 1
        infos: List[dict] = [{} for _ in range(self.num_envs)]
        for i in np.flatnonzero(world_dones):
            world = world_infos[i]
            final = self._agents(world["terminal_observation"][None])
            for e in range(self.n_endpoints):
                a = i * self.n_endpoints + e
                infos[a] = {"terminal_observation": final[e], "TimeLimit.truncated": world["TimeLimit.truncated"],
                            "episode": {"r": float(self._returns[a]), "l": int(self._lengths[a]),
                                        "t": world["episode"]["t"]},
                            "kpis": world["kpis"]}
        self._returns[dones] = 0.0
        self._lengths[dones] = 0
        return self._agents(obs), reward.astype(np.float32), dones, infos

    def action_masks(self) -> np.ndarray:
        return self.worlds.action_masks().reshape(self.num_envs, self.choices)

    def close(self) -> None:
        self.worlds.close()

    def get_attr(self, attr_name: str, indices=None) -> List[Any]:
        return [getattr(self.worlds, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        raise AttributeError(f"EndpointAgents cannot set {attr_name!r} per agent: its agents share their worlds")

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> List[Any]:
        if method_name == "action_masks":
            masks = self.action_masks()
            return [masks[i] for i in self._get_indices(indices)]
        raise AttributeError(f"EndpointAgents has no per-agent method {method_name!r} (only action_masks)")

    def has_attr(self, attr_name: str) -> bool:
        return attr_name == "action_masks"

    def env_is_wrapped(self, wrapper_class: type, indices=None) -> List[bool]:
        return [False] * len(self._get_indices(indices))

    def get_images(self) -> Sequence[Optional[np.ndarray]]:
        return [None] * self.num_envs
