"""scripts/hourly.py: the per-hour differences of running totals; scripts/observation_gap.py."""

import numpy as np
from helpers import load_script

hourly = load_script("hourly")


def test_per_hour_differences_the_totals_at_each_hours_end():
    t = np.arange(60.0, 3 * 3600.0 + 1, 60.0)  # a decision a minute for 3 h
    gpu = t / 3600.0 * np.array([10.0])  # 10 GPU-h per hour
    first = np.floor(t / 60.0) * 5  # 5 IW first tokens a minute
    miss = np.where(t > 7200.0, (t - 7200.0) / 60.0, 0.0)  # misses only in the third hour
    h = hourly.per_hour({"t": t, "gpu_h": gpu, "first": first, "miss": miss}, 3)
    np.testing.assert_allclose(h[:, 0], [10.0, 10.0, 10.0])
    np.testing.assert_allclose(h[:, 1], [300.0, 300.0, 300.0])
    np.testing.assert_allclose(h[:, 2], [0.0, 0.0, 60.0])
    assert h.sum(0).tolist() == [gpu[-1], first[-1], miss[-1]]


def test_bad_task_is_named(capsys):
    import pytest

    with pytest.raises(SystemExit) as exc:
        hourly.main(["--env", "Nope-v1"])
    assert exc.value.code == 2 and "unknown task 'Nope-v1'" in capsys.readouterr().err


def test_learning_curves_join_a_resumed_run_and_name_a_missing_file(tmp_path):
    curves = load_script("learning_curves")
    header = "timesteps,reward,billed_gpu_hours,iw_slo_attainment,seconds\n"
    for name, rows in (("first", ["256,-10,100,0.9,1", "1000,-8,90,0.95,1"]), ("resumed", ["2000,-6,80,0.97,1"])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "validation.csv").write_text(header + "\n".join(rows) + "\n")
    out = tmp_path / "lc.png"
    assert curves.main([str(tmp_path / "first"), str(tmp_path / "resumed"), "--out", str(out),
                        "--reference", "oracle=-5"]) == 0
    assert out.stat().st_size > 0
    assert curves.read(tmp_path / "resumed")["timesteps"] == [2000.0]
    import pytest

    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="holds 0 validation.csv"):
        curves.read(tmp_path / "empty")


def test_learning_curves_draw_one_task_of_a_multi_task_run(tmp_path):
    import pytest

    curves = load_script("learning_curves")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "validation.csv").write_text(
        "timesteps,reward,billed_gpu_hours,iw_slo_attainment,A/reward,A/billed_gpu_hours,A/iw_slo_attainment,seconds\n"
        "100,-5,10,0.9,-4,8,0.95,1\n")
    assert curves.main([str(tmp_path / "run"), "--task", "A", "--out", str(tmp_path / "a.png")]) == 0
    with pytest.raises(SystemExit, match=r"no columns of task 'B'; it has \['A'\]"):
        curves.main([str(tmp_path / "run"), "--task", "B", "--out", str(tmp_path / "b.png")])


def test_observation_gap_plays_both_fidelities_and_names_bad_input(capsys):
    """scripts/observation_gap.py: one table row per feature, a line per fidelity; an unknown
    task or feature is a usage error naming it."""
    import pytest

    from sageserve_env.env.sageserve_env import observation_features, observation_space

    gap = load_script("observation_gap")
    assert gap.main(["--task", "DayLight", "--policy", "reactive", "--hours", "0.05", "--hide", "queued.iw"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| feature")]
    assert [r.split(" | ")[0][2:] for r in rows] == list(dict.fromkeys(observation_features(observation_space(3, 4))))
    assert "detailed: " in out and "fast: " in out
    for argv, match in ((["--task", "Nope"], "unknown task 'Nope-v1'"),
                        (["--hide", "queued.tokens"], "unknown observation feature(s) ['queued.tokens']"),
                        (["--hours", "0"], "--hours must be > 0")):
        with pytest.raises(SystemExit) as exc:
            gap.main(argv)
        assert exc.value.code == 2 and match in capsys.readouterr().err
