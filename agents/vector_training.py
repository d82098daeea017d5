"""stable-baselines3's ``VecEnv`` over natively vectorized envs: N worlds in one process.

``SB3VectorEnv`` presents one or more ``SageServeVectorEnv`` (``make_vec(..., vectorization_mode=
"vector_entry_point")``) with the same spaces to SB3 as its ``n_envs`` environments, the worlds of
each in turn (several tasks train one agent side by side): flat observations (the order of
``gymnasium.spaces.flatten``), SB3's done convention (``terminal_observation`` and
``TimeLimit.truncated`` in each world's info; the vector envs autoreset in the same step), the
``episode`` record ``Monitor`` would write with the episode's KPIs beside it (``kpis``), and
``action_masks`` for MaskablePPO; ``VectorValidation``, the validation days of a run on it
(``ValidationEpisodes``), in the training process or in a worker process beside it.
"""

from __future__ import annotations

import multiprocessing
import pickle
import shutil
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from agents.training import hidden_columns


class SB3VectorEnv(VecEnv):
    """``VecEnv`` of the worlds of gymnasium ``VectorEnv``s with ``SAME_STEP`` autoreset, one
    after the other; ``seed(s)`` seeds world i of every part with day s + i. After a step,
    ``endpoint_terms[term]`` (worlds, endpoints) holds each endpoint's part of the reward terms.
    ``weights`` (one per part, default 1) multiply the rewards the agent learns from, so that a
    task of small rewards (a light day) counts in the gradient; the ``episode`` records keep the
    env's own returns. ``hidden`` features (``agents.training.hidden_columns``) read 0 in the
    flat observations."""

    def __init__(self, *parts: Any, weights: Optional[Sequence[float]] = None, hidden: Sequence[str] = ()) -> None:
        if not parts:
            raise ValueError("SB3VectorEnv needs at least one vector env")
        weights = [1.0] * len(parts) if weights is None else [float(w) for w in weights]
        if len(weights) != len(parts) or not all(np.isfinite(w) and w > 0 for w in weights):
            raise ValueError(f"SB3VectorEnv weights must be one finite number > 0 per vector env "
                             f"({len(parts)}), got {weights}")
        first = parts[0]
        for k, part in enumerate(parts[1:], 1):
            if (part.single_observation_space != first.single_observation_space
                    or part.single_action_space != first.single_action_space):
                raise ValueError(f"vector env {k} has other spaces than vector env 0 "
                                 f"({part.single_action_space} against {first.single_action_space}): "
                                 "one agent acts in all of them")
        self.parts = parts
        self._dict_space = first.single_observation_space
        self._bounds = np.cumsum([0] + [part.num_envs for part in parts])
        self.weights = weights
        self._hidden = hidden_columns(self._dict_space, hidden)
        super().__init__(int(self._bounds[-1]), spaces.flatten_space(self._dict_space), first.single_action_space)
        self._actions: Optional[np.ndarray] = None
        self.endpoint_terms: Dict[str, np.ndarray] = {}
        self._returns = np.zeros(self.num_envs)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)
        self._t0 = time.time()

    def _flat(self, obs) -> np.ndarray:
        n = len(next(iter(obs.values())))
        flat = np.concatenate([obs[k].reshape(n, -1) for k in self._dict_space.spaces], axis=1)
        flat[:, self._hidden] = 0.0
        return flat

    def reset(self) -> np.ndarray:
        seed = self._seeds[0] if self._seeds and self._seeds[0] is not None else None
        flat = [self._flat(part.reset(seed=seed)[0]) for part in self.parts]
        self._reset_seeds()
        self._returns[:] = 0.0
        self._lengths[:] = 0
        return np.concatenate(flat)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs, -1)

    def step_wait(self):
        flat, rewards, dones, endpoint_terms = [], [], [], []
        infos: List[dict] = [{} for _ in range(self.num_envs)]
        elapsed = round(time.time() - self._t0, 6)
        for part, weight, lo, hi in zip(self.parts, self.weights, self._bounds[:-1], self._bounds[1:]):
            obs, reward, terminated, truncated, info = part.step(self._actions[lo:hi])
            done = terminated | truncated
            self._returns[lo:hi] += reward
            self._lengths[lo:hi] += 1
            if done.any():
                final = self._flat(info["final_obs"])
                kpis = {k: v for k, v in info["final_info"]["kpis"].items() if not k.startswith("_")}
                for i in np.flatnonzero(done):
                    infos[lo + i] = {"terminal_observation": final[i],
                                     "TimeLimit.truncated": bool(truncated[i] and not terminated[i]),
                                     "episode": {"r": float(self._returns[lo + i]), "l": int(self._lengths[lo + i]),
                                                 "t": elapsed},
                                     "kpis": {k: float(v[i]) for k, v in kpis.items()}}
                self._returns[lo:hi][done] = 0.0
                self._lengths[lo:hi][done] = 0
            flat.append(self._flat(obs))
            rewards.append(reward * weight)
            dones.append(done)
            endpoint_terms.append(info["endpoint_reward_terms"])
        self.endpoint_terms = {k: np.concatenate([t[k] for t in endpoint_terms]) for k in endpoint_terms[0]
                               if not k.startswith("_")}
        return np.concatenate(flat), np.concatenate(rewards).astype(np.float32), np.concatenate(dones), infos

    def action_masks(self) -> np.ndarray:
        return np.concatenate([part.action_masks() for part in self.parts])

    def close(self) -> None:
        for part in self.parts:
            part.close()

    def get_attr(self, attr_name: str, indices=None) -> List[Any]:
        which = np.searchsorted(self._bounds, self._get_indices(indices), side="right") - 1
        return [getattr(self.parts[k], attr_name) for k in which]

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        raise AttributeError(f"SB3VectorEnv cannot set {attr_name!r} per world: its worlds share their vector env")

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> List[Any]:
        if method_name == "action_masks":
            masks = self.action_masks()
            return [masks[i] for i in self._get_indices(indices)]
        raise AttributeError(f"SB3VectorEnv has no per-world method {method_name!r} (only action_masks)")

    def has_attr(self, attr_name: str) -> bool:
        return attr_name == "action_masks" or all(hasattr(part, attr_name) for part in self.parts)

    def env_is_wrapped(self, wrapper_class: type, indices=None) -> List[bool]:
        return [False] * len(self._get_indices(indices))

    def get_images(self) -> Sequence[Optional[np.ndarray]]:
        return [None] * self.num_envs


def make_vector_env(env_id: str, kwargs: Dict[str, Any], n: int, reach: Optional[int] = None,
                    headroom: float = 1.0) -> Any:
    """``n`` worlds of the vectorized ID ``env_id`` with the env options ``kwargs``, their
    actions adjustments of at most ``reach`` to the changes of the demand planner with ``headroom``
    (``agents.demand.ResidualDemand``) if ``reach`` is given; as ``functools.partial(make_vector_env, env_id, kwargs)`` a picklable
    task constructor of ``VectorValidation``, one a worker process can call."""
    import gymnasium as gym

    import sageserve_env  # noqa: F401  (registers the IDs in a fresh process)

    worlds = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", **kwargs)
    if reach is None:
        return worlds
    from agents.demand import ResidualDemand

    return ResidualDemand(worlds, reach=reach, headroom=headroom)


@dataclass(frozen=True)
class ValidationEpisodes:
    """The validation episodes of a run: one deterministic episode on the days ``first_seed .. first_seed
    + n_days - 1`` of each task in ``tasks`` (its name -> a constructor of its vector env of n
    worlds), one task after the other (a week's worlds outlast a day's: run together, the days'
    worlds would step on for nothing; world i of a task is day ``first_seed + i``, as a single env
    seeded so), the agent blind to the ``hidden`` features as in training. Picklable when the
    constructors are (``make_vector_env``), so that a worker process can play it; it draws on no
    global random state (numpy's, ``random``'s or torch's)."""

    FIGURES = (("reward", "reward"), ("billed_gpu_hours", "billed_gpu_hours"),
               ("iw_slo_attainment", "iw_slo_attainment_served"))

    tasks: Dict[str, Callable[[int], Any]]
    first_seed: int
    n_days: int
    masked: bool
    agents_per_world: int = 1
    hidden: Tuple[str, ...] = ()

    def figures(self, model: Any, normalize: Optional[Callable[[np.ndarray], np.ndarray]]) -> Dict[str, float]:
        """The mean reward, billed GPU-hours and IW SLO attainment of ``model`` over every
        validation world (with several tasks also each task's, ``<task>/<figure>``)."""
        finals: List[dict] = []
        for make in self.tasks.values():
            venv = SB3VectorEnv(make(self.n_days), hidden=self.hidden)
            venv.seed(self.first_seed)
            finals.extend(self.episode(model, venv, normalize))
            venv.close()
        figures = {k: float(np.mean([f[name] for f in finals])) for k, name in self.FIGURES}
        if len(self.tasks) > 1:
            for t, task in enumerate(self.tasks):
                days = finals[t * self.n_days:(t + 1) * self.n_days]
                figures.update({f"{task}/{k}": float(np.mean([f[name] for f in days])) for k, name in self.FIGURES})
        return figures

    def episode(self, model: Any, venv: SB3VectorEnv,
                normalize: Optional[Callable[[np.ndarray], np.ndarray]]) -> List[dict]:
        """The final KPIs of each world of ``venv`` after one deterministic episode of ``model``."""
        from agents.endpoint_agents import EndpointFeatures, act_per_endpoint

        features = (EndpointFeatures(venv.observation_space.shape[0], len(venv.action_space.nvec))
                    if self.agents_per_world > 1 else None)
        obs, done = venv.reset(), np.zeros(venv.num_envs, dtype=bool)
        finals: List[dict] = [{} for _ in range(venv.num_envs)]
        while not done.all():
            masks = venv.action_masks() if self.masked else None
            if features is not None:
                action = act_per_endpoint(model, features, obs, masks, normalize)
            else:
                kwargs = {} if masks is None else {"action_masks": masks}
                action, _ = model.predict(normalize(obs) if normalize else obs, deterministic=True, **kwargs)
            obs, _, dones, infos = venv.step(action)
            for i in np.flatnonzero(dones & ~done):
                finals[i] = infos[i]["kpis"]
            done |= dones
        return finals


def validate_snapshot(episodes: ValidationEpisodes, algo: type, model_path: str,
                      normalizer_path: Optional[str]) -> Dict[str, float]:
    """``episodes.figures`` of the model saved at ``model_path`` (by ``algo.save``) with the
    ``VecNormalize`` statistics saved at ``normalizer_path`` (None: none), and ``seconds``,
    the time of this call (loading included): what the validation worker process runs."""
    start = time.perf_counter()
    model = algo.load(model_path, device="cpu")
    normalize = None
    if normalizer_path is not None:
        with open(normalizer_path, "rb") as f:
            normalize = pickle.load(f).normalize_obs  # VecNormalize.load without a venv to wrap
    figures = episodes.figures(model, normalize)
    figures["seconds"] = time.perf_counter() - start
    return figures


def _start_worker(torch_threads: int) -> None:
    """A validation worker computes with as many torch threads as training (the same sums)."""
    import torch

    torch.set_num_threads(torch_threads)


class VectorValidation(BaseCallback):
    """Every ``every`` env steps, the validation episodes ``ValidationEpisodes(tasks, first_seed, n_days,
    masked, agents_per_world, hidden)`` of the model: logs ``validation/reward``,
    ``validation/billed_gpu_hours`` and ``validation/iw_slo_attainment`` (means over every
    validation world; with several tasks also per task, ``validation/<task>/...``),
    ``validation/seconds`` and ``validation/timesteps`` (the world steps of the model validated)
    to the run's logger and a row to ``validation.csv``, and saves the best model by that mean
    reward as ``best_model.zip`` (with the normalization statistics it ran with). ``agents_per_world``
    > 1: the model is the shared policy of ``agents.endpoint_agents.EndpointAgents`` (its
    timesteps are agent decisions; ``every`` and the CSV count world steps).

    ``workers=0``: each validation runs in the training process, which waits for it. ``workers=1``:
    the model and its statistics are saved as a snapshot (``validation/<steps>.zip`` and
    ``_vecnormalize.pkl`` in ``out``, deleted once validated; the best is copied to
    ``best_model.*``), validated in one worker process (spawned; the task constructors must be
    picklable, ``make_vector_env``) while training goes on, and its results taken in order as they
    are done (at the end of training, all of them). The figures, the rows and the best model are
    those of ``workers=0`` (the same episodes of the same weights, and validation touches neither
    the training env nor any random state, so training is the same too); ``seconds`` is the
    worker's own time for the validation, and the logger writes the figures at the step at which
    they arrive (``validation/timesteps`` says which model's they are; a result arriving before
    the logger wrote the previous one replaces its figures there, the CSV keeps both). A
    validation that fails in the worker raises a ``RuntimeError`` naming its steps in training."""

    FIGURES = ValidationEpisodes.FIGURES

    def __init__(self, tasks: Dict[str, Callable[[int], Any]], first_seed: int, n_days: int, every: int,
                 out: Path, masked: bool, agents_per_world: int = 1, workers: int = 0,
                 hidden: Sequence[str] = ()) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("VectorValidation needs at least one task")
        if workers not in (0, 1):
            raise ValueError(f"VectorValidation workers must be 0 (validate in the training process) or 1, "
                             f"got {workers}")
        self.episodes = ValidationEpisodes(dict(tasks), int(first_seed), int(n_days), masked, int(agents_per_world),
                                           tuple(hidden))
        if workers:
            try:
                pickle.dumps(self.episodes)
            except Exception as exc:  # pickle raises PicklingError, AttributeError or TypeError
                raise ValueError("VectorValidation with workers=1 needs picklable task constructors, e.g. "
                                 f"functools.partial(make_vector_env, env_id, kwargs): {exc}") from None
        self.every, self.out, self.workers = int(every), Path(out), workers
        self.agents_per_world = int(agents_per_world)
        self.best = -np.inf
        self._last = -np.inf
        self._pool: Optional[ProcessPoolExecutor] = None
        self._pending: Deque[Tuple[int, Future, Path, Optional[Path]]] = deque()

    @property
    def tasks(self) -> Dict[str, Callable[[int], Any]]:
        return self.episodes.tasks

    def columns(self) -> List[str]:
        """``validation.csv``'s columns: the means over every world, then (several tasks) each task's."""
        per_task = [f"{task}/{k}" for task in self.tasks for k, _ in self.FIGURES] if len(self.tasks) > 1 else []
        return ["timesteps", *(k for k, _ in self.FIGURES), *per_task, "seconds"]

    def _on_training_start(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "validation.csv", "w") as f:
            f.write(",".join(self.columns()) + "\n")
        if self.workers:
            import torch

            (self.out / "validation").mkdir(exist_ok=True)
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_worker, initargs=(torch.get_num_threads(),))

    def _steps(self) -> int:
        """World env steps so far."""
        return self.num_timesteps // self.agents_per_world

    def _on_step(self) -> bool:
        if self._steps() - self._last >= self.every:
            self._last = self._steps()
            self.validate()
        self._collect(wait=False)
        return True

    def _on_training_end(self) -> None:
        if self._steps() != self._last:
            self.validate()
        self._collect(wait=True)
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
            (self.out / "validation").rmdir()

    def validate(self) -> None:
        """Validate the model as it is now: at once (``workers=0``) or in the worker."""
        if self._pool is None:
            self.evaluate()
            return
        steps, norm = self._steps(), self.model.get_vec_normalize_env()
        model_path = self.out / "validation" / f"{steps}.zip"
        normalizer = model_path.with_name(f"{steps}_vecnormalize.pkl") if norm is not None else None
        self.model.save(str(model_path))
        if norm is not None:
            norm.save(str(normalizer))
        future = self._pool.submit(validate_snapshot, self.episodes, type(self.model), str(model_path),
                                   None if normalizer is None else str(normalizer))
        self._pending.append((steps, future, model_path, normalizer))

    def _collect(self, wait: bool) -> None:
        """Report the worker's validations that are done, in order (``wait``: all of them)."""
        while self._pending and (wait or self._pending[0][1].done()):
            steps, future, model_path, normalizer = self._pending.popleft()
            try:
                figures = future.result()
            except Exception as exc:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
                raise RuntimeError(f"validation of the model at {steps} world steps failed in the validation "
                                   f"worker: {type(exc).__name__}: {exc}") from exc

            def save_best() -> None:
                shutil.copy(model_path, self.out / "best_model.zip")
                if normalizer is not None:
                    shutil.copy(normalizer, self.out / "best_model_vecnormalize.pkl")

            self.report(steps, figures, save_best)
            for path in (model_path, normalizer):
                if path is not None:
                    path.unlink()

    def evaluate(self) -> Dict[str, float]:
        """Validate the model now, in this process, and report it; its figures."""
        start = time.perf_counter()
        norm = self.model.get_vec_normalize_env()
        figures = self.episodes.figures(self.model, norm.normalize_obs if norm is not None else None)
        figures["seconds"] = time.perf_counter() - start

        def save_best() -> None:
            self.model.save(str(self.out / "best_model.zip"))
            if norm is not None:
                norm.save(str(self.out / "best_model_vecnormalize.pkl"))

        self.report(self._steps(), figures, save_best)
        return figures

    def report(self, steps: int, figures: Dict[str, float], save_best: Callable[[], None]) -> None:
        """The figures of the model at ``steps`` world steps to the logger and ``validation.csv``;
        ``save_best()`` when its mean reward is the best so far."""
        self.logger.record("validation/timesteps", steps)
        for k, v in figures.items():
            self.logger.record(f"validation/{k}", v)
        with open(self.out / "validation.csv", "a") as f:
            f.write(",".join(str(v) for v in (steps, *figures.values())) + "\n")
        if figures["reward"] > self.best:
            self.best = figures["reward"]
            save_best()


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
