"""scripts/paper_figures.py on a tiny setting: files written, tables consistent with the runs."""

import json

import numpy as np
import pytest

from agents.long_term import LongTermPolicy
from helpers import load_script


def _script():
    return load_script("paper_figures")


def test_paper_figures_small(tmp_path):
    mod = _script()
    out, runs = tmp_path / "out", tmp_path / "runs"
    assert mod.main(["--scenario", "small", "--horizon-s", "600", "--workers", "1", "--out", str(out),
                     "--runs", str(runs), "--thresholds", "0.4,0.5", "--windows", "15,60"]) == 0
    for name in ("instances_over_time.png", "instance_hours_per_region.png", "latency_over_time.png",
                 "memory_utilization.png", "capacity_source.png", "threshold_sweep.png", "window_ablation.png",
                 "README.md", "results.json"):
        assert (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text())
    for p in mod.MAIN_POLICIES:
        summary = json.loads((runs / p / "summary.json").read_text())
        assert results["summaries"][p]["instance_hours_15min_peak"] == summary["instance_hours_15min_peak"]
        per = {r["region"]: r["instance_hours_15min_peak"] for r in summary["per_region"]}
        assert results["instance_hours_per_region"][p] == per
        a = [e for e in summary["per_endpoint"] if e["model"] == results["model"]]
        assert results["model_a"][p]["instance_hours_15min_peak"] == pytest.approx(
            sum(e["instance_hours_15min_peak"] for e in a))
        assert (runs / p / "utilization.csv").is_file()
        # the capacity attribution never exceeds the scaled-up instances' possible hours
        n_ups = summary["scale_ups"]
        assert sum(results["capacity_source"][p].values()) <= n_ups * 600 / 3600 + 1e-9
    assert [q["knob"] for q in results["sweep"]] == [0.4, 0.5]
    assert [q["knob"] for q in results["window"]] == [15, 60]
    w15 = json.loads((runs / "lt_ua_w15" / "summary.json").read_text())
    assert results["window"][0]["instance_hours_15min_peak"] == w15["instance_hours_15min_peak"]
    page = (out / "README.md").read_text()
    assert "302" in page and "--scenario small" in page  # the authors' figure and the command
    # --reuse reads every episode back and remakes the same tables
    argv = ["--scenario", "small", "--horizon-s", "600", "--out", str(out), "--runs", str(runs),
            "--thresholds", "0.4,0.5", "--windows", "15,60", "--reuse"]
    assert mod.main(argv) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["reused"] == again["episodes"] == 6
    assert again["instance_hours_per_region"] == results["instance_hours_per_region"]
    assert again["capacity_source"] == results["capacity_source"]
    assert again["first_run"] == {"command": results["command"], "wall_seconds": results["wall_seconds"]}
    assert "The episodes were run by" in (out / "README.md").read_text()


@pytest.mark.parametrize("argv", [["--thresholds", "a,b"], ["--windows", "0"], ["--days", "0"],
                                  ["--workers", "0"], ["--thresholds", "1.5"]])
def test_paper_figures_bad_options(argv, tmp_path):
    with pytest.raises(SystemExit) as exc:
        _script().main([*argv, "--out", str(tmp_path)])
    assert exc.value.code == 2


def test_window_minutes_knob():
    assert LongTermPolicy(window_minutes=15).window_minutes == 15
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="window_minutes"):
            LongTermPolicy(window_minutes=bad)
