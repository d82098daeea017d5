"""The one command-line grammar (Hydra) of evaluate.py, train.py and simulate: composition and
overrides, ``--cfg job``, multiruns, policies as config entries (a user's class from outside the
package, its knobs), where outputs land, and bad keys or values failing before any work."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

import evaluate
import train
from agents import make_policy, policy_table
from sageserve_env.app import compose
from sageserve_env.cli import SimulateConfig
from sageserve_env.cli import main as cli_main

AUTOSCALER = '''
"""A user's autoscaler, outside the package: one instance more where memory utilization is above
``up``, one fewer where it is below ``up / 4``."""

import numpy as np

from agents.base import Policy, deltas_to_action


class ThresholdPolicy(Policy):
    name = "threshold"
    decision_interval_s = 60.0

    def __init__(self, up: float = 0.5):
        self.up = up

    def act(self, obs, env):
        util = obs["utilization"][..., 0]
        return deltas_to_action(env, np.where(util > self.up, 1, np.where(util < self.up / 4, -1, 0)))
'''
TARGET = "autoscaler:ThresholdPolicy"
EVAL = ["scenario=small", "horizon_s=1800", "workers=1", "plots=false", "bootstrap=50"]
SIMULATE = ["scenario=small", "duration_s=600", "progress=false", "plots=false"]


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """``autoscaler.py`` in a folder of its own, importable here and in spawned workers."""
    folder = tmp_path / "user_code"
    folder.mkdir()
    (folder / "autoscaler.py").write_text(AUTOSCALER)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))
    return folder


# --- composition and overrides ------------------------------------------------------------

def test_evaluate_composes_defaults_overrides_and_the_policy_table():
    cfg = evaluate.parse_args(["policies=[reactive,lt_ua]", "scenario=small", "seeds=[1001,1002]",
                               "policy.reactive.up_threshold=0.6", "policy.lt_ua.forecaster=seasonal_naive"])
    assert cfg.policies == ["reactive", "lt_ua"] and cfg.scenarios == ["small"] and cfg.seeds == [1001, 1002]
    assert cfg.policy["reactive"]["up_threshold"] == 0.6 and cfg.policy["lt_ua"]["mode"] == "lt_ua"
    assert cfg.out == "results/default" and cfg.workers == 2  # from configs/commands/evaluate.yaml
    table = policy_table()
    assert set(cfg.policy) == set(table)
    assert {k: v for k, v in cfg.policy["chiron"].items()} == table["chiron"]  # untouched entries: defaults
    assert make_policy(evaluate.policy_spec(cfg, "reactive"), "reactive").up_threshold == 0.6
    assert evaluate.policy_spec(cfg, "rl") == "rl"


def test_evaluate_reward_group_gives_the_presets_weights():
    from agents.runner import run_episode
    from sageserve_env.env.sageserve_env import SageServeEnv, reward_presets

    cfg = evaluate.parse_args(["reward=slo", "reward.drop=2"])
    assert cfg.reward == {**reward_presets()["slo"], "drop": 2}
    assert evaluate.parse_args([]).reward == reward_presets()["balanced"]
    weights = evaluate.parse_args(["reward=cost"]).reward
    by_name, by_weights = (run_episode(SageServeEnv(scenario="small", horizon_s=600.0, reward=r),
                                       make_policy("reactive"), seed=5).reward for r in ("cost", weights))
    assert by_name == by_weights


def test_train_composes_typed_env_options_and_hyperparameters():
    cfg = train.parse_args(["env_kwargs={reward: cost, decision_interval_s: 900}",
                            "eval_env_kwargs.fidelity=detailed", "hyperparams.learning_rate=0.0005",
                            "+hyperparams.target_kl=0.02", "seed=3"])
    # only the options given count: the env ID's registration keeps the others
    assert cfg.env_kwargs == {"reward": "cost", "decision_interval_s": 900.0}
    assert cfg.eval_env_kwargs == {"fidelity": "detailed"}
    assert cfg.hyperparams == {"learning_rate": 0.0005, "target_kl": 0.02} and cfg.seed == 3
    shipped = train.parse_args(["hyperparams=rl_agent", "hyperparams.gamma=0.95"]).hyperparams
    assert shipped["residual_reach"] == 8 and shipped["n_steps"] == 768 and shipped["gamma"] == 0.95


def test_simulate_composes_and_requires_out():
    cfg, job = compose("simulate", SimulateConfig, ["scenario=small", "seed=4", "out=x", "policies=[reactive]",
                                                    "policy.reactive.down_threshold=0.1"])
    assert (cfg.scenario, cfg.seed, cfg.out, cfg.policies) == ("small", 4, "x", ["reactive"])
    assert cfg.policy["reactive"]["down_threshold"] == 0.1 and cfg.plots and cfg.duration_s is None
    assert job.given == {"scenario", "seed", "out", "policies", "policy"}
    with pytest.raises(ValueError, match="out"):
        compose("simulate", SimulateConfig, ["scenario=small"])


@pytest.mark.parametrize("run, argv, expect", [
    (evaluate.main, ["policies=[reactive]", "policy.reactive.up_threshold=0.7"],
     lambda c: c["policies"] == ["reactive"] and c["policy"]["reactive"]["up_threshold"] == 0.7),
    (train.main, ["algo=ppo", "hyperparams.gamma=0.9"],
     lambda c: c["algo"] == "ppo" and c["hyperparams"]["gamma"] == 0.9),
    (lambda argv: cli_main(["simulate", *argv]), ["out=somewhere", "seed=2"],
     lambda c: c["out"] == "somewhere" and c["seed"] == 2),
])
def test_cfg_job_prints_the_resolved_config_and_runs_nothing(tmp_path, monkeypatch, capsys, run, argv, expect):
    monkeypatch.chdir(tmp_path)
    assert run(["--cfg", "job", *argv]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert expect(printed) and "hydra" not in printed
    assert not list(tmp_path.iterdir())  # nothing written


# --- outputs and multiruns ----------------------------------------------------------------

def test_relative_paths_resolve_from_the_callers_folder_and_hydra_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trace = Path(__file__).resolve().parents[1] / "traces" / "sample_small.csv"
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "mine.csv").write_bytes(trace.read_bytes())
    assert cli_main(["simulate", *SIMULATE, "trace=traces/mine.csv", "out=runs/day"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "traces"]  # no outputs/, .hydra/ or log
    summary = json.loads((tmp_path / "runs" / "day" / "summary.json").read_text())
    assert summary["requests_total"] > 0 and not (tmp_path / "runs" / "day" / ".hydra").exists()


def test_simulate_multirun_of_two_seeds_gives_each_job_its_folder(tmp_path):
    out = tmp_path / "seeds"
    assert cli_main(["simulate", "-m", "seed=0,1", *SIMULATE, f"out={out}"]) == 0
    runs = {p.name: json.loads((p / "summary.json").read_text()) for p in out.iterdir() if p.is_dir()}
    # a job's folder names its overrides but those about outputs (out, progress, plots)
    seed0, seed1 = "duration_s=600,scenario=small,seed=0", "duration_s=600,scenario=small,seed=1"
    assert set(runs) == {seed0, seed1} and (out / "multirun.yaml").exists()
    assert runs[seed0]["requests_total"] != runs[seed1]["requests_total"]  # two generated days
    assert cli_main(["simulate", *SIMULATE, "seed=1", f"out={tmp_path / 'one'}"]) == 0
    assert json.loads((tmp_path / "one" / "summary.json").read_text())["requests_total"] == \
        runs[seed1]["requests_total"]  # a multirun's job is the single run of its overrides


def test_evaluate_multirun_of_two_seeds(tmp_path):
    out = tmp_path / "eval"
    assert evaluate.main(["-m", "seeds=[1001],[1002]", "policies=[static]", *EVAL, "horizon_s=600", f"out={out}"]) == 0
    jobs = {p.name: pd.read_csv(p / "episodes.csv") for p in out.iterdir() if p.is_dir()}
    common = "horizon_s=600,policies=[static],scenario=small"
    assert set(jobs) == {f"{common},seeds=[1001]", f"{common},seeds=[1002]"}
    assert [list(e.seed) for _, e in sorted(jobs.items())] == [[1001], [1002]]


# --- policies as configuration ------------------------------------------------------------

def test_a_users_policy_class_runs_in_evaluate(tmp_path, user_module):
    out = tmp_path / "eval"
    assert evaluate.main([f"policies=[reactive,{TARGET}]", "seeds=[1001]", *EVAL, f"out={out}"]) == 0
    episodes = pd.read_csv(out / "episodes.csv")
    assert list(episodes.policy) == ["reactive", TARGET]
    assert (out / "runs" / "small" / "autoscaler_ThresholdPolicy" / "seed_1001" / "summary.json").exists()
    assert episodes.set_index("policy").loc[TARGET, "decision_steps"] == 30  # its own 60 s interval


def test_a_knob_override_changes_a_users_policy_decisions(tmp_path, user_module):
    """A multirun over the knob of an entry added on the command line: a high threshold drains
    the idle endpoints, a low one keeps adding instances."""
    out = tmp_path / "sweep"
    assert evaluate.main(["-m", "policies=[mine]", f"+policy.mine._target_={TARGET}", "+policy.mine.up=0.02,0.9",
                          "seeds=[1001]", *EVAL, f"out={out}"]) == 0
    (low_dir,) = out.glob("*+policy.mine.up=0.02*")
    (high_dir,) = out.glob("*+policy.mine.up=0.9*")
    low, high = pd.read_csv(low_dir / "episodes.csv"), pd.read_csv(high_dir / "episodes.csv")
    assert low.scale_ups[0] > 0 and high.scale_ups[0] == 0 and high.scale_downs[0] > 0
    assert low.billed_gpu_hours[0] > high.billed_gpu_hours[0]


def test_simulate_runs_a_registry_policy_with_a_knob(tmp_path):
    """reactive drains idle instances below ``down_threshold``; at 0 it never does."""
    runs = {}
    for down in (0.0, 0.25):
        out = tmp_path / f"down_{down}"
        assert cli_main(["simulate", *SIMULATE, "duration_s=1800", "policies=[reactive]",
                         f"policy.reactive.down_threshold={down}", f"out={out}"]) == 0
        runs[down] = json.loads((out / "summary.json").read_text())
    assert runs[0.0]["policy"] == "reactive" and runs[0.0]["scale_downs"] == 0 < runs[0.25]["scale_downs"]
    assert runs[0.0]["billed_gpu_hours"] > runs[0.25]["billed_gpu_hours"]


# --- bad keys and values ------------------------------------------------------------------

@pytest.mark.parametrize("argv, match", [
    (["colour=blue"], r"Key 'colour' not in 'EvalConfig'"),
    (["workers=many"], r"Value 'many' of type 'str' could not be converted to Integer\s+full_key: workers"),
    (["policy.reactive.upp=0.6"], r"Key 'upp' is not in struct\s+full_key: policy.reactive.upp"),
    (["+policy.reactive.upp=0.6"], r"policy 'reactive' \(agents.reactive:ReactivePolicy\) has no knob\(s\) \['upp'\]"),
    (["policy.reactive.up_threshold=high"], r"policy 'reactive' knob 'up_threshold' = 'high': must be of type float"),
    (["policies=[nowhere_pkg.autoscaler:ThresholdPolicy]"], r"policy 'nowhere_pkg.autoscaler:ThresholdPolicy': "
                                                             r"cannot import .*No module named 'nowhere_pkg'"),
    (["policies=[agents.base:deltas_to_action]"], r"is not a subclass of agents.base.Policy"),
    (["+policy.mine.up=1", "policies=[mine]"], r"policy 'mine': the entry needs '_target_: module:Class'"),
    (["scenario=small", "scenarios=[paper]"], "scenario and scenarios exclude each other"),
    (["seeds=[1001"], r"mismatched input|no viable alternative|extraneous input"),
])
def test_bad_evaluate_keys_and_values_fail_before_any_work(tmp_path, capsys, argv, match):
    assert evaluate.main([f"out={tmp_path / 'x'}", "workers=1", *argv]) == 2
    err = capsys.readouterr().err
    assert re.search(match, err), err
    assert "Traceback" not in err and not (tmp_path / "x").exists()


@pytest.mark.parametrize("argv, match", [
    (["colour=blue"], r"Key 'colour' not in 'SimulateConfig'"),
    (["seed=abc"], r"Value 'abc' of type 'str' could not be converted to Integer\s+full_key: seed"),
    (["policies=[reactive,lt_ua]"], "simulate runs one policy"),
    (["policies=[reactive]", "+policy.reactive.colour=1"], r"has no knob\(s\) \['colour'\]"),
    (["policies=[reactive]", "schedule=nowhere.csv"], "schedule file 'nowhere.csv' does not exist"),
    ([], r"missing mandatory value: out"),
])
def test_bad_simulate_keys_and_values_fail_before_any_work(tmp_path, monkeypatch, capsys, argv, match):
    monkeypatch.chdir(tmp_path)
    out = [] if not argv else ["out=x"]
    assert cli_main(["simulate", "scenario=small", "duration_s=600", *argv, *out]) == 2
    err = capsys.readouterr().err
    assert re.search(match, err), err
    assert "Traceback" not in err and not list(tmp_path.iterdir())


@pytest.mark.parametrize("argv, match", [
    (["env_kwargs.colour=blue"], r"Key 'colour' not in 'EnvConfig'\s+full_key: env_kwargs.colour"),
    (["env_kwargs.horizon_s=long"], r"Value 'long' of type 'str' could not be converted to Float\s+"
                                    r"full_key: env_kwargs.horizon_s"),
    (["hyperparams.n_steps=12.5"], r"Value '12.5' of type 'float' could not be converted to Integer\s+"
                                   r"full_key: hyperparams.n_steps"),
    (["hyperparams=nope"], r"Could not find 'hyperparams/nope'"),
])
def test_bad_train_keys_and_values_fail_before_any_work(tmp_path, capsys, argv, match):
    assert train.main([f"log_folder={tmp_path / 'logs'}", *argv]) == 2
    err = capsys.readouterr().err
    assert re.search(match, err), err
    assert "Traceback" not in err and not (tmp_path / "logs").exists()


def test_the_command_verbs(capsys):
    assert cli_main([]) == 2 and "simulate" in capsys.readouterr().err
    assert cli_main(["presets"]) == 0 and "paper" in capsys.readouterr().out
    assert cli_main(["evaluate", "--cfg", "job", "seeds=[7]"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["seeds"] == [7]


def test_every_registry_alias_builds_from_its_table_entry():
    for name, entry in policy_table().items():
        policy = make_policy(entry, name)
        assert type(policy) is type(make_policy(name)) and vars(policy).keys() == vars(make_policy(name)).keys()
