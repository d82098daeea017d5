"""stable-baselines3's ``VecEnv`` over a natively vectorized env: N worlds in one process.

``SB3VectorEnv`` presents ``SageServeVectorEnv`` (``make_vec(..., vectorization_mode=
"vector_entry_point")``) to SB3 as its ``n_envs`` environments: flat observations (the order of
``gymnasium.spaces.flatten``), SB3's done convention (``terminal_observation`` and
``TimeLimit.truncated`` in each world's info; the vector env autoresets in the same step), the
``episode`` record ``Monitor`` would write with the episode's KPIs beside it (``kpis``), and
``action_masks`` for MaskablePPO; ``VectorValidation``, the validation days of a run on it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
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
            kpis = {k: v for k, v in info["final_info"]["kpis"].items() if not k.startswith("_")}
            elapsed = round(time.time() - self._t0, 6)
            for i in np.flatnonzero(dones):
                infos[i] = {"terminal_observation": final[i], "TimeLimit.truncated": bool(truncated[i] and not terminated[i]),
                            "episode": {"r": float(self._returns[i]), "l": int(self._lengths[i]), "t": elapsed},
                            "kpis": {k: float(v[i]) for k, v in kpis.items()}}
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


class VectorValidation(BaseCallback):
    """Every ``every`` env steps, one deterministic episode of the model on the validation days
    ``first_seed .. first_seed + n - 1``, all in one vectorized env (world i is day
    ``first_seed + i``, as a single env seeded so): logs ``validation/reward``,
    ``validation/billed_gpu_hours`` and ``validation/iw_slo_attainment`` (means over the days) to
    the run's logger and a row to ``csv_path``, and saves the best model by mean reward as
    ``best_model.zip`` (with the normalization statistics it ran with)."""

    COLUMNS = ("timesteps", "reward", "billed_gpu_hours", "iw_slo_attainment", "seconds")

    def __init__(self, make_venv: Callable[[int], Any], first_seed: int, n_days: int, every: int,
                 out: Path, masked: bool) -> None:
        super().__init__()
        self.make_venv, self.first_seed, self.n_days = make_venv, int(first_seed), int(n_days)
        self.every, self.out, self.masked = int(every), Path(out), masked
        self.best = -np.inf
        self._last = -np.inf

    def _on_training_start(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "validation.csv", "w") as f:
            f.write(",".join(self.COLUMNS) + "\n")

    def _on_step(self) -> bool:
        if self.num_timesteps - self._last >= self.every:
            self._last = self.num_timesteps
            self.evaluate()
        return True

    def _on_training_end(self) -> None:
        if self.num_timesteps != self._last:
            self.evaluate()

    def evaluate(self) -> Dict[str, float]:
        start = time.perf_counter()
        venv = SB3VectorEnv(self.make_venv(self.n_days))
        venv.seed(self.first_seed)
        norm = self.model.get_vec_normalize_env()
        obs, done = venv.reset(), np.zeros(self.n_days, dtype=bool)
        finals: List[dict] = [{} for _ in range(self.n_days)]
        while not done.all():
            x = norm.normalize_obs(obs) if norm is not None else obs
            kwargs = {"action_masks": venv.action_masks()} if self.masked else {}
            action, _ = self.model.predict(x, deterministic=True, **kwargs)
            obs, _, dones, infos = venv.step(action)
            for i in np.flatnonzero(dones & ~done):
                finals[i] = infos[i]["kpis"]
            done |= dones
        venv.close()
        figures = {k: float(np.mean([f[name] for f in finals])) for k, name in
                   (("reward", "reward"), ("billed_gpu_hours", "billed_gpu_hours"),
                    ("iw_slo_attainment", "iw_slo_attainment_served"))}
        figures["seconds"] = time.perf_counter() - start
        for k, v in figures.items():
            self.logger.record(f"validation/{k}", v)
        with open(self.out / "validation.csv", "a") as f:
            f.write(",".join(str(v) for v in (self.num_timesteps, *figures.values())) + "\n")
        if figures["reward"] > self.best:
            self.best = figures["reward"]
            self.model.save(str(self.out / "best_model.zip"))
            if norm is not None:
                norm.save(str(self.out / "best_model_vecnormalize.pkl"))
        return figures


class EpisodeKPIs(BaseCallback):
    """Logs the mean KPIs of the training episodes that ended since the last rollout
    (``episode/billed_gpu_hours``, ``episode/iw_slo_attainment``, ``episode/reward``)."""

    def __init__(self) -> None:
        super().__init__()
        self._ended: List[dict] = []

    def _on_step(self) -> bool:
        self._ended.extend(info["kpis"] for info in self.locals["infos"] if "kpis" in info)
        return True

    def _on_rollout_end(self) -> None:
        if self._ended:
            for key, name in (("billed_gpu_hours", "billed_gpu_hours"), ("iw_slo_attainment", "iw_slo_attainment_served"),
                              ("reward", "reward")):
                self.logger.record(f"episode/{key}", float(np.mean([k[name] for k in self._ended])))
            self._ended = []
