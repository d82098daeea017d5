"""stable-baselines3's ``VecEnv`` over a natively vectorized env: N worlds in one process.

``SB3VectorEnv`` presents ``SageServeVectorEnv`` (``make_vec(..., vectorization_mode=
"vector_entry_point")``) to SB3 as its ``n_envs`` environments: flat observations (the order of
``gymnasium.spaces.flatten``), SB3's done convention (``terminal_observation`` and
``TimeLimit.truncated`` in each world's info; the vector env autoresets in the same step), the
``episode`` record ``Monitor`` would write, and ``action_masks`` for MaskablePPO.
"""

from __future__ import annotations

import time
from typing import Any, List, Optional, Sequence

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv


class SB3VectorEnv(VecEnv):
    """``VecEnv`` of the worlds of one gymnasium ``VectorEnv`` with ``SAME_STEP`` autoreset."""

    def __init__(self, venv: Any) -> None:
        self.venv = venv
        self._dict_space = venv.single_observation_space
        super().__init__(venv.num_envs, spaces.flatten_space(self._dict_space), venv.single_action_space)
        self._actions: Optional[np.ndarray] = None
        self._returns = np.zeros(self.num_envs)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)
        self._t0 = time.time()

    def _flat(self, obs) -> np.ndarray:
        return np.concatenate([obs[k].reshape(self.num_envs, -1) for k in self._dict_space.spaces], axis=1)

    def reset(self) -> np.ndarray:
        seed = self._seeds[0] if self._seeds and self._seeds[0] is not None else None
        obs, _ = self.venv.reset(seed=seed)
        self._reset_seeds()
        self._returns[:] = 0.0
        self._lengths[:] = 0
        return self._flat(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs, -1)

    def step_wait(self):
        obs, reward, terminated, truncated, info = self.venv.step(self._actions)
        dones = terminated | truncated
        self._returns += reward
        self._lengths += 1
        infos: List[dict] = [{} for _ in range(self.num_envs)]
        if dones.any():
            final = self._flat(info["final_obs"])
            elapsed = round(time.time() - self._t0, 6)
            for i in np.flatnonzero(dones):
                infos[i] = {"terminal_observation": final[i], "TimeLimit.truncated": bool(truncated[i] and not terminated[i]),
                            "episode": {"r": float(self._returns[i]), "l": int(self._lengths[i]), "t": elapsed}}
            self._returns[dones] = 0.0
            self._lengths[dones] = 0
        return self._flat(obs), reward.astype(np.float32), dones, infos

    def action_masks(self) -> np.ndarray:
        return self.venv.action_masks()

    def close(self) -> None:
        self.venv.close()

    def get_attr(self, attr_name: str, indices=None) -> List[Any]:
        return [getattr(self.venv, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        raise AttributeError(f"SB3VectorEnv cannot set {attr_name!r} per world: its worlds share one env")

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> List[Any]:
        if method_name == "action_masks":
            masks = self.venv.action_masks()
            return [masks[i] for i in self._get_indices(indices)]
        raise AttributeError(f"SB3VectorEnv has no per-world method {method_name!r} (only action_masks)")

    def has_attr(self, attr_name: str) -> bool:
        return attr_name == "action_masks" or hasattr(self.venv, attr_name)

    def env_is_wrapped(self, wrapper_class: type, indices=None) -> List[bool]:
        return [False] * len(self._get_indices(indices))

    def get_images(self) -> Sequence[Optional[np.ndarray]]:
        return [None] * self.num_envs
