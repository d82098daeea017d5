"""`python -m sageserve_env simulate policies=[NAME]`: a policy scales the endpoints."""

import json

from sageserve_env.cli import main


def test_simulate_with_a_policy_writes_its_outputs(tmp_path):
    out = tmp_path / "run"
    code = main(["simulate", "scenario=small", "duration_s=1800", "policies=[reactive]",
                 f"out={out}", "progress=false", "plots=false"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["policy"] == "reactive" and summary["sim_seconds"] == 1800
    assert summary["scale_ups"] + summary["scale_downs"] > 0  # the reactive arbiter acted


def test_unknown_policy_is_a_clear_error(tmp_path, capsys):
    code = main(["simulate", "scenario=small", "duration_s=600", "policies=[clairvoyant]",
                 f"out={tmp_path / 'x'}", "progress=false"])
    assert code == 2
    assert "unknown policy 'clairvoyant'" in capsys.readouterr().err
