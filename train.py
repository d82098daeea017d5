"""Train an RL autoscaler with stable-baselines3 / sb3-contrib.

    python train.py                                                  # MaskablePPO on the small env
    python train.py algo=ppo env=sageserve_env/SageServe-fast-v0 n_timesteps=300000 seed=1
    python train.py algo=maskable_ppo bc_policy=reactive hyperparams.learning_rate=1e-4
    python train.py 'env_kwargs={reward: cost, decision_interval_s: 900}' residual=true hyperparams=rl_agent
    python train.py bc_dataset=sageserve/SageServeSmall/reactive-v0    # a Minari dataset (agents.datasets)
    python train.py resume=logs/maskable_ppo/SageServeSmall-v0_1/checkpoints/rl_model_20000_steps.zip

The command line is Hydra's (``sageserve_env.app``): overrides of ``TrainConfig`` over
``configs/commands/train.yaml`` (``sageserve_env/configs``), ``-m`` for a multirun (``-m
seed=0,1``: each job under ``log_folder/<its overrides>/``), ``--cfg job`` to print the config.
Hyperparameters come from ``configs/hyperparams/<algo>.yml`` keyed by env ID (RL Baselines3 Zoo
layout), then ``hyperparams=rl_agent`` (a named set) and ``hyperparams.<key>=value``. Runs go to
``logs/<algo>/<env>_<n>/``: TensorBoard events, checkpoints, the best model on validation days,
and the final ``model.zip`` with ``model_vecnormalize.pkl`` and ``model.yaml`` (what ``evaluate.py
policies=[ckpt:PATH]`` loads).
"""

from __future__ import annotations

import functools
import math
import os
import pkgutil

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: parallel workers, one BLAS thread each

import shutil
import sys
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import gymnasium as gym
import yaml
from omegaconf import MISSING

from sageserve_env.app import Job, compose
from sageserve_env.app import run as run_app
from sageserve_env.config import CONFIG_DIR, ConfigError


@dataclass
class TrainConfig:
    """What to train; defaults in ``configs/commands/train.yaml``. On the command line ``env_kwargs`` and
    ``eval_env_kwargs`` are typed env options (``sageserve_env.config.EnvConfig``) and
    ``hyperparams`` typed ``Hyperparams``, of which only the keys given count. ``mix_envs``:
    vectorized IDs with ``env``'s spaces whose worlds train beside ``env``'s, the ``n_envs``
    worlds split evenly among the IDs (one agent for several tasks); validation then covers each
    ID's ``validation_seeds`` and chooses by the mean reward over all of them. ``endpoint_agents``
    (vectorized envs): each endpoint of each world is an agent of one shared policy with its own
    reward (``agents.endpoint_agents``); ``n_envs`` still counts worlds, ``n_timesteps`` world steps.
    ``task_weights`` (vectorized envs): one multiplier per ID of ``env`` then ``mix_envs`` of the
    rewards its worlds train on (validation and scores keep the env's rewards).
    ``hidden_features`` (vectorized envs): observation features (``queued.iw``; the names of
    ``sageserve_env.env.sageserve_env.observation_features``) the agent sees as 0 in training,
    in validation and when it acts (saved in its metadata).
    ``validation_workers=1`` (vectorized envs): each validation plays a snapshot of the model in a
    worker process while training goes on, with the same figures, best model and trained weights
    as validating in the training process (0; ``agents.vector_training.VectorValidation``).
    ``demand_residual`` (vectorized envs): the agent adjusts the change of a planner that sizes
    every endpoint for its last five minutes' arrivals by at most ``hyperparams.residual_reach``
    instances (``agents.demand``), in training, in validation and when it acts; the planner sizes
    them for ``demand_headroom`` times those arrivals (1.0)."""

    algo: str = "maskable_ppo"
    env: str = "sageserve_env/SageServeSmall-v0"
    env_kwargs: Dict[str, Any] = field(default_factory=dict)
    mix_envs: List[str] = field(default_factory=list)
    task_weights: List[float] = field(default_factory=list)
    task_env_kwargs: List[Dict[str, Any]] = field(default_factory=list)
    hidden_features: List[str] = field(default_factory=list)
    n_envs: Optional[int] = None
    n_timesteps: Optional[int] = None
    seed: int = 0
    hyperparams: Dict[str, Any] = field(default_factory=dict)
    normalize: Optional[bool] = None
    eval_freq: int = 10000
    eval_episodes: int = 2
    validation_seeds: Optional[List[int]] = None
    save_freq: int = 20000
    log_folder: str = "logs"
    tensorboard: bool = True
    progress_bar: bool = True
    resume: Optional[str] = None
    bc_policy: Optional[str] = None
    bc_envs: List[str] = field(default_factory=list)
    bc_dataset: Optional[str] = None
    bc_episodes: int = 4
    bc_epochs: int = 20
    residual: bool = False
    endpoint_agents: bool = False
    demand_residual: bool = False
    demand_headroom: float = 1.0
    residual_forecaster: str = "seasonal_naive"
    residual_prior: float = 2.0
    eval_env_kwargs: Dict[str, Any] = field(default_factory=dict)
    ship: bool = False
    ship_as: str = "rl"
    torch_threads: int = 1
    validation_workers: int = 0


@dataclass
class Hyperparams:
    """The hyperparameters of the files ``configs/hyperparams/<algo>.yml`` with their types: the
    schema of ``hyperparams.<key>=value`` (any other keyword of the algorithm: ``+hyperparams.<key>=value``).
    Every field is missing (``???``) unless given: the file's entry holds the values."""

    n_envs: int = MISSING
    n_timesteps: int = MISSING
    policy: str = MISSING
    normalize: bool = MISSING
    n_steps: int = MISSING
    batch_size: int = MISSING
    n_epochs: int = MISSING
    gamma: float = MISSING
    gae_lambda: float = MISSING
    learning_rate: float = MISSING
    ent_coef: float = MISSING
    vf_coef: float = MISSING
    clip_range: float = MISSING
    max_grad_norm: float = MISSING
    residual_reach: int = MISSING
    use_masks: bool = MISSING
    policy_kwargs: Any = MISSING


# the typed Hyperparams node the command line fills (train.yaml: hyperparams: given)
CONFIG_GROUPS = (("hyperparams", "given", Hyperparams),)

# (lowest, highest, lowest allowed, must be an integer) of the hyperparameters train.py knows;
# the others go to the algorithm as given (any number among them must still be finite)
HYPERPARAM_RANGES = {
    "n_envs": (1, None, True, True),
    "n_timesteps": (0, None, True, True),
    "n_steps": (1, None, True, True),
    "batch_size": (1, None, True, True),
    "n_epochs": (1, None, True, True),
    "residual_reach": (1, None, True, True),
    "learning_rate": (0.0, None, True, False),
    "gamma": (0.0, 1.0, True, False),
    "gae_lambda": (0.0, 1.0, True, False),
    "ent_coef": (0.0, None, True, False),
    "vf_coef": (0.0, None, True, False),
    "clip_range": (0.0, None, False, False),
    "max_grad_norm": (0.0, None, False, False),
}
FLATTEN = "gymnasium.wrappers.FlattenObservation"  # the hyperparameter files' env_wrapper, for RL Zoo
# TrainConfig counts: (key, lowest allowed)
COUNT_FIELDS = (("eval_freq", 0), ("eval_episodes", 1), ("save_freq", 0), ("bc_episodes", 1), ("bc_epochs", 0),
                ("torch_threads", 1), ("validation_workers", 0))


def parse_args(argv: List[str]) -> TrainConfig:
    """Defaults, then Hydra overrides (not yet checked: ``resolve``)."""
    return compose("train", TrainConfig, argv, CONFIG_GROUPS)[0]


def check_hyperparams(hp: Dict[str, Any], source: str) -> None:
    """Every number finite and the known ones in range, else a ConfigError naming the key and
    where it came from (``source``: the hyperparameter file and the command line); ``policy_kwargs``
    a mapping."""
    kwargs = hp.get("policy_kwargs")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise ConfigError(f"hyperparameter 'policy_kwargs' = {kwargs!r} ({source}): must be a mapping, "
                          "e.g. hyperparams.policy_kwargs={hidden:32}")
    for key, value in hp.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if key in HYPERPARAM_RANGES and value is not None:
                raise ConfigError(f"hyperparameter {key!r} = {value!r} ({source}): must be a number")
            continue
        if not math.isfinite(value):
            raise ConfigError(f"hyperparameter {key!r} = {value!r} ({source}): must be a finite number")
        if key not in HYPERPARAM_RANGES:
            continue
        low, high, closed, integer = HYPERPARAM_RANGES[key]
        if integer and value != int(value):
            raise ConfigError(f"hyperparameter {key!r} = {value!r} ({source}): must be an integer")
        if value < low or (value == low and not closed) or (high is not None and value > high):
            bound = f"in [{low}, {high}]" if high is not None else f"{'>=' if closed else '>'} {low}"
            raise ConfigError(f"hyperparameter {key!r} = {value!r} ({source}): must be {bound}")


def check_env_kwargs(env_id: str, kwargs: Dict[str, Any], what: str) -> gym.Env:
    """The env ``gym.make(env_id, **kwargs)``, or a ConfigError naming ``what`` (the option)."""
    try:
        return gym.make(env_id, **kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{what} = {kwargs}: {exc}") from None


def check_same_spaces(cfg: TrainConfig, env_id: str, what: str) -> None:
    """``env_id`` is registered and, with ``cfg.env_kwargs``, has ``cfg.env``'s spaces (the ``what`` option names it)."""
    if env_id not in gym.registry:
        raise ConfigError(f"{what}: {env_id!r} is not a registered env")
    env = check_env_kwargs(env_id, cfg.env_kwargs, f"{what} {env_id} with env_kwargs")
    base = gym.make(cfg.env, **cfg.env_kwargs)
    if env.observation_space != base.observation_space or env.action_space != base.action_space:
        raise ConfigError(f"{what}: {env_id} has other observation or action spaces than {cfg.env}")
    env.close()
    base.close()


def resolve(cfg: TrainConfig) -> Dict[str, Any]:
    """Check the configuration and return the hyperparameters; every error before training."""
    from agents import check_policy_spec
    from agents.learned import algorithms
    from agents.training import seed_splits

    if cfg.algo not in algorithms():
        raise ConfigError(f"unknown algo {cfg.algo!r}; known: {sorted(algorithms())}")
    if cfg.env not in gym.registry:
        import sageserve_env  # noqa: F401  (registers the IDs)
    if cfg.env not in gym.registry:
        ids = sorted(i for i in gym.registry if i.startswith("sageserve_env/"))
        raise ConfigError(f"unknown env {cfg.env!r}; registered: {ids}")
    for key, low in COUNT_FIELDS:
        if getattr(cfg, key) < low:
            raise ConfigError(f"{key} must be >= {low}, got {getattr(cfg, key)}")
    for key in ("n_envs", "n_timesteps"):
        value = getattr(cfg, key)
        low = HYPERPARAM_RANGES[key][0]
        if value is not None and value < low:
            raise ConfigError(f"{key} must be >= {low} (or null: from the hyperparameters), got {value}")
    path = CONFIG_DIR / "hyperparams" / f"{cfg.algo}.yml"
    table = yaml.safe_load(path.read_text())
    hp = dict(table.get(cfg.env, table["default"]))
    hp.update(cfg.hyperparams)
    check_hyperparams(hp, f"{path.name} entry {cfg.env if cfg.env in table else 'default'} with the "
                          "hyperparams.* arguments")
    if hp.pop("use_masks", cfg.algo == "maskable_ppo") and cfg.algo != "maskable_ppo":
        raise ConfigError(f"use_masks needs algo=maskable_ppo; {cfg.algo} cannot use action masks")
    wrapper = hp.pop("env_wrapper", FLATTEN)  # RL Zoo's key; env_factory flattens the observation itself
    if wrapper != FLATTEN:
        raise ConfigError(f"hyperparameter 'env_wrapper' = {wrapper!r} ({path.name}): train.py flattens every "
                          f"observation itself ({FLATTEN}) and takes no other wrapper")
    if cfg.resume and not Path(cfg.resume).exists():
        raise ConfigError(f"resume: checkpoint {cfg.resume!r} does not exist")
    if cfg.resume and not zipfile.is_zipfile(cfg.resume):
        raise ConfigError(f"resume: checkpoint {cfg.resume!r} is not a model .zip saved by train.py")
    if cfg.bc_policy:
        check_policy_spec(cfg.bc_policy)
    if cfg.bc_envs and not cfg.bc_policy:
        raise ConfigError("bc_envs names where bc_policy plays its demonstrations; give bc_policy too")
    for env_id in cfg.bc_envs:
        check_same_spaces(cfg, env_id, "bc_envs")
    if cfg.bc_policy:
        for env_id in cfg.bc_envs or [cfg.env]:
            if not hasattr(gym.make(env_id, **cfg.env_kwargs).unwrapped, "view"):
                raise ConfigError(f"bc_policy plays in {env_id}, whose env gives baselines no view of the "
                                  "simulator; name an ID of its spaces that does in bc_envs, "
                                  "e.g. bc_envs=[sageserve_env/Burst-fast-v1] for Burst-vec-v1")
    if cfg.bc_dataset:
        from agents.datasets import check_dataset

        if cfg.bc_policy or cfg.residual:
            raise ConfigError("bc_dataset excludes bc_policy and residual (its actions are the base env's)")
        check_dataset(cfg.bc_dataset, gym.make(cfg.env, **cfg.env_kwargs))
    if cfg.residual_forecaster not in ("arima", "seasonal_naive"):
        raise ConfigError(f"residual_forecaster must be arima or seasonal_naive, got {cfg.residual_forecaster!r}")
    if not cfg.residual_prior >= 0:
        raise ConfigError(f"residual_prior must be >= 0, got {cfg.residual_prior!r}")
    from agents.demand import DemandPlan

    try:
        DemandPlan.check(300.0, cfg.demand_headroom)  # the planner's own rule (its default window)
    except ValueError as exc:
        raise ConfigError(f"demand_{exc}") from None
    from agents import SHIPPED_AGENTS

    if cfg.ship_as not in SHIPPED_AGENTS:
        raise ConfigError(f"ship_as must name a shipped agent {sorted(SHIPPED_AGENTS)}, got {cfg.ship_as!r}")
    train_seeds, validation_seeds = seed_splits(cfg.env)
    if cfg.seed not in train_seeds:
        raise ConfigError(f"seed must be in [{train_seeds.start}, {train_seeds.stop}), the training days of {cfg.env}: "
                          "the other seeds are held out")
    if cfg.validation_seeds is None:  # the env's first four validation days
        cfg.validation_seeds = list(validation_seeds[:4])
    outside = [s for s in cfg.validation_seeds if s not in validation_seeds]
    if outside:
        raise ConfigError(f"validation_seeds {outside} are outside [{validation_seeds.start}, {validation_seeds.stop}), "
                          f"the validation days of {cfg.env}")
    vector = gym.spec(cfg.env).vector_entry_point is not None and not cfg.residual
    days = cfg.validation_seeds
    if vector and days and days != list(range(days[0], days[0] + len(days))):
        raise ConfigError(f"validation_seeds of a vectorized env must be consecutive (world i is day first + i), "
                          f"got {cfg.validation_seeds}")
    check_env_kwargs(cfg.env, cfg.env_kwargs, "env_kwargs").close()
    check_env_kwargs(cfg.env, {**cfg.env_kwargs, **cfg.eval_env_kwargs}, "eval_env_kwargs").close()
    check_vector_options(cfg, vector)
    hp["n_envs"] = int(cfg.n_envs if cfg.n_envs is not None else hp.get("n_envs", 1))
    hp["n_timesteps"] = int(cfg.n_timesteps if cfg.n_timesteps is not None else hp.get("n_timesteps", 100000))
    hp["normalize"] = hp.get("normalize", False) if cfg.normalize is None else cfg.normalize
    per_env = hp["n_envs"] // (1 + len(cfg.mix_envs))
    if cfg.mix_envs and per_env * (1 + len(cfg.mix_envs)) != hp["n_envs"]:
        raise ConfigError(f"n_envs={hp['n_envs']} does not split evenly among env and mix_envs "
                          f"({1 + len(cfg.mix_envs)} IDs)")
    if vector and cfg.seed + per_env - 1 not in train_seeds:
        raise ConfigError(f"seed={cfg.seed} with n_envs={per_env} seeds worlds up to {cfg.seed + per_env - 1}, "
                          f"past the training days of {cfg.env} (below {train_seeds.stop})")
    return hp


def check_vector_options(cfg: TrainConfig, vector: bool) -> None:
    """``mix_envs`` (and ``endpoint_agents``) need vectorized IDs; ``mix_envs`` with ``env``'s
    spaces, seeds and options."""
    from agents.training import seed_splits

    if cfg.validation_workers > 1:
        raise ConfigError(f"validation_workers must be 0 (validate in the training process) or 1 (in a worker "
                          f"process beside it), got {cfg.validation_workers}")
    if cfg.validation_workers and not vector:
        raise ConfigError(f"validation_workers=1 needs a vectorized env (<Task>-vec-v1), not {cfg.env}"
                          + (" with residual=true" if cfg.residual else ""))
    if cfg.endpoint_agents and not vector:
        raise ConfigError(f"endpoint_agents needs a vectorized env (<Task>-vec-v1), not {cfg.env}"
                          + (" with residual=true" if cfg.residual else ""))
    if cfg.demand_residual and (not vector or cfg.endpoint_agents):
        raise ConfigError("demand_residual needs a vectorized env (<Task>-vec-v1) without endpoint_agents "
                          "(residual=true is the single env's residual over lt_i)"
                          + (f", not {cfg.env}" if not vector else ""))
    if cfg.task_weights:
        check_one_per_task(cfg, vector, "task_weights", cfg.task_weights, "numbers")
        bad = [w for w in cfg.task_weights if not (math.isfinite(w) and w > 0)]
        if bad:
            raise ConfigError(f"task_weights must be finite numbers > 0, got {list(cfg.task_weights)}")
    if cfg.task_env_kwargs:
        check_task_env_kwargs(cfg, vector)
    if cfg.hidden_features:
        check_hidden_features(cfg, vector)
    if not cfg.mix_envs:
        return
    if not vector:
        raise ConfigError(f"mix_envs needs a vectorized env (<Task>-vec-v1), not {cfg.env}"
                          + (" with residual=true" if cfg.residual else ""))
    ids = [cfg.env, *cfg.mix_envs]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise ConfigError(f"mix_envs: {twice} appear more than once among env and mix_envs")
    base = gym.make(cfg.env, **cfg.env_kwargs)
    for env_id in cfg.mix_envs:
        if env_id not in gym.registry or gym.spec(env_id).vector_entry_point is None:
            raise ConfigError(f"mix_envs: {env_id!r} is not a registered vectorized env")
        if seed_splits(env_id) != seed_splits(cfg.env):
            raise ConfigError(f"mix_envs: {env_id} has other training or validation days than {cfg.env}")
        env = check_env_kwargs(env_id, {**cfg.env_kwargs, **cfg.eval_env_kwargs}, f"mix_envs {env_id} with env_kwargs")
        if env.observation_space != base.observation_space or env.action_space != base.action_space:
            raise ConfigError(f"mix_envs: {env_id} has other observation or action spaces than {cfg.env}")
        env.close()
    base.close()


def check_hidden_features(cfg: TrainConfig, vector: bool) -> None:
    """``hidden_features``: names of ``env``'s observation features, in a vectorized env."""
    from agents.training import hidden_columns

    if not vector:
        raise ConfigError(f"hidden_features needs a vectorized env (<Task>-vec-v1), not {cfg.env}"
                          + (" with residual=true" if cfg.residual else ""))
    env = gym.make(cfg.env, **cfg.env_kwargs)
    try:
        hidden_columns(env.observation_space, cfg.hidden_features)
    except ValueError as exc:
        raise ConfigError(f"hidden_features = {list(cfg.hidden_features)}: {exc}") from None
    finally:
        env.close()


def check_one_per_task(cfg: TrainConfig, vector: bool, option: str, values: List[Any], kind: str) -> None:
    """``option`` (``values``, of ``kind``) needs a vectorized env without endpoint_agents and
    one value per ID of ``env`` then ``mix_envs``."""
    ids = [cfg.env, *cfg.mix_envs]
    if not vector or cfg.endpoint_agents:
        raise ConfigError(f"{option} needs a vectorized env (<Task>-vec-v1) without endpoint_agents"
                          + (f", not {cfg.env}" if not vector else ""))
    if len(values) != len(ids):
        raise ConfigError(f"{option} has {len(values)} {kind}, one per ID of env and mix_envs "
                          f"({len(ids)}: {ids}) is needed")


def check_task_env_kwargs(cfg: TrainConfig, vector: bool) -> None:
    """``task_env_kwargs``: one mapping (Hydra checks the type) of valid env options per ID of
    ``env`` and ``mix_envs``, keeping ``env``'s spaces."""
    ids = [cfg.env, *cfg.mix_envs]
    check_one_per_task(cfg, vector, "task_env_kwargs", cfg.task_env_kwargs, "mappings")
    base = gym.make(cfg.env, **cfg.env_kwargs)
    for i, (env_id, kwargs) in enumerate(zip(ids, cfg.task_env_kwargs)):
        env = check_env_kwargs(env_id, {**cfg.env_kwargs, **kwargs}, f"task_env_kwargs[{i}] for {env_id}")
        if env.observation_space != base.observation_space or env.action_space != base.action_space:
            raise ConfigError(f"task_env_kwargs[{i}] gives {env_id} other observation or action spaces than {cfg.env}")
        env.close()
    base.close()


def vector_training_env(cfg: TrainConfig, n_envs: int, reach: Optional[int] = None) -> Any:
    """The training worlds of a vectorized run: ``n_envs`` split evenly among ``env`` and
    ``mix_envs``, each ID's with ``env_kwargs`` and its ``task_env_kwargs``, its rewards weighted
    by its ``task_weights``, the ``hidden_features`` 0 in its observations; ``reach``: the
    agent adjusts the demand planner's changes (``agents.demand.ResidualDemand``)."""
    from agents.vector_training import SB3VectorEnv, make_vector_env  # one process runs every world

    ids = [cfg.env, *cfg.mix_envs]
    own = cfg.task_env_kwargs or [{}] * len(ids)
    return SB3VectorEnv(*(make_vector_env(env_id, {**cfg.env_kwargs, **kwargs}, n_envs // len(ids), reach,
                                          cfg.demand_headroom)
                          for env_id, kwargs in zip(ids, own)),
                        weights=list(cfg.task_weights) or None, hidden=list(cfg.hidden_features))


def build_model(cfg: TrainConfig, hp: Dict[str, Any], venv: Any, out: Path, normalize: bool):
    """(model, venv): a new model on ``venv``, or the ``resume`` checkpoint loaded onto it with
    the hyperparameters given on the command line (``hyperparams.<key>=value``) in place of the
    checkpoint's (``policy_kwargs`` on top of its own, when its weights still fit the network they
    make, e.g. ``week_phase: false``); a bad hyperparameter or checkpoint is a ConfigError (before
    the run folder exists)."""
    from stable_baselines3.common.vec_env import VecNormalize

    from agents.learned import algorithms, normalizer_path

    algo = algorithms()[cfg.algo]
    tb = str(out / "tb") if cfg.tensorboard else None
    if cfg.resume:
        norm = normalizer_path(Path(cfg.resume))
        changes = {k: hp[k] for k in cfg.hyperparams if k in hp}
        if "policy" in changes:
            raise ConfigError("resume: a checkpoint keeps its policy class; hyperparams.policy cannot change it")
        network = changes.pop("policy_kwargs", None)
        try:
            if normalize and norm.exists():
                venv = VecNormalize.load(str(norm), venv)
            elif normalize:
                venv = VecNormalize(venv)
            custom = {}
            if network is not None:
                from stable_baselines3.common.save_util import load_from_zip_file

                saved = load_from_zip_file(cfg.resume, load_data=True, device="cpu")[0].get("policy_kwargs", {})
                custom["policy_kwargs"] = {**saved, **network}
            return algo.load(cfg.resume, env=venv, device="cpu", tensorboard_log=tb, custom_objects=custom,
                             **changes), venv
        except Exception as exc:  # SB3 passes on whatever zipfile, torch or pickle raise
            raise ConfigError(f"resume: cannot continue from {cfg.resume!r} with algo={cfg.algo}: "
                              f"{type(exc).__name__}: {' '.join(str(exc).split())}") from None
    if normalize:
        venv = VecNormalize(venv, gamma=hp.get("gamma", 0.99))
    policy = hp.pop("policy", "MlpPolicy")
    if ":" in policy:  # a policy class of its own, e.g. agents.endpoint_policy:MaskableEndpointPolicy
        try:
            policy = pkgutil.resolve_name(policy)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"hyperparams.policy: cannot import {policy!r}: {type(exc).__name__}: {exc}") from None
    try:
        model = algo(policy, venv, seed=cfg.seed, device="cpu", verbose=0, tensorboard_log=tb, **hp)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"hyperparams for {cfg.algo}: {type(exc).__name__}: {' '.join(str(exc).split())}") from None
    return model, venv


def env_factory(cfg: TrainConfig, validation: bool = False, reach: int = 2, env_id: Optional[str] = None):
    """A picklable constructor of one training (or validation) env of ``env_id`` (default ``cfg.env``);
    ``reach`` bounds a residual agent's adjustment."""

    def make() -> gym.Env:
        from stable_baselines3.common.monitor import Monitor

        from agents import make_policy
        from agents.training import ResidualPlan, ValidationDays

        kwargs = {**cfg.env_kwargs, **cfg.eval_env_kwargs} if validation else cfg.env_kwargs
        env: gym.Env = gym.make(env_id or cfg.env, **kwargs)
        if validation:
            env = ValidationDays(env, cfg.validation_seeds)
        if cfg.residual:
            planner = make_policy("lt_i", forecaster=cfg.residual_forecaster)
            env = ResidualPlan(env, planner, reach=reach)
        env = gym.wrappers.FlattenObservation(env)
        return Monitor(env)

    return make


def favour_no_adjustment(model: Any, reach: int, prior: float) -> None:
    """Start a residual agent at the plan: add ``prior`` to the logit of "no adjustment" of every
    endpoint, so the untrained policy follows the planner (with probability
    ``e^prior / (e^prior + 2 reach)`` per endpoint) and explores around it."""
    import torch

    bias = model.policy.action_net.bias
    with torch.no_grad():
        bias[reach::2 * reach + 1] += prior


def run_dir(cfg: TrainConfig) -> Path:
    """``logs/<algo>/<env>_<n>`` with the next free n (RL Zoo convention)."""
    root = Path(cfg.log_folder) / cfg.algo
    name = cfg.env.split("/")[-1]
    n = 1
    while (root / f"{name}_{n}").exists():
        n += 1
    return root / f"{name}_{n}"


def main(argv: Optional[List[str]] = None) -> int:
    """``python train.py [Hydra overrides]``: the exit code (2: bad input)."""
    return run_app("train", TrainConfig, train, sys.argv[1:] if argv is None else argv, "train.py", CONFIG_GROUPS)


def train(cfg: TrainConfig, job: Job) -> int:
    """Check ``cfg``, train, save (in a multirun, under the job's own folder)."""
    if job.output_dir is not None:
        cfg.log_folder = job.output_dir
    try:
        hp = resolve(cfg)
    except (ConfigError, ValueError) as exc:
        print(f"train.py: error: {exc}", file=sys.stderr)
        return 2
    import numpy
    import torch
    from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

    from agents import make_policy
    from agents.learned import normalizer_path, sidecar
    from agents.training import PhaseClock, SaveNormalizerOnBest, behaviour_clone, collect_demonstrations

    torch.set_num_threads(cfg.torch_threads)
    out = run_dir(cfg)  # created once the model exists: a failed start leaves no folder behind
    n_envs, total, normalize = hp.pop("n_envs"), hp.pop("n_timesteps"), hp.pop("normalize")
    residual_reach = int(hp.pop("residual_reach", 2))
    if gym.spec(cfg.env).vector_entry_point is not None and not cfg.residual:
        venv = vector_training_env(cfg, n_envs, residual_reach if cfg.demand_residual else None)
        if cfg.endpoint_agents:
            from agents.endpoint_agents import EndpointAgents

            venv = EndpointAgents(venv)
    else:
        fns = [env_factory(cfg, reach=residual_reach) for _ in range(n_envs)]
        venv = SubprocVecEnv(fns, start_method="spawn") if n_envs > 1 else DummyVecEnv(fns)
    agents_per_world = venv.n_endpoints if cfg.endpoint_agents else 1
    venv.seed(cfg.seed)
    try:
        model, venv = build_model(cfg, hp, venv, out, normalize)
    except ConfigError as exc:
        venv.close()
        print(f"train.py: error: {exc}", file=sys.stderr)
        return 2
    if cfg.residual and not cfg.resume:
        favour_no_adjustment(model, residual_reach, cfg.residual_prior)
    if cfg.bc_dataset and not cfg.resume:
        from agents.datasets import demonstrations

        obs, actions = demonstrations(cfg.bc_dataset)
    if cfg.bc_policy and not cfg.resume:
        expert = make_policy(cfg.bc_policy)
        played = [collect_demonstrations(env_factory(cfg, reach=residual_reach, env_id=env_id), expert, cfg.bc_episodes,
                                         seeds=list(range(cfg.seed + 500, cfg.seed + 500 + cfg.bc_episodes)))
                  for env_id in cfg.bc_envs or [cfg.env]]
        obs, actions = (numpy.concatenate(part) for part in zip(*played))
    if (cfg.bc_policy or cfg.bc_dataset) and not cfg.resume:
        if isinstance(venv, VecNormalize):
            venv.obs_rms.update(obs)
        losses = behaviour_clone(model, obs, actions, cfg.bc_epochs,
                                 normalize=venv.normalize_obs if isinstance(venv, VecNormalize) else None,
                                 seed=cfg.seed)
        print(f"behaviour cloning of {cfg.bc_dataset or cfg.bc_policy}: {len(obs)} decisions, NLL {losses[0]:.3f} -> {losses[-1]:.3f}")
    callbacks = []
    if cfg.save_freq:
        callbacks.append(CheckpointCallback(max(cfg.save_freq // n_envs, 1), str(out / "checkpoints"),
                                            save_vecnormalize=normalize))
    vector = gym.spec(cfg.env).vector_entry_point is not None and not cfg.residual
    if vector:
        from agents.vector_training import EpisodeKPIs

        callbacks.append(EpisodeKPIs())
    if cfg.eval_freq and cfg.validation_seeds and vector:
        from agents.vector_training import VectorValidation, make_vector_env

        kwargs = {**cfg.env_kwargs, **cfg.eval_env_kwargs}
        reach = residual_reach if cfg.demand_residual else None
        tasks = {env_id.split("/")[-1]: functools.partial(make_vector_env, env_id, kwargs, reach=reach,
                                                                      headroom=cfg.demand_headroom)
                 for env_id in [cfg.env, *cfg.mix_envs]}
        callbacks.append(VectorValidation(tasks, cfg.validation_seeds[0], len(cfg.validation_seeds),
                                          cfg.eval_freq, out, masked=cfg.algo == "maskable_ppo",
                                          agents_per_world=agents_per_world, workers=cfg.validation_workers,
                                          hidden=list(cfg.hidden_features)))
    elif cfg.eval_freq and cfg.validation_seeds:
        eval_env = DummyVecEnv([env_factory(cfg, validation=True, reach=residual_reach)])
        if normalize:
            eval_env = VecNormalize(eval_env, training=False, norm_reward=False)
        kind = EvalCallback
        if cfg.algo == "maskable_ppo":
            from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback as kind
        on_best = SaveNormalizerOnBest(out / "best_model_vecnormalize.pkl") if normalize else None
        callbacks.append(kind(eval_env, n_eval_episodes=cfg.eval_episodes, eval_freq=max(cfg.eval_freq // n_envs, 1),
                              best_model_save_path=str(out), log_path=str(out / "eval"), deterministic=True,
                              callback_on_new_best=on_best))
    probe = gym.make(cfg.env, **cfg.env_kwargs).unwrapped  # the settings the agent acts under
    env_kwargs = {**cfg.env_kwargs, "max_delta": probe.max_delta, "decision_interval_s": probe.interval,
                  "forecaster": probe.config["forecaster"]}
    meta = {"algo": cfg.algo, "env": cfg.env, "mix_envs": list(cfg.mix_envs),
            "task_weights": list(cfg.task_weights), "task_env_kwargs": [dict(k) for k in cfg.task_env_kwargs],
            "endpoint_agents": cfg.endpoint_agents, "hidden_features": list(cfg.hidden_features),
            "env_kwargs": env_kwargs, "residual": cfg.residual, "demand_residual": cfg.demand_residual,
            "demand_headroom": cfg.demand_headroom,
            "residual_reach": residual_reach, "residual_forecaster": cfg.residual_forecaster, "seed": cfg.seed,
            "command": "python train.py " + " ".join(job.overrides)}
    model_path = out / "model.zip"
    out.mkdir(parents=True)
    sidecar(model_path, ".yaml").write_text(yaml.safe_dump(meta, sort_keys=False))  # checkpoints use it too
    clock = PhaseClock()
    start, steps_before = time.perf_counter(), model.num_timesteps
    model.learn(total_timesteps=total * agents_per_world, callback=callbacks + [clock], progress_bar=cfg.progress_bar,
                reset_num_timesteps=not cfg.resume, tb_log_name=cfg.algo)
    minutes = (time.perf_counter() - start) / 60
    rollout_s, update_s = clock.seconds()
    steps = (model.num_timesteps - steps_before) // agents_per_world
    print(f"trained {steps} steps in {minutes:.2f} min: rollouts {rollout_s:.0f} s ({steps / max(rollout_s, 1e-9):,.0f} "
          f"steps/s), updates {update_s:.0f} s ({steps / max(update_s, 1e-9):,.0f} steps/s)")
    model.save(str(model_path))
    if isinstance(venv, VecNormalize):
        venv.save(str(sidecar(model_path, "_vecnormalize.pkl")))
    meta.update(timesteps=int(model.num_timesteps) // agents_per_world, train_minutes=round(minutes, 2),
                rollout_minutes=round(rollout_s / 60, 2), update_minutes=round(update_s / 60, 2))
    sidecar(model_path, ".yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    venv.close()
    if cfg.ship:  # the best model on the validation days, with the run's statistics and metadata
        from agents import shipped_agent_path

        target = shipped_agent_path(cfg.ship_as)
        target.parent.mkdir(parents=True, exist_ok=True)
        best = out / "best_model.zip"
        chosen = best if best.exists() else model_path
        shutil.copy(chosen, target)
        if normalize:
            shutil.copy(normalizer_path(chosen), sidecar(target, "_vecnormalize.pkl"))
        shutil.copy(sidecar(model_path, ".yaml"), sidecar(target, ".yaml"))
    print(f"trained {cfg.algo} on {cfg.env} for {model.num_timesteps // agents_per_world} steps in {minutes:.1f} min; saved {model_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
