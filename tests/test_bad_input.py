"""Bad input is refused with a message naming what is wrong and where: configs, traces, env
options and actions, and the ``simulate`` command's arguments and output folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from gymnasium.error import ResetNeeded
from test_readers import assert_names, sageserve_rows, write

from sageserve_env.cli import main as cli_main
from sageserve_env.config import ConfigError, load_config
from sageserve_env.env.sageserve_env import SageServeEnv
from sageserve_env.workload import WorkloadError, load_trace, read_sageserve

SAMPLE = str(Path(__file__).resolve().parents[1] / "traces" / "sample_small.csv")


# --- config values ------------------------------------------------------------------------

@pytest.mark.parametrize("override, key", [
    ("routing.delay_s=.inf", "routing.delay_s"),
    ("routing.delay_s=1e9", "routing.delay_s"),
    ("hardware.dgx-a100.cost_per_gpu_hour=.inf", "hardware.dgx-a100.cost_per_gpu_hour"),
    ("hardware.dgx-a100.gpu_memory_gb=.inf", "hardware.dgx-a100.gpu_memory_gb"),
    ("duration_s=inf", "duration_s"),
    ("workload.requests_per_day=.inf", "workload.requests_per_day"),
    ("workload.requests_per_day=1e12", "workload.requests_per_day"),
    ("workload.niw_job_size_mean=0.5", "workload.niw_job_size_mean"),
    ("regions.0.utc_offset_h=.nan", "regions.0.utc_offset_h"),
    ("regions.0.utc_offset_h=30", "regions.0.utc_offset_h"),
    ("slo.iw_ttft_s=.inf", "slo.iw_ttft_s"),
    ("slo.iw_e2e_s=.nan", "slo.iw_e2e_s"),
    ("niw.deadline_s=.inf", "niw.deadline_s"),
    ("models.A.params=-1", "models.A.params"),
    ("workload.model_popularity={A: .inf}", "workload.model_popularity.A"),
])
def test_numeric_config_values_must_be_finite_and_in_range(override, key):
    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        load_config("small", [override])


def test_yaml_syntax_error_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: broken\nregions:\n  - {name: westus, servers: 4\nduration_s: 600\n")
    with pytest.raises(ConfigError, match=rf"{bad}:4:\d+: YAML syntax error"):
        load_config(str(bad))
    assert cli_main(["simulate", f"scenario={bad}", f"out={tmp_path / 'o'}", "progress=false"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:4:" in err and "Traceback" not in err
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping of config keys"):
        load_config(str(listed))


def test_override_value_that_is_not_yaml_names_the_argument():
    with pytest.raises(ConfigError, match=r"'regions=\[': the value is not valid YAML"):
        load_config("small", ["regions=["])


# --- traces -------------------------------------------------------------------------------

def test_duplicate_request_ids_are_an_error(tmp_path):
    df = sageserve_rows()
    df.loc[3, "request_id"] = 1
    path = write(df, tmp_path / "dup.csv")
    with pytest.raises(WorkloadError, match=r"duplicate request_id \(first used in row 2\)") as exc:
        read_sageserve(path, ("westus", "centralus", "eastus"), ("A", "B", "C", "D"))
    assert_names(exc, path, 4, "request_id")


def test_missing_trace_file_is_named(tmp_path):
    with pytest.raises(WorkloadError, match="nope.csv' does not exist"):
        load_trace(tmp_path / "nope.csv", "canonical", load_config("small"))
    with pytest.raises(WorkloadError, match="is not a file"):
        load_trace(tmp_path, "canonical", load_config("small"))


# --- the env ------------------------------------------------------------------------------

def _env(**kwargs) -> SageServeEnv:
    env = SageServeEnv(scenario="small", horizon_s=120.0, **kwargs)
    env.reset(seed=0)
    return env


def test_step_after_the_episode_ended_raises_and_changes_nothing():
    env = _env()
    hold = np.full(env.n_endpoints, env.max_delta)
    env.step(hold)
    *_, truncated, _ = env.step(hold)
    assert truncated
    before = (env.sim.now, len(env.sim.fleet.scale_log), env.kpis())
    with pytest.raises(ResetNeeded, match="episode ended at horizon_s=120"):
        env.step(np.zeros(env.n_endpoints, dtype=np.int64))  # would drain every endpoint
    assert (env.sim.now, len(env.sim.fleet.scale_log), env.kpis()) == before
    env.reset(seed=0)
    env.step(hold)  # a reset starts a new episode


def test_kpis_and_step_before_reset_raise():
    env = SageServeEnv(scenario="small", horizon_s=120.0)
    with pytest.raises(ResetNeeded, match=r"reset\(\) before kpis"):
        env.kpis()
    with pytest.raises(ResetNeeded, match=r"reset\(\) before step"):
        env.step([0, 0])


@pytest.mark.parametrize("action, match", [
    (np.array([True, False]), "not booleans"),
    ([True, 4], "not booleans"),
    (np.array([4 + 0j, 4]), r"must be integers, got \[\(4\+0j\), \(4\+0j\)\] \(dtype complex128\)"),
    (np.array([1e20, 4], dtype=np.float32), r"action\[0\] = 1\.00000002\d*e\+20 \(endpoint westus/A\) is outside"),
    (np.array([4.0, np.nan]), r"must be integers: action\[1\] = nan \(endpoint westus/C\)"),
    (np.array([4, 2**40]), r"action\[1\] = 1099511627776 \(endpoint westus/C\) is outside"),
    (["4", "4"], "must be integers"),
])
def test_bad_actions_show_the_value(action, match):
    env = _env()
    with pytest.raises(ValueError, match=match):
        env.step(action)
    assert env.sim.now == 0.0


def test_integral_float_actions_act_like_ints():
    a, b = _env(), _env()
    _, ra, *_ = a.step(np.array([5.0, 3.0]))
    _, rb, *_ = b.step(np.array([5, 3]))
    assert ra == rb and a.kpis() == b.kpis()


@pytest.mark.parametrize("kwargs, match", [
    ({"horizon_s": 0}, "horizon_s must be a finite number of seconds > 0, got 0"),
    ({"horizon_s": float("inf")}, "horizon_s must be"),
    ({"horizon_s": -60.0}, "horizon_s must be"),
    ({"max_delta": 2.7}, "max_delta must be an integer >= 1.*got 2.7"),
    ({"max_delta": True}, "max_delta must be an integer"),
    ({"max_delta": 0}, "max_delta must be an integer >= 1"),
    ({"decision_interval_s": float("nan")}, "decision_interval_s must be"),
    ({"decision_interval_s": "60"}, "decision_interval_s must be"),
    ({"fidelity_tick_s": True}, "fidelity_tick_s must be"),
    ({"sim_overrides": ["workload.source=trace", "workload.trace=/nope.csv"]}, "workload.trace: trace file '/nope.csv'"),
])
def test_env_options_must_be_valid_as_given(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SageServeEnv(scenario="small", **kwargs)


def test_env_options_valid_as_given_are_kept():
    env = SageServeEnv(scenario="small", max_delta=2.0, horizon_s=600)
    assert env.max_delta == 2 and env.action_space.nvec.tolist() == [5, 5] and env.horizon == 600.0


@pytest.mark.parametrize("config, space", [
    ({"max_delta": 2}, "action space"),
    ({"scenario": "paper"}, "observation and action space"),
    ({"sim_overrides": {"models": {"C": None}}}, "observation and action space"),
])
def test_reset_refuses_options_that_change_the_spaces(config, space):
    env = _env()
    spaces, settings = (env.observation_space, env.action_space), dict(env.config)
    with pytest.raises(ValueError, match=f"would change the {space}.*constructor"):
        env.reset(seed=0, options={"config": config})
    assert (env.observation_space, env.action_space) == spaces and env.config == settings
    env.reset(seed=0, options={"config": {"sim_overrides": ["scaling.level=1"]}})  # same spaces: accepted
    assert env.sim.fleet.level == 1


@pytest.mark.parametrize("options, match", [
    ({"workload": "x"}, "reset option 'workload' must be a Workload, got str"),
    ({"config": 3}, "reset option 'config' must be a dict"),
    ({"config": {"horizon_s": 0}}, "horizon_s must be"),
    ({"colour": "blue"}, r"unknown reset option\(s\) \['colour'\]"),
    ("abc", "reset options must be a dict"),
])
def test_bad_reset_options_raise(options, match):
    env = SageServeEnv(scenario="small", horizon_s=120.0)
    with pytest.raises(ValueError, match=match):
        env.reset(seed=0, options=options)


def test_reset_workload_over_other_names_is_refused():
    other = SageServeEnv(scenario="paper", horizon_s=60.0, sim_overrides=["workload.requests_per_day=1e4"])
    other.reset(seed=0)
    env = SageServeEnv(scenario="small", horizon_s=120.0)
    with pytest.raises(ValueError, match=r"names \['centralus', 'eastus', 'B', 'D'\]"):
        env.reset(seed=0, options={"workload": other.sim.workload})


# --- simulate -----------------------------------------------------------------------------

def _simulate(tmp_path, *args):
    return cli_main(["simulate", "scenario=small", "progress=false", "plots=false", *args])


def test_out_that_is_a_file_or_unwritable_fails_before_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert _simulate(tmp_path, "duration_s=600", f"out={blocker}") == 2
    assert f"out '{blocker}' exists and is not a directory" in capsys.readouterr().err
    assert _simulate(tmp_path, "duration_s=600", f"out={blocker / 'sub'}") == 2
    assert f"out '{blocker / 'sub'}' is not a writable directory" in capsys.readouterr().err
    assert blocker.read_text() == "not a folder"


def test_reused_out_folder_holds_only_the_new_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert _simulate(tmp_path, "duration_s=600", "csv=true", f"out={out}") == 0
    assert (out / "requests.csv").exists()
    (out / "notes.txt").write_text("mine")
    assert _simulate(tmp_path, "duration_s=900", f"out={out}") == 0
    assert "removed 9 file(s) of an earlier run" in capsys.readouterr().err
    assert not (out / "requests.csv").exists() and (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "summary.json").read_text())["sim_seconds"] == 900


def test_write_run_writes_only_the_files_a_reused_folder_is_cleared_of(tmp_path):
    from sageserve_env.cli import build_workload, run_simulation
    from sageserve_env.outputs import RUN_FILES

    cfg = load_config("small", ["duration_s=600"])
    run_simulation(cfg, build_workload(cfg, 0), tmp_path, csv_records=True, plots=True, progress=False)
    written = {p.name for p in tmp_path.iterdir()}
    assert written == set(RUN_FILES)


def test_trace_past_the_horizon_is_an_error_unless_allowed(tmp_path, capsys):
    late = pd.read_csv(SAMPLE)
    late["arrival_s"] += 1000.0
    trace = write(late, tmp_path / "late.csv")
    args = [f"trace={trace}", "trace_format=canonical"]
    assert _simulate(tmp_path, *args, "duration_s=600", f"out={tmp_path / 'a'}") == 2
    err = capsys.readouterr().err
    assert f"0 requests in [0, 600) s (all {len(late)} trace rows arrive at or after 600 s)" in err
    assert "allow_empty=true" in err and not (tmp_path / "a").exists()
    assert _simulate(tmp_path, *args, "duration_s=600", "allow_empty=true", f"out={tmp_path / 'a'}") == 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["requests_total"] == 0 and summary["trace_rows_outside_horizon"] == len(late)


def test_trace_rows_past_duration_are_counted_and_reported(tmp_path, capsys):
    trace = pd.read_csv(SAMPLE)
    inside = int((trace["arrival_s"] < 1200.0).sum())
    assert _simulate(tmp_path, f"trace={SAMPLE}", "duration_s=1200", f"out={tmp_path / 'r'}") == 0
    err = capsys.readouterr().err
    assert f"{len(trace) - inside:,} of {len(trace):,} trace rows arrive at or after duration_s=1200" in err
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["requests_total"] == inside and summary["trace_rows_outside_horizon"] == len(trace) - inside


@pytest.mark.parametrize("args, match", [
    (["duration_s=inf"], "config key 'duration_s' = inf: must be a finite number"),
    (["duration_s=600", "seed=-1"], "seed -1: must be >= 0"),
    (["duration_s=1800", "policies=[rl]"], r"policy 'rl' .* expects observations of shape \(178,\) .* "
                                               r"scenario 'small' .* observations of shape \(34,\)"),
    (["duration_s=600", "sim_overrides=['routing.delay_s=.inf']"], "config key 'routing.delay_s' = inf"),
])
def test_simulate_arguments_fail_before_work(tmp_path, capsys, args, match):
    out = tmp_path / "never"
    assert _simulate(tmp_path, *args, f"out={out}") == 2
    err = capsys.readouterr().err
    assert re.search(match, err), err
    assert "Traceback" not in err and not out.exists()
