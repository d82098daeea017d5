"""A policy trained by ``train.py``: an SB3 model plus its normalization statistics."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Dict

import numpy as np
import yaml

from agents.base import Policy
from agents.training import flat_observation, hidden_columns, residual_change, residual_masks

ENV_KEYS = ("decision_interval_s", "max_delta", "forecaster")  # env settings a model depends on


def algorithms() -> Dict[str, Any]:
    """SB3 algorithm classes by the names ``train.py`` accepts."""
    from sb3_contrib import MaskablePPO
    from stable_baselines3 import A2C, PPO

    return {"ppo": PPO, "a2c": A2C, "maskable_ppo": MaskablePPO}


def sidecar(model_path: Path, suffix: str) -> Path:
    """Files saved next to a model: ``<stem>.yaml`` (metadata), ``<stem>_vecnormalize.pkl``."""
    return model_path.with_name(model_path.stem + suffix)


def normalizer_path(model_path: Path) -> Path:
    """The VecNormalize statistics of a model: ``<stem>_vecnormalize.pkl`` beside it (final and
    best models), or an SB3 checkpoint's ``rl_model_vecnormalize_<n>_steps.pkl``; without
    either, the run's final ``model_vecnormalize.pkl``."""
    model_path = Path(model_path)
    stem = model_path.stem
    if stem.endswith("_steps") and "_" in stem[: -len("_steps")]:
        prefix, steps = stem[: -len("_steps")].rsplit("_", 1)
        checkpoint = model_path.with_name(f"{prefix}_vecnormalize_{steps}_steps.pkl")
        if checkpoint.exists():
            return checkpoint
    own = sidecar(model_path, "_vecnormalize.pkl")
    run = model_path.with_name("model_vecnormalize.pkl")
    return own if own.exists() or not run.exists() else run


def metadata_path(model_path: Path) -> Path:
    """``model.yaml`` beside a final model; checkpoints and best models share their run's."""
    own = sidecar(Path(model_path), ".yaml")
    if own.exists():
        return own
    for parent in (Path(model_path).parent, Path(model_path).parent.parent):
        if (parent / "model.yaml").exists():
            return parent / "model.yaml"
    return own


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


class LearnedPolicy(Policy):
    """Acts with a saved model; its metadata says how it was trained (algorithm, env settings,
    residual mode, the observation features it was trained not to see) so it runs in the env it
    expects."""

    def __init__(self, path: Path, name: str = "rl", deterministic: bool = True):
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"policy {name!r}: {self.path} is not a file (expected a model .zip saved by train.py)")
        meta_path = metadata_path(self.path)
        if not meta_path.exists():
            raise ValueError(f"{meta_path} is missing: it records how {self.path.name} was trained")
        try:
            self.meta = yaml.safe_load(meta_path.read_text())
        except yaml.YAMLError as exc:
            raise ValueError(f"policy {name!r}: {meta_path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        algo = self.meta.get("algo") if isinstance(self.meta, dict) else None
        if algo not in algorithms():
            raise ValueError(f"{meta_path}: unknown algorithm {algo!r}; known: {sorted(algorithms())}")
        try:
            self.model = algorithms()[algo].load(str(self.path), device="cpu")
        except Exception as exc:  # SB3 raises whatever zipfile, torch or pickle raise on a bad file
            raise ValueError(f"policy {name!r}: cannot load {self.path} as a {algo} model: "
                             f"{type(exc).__name__}: {_first_line(exc)}") from None
        norm_path = normalizer_path(self.path)
        try:
            self.normalizer = pickle.loads(norm_path.read_bytes()) if norm_path.exists() else None
        except Exception as exc:
            raise ValueError(f"policy {name!r}: cannot read the normalization statistics {norm_path}: "
                             f"{type(exc).__name__}: {_first_line(exc)}") from None
        self.name = name
        self.deterministic = deterministic
        self.masked = algo == "maskable_ppo"
        self.planner = None
        if self.meta.get("residual"):
            from agents import make_policy

            self.planner = make_policy("lt_i", forecaster=self.meta.get("residual_forecaster", "arima"))
            self.reach = int(self.meta["residual_reach"])
        elif self.meta.get("demand_residual"):
            from agents.demand import DemandPolicy

            self.planner = DemandPolicy(headroom=float(self.meta.get("demand_headroom", 1.0)))
            self.reach = int(self.meta["residual_reach"])
        self.endpoint_agents = bool(self.meta.get("endpoint_agents", False))  # agents.endpoint_agents
        self.features = None
        self.hidden = list(self.meta.get("hidden_features", []))  # what it was trained not to see
        self.hidden_columns = np.zeros(0, dtype=np.int64)
        interval = self.meta.get("env_kwargs", {}).get("decision_interval_s")
        self.decision_interval_s = float(interval) if interval else None

    def env_kwargs(self) -> Dict[str, Any]:
        kwargs = self.meta.get("env_kwargs", {})
        return {k: kwargs[k] for k in ENV_KEYS if k in kwargs}

    def check_env(self, env) -> None:
        """Raise ValueError unless the model's observation and action shapes are the env's
        (a model trained on another fleet would fail deep inside the network)."""
        from gymnasium import spaces

        base = env.unwrapped
        obs_model = tuple(self.model.observation_space.shape)
        obs_env = tuple(spaces.flatten_space(base.observation_space).shape)
        space = self.model.action_space
        act_model = (int(space.n),) if isinstance(space, spaces.Discrete) else tuple(int(n) for n in np.asarray(space.nvec).reshape(-1))
        if self.planner is not None:
            act_env = (2 * self.reach + 1,) * base.n_endpoints
        else:
            act_env = tuple(int(n) for n in base.action_space.nvec)
        if self.endpoint_agents:  # one agent per endpoint: its features, its own choice
            from agents.endpoint_agents import EndpointFeatures

            try:
                self.features = EndpointFeatures(obs_env[0], base.n_endpoints)
                obs_env, act_env = (self.features.size,), act_env[:1]
            except ValueError:
                self.features = None
        try:
            self.hidden_columns = hidden_columns(base.observation_space, self.hidden)
        except ValueError as exc:
            raise ValueError(f"policy {self.name!r} ({self.path}): hidden_features: {exc}") from None
        if obs_model != obs_env or act_model != act_env or (self.endpoint_agents and self.features is None):
            cfg = base.sim_config
            raise ValueError(
                f"policy {self.name!r} ({self.path}) expects observations of shape {obs_model} and "
                f"{len(act_model)} action entries of {sorted(set(act_model))} choices, but scenario {cfg.name!r} "
                f"({len(cfg.regions)} region(s) x {len(cfg.models)} model(s)) gives observations of shape "
                f"{obs_env} and {len(act_env)} action entries of {sorted(set(act_env))} choices; "
                f"it was trained on {self.meta.get('env')!r} with env_kwargs {self.meta.get('env_kwargs', {})}")

    def reset(self, env, seed=None):
        self.check_env(env)
        if self.planner is not None:
            self.planner.reset(env, seed)

    def act(self, obs, env):
        flat = flat_observation(env, obs)
        flat[self.hidden_columns] = 0.0
        if self.endpoint_agents:
            from agents.endpoint_agents import act_per_endpoint

            masks = env.action_masks()[None] if self.masked else None
            normalize = self.normalizer.normalize_obs if self.normalizer is not None else None
            return act_per_endpoint(self.model, self.features, flat[None], masks, normalize, self.deterministic)[0]
        if self.normalizer is not None:
            flat = self.normalizer.normalize_obs(flat)
        plan = None
        if self.planner is not None:
            plan = np.asarray(self.planner.act(obs, env)) - env.max_delta
        kwargs = {}
        if self.masked:
            full = env.action_masks()
            kwargs["action_masks"] = full if plan is None else residual_masks(full, plan, self.reach, env.max_delta)
        action, _ = self.model.predict(flat, deterministic=self.deterministic, **kwargs)
        if plan is None:
            return np.asarray(action)
        return residual_change(plan, action, self.reach, env.max_delta)
