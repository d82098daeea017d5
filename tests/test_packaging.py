"""A wheel built from the repository carries everything the commands need (presets, the
commands' configs, hyperparameters, reward presets, the shipped agent): installed in a fresh
virtual environment, it runs ``simulate``, ``evaluate`` and ``gymnasium.make`` from a folder
outside the repository, without the editable install."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
LEFT_OUT = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                  ".hypothesis", "results", "logs", "runs", "outputs", ".venv")


def _run(args, cwd, env):
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_the_wheel_runs_the_commands_from_any_folder(tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside the sources
    shutil.copytree(REPO, source, ignore=LEFT_OUT)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["OPENBLAS_NUM_THREADS"] = "1"
    _run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
          "-w", str(tmp_path / "wheels")], tmp_path, env)
    (wheel,) = (tmp_path / "wheels").glob("sageserve_env-*.whl")
    venv = tmp_path / "venv"  # system site-packages: torch and the other dependencies are not reinstalled
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], tmp_path, env)
    python, command = venv / "bin" / "python", venv / "bin" / "sageserve-env"
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", "--no-index", str(wheel)],
         tmp_path, env)

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _run([python, "-c", "import sageserve_env, agents, evaluate, train; from agents import shipped_agent_path; "
                                "print(sageserve_env.__file__, agents.__file__, evaluate.__file__, train.__file__, "
                                "shipped_agent_path().is_file())"], work, env).split()
    assert all(Path(p).is_relative_to(venv) for p in where[:4]), where  # not the editable install
    assert where[4] == "True"

    # a one-hour paper day driven by the shipped agent: presets, commands' configs and agent packaged
    _run([command, "simulate", "scenario=paper", "duration_s=3600", "policies=[rl]", "out=day", "progress=false",
          "plots=false"], work, env)
    summary = json.loads((work / "day" / "summary.json").read_text())
    assert summary["sim_seconds"] == 3600 and summary["policy"] == "rl" and summary["requests_total"] > 0

    _run([command, "evaluate", "policies=[static,reactive]", "scenario=small", "seeds=[1001]", "horizon_s=600",
          "workers=1", "plots=false", "out=eval"], work, env)
    assert set(pd.read_csv(work / "eval" / "results.csv").policy) == {"static", "reactive"}

    out = _run([python, "-c", "import gymnasium as gym, sageserve_env; "
                              "env = gym.make('sageserve_env/SageServeSmall-v0'); obs, info = env.reset(seed=0); "
                              "print(env.step(env.action_space.sample())[1] < 0)"], work, env)
    assert out.split()[-1] == "True"
    assert sorted(p.name for p in work.iterdir()) == ["day", "eval"]  # the commands wrote where told, nothing else
