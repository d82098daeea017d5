"""RL Zoo as the README runs it: ``python -m rl_zoo3.train`` with ``sageserve_env/configs/hyperparams``."""

import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest

import sageserve_env  # noqa: F401

pytest.importorskip("rl_zoo3")
from rl_zoo3 import ALGOS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def test_rl_zoo_trains_with_the_hyperparameter_file(tmp_path):
    """The README's command, shortened to one 32-step rollout: the file's env_wrapper flattens the
    Dict observation, so RL Zoo's MlpPolicy takes it."""
    logs, algo = tmp_path / "logs", "ppo"
    cmd = [sys.executable, "-m", "rl_zoo3.train", "--algo", algo, "--env", "sageserve_env/SageServeSmall-v0",
           "--gym-packages", "sageserve_env", "-conf", str(ROOT / "sageserve_env" / "configs" / "hyperparams" / f"{algo}.yml"),
           "-n", "32", "--hyperparams", "n_envs:1", "n_steps:32", "batch_size:32", "n_epochs:1",
           "--env-kwargs", "horizon_s:1200.0", "--eval-freq", "-1", "--seed", "1", "--log-folder", str(logs)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = logs / algo / "sageserve_env-SageServeSmall-v0_1"
    model = ALGOS[algo].load(run / "sageserve_env-SageServeSmall-v0.zip", device="cpu")
    base = gym.make("sageserve_env/SageServeSmall-v0")
    assert model.observation_space == gym.spaces.flatten_space(base.observation_space)  # the flat vector
    assert model.action_space == base.action_space and model.num_timesteps == 32
