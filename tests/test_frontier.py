"""The cost-vs-SLO frontier: the Pareto set, placing a point, the sweep's points and scripts/frontier.py."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sageserve_env import frontier as fr
from helpers import load_script


def _script():
    return load_script("frontier")


def test_pareto_mask_on_hand_made_points():
    cost = [10, 12, 12, 8, 15, 8, np.nan]
    slo = [0.9, 0.95, 0.94, 0.7, 0.95, 0.7, 1.0]
    # (12, 0.94) loses to (12, 0.95); (15, 0.95) to (12, 0.95); the twin (8, 0.7) points both stay; NaN never
    assert fr.pareto_mask(cost, slo).tolist() == [True, True, False, True, False, True, False]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), min_size=1, max_size=25))
def test_pareto_mask_members_are_undominated_and_dominate_the_rest(points):
    x, y = np.array(points, dtype=float).T
    mask = fr.pareto_mask(x, y)
    for j in range(len(x)):
        beaten = [i for i in range(len(x)) if x[i] <= x[j] and y[i] >= y[j] and (x[i] < x[j] or y[i] > y[j])]
        assert mask[j] == (not beaten)
        if not mask[j]:
            assert any(mask[i] for i in beaten)


def _table():
    return pd.DataFrame({"task": ["T"] * 4 + ["U"], "family": ["reactive", "reactive", "lt_i", "oracle", "oracle"],
                         "knob": ["up_threshold", "up_threshold", "target_utilization", np.nan, np.nan],
                         "value": [0.35, 0.7, 0.5, np.nan, np.nan],
                         "billed_gpu_hours": [100.0, 80.0, 90.0, 120.0, 1.0],
                         "iw_slo_attainment": [0.9, 0.7, 0.92, 0.99, 1.0]})


def test_place_a_point_against_the_frontier():
    table = _table()  # on T the frontier is reactive 0.7 (80), lt_i (90), oracle (120); reactive 0.35 is dominated
    beyond = fr.place(table, "T", 85.0, 0.95)
    assert beyond.verdict == "beyond" and beyond.dominates == ("lt_i target_utilization=0.5",)
    dominated = fr.place(table, "T", 95.0, 0.91)
    assert dominated.verdict == "dominated" and dominated.dominated_by == ("lt_i target_utilization=0.5",)
    on = fr.place(table, "T", 110.0, 0.95)
    assert on.verdict == "on" and not on.dominated_by and not on.dominates
    assert fr.place(table, "T", 80.0, 0.7).verdict == "on"  # a frontier member's own point
    with pytest.raises(ValueError, match="task 'Burst-v1' is not in the frontier table"):
        fr.place(table, "Burst-v1", 1.0, 1.0)


def test_sweep_points_move_the_companion_knob_and_flag_defaults():
    points = fr.sweep_points({"reactive": {"up_threshold": [0.35, 0.5]}, "lt_ua": {"target_utilization": [0.65]}},
                             ["oracle"])
    assert [p.name for p in points] == ["reactive_up_threshold=0.35", "reactive_up_threshold=0.5",
                                        "lt_ua_target_utilization=0.65", "oracle"]
    assert points[0].entry["down_threshold"] == pytest.approx(0.175)
    assert [p.default for p in points] == [False, True, False, True]
    assert points[2].entry["mode"] == "lt_ua" and points[2].entry["target_utilization"] == 0.65


@pytest.mark.parametrize("sweep, references, match", [
    ({"reactiv": {"up_threshold": [0.5]}}, [], "sweep: unknown family 'reactiv'"),
    ({"reactive": {"upp": [0.5]}}, [], "sweep: family 'reactive' has no knob 'upp'"),
    ({"lt_i": {"mode": [0.5]}}, [], "sweep: family 'lt_i' has no knob 'mode'"),
    ({"chiron": {"busy_up": [-0.1]}}, [], r"sweep.chiron.busy_up: values must be positive numbers, got -0.1"),
    ({}, ["orcale"], "references: unknown family 'orcale'"),
])
def test_bad_sweeps_are_named(sweep, references, match):
    with pytest.raises(ValueError, match=match):
        fr.sweep_points(sweep, references)


@pytest.mark.parametrize("argv, match", [
    (["tasks=[Burst-v9]"], "tasks: unknown task 'Burst-v9'"),
    (["+sweep.reactiv.up_threshold=[0.5]"], "sweep: unknown family 'reactiv'"),
    (["+sweep.reactive.upp=[0.5]"], "sweep: family 'reactive' has no knob 'upp'"),
    (["seeds=[]"], "tasks and seeds must each name at least one entry"),
    (["horizon_s=-1"], "horizon_s must be a finite number of seconds > 0"),
])
def test_bad_frontier_options_fail_before_any_episode(tmp_path, capsys, argv, match):
    assert _script().main([f"out={tmp_path / 'out'}", *argv]) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "out" / "runs").exists()


def test_frontier_command_on_a_short_horizon(tmp_path, capsys):
    out = tmp_path / "out"
    argv = [f"out={out}", "tasks=[DayLight-fast-v1]", "horizon_s=120", "~sweep.lt_i", "~sweep.lt_u", "~sweep.lt_ua",
            "~sweep.chiron", "sweep.reactive.up_threshold=[0.4,0.5]", "references=[static]"]
    assert _script().main(argv) == 0
    table = pd.read_csv(out / "frontier.csv")
    assert list(table.columns) == list(fr.COLUMNS)
    assert table[["family", "value", "default"]].values.tolist()[:2] == [["reactive", 0.4, False],
                                                                         ["reactive", 0.5, True]]
    assert table["family"].tolist() == ["reactive", "reactive", "static"]
    assert (table["task"] == "DayLight-fast-v1").all() and (table["episodes"] == 1).all()
    episodes = pd.read_csv(out / "episodes.csv")
    assert len(episodes) == 3 and (episodes["seed"] == 20000).all()
    assert table["billed_gpu_hours"].tolist() == pytest.approx(episodes["billed_gpu_hours"].tolist())
    assert table["on_frontier"].tolist() == fr.pareto_mask(table["billed_gpu_hours"],
                                                           table["iw_slo_attainment"]).tolist()
    assert (out / "frontier_DayLight-fast-v1.png").stat().st_size > 0
    results = tmp_path / "results.csv"
    pd.DataFrame({"task": ["DayLight-fast-v1"], "policy": ["mine"], "billed_gpu_hours": [0.0],
                  "iw_slo_attainment": [1.0]}).to_csv(results, index=False)
    capsys.readouterr()
    assert fr.main([str(out / "frontier.csv"), str(results)]) == 0
    assert capsys.readouterr().out.startswith("DayLight-fast-v1 mine: beyond (dominates ")


def test_placing_a_results_table_without_its_columns_is_named(tmp_path, capsys):
    frontier, results = tmp_path / "frontier.csv", tmp_path / "results.csv"
    _table().to_csv(frontier, index=False)
    pd.DataFrame({"policy": ["mine"], "reward": [1.0]}).to_csv(results, index=False)
    assert fr.main([str(frontier), str(results)]) == 2
    assert "has no column(s) ['task', 'billed_gpu_hours', 'iw_slo_attainment']" in capsys.readouterr().err
