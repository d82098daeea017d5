"""evaluate.py launcher=ray: the same results as the process pool, failures reported alike, bad
options refused; sageserve_env.launch on its own; the Ray Tune search's scoring and arguments."""

import importlib.util
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import evaluate
from sageserve_env.config import ConfigError
from sageserve_env.launch import JobFailed, RayConfig, check_launcher, run_jobs

pytest.importorskip("ray")
import ray  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TINY = ["policies=[static,reactive]", "scenario=small", "seeds=[1001,1002]", "horizon_s=1800", "plots=false",
        "bootstrap=100"]
DIFFERENT = {"wall_seconds", "run_dir"}  # the columns two runs into two folders never share


@pytest.fixture
def no_ray_left():
    """Ray is not running before the test, and the test leaves none behind."""
    assert not ray.is_initialized()
    yield
    assert not ray.is_initialized()


def test_ray_launcher_gives_the_pool_results(tmp_path, no_ray_left):
    assert evaluate.main([*TINY, f"out={tmp_path / 'pool'}", "workers=2"]) == 0
    assert evaluate.main([*TINY, f"out={tmp_path / 'ray'}", "launcher=ray", "ray.num_cpus=2"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "pool" / "results.csv"),
                                  pd.read_csv(tmp_path / "ray" / "results.csv"), check_exact=True)
    pool, on_ray = (pd.read_csv(tmp_path / k / "episodes.csv") for k in ("pool", "ray"))
    keep = [c for c in pool.columns if c not in DIFFERENT]
    assert len(pool) == 4 and list(pool.columns) == list(on_ray.columns)
    assert list(zip(pool.policy, pool.seed)) == [("static", 1001), ("static", 1002), ("reactive", 1001),
                                                 ("reactive", 1002)]  # job order, whatever finished first
    pd.testing.assert_frame_equal(pool[keep], on_ray[keep], check_exact=True)
    assert "launcher: ray" in (tmp_path / "ray" / "evaluate_config.yaml").read_text()


def test_a_failed_episode_is_reported_as_with_the_pool(tmp_path, capfd, no_ray_left):
    empty = ["policies=[static]", "scenario=small", "seeds=[1001]", "horizon_s=60", "plots=false",
             "sim_overrides=['workload.requests_per_day=1']", f"out={tmp_path / 'eval'}"]
    messages = []
    for launcher in ("pool", "ray"):
        assert evaluate.main([*empty, f"launcher={launcher}", "ray.num_cpus=1"]) == 1
        err = capfd.readouterr().err
        assert "Traceback" not in err
        messages.append([line for line in err.splitlines() if "error" in line.lower() and "evaluate.py" in line])
    assert messages[0] == messages[1] and len(messages[0]) == 1
    assert re.search(r"episode policy=static scenario=small seed=1001 failed: ValueError: .*0 requests",
                     messages[0][0])
    assert not (tmp_path / "eval" / "results.csv").exists()


@pytest.mark.parametrize("argv, match", [
    (["launcher=dask"], "launcher must be one of pool, ray, got 'dask'"),
    (["ray.num_cpus=0"], "ray.num_cpus must be an integer >= 1"),
    (["ray.address=auto", "ray.num_cpus=2"], "ray.num_cpus sizes a local Ray"),
    (["ray.address=' '"], "ray.address must name a cluster"),
    (["ray.adress=auto"], "Key 'adress' not in 'RayConfig'"),
])
def test_bad_launcher_options_fail_before_running(tmp_path, capsys, argv, match):
    quick = ["policies=[static]", "scenario=small", "seeds=[1001]", "horizon_s=60"]  # were an option let through
    assert evaluate.main([*quick, *argv, f"out={tmp_path / 'x'}"]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_run_jobs_keeps_job_order_and_names_the_failed_job(no_ray_left):
    """A job function the Ray workers can import (a test module is not on their path)."""
    jobs = [5, 1, 3, 0]
    assert run_jobs(math.factorial, jobs, "pool", workers=2) == [120, 1, 6, 1]
    assert run_jobs(math.factorial, [], "ray") == []  # nothing to run: no Ray started
    ray.init(num_cpus=1, include_dashboard=False)
    try:  # an initialized Ray is used as it is, and left running
        assert run_jobs(math.factorial, jobs, "ray") == [120, 1, 6, 1]
        assert ray.is_initialized()
        with pytest.raises(JobFailed) as on_ray:
            run_jobs(math.factorial, [1, -2, 3], "ray")
    finally:
        ray.shutdown()
    with pytest.raises(JobFailed) as on_pool:
        run_jobs(math.factorial, [1, -2, 3], "pool", workers=1)
    for failed in (on_ray.value, on_pool.value):  # the job's own exception, not Ray's wrapper
        assert failed.index == 1 and failed.job == -2
        assert type(failed.error) is ValueError and "negative" in str(failed.error)


def test_check_launcher_accepts_what_it_should():
    check_launcher("pool", RayConfig())
    check_launcher("ray", RayConfig(num_cpus=2))
    check_launcher("ray", RayConfig(address="ray://head:10001"))
    with pytest.raises(ConfigError, match="launcher must be one of"):
        check_launcher("Ray", RayConfig())


def _tune_script():
    spec = importlib.util.spec_from_file_location("tune_train", ROOT / "scripts" / "tune_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tune_search_scores_a_trial_by_its_best_validation_mean(tmp_path):
    tune_train = _tune_script()
    run = tmp_path / "logs" / "maskable_ppo" / "SageServeSmall-v0_1" / "eval"
    run.mkdir(parents=True)
    np.savez(run / "evaluations.npz", timesteps=[128, 256], results=[[-3.0, -1.0], [-2.5, -1.0]], ep_lengths=[[30, 30]] * 2)
    assert tune_train.best_validation_reward(tmp_path / "logs") == -1.75
    with pytest.raises(RuntimeError, match="found 0"):
        tune_train.best_validation_reward(tmp_path / "elsewhere")
    args = tune_train.parse(["--timesteps", "256", "--eval-freq", "128", "--train", "env_kwargs.horizon_s=1800"])
    cmd = tune_train.train_args(args, tmp_path / "t", {"learning_rate": 1e-4, "gamma": 0.99})
    assert cmd[1] == str(ROOT / "train.py") and "env_kwargs.horizon_s=1800" in cmd
    assert cmd[-2:] == ["hyperparams.learning_rate=0.0001", "hyperparams.gamma=0.99"]
    assert f"log_folder={tmp_path / 't'}" in cmd and "validation_seeds=[900,901]" in cmd


@pytest.mark.parametrize("argv, match", [
    (["--validation-seeds", "1001"], "held out"),
    (["--timesteps", "100", "--eval-freq", "200"], "no validation would run"),
    (["--samples", "0"], "--samples must be >= 1"),
])
def test_tune_search_refuses_bad_arguments(capsys, argv, match):
    with pytest.raises(SystemExit):
        _tune_script().parse(argv)
    assert match in capsys.readouterr().err
