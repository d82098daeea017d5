"""Minari datasets of the baseline policies, for offline RL and behaviour cloning.

A dataset holds one policy's episodes on generated days of one env ID: the Dict observations
(one more than steps per episode), the MultiDiscrete actions, rewards, terminations,
truncations, and per step ``infos`` with ``action_mask`` (the mask the action was chosen under:
``infos["action_mask"][t]`` goes with ``actions[t]``), ``reward_terms``, ``kpis`` (running totals,
refused changes among them) and ``sim_time_s``. IDs follow the Farama convention
``sageserve/<env name>/<policy>-v<env version>``, e.g. ``sageserve/Day/reactive-v1`` for the
``Day-v1`` task or ``sageserve/SageServe/reactive-v0``: the dataset's version is its env's, so a
new task version gets new datasets. Days are training seeds only: a task's train split
(``sageserve_env.tasks``), below 900 for the v0 IDs. Datasets are written to Minari's local data
directory (``MINARI_DATASETS_PATH``, default ``~/.minari/datasets``) in Minari's HDF5 format (its
default; its Arrow reader flattens nested infos).
"""

from __future__ import annotations

import re
import warnings
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import gymnasium as gym
import numpy as np
from gymnasium import spaces

NAMESPACE = "sageserve"
TRAIN_SEEDS_BELOW = 900  # v0 IDs: days of datasets (and of training); 900-999 validate, 1000 and up evaluate


def _env_name(env_id: str) -> str:
    return env_id.split("/")[-1].split(":")[-1]


def dataset_id(env_id: str, policy: str, version: Optional[int] = None) -> str:
    """``sageserve/<env name>/<policy>-v<version>`` for an env ID such as ``sageserve_env/Day-v1``;
    ``version`` defaults to the env ID's."""
    match = re.fullmatch(r"(.+)-v(\d+)", _env_name(env_id))
    if match is None:
        raise ValueError(f"env ID {env_id!r} has no version suffix -vN")
    name, env_version = match.groups()
    return f"{NAMESPACE}/{name}/{re.sub(r'[^A-Za-z0-9_]+', '_', policy)}-v{env_version if version is None else version}"


def training_seeds(env_id: str) -> range:
    """The days a dataset of ``env_id`` may hold: a task's train split, below 900 for the v0 IDs."""
    from sageserve_env.tasks import task

    try:
        return task(env_id).seeds.seeds("train")
    except ValueError:  # not a benchmark task: a v0 ID
        return range(TRAIN_SEEDS_BELOW)


def _info_record(env: gym.Env, info: Dict[str, Any]) -> Dict[str, Any]:
    """The step's info in a fixed layout, with the action mask of the state reached: the env's
    own info has a list of refusal messages whose length varies, which Minari cannot store (their
    count is in ``kpis["refused_changes"]``)."""
    return {
        "action_mask": env.unwrapped.action_masks().copy(),
        "reward_terms": {k: float(v) for k, v in info["reward_terms"].items()},
        "kpis": {k: float(v) for k, v in info["kpis"].items()},
        "sim_time_s": float(info["sim_time_s"]),
    }


def _append(tree: Any, value: Any) -> Any:
    """Append ``value`` to the lists of ``tree`` (nested dicts of lists, or one list), leaf by leaf."""
    if isinstance(tree, dict):
        for k, v in value.items():
            _append(tree[k], v)
    else:
        tree.append(value)
    return tree


def _lists(value: Any) -> Any:
    """A tree of one-element lists shaped like ``value`` (nested dicts)."""
    return {k: _lists(v) for k, v in value.items()} if isinstance(value, dict) else [value]


def record_episode(env: gym.Env, policy, seed: int, episode_id: int):
    """One episode of ``policy`` in ``env`` (made with ``gym.make``) as a Minari ``EpisodeBuffer``."""
    from minari.data_collector import EpisodeBuffer

    obs, info = env.reset(seed=seed)
    base = env.unwrapped
    policy.reset(base, seed)
    observations, infos = _lists(obs), _lists(_info_record(env, info))
    actions, rewards, terminations, truncations = [], [], [], []
    done = False
    while not done:
        action = np.asarray(policy.act(obs, base))
        obs, reward, terminated, truncated, info = env.step(action)
        _append(observations, obs)
        _append(infos, _info_record(env, info))
        actions.append(action)
        rewards.append(float(reward))
        terminations.append(bool(terminated))
        truncations.append(bool(truncated))
        done = terminated or truncated
    return EpisodeBuffer(id=episode_id, seed=seed, observations=observations, actions=actions, rewards=rewards,
                         terminations=terminations, truncations=truncations, infos=infos)


def record_dataset(policy_spec: str, seeds: Sequence[int], env_id: str = "sageserve_env/SageServe-v0",
                   env_kwargs: Optional[Dict[str, Any]] = None, name: Optional[str] = None,
                   overwrite: bool = False, allow_held_out: bool = False,
                   on_episode: Optional[Callable[[int, Any], None]] = None):
    """Run ``policy_spec`` for one episode per seed and write the Minari dataset ``name``
    (default ``dataset_id(env_id, policy_spec)``); returns the ``MinariDataset``.

    The env is ``gym.make(env_id, **{**policy.env_kwargs(), **env_kwargs})``, so the dataset's
    env spec recreates it. Seeds must be training days (``training_seeds(env_id)``) unless
    ``allow_held_out``.
    ``on_episode(seed, episode_buffer)`` is called after each episode.
    """
    import minari

    from agents import make_policy

    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("record_dataset needs at least one seed")
    allowed = training_seeds(env_id)
    outside = [s for s in seeds if s not in allowed]
    if outside and not allow_held_out:
        raise ValueError(f"seeds must be training days of {_env_name(env_id)} (in [{allowed.start}, "
                         f"{allowed.stop})); got {outside[0]}")
    name = name or dataset_id(env_id, policy_spec)
    if name in minari.list_local_datasets():
        if not overwrite:
            raise ValueError(f"Minari dataset {name!r} exists; pass overwrite=True to replace it")
        minari.delete_dataset(name)
    if env_id not in gym.registry:
        import sageserve_env  # noqa: F401  (registers the IDs)
    policy = make_policy(policy_spec)
    env = gym.make(env_id, **{**policy.env_kwargs(), **(env_kwargs or {})})
    episodes = []
    for i, seed in enumerate(seeds):
        episodes.append(record_episode(env, policy, seed, i))
        if on_episode is not None:
            on_episode(seed, episodes[-1])
    env.close()
    with warnings.catch_warnings():  # Minari's advice to add a code link, an e-mail and an eval env
        warnings.filterwarnings("ignore", message="`(code_permalink|author_email|eval_env)` is set to None")
        return minari.create_dataset_from_buffers(
            name, episodes, env=env, algorithm_name=policy_spec, author="sageserve_env", data_format="hdf5",
            description=f"{policy_spec} on {env_id}, one generated day per seed {seeds}",
            requirements=["sageserve_env"])


def demonstrations(dataset, observation_space: Optional[spaces.Space] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(flat observations, actions) of every step of a Minari dataset (or its ID), as
    ``collect_demonstrations`` returns them for behaviour cloning: the observation each action
    was taken in, flattened like ``FlattenObservation``. ``observation_space``, when given, must
    be the dataset's."""
    import minari

    if isinstance(dataset, str):
        dataset = minari.load_dataset(dataset)
    space = dataset.observation_space
    if observation_space is not None and observation_space != space:
        raise ValueError(f"the dataset's observations {space} are not the env's {observation_space}")
    observations, actions = [], []
    for episode in dataset.iterate_episodes():
        obs = episode.observations
        steps = len(episode.actions)
        if isinstance(space, spaces.Dict):
            flat = np.concatenate([np.asarray(obs[k])[:steps].reshape(steps, -1) for k in space.spaces], axis=1)
        else:
            flat = np.asarray(obs)[:steps].reshape(steps, -1)
        observations.append(flat)
        actions.append(np.asarray(episode.actions).reshape(steps, -1))
    return np.concatenate(observations).astype(np.float32), np.concatenate(actions).astype(np.int64)


def check_dataset(name: str, env: gym.Env) -> None:
    """Raise ValueError unless the local Minari dataset ``name`` exists and its observation and
    action spaces are ``env``'s (the env a behaviour-cloned agent will act in)."""
    import minari

    if name not in minari.list_local_datasets():
        raise ValueError(f"no Minari dataset {name!r} in the local data directory; make it with "
                         f"python -m agents.datasets (local: {sorted(minari.list_local_datasets())})")
    dataset = minari.load_dataset(name)
    for kind, theirs, ours in (("observation", dataset.observation_space, env.observation_space),
                               ("action", dataset.action_space, env.action_space)):
        if theirs != ours:
            raise ValueError(f"dataset {name!r} has {kind} space {theirs}, the env {ours}")


def _seeds(text: str) -> list:
    """``0-3,7`` -> [0, 1, 2, 3, 7]."""
    seeds = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return seeds


def env_ids_of(text: str) -> list:
    """A task suite (``v1``, ``v1-fast``) -> its tasks' env IDs; otherwise a comma-separated list
    of env IDs."""
    from sageserve_env.tasks import SUITES, tasks

    if text in SUITES:
        return [f"sageserve_env/{env_id}" for env_id in tasks(text)]
    return [e for e in text.split(",") if e]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m agents.datasets``: record the baselines' datasets into Minari's data directory."""
    import argparse
    import json
    import sys
    import time

    ap = argparse.ArgumentParser(prog="python -m agents.datasets", description=main.__doc__)
    ap.add_argument("--policies", default="reactive,lt_ua,oracle", help="comma-separated policy names")
    ap.add_argument("--seeds", default="0-1", help="training days, e.g. 0-3 or 0,5,9 (a task's train split)")
    ap.add_argument("--env", default="v1-fast", help="comma-separated env IDs, or a task suite: v1-fast "
                    "(default: every v1 task in the fast fidelity) or v1 (detailed; production-scale days take "
                    "minutes each)")
    ap.add_argument("--env-kwargs", default="{}", help='JSON env keywords, e.g. \'{"horizon_s": 3600}\'')
    ap.add_argument("--overwrite", action="store_true", help="replace datasets that exist")
    args = ap.parse_args(argv)
    try:
        seeds, kwargs, env_ids = _seeds(args.seeds), json.loads(args.env_kwargs), env_ids_of(args.env)
    except ValueError as exc:
        print(f"datasets: error: {exc}", file=sys.stderr)
        return 2
    for env_id in env_ids:
        for policy in [p for p in args.policies.split(",") if p]:
            start = time.perf_counter()
            try:
                dataset = record_dataset(
                    policy, seeds, env_id=env_id, env_kwargs=kwargs, overwrite=args.overwrite,
                    on_episode=lambda s, ep: print(f"  {policy} seed {s}: {len(ep)} steps, return "
                                                   f"{sum(ep.rewards):.2f}", flush=True))
            except ValueError as exc:
                print(f"datasets: error: {env_id} {policy}: {exc}", file=sys.stderr)
                return 2
            print(f"{dataset.spec.dataset_id}: {dataset.total_episodes} episodes, {dataset.total_steps} steps "
                  f"in {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
