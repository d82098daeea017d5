"""scripts/merge_evaluations.py: suite runs made at different times scored as one."""

import pandas as pd
import pytest

from tests.helpers import load_script

merge = load_script("merge_evaluations")


def _run(folder, rows):
    folder.mkdir()
    metrics = dict(billed_gpu_hours=1.0, iw_slo_attainment=0.9, iw_ttft_p99=1.0, iw_ttft_p90=1.0, scale_ups=0,
                   scale_downs=0)
    pd.DataFrame([{**metrics, "task": t, "policy": p, "seed": s, "reward": r, "normalized_score": float("nan")}
                  for t, p, s, r in rows]).to_csv(folder / "episodes.csv", index=False)
    return folder


def test_an_agent_run_later_is_scored_against_the_baselines_run_before(tmp_path):
    base = _run(tmp_path / "base", [("A", "reactive", 1, -10.0), ("A", "oracle", 1, -2.0),
                                    ("A", "reactive", 2, -20.0), ("A", "oracle", 2, -4.0)])
    agent = _run(tmp_path / "agent", [("A", "rl", 1, -6.0), ("A", "rl", 2, -4.0)])
    assert merge.main([str(tmp_path / "out"), str(base), str(agent), "--bootstrap", "50"]) == 0
    episodes = pd.read_csv(tmp_path / "out" / "episodes.csv")
    rl = episodes[episodes.policy == "rl"].sort_values("seed")
    assert rl.normalized_score.tolist() == pytest.approx([0.5, 1.0])
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert results.loc[results.policy == "rl", "normalized_score"].item() == pytest.approx(0.75)
    assert (tmp_path / "out" / "aggregates.md").exists()


def test_an_episode_in_two_runs_or_a_folder_without_episodes_is_an_error(tmp_path, capsys):
    a = _run(tmp_path / "a", [("A", "reactive", 1, -10.0)])
    b = _run(tmp_path / "b", [("A", "reactive", 1, -11.0)])
    assert merge.main([str(tmp_path / "out"), str(a), str(b)]) == 2
    assert "task=A policy=reactive seed=1 is in more than one run" in capsys.readouterr().err
    assert merge.main([str(tmp_path / "out"), str(a), str(tmp_path / "nowhere")]) == 2
    assert "no episodes.csv" in capsys.readouterr().err


def test_filters_keep_only_the_named_policies_and_seeds(tmp_path):
    base = _run(tmp_path / "base", [("A", "reactive", 1, -10.0), ("A", "oracle", 1, -2.0),
                                    ("A", "reactive", 9, -20.0), ("A", "oracle", 9, -4.0),
                                    ("A", "lt_ua", 1, -5.0)])
    assert merge.main([str(tmp_path / "out"), str(base), "--policies", "reactive,oracle", "--seeds", "1",
                       "--bootstrap", "20"]) == 0
    episodes = pd.read_csv(tmp_path / "out" / "episodes.csv")
    assert sorted(episodes.policy) == ["oracle", "reactive"] and set(episodes.seed) == {1}


def test_combine_scores_one_agent_a_task_as_one_policy(tmp_path, capsys):
    base = _run(tmp_path / "base", [("A", "reactive", 1, -10.0), ("A", "oracle", 1, -2.0),
                                    ("B", "reactive", 1, -10.0), ("B", "oracle", 1, 0.0),
                                    ("A", "x", 1, -6.0), ("B", "x", 1, -9.0), ("B", "y", 1, -1.0)])
    assert merge.main([str(tmp_path / "out"), str(base), "--combine", "xy=x@A,y@B", "--bootstrap", "20"]) == 0
    episodes = pd.read_csv(tmp_path / "out" / "episodes.csv")
    xy = episodes[episodes.policy == "xy"].sort_values("task")
    assert xy.task.tolist() == ["A", "B"] and xy.normalized_score.tolist() == pytest.approx([0.5, 0.9])
    assert merge.main([str(tmp_path / "o2"), str(base), "--combine", "xy=x@A,z@B"]) == 2
    assert "no episodes of policy 'z' on task 'B'" in capsys.readouterr().err
    assert merge.main([str(tmp_path / "o3"), str(base), "--combine", "x=y@B"]) == 2
    assert "policy 'x' is already in the runs" in capsys.readouterr().err
    assert merge.main([str(tmp_path / "o4"), str(base), "--combine", "xy:x@A"]) == 2
    assert "expected NAME=POLICY@TASK" in capsys.readouterr().err
    assert merge.main([str(tmp_path / "o5"), str(base), "--policies", "nobody"]) == 2
    assert "no episode of policies=['nobody']" in capsys.readouterr().err


def test_reference_sets_the_policy_the_probability_of_improvement_is_against(tmp_path, capsys):
    base = _run(tmp_path / "base", [("A", "reactive", s, -10.0) for s in (1, 2)]
                + [("A", "oracle", s, 0.0) for s in (1, 2)]
                + [("A", "chiron", 1, -2.0), ("A", "chiron", 2, -2.0), ("A", "x", 1, -1.0), ("A", "x", 2, -3.0)])
    assert merge.main([str(tmp_path / "out"), str(base), "--reference", "chiron", "--bootstrap", "20"]) == 0
    agg = pd.read_csv(tmp_path / "out" / "aggregates.csv").set_index("policy")
    assert agg.loc["x", "p_improve_over_chiron"] == pytest.approx(0.5)  # 0.9 > 0.8 > 0.7: one win of two
    assert "P(better than chiron)" in (tmp_path / "out" / "aggregates.md").read_text()
    assert merge.main([str(tmp_path / "o2"), str(base), "--reference", "nobody"]) == 2
    assert "--reference 'nobody': no episodes of that policy" in capsys.readouterr().err
