"""Bad input to ``train.py`` and ``evaluate.py``: a clear error naming the key and value before
any work (or, for a worker's failure, one line naming the episode), non-zero exit, nothing left
behind. Keys and types are Hydra's (structured configs: its messages), values the commands'."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

import evaluate
import train

SAMPLE = str(Path(__file__).resolve().parents[1] / "traces" / "sample_small.csv")
QUICK = ["n_envs=1", "hyperparams.n_steps=64", "hyperparams.batch_size=32", "eval_freq=0", "save_freq=0",
         "progress_bar=false", "tensorboard=false", "env_kwargs={horizon_s: 1800}"]


# --- train.py -----------------------------------------------------------------------------

@pytest.mark.parametrize("argv, match", [
    (["n_timesteps=-5"], "n_timesteps must be >= 0"),
    (["n_envs=0"], "n_envs must be >= 1"),
    (["n_envs=-2"], "n_envs must be >= 1"),
    (["hyperparams.n_envs=0"], "hyperparameter 'n_envs' = 0"),
    (["hyperparams.learning_rate=-1"], "hyperparameter 'learning_rate' = -1.0 .*must be >= 0"),
    (["hyperparams.gamma=inf"], "hyperparameter 'gamma' = inf .*finite"),
    (["hyperparams.gamma=1.5"], r"hyperparameter 'gamma' = 1.5 .*in \[0.0, 1.0\]"),
    (["hyperparams.n_steps=12.5"], r"Value '12.5' of type 'float' could not be converted to Integer\s+"
                                   r"full_key: hyperparams.n_steps"),
    (["hyperparams.clip_range=0"], "hyperparameter 'clip_range' = 0.0 .*> 0"),
    (["hyperparams.no_such_option=3"], r"Key 'no_such_option' not in 'Hyperparams'"),
    (["+hyperparams.no_such_option=3"], "hyperparams for maskable_ppo: TypeError: .*no_such_option"),
    (["env_kwargs={colour: blue}"], r"Key 'colour' not in 'EnvConfig'\s+full_key: env_kwargs.colour"),
    (["eval_env_kwargs={horizon_s: 0}"], "eval_env_kwargs = .*horizon_s must be"),
    (["eval_freq=-1"], "eval_freq must be >= 0"),
    (["eval_episodes=0"], "eval_episodes must be >= 1"),
    (["validation_seeds=[-3]"], r"validation_seeds \[-3\] are outside \[900, 1000\)"),
    (["validation_seeds=[1,"], r"override 'validation_seeds=\[1,' is not Hydra's key=value grammar"),
    (["ship_as=best"], r"ship_as must name a shipped agent \['rl', 'rl_v1', 'rl_v1_budget', 'rl_v1_burst', 'rl_v1_demand', 'rl_v1_headroom', 'rl_v1_headroom96', 'rl_v1_mix', 'rl_v1_mix3', 'rl_v1_mix4', 'rl_v1_mix5', 'rl_v1_scratch', 'rl_v1_transfer'\], got 'best'"),
    (["env=sageserve_env/Day-vec-v1", "seed=9900", "n_envs=256"], r"seed=9900 with n_envs=256 seeds worlds up to 10155"),
    (["env=sageserve_env/Day-vec-v1", "validation_seeds=[10000,10002]"], "validation_seeds of a vectorized env must be consecutive"),
    (["env=sageserve_env/Day-vec-v1", "validation_seeds=[500]"], r"validation_seeds \[500\] are outside \[10000, 10100\)"),
    (["env=sageserve_env/Day-v1", "seed=20000"], r"seed must be in \[0, 10000\), the training days of sageserve_env/Day-v1"),
])
def test_bad_training_options_fail_before_training(tmp_path, capsys, argv, match):
    assert train.main([f"log_folder={tmp_path / 'logs'}", *QUICK, *argv]) == 2
    err = capsys.readouterr().err
    assert re.search(match, err), err
    assert "Traceback" not in err and not (tmp_path / "logs").exists()


@pytest.mark.parametrize("content", [b"not a zip", None])
def test_corrupt_or_directory_resume_fails_before_training(tmp_path, capsys, content):
    resume = tmp_path / "ckpt.zip"
    if content is None:
        resume.mkdir()
    else:
        resume.write_bytes(content)
    assert train.main([f"log_folder={tmp_path / 'logs'}", *QUICK, f"resume={resume}"]) == 2
    err = capsys.readouterr().err
    assert f"resume: checkpoint '{resume}' is not a model .zip" in err and not (tmp_path / "logs").exists()


def test_resume_that_does_not_load_leaves_no_run_folder(tmp_path, capsys):
    """A real zip that is not an SB3 model passes the quick check and fails loading."""
    import zipfile

    resume = tmp_path / "other.zip"
    with zipfile.ZipFile(resume, "w") as z:
        z.writestr("readme.txt", "hello")
    assert train.main([f"log_folder={tmp_path / 'logs'}", *QUICK, f"resume={resume}"]) == 2
    assert f"resume: cannot continue from '{resume}' with algo=maskable_ppo" in capsys.readouterr().err
    assert not (tmp_path / "logs").exists()


def test_zero_timesteps_means_zero(tmp_path):
    assert train.main([f"log_folder={tmp_path}", *QUICK, "n_timesteps=0"]) == 0
    (run,) = tmp_path.glob("*/*")
    assert yaml.safe_load((run / "model.yaml").read_text())["timesteps"] == 0 and (run / "model.zip").exists()


# --- evaluate.py --------------------------------------------------------------------------

def _evaluate(tmp_path, *argv):
    return evaluate.main(["policies=[static]", "scenario=small", "seeds=[1001]", "horizon_s=600", "workers=1",
                          "plots=false", f"out={tmp_path / 'eval'}", *argv])


@pytest.mark.parametrize("argv, match", [
    (["policies=[rl]", "horizon_s=1800"], r"policy 'rl' on scenario 'small': .* expects observations of shape "
                                          r"\(178,\) .* gives observations of shape \(34,\)"),
    (["seeds=[-1]"], "seeds must be >= 0, got -1"),
    (["seeds=[1001,1001]"], r"seeds lists \[1001\] more than once"),
    (["policies=[static,static]"], r"policies lists \['static'\] more than once"),
    (["horizon_s=0"], "horizon_s must be a finite number of seconds > 0"),
    (["horizon_s=-600"], "horizon_s must be a finite number of seconds > 0"),
    (["bootstrap=-5"], "bootstrap must be >= 1"),
    (["bootstrap=0"], "bootstrap must be >= 1"),
    (["trace=/nope.csv"], "scenario 'small': workload.trace: trace file '/nope.csv' does not exist"),
    (["sim_overrides=['slo.iw_ttft_s=.inf']"], "scenario 'small': config key 'slo.iw_ttft_s' = inf"),
    (["sim_overrides=[slo.iw_ttft_s=.inf]"], r"override 'sim_overrides=\[slo.iw_ttft_s=.inf\]' is not Hydra's"),
])
def test_bad_evaluation_options_fail_before_workers(tmp_path, capsys, argv, match):
    assert _evaluate(tmp_path, *argv) == 2
    err = capsys.readouterr().err
    assert re.search(match, err), err
    assert "Traceback" not in err and not (tmp_path / "eval").exists()


@pytest.mark.parametrize("kind", ["directory", "corrupt"])
def test_bad_checkpoints_fail_before_workers(tmp_path, capsys, kind):
    ckpt = tmp_path / "model.zip"
    if kind == "directory":
        ckpt.mkdir()
        match = "is not a file"
    else:
        ckpt.write_bytes(b"garbage")
        (tmp_path / "model.yaml").write_text("algo: ppo\n")
        match = f"cannot load {ckpt} as a ppo model"
    assert _evaluate(tmp_path, f"policies=[ckpt:{ckpt}]") == 2
    err = capsys.readouterr().err
    assert match in err and f"ckpt:{ckpt}" in err and "Traceback" not in err


def test_trace_past_the_horizon_is_refused_unless_allowed(tmp_path, capsys):
    late = pd.read_csv(SAMPLE)
    late["arrival_s"] += 1000.0
    late.to_csv(tmp_path / "late.csv", index=False)
    assert _evaluate(tmp_path, f"trace={tmp_path / 'late.csv'}") == 2
    err = capsys.readouterr().err
    assert f"0 requests in [0, 600) s (all {len(late)} trace rows arrive at or after 600 s)" in err
    assert "allow_empty=true" in err


def test_trace_rows_past_the_horizon_are_reported(tmp_path, capsys):
    trace = pd.read_csv(SAMPLE)
    outside = int((trace["arrival_s"] >= 600.0).sum())
    assert _evaluate(tmp_path, f"trace={SAMPLE}") == 0
    assert f"{outside:,} of {len(trace):,} trace rows arrive at or after the horizon (600 s)" in capsys.readouterr().err


def test_worker_failure_is_one_line_naming_the_episode(tmp_path, capsys):
    """A generated episode without requests fails in its worker; the error names the episode."""
    empty = ["horizon_s=60", "sim_overrides=['workload.requests_per_day=1']"]
    assert _evaluate(tmp_path, *empty) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and "Traceback" not in err
    assert re.search(r"episode policy=static scenario=small seed=1001 failed: ValueError: .*0 requests", lines[0])
    assert not (tmp_path / "eval" / "results.csv").exists()

    # asked for explicitly, the empty episode is scored; a reused folder keeps no stale run
    stale = tmp_path / "eval" / "runs" / "small" / "lt_ua" / "seed_1001"
    stale.mkdir(parents=True)
    (stale / "summary.json").write_text("{}")
    (tmp_path / "eval" / "mine.txt").write_text("kept")
    assert _evaluate(tmp_path, *empty, "allow_empty=true") == 0
    episodes = pd.read_csv(tmp_path / "eval" / "episodes.csv")
    assert len(episodes) == 1 and episodes["requests_total"].iloc[0] == 0
    assert not (tmp_path / "eval" / "runs" / "small" / "lt_ua").exists()
    assert (tmp_path / "eval" / "mine.txt").read_text() == "kept"


def test_evaluation_out_that_is_a_file_fails_before_workers(tmp_path, capsys):
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    assert _evaluate(tmp_path, f"out={blocker}") == 2
    assert f"out '{blocker}' exists and is not a directory" in capsys.readouterr().err
    assert blocker.read_text() == "not a folder"


def test_a_policy_the_scenario_cannot_serve_fails_before_any_episode(tmp_path, capsys):
    """The compat long-term modes need the original's forecast files: a configuration error in
    both commands (exit 2, one line, no traceback), not a failure at the episode's reset."""
    from sageserve_env.cli import main as cli_main

    why = "arbiter.plan_demand=window_max reads SageServe's precomputed forecasts"
    assert evaluate.main(["scenario=sageserve_compat", "policies=[reactive,lt_u]", "seeds=[1]", "horizon_s=60",
                          f"out={tmp_path / 'e'}"]) == 2
    err = capsys.readouterr().err
    assert f"policy 'lt_u' on scenario 'sageserve_compat': {why}" in err and "Traceback" not in err
    assert not (tmp_path / "e" / "runs").exists()
    assert cli_main(["simulate", "scenario=sageserve_compat", "policies=[lt_u]", "duration_s=60",
                     f"out={tmp_path / 's'}", "progress=false"]) == 2
    err = capsys.readouterr().err
    assert why in err and "Traceback" not in err
