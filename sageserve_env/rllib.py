"""RLlib on the env (new API stack): an env creator and a PPO config with action masking.

    import ray
    from sageserve_env.rllib import ppo_config

    ray.init()
    algo = ppo_config("sageserve_env/SageServeSmall-fast-v1", num_envs=64).build_algo()
    result = algo.train()

RLlib takes ``gymnasium`` envs. Its default networks want a flat observation and its masking
module (``ActionMaskingTorchRLModule``, shipped with RLlib) a ``Dict`` of ``observations`` and
``action_mask``; ``MaskedObservation`` gives that: the env's ``Dict`` observation flattened in
the space's key order (as ``gymnasium.spaces.utils.flatten`` does) and ``action_masks()`` as
floats. The ``MultiDiscrete`` action (one choice per endpoint) becomes RLlib's multi-categorical
distribution, whose logits are the endpoints' choices concatenated: the order of the masks.

The v1 fast IDs (``...-fast-v1``, a ``vector_entry_point``) run as RLlib's vector env
(``gym_env_vectorize_mode="vector_entry_point"``): ``num_envs`` worlds of ``SageServeVectorEnv``
in one array program per env runner, wrapped by ``MaskedVectorObservation``, which also turns
the vector env's same-step autoreset into the next-step one RLlib's sampler expects. Every other
ID runs as ``num_envs`` copies of the env in gymnasium's ``SyncVectorEnv``. See
``docs/scale_out.md``.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper
from gymnasium.vector.utils import batch_space

RLLIB_ENV = "sageserve_env_masked"  # the name of ``make_env`` in Ray Tune's env registry



def masked_space(observation_space: spaces.Dict, action_space: spaces.MultiDiscrete) -> spaces.Dict:
    """The observation space of ``masked_observation`` for one env."""
    n = int(np.sum(action_space.nvec))
    return spaces.Dict({"observations": spaces.flatten_space(observation_space),
                        "action_mask": spaces.Box(0.0, 1.0, (n,), np.float32)})


def masked_observation(space: spaces.Dict, obs: Mapping[str, np.ndarray], masks: np.ndarray) -> Dict[str, np.ndarray]:
    """``{"observations": obs flattened, "action_mask": masks}`` as float32, over any leading (world)
    axes of ``masks``: the keys of ``space`` (one env's space) in order, each raveled."""
    lead = masks.shape[:-1]
    flat = np.concatenate([np.asarray(obs[k], dtype=np.float32).reshape(lead + (-1,)) for k in space.spaces],
                          axis=-1)
    return {"observations": flat, "action_mask": masks.astype(np.float32)}


class MaskedObservation(gym.ObservationWrapper):
    """One env's observation with its action masks, for RLlib's masking module."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = masked_space(env.observation_space, env.action_space)

    def observation(self, observation: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return masked_observation(self.env.observation_space, observation, self.get_wrapper_attr("action_masks")())


class MaskedVectorObservation(VectorWrapper):
    """A ``SageServeVectorEnv`` made with ``autoreset=False`` as RLlib samples it: each world's
    observation with its masks, and next-step autoreset (the step after the one that ends the
    episodes resets every world and returns the first observations, reward 0, not done). Every
    world of a ``SageServeVectorEnv`` ends at the same step, so all of them reset together."""

    def __init__(self, env: VectorEnv) -> None:
        if env.unwrapped.autoreset:
            raise ValueError("MaskedVectorObservation resets the worlds itself: make the vector env with "
                             "autoreset=False")
        super().__init__(env)
        self.single_observation_space = masked_space(env.single_observation_space, env.single_action_space)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.metadata = {**env.metadata, "autoreset_mode": AutoresetMode.NEXT_STEP}
        self._ended = False

    def reset(self, *, seed: Optional[int] = None, options: Optional[Dict[str, Any]] = None):
        self._ended = False
        obs, info = self.env.reset(seed=seed, options=options)
        return self._masked(obs), info

    def step(self, actions):
        if self._ended:  # the worlds' generators go on: each world's next episode draws its seed from it
            obs, info = self.reset()
            n = self.num_envs
            return obs, np.zeros(n), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool), info
        obs, reward, terminated, truncated, info = self.env.step(actions)
        self._ended = bool(np.any(terminated | truncated))
        return self._masked(obs), reward, terminated, truncated, info

    def _masked(self, obs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return masked_observation(self.env.single_observation_space, obs, self.env.unwrapped.action_masks())


def make_env(env_config: Mapping[str, Any]) -> Any:
    """RLlib's env creator: ``env_config["id"]`` (a registered ID) made with ``env_config["kwargs"]``;
    with ``num_envs`` (RLlib's vector entry point) the ID's vector env of that many worlds."""
    env_id = env_config.get("id")
    if env_id not in gym.registry:
        raise ValueError(f"env_config id must be a registered env ID, got {env_id!r}")
    kwargs = dict(env_config.get("kwargs") or {})
    if "num_envs" in env_config:
        if gym.spec(env_id).vector_entry_point is None:
            raise ValueError(f"{env_id} has no vector entry point; use gym_env_vectorize_mode='sync'")
        vec = gym.make_vec(env_id, num_envs=int(env_config["num_envs"]), vectorization_mode="vector_entry_point",
                           autoreset=False, **kwargs)
        return MaskedVectorObservation(vec)
    return MaskedObservation(gym.make(env_id, **kwargs))


def ppo_config(env_id: str, env_kwargs: Optional[Mapping[str, Any]] = None, num_envs: int = 1,
               num_env_runners: int = 0, model_config: Optional[Mapping[str, Any]] = None):
    """A ``PPOConfig`` (new API stack) of ``env_id`` with RLlib's action-masking PPO module;
    ``num_envs`` envs (worlds of the vector env for the v1 fast IDs) per env runner. Change the
    rest with the config's own methods (``.training(...)``, ``.env_runners(...)``)."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.rllib.examples.rl_modules.classes.action_masking_rlm import ActionMaskingTorchRLModule
    from ray.tune.registry import register_env

    if env_id not in gym.registry:
        raise ValueError(f"unknown env {env_id!r}")
    vectorized = gym.spec(env_id).vector_entry_point is not None
    register_env(RLLIB_ENV, make_env)
    return (PPOConfig()
            .environment(RLLIB_ENV, env_config={"id": env_id, "kwargs": dict(env_kwargs or {})})
            .env_runners(num_env_runners=num_env_runners, num_envs_per_env_runner=num_envs,
                         gym_env_vectorize_mode="vector_entry_point" if vectorized else "sync")
            .rl_module(rl_module_spec=RLModuleSpec(module_class=ActionMaskingTorchRLModule,
                                                   model_config=dict(model_config or {}))))
