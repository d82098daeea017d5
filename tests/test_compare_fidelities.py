"""scripts/compare_fidelities.py: the two fidelities' rankings and gaps from suite episodes."""

import pandas as pd
import pytest

from tests.helpers import load_script

cf = load_script("compare_fidelities")


def _run(folder, rows):
    folder.mkdir()
    pd.DataFrame([{"task": t, "policy": p, "seed": s, "reward": r, "billed_gpu_hours": g, "iw_slo_attainment": a}
                  for t, p, s, r, g, a in rows]).to_csv(folder / "episodes.csv", index=False)
    return folder


def test_rankings_tau_and_gaps_over_the_episodes_in_both(tmp_path, capsys):
    det = _run(tmp_path / "det", [("A-v1", "x", 1, -1.0, 100.0, 0.9), ("A-v1", "y", 1, -2.0, 100.0, 0.8),
                                  ("A-v1", "z", 1, -3.0, 100.0, 0.7), ("A-v1", "x", 2, -9.0, 1.0, 0.1)])
    fast = _run(tmp_path / "fast", [("A-fast-v1", "x", 1, -2.5, 110.0, 0.93), ("A-fast-v1", "y", 1, -2.0, 95.0, 0.8),
                                    ("A-fast-v1", "z", 1, -3.0, 100.0, 0.7)])
    table = cf.compare(cf.merged_episodes([det], ["x", "y", "z"]), cf.merged_episodes([fast], ["x", "y", "z"]),
                       ["x", "y", "z"])
    row = table.iloc[0]
    assert row["seeds"] == "1"  # seed 2 has no fast episode
    assert row["detailed_ranking"] == "x, y, z" and row["fast_ranking"] == "y, x, z"
    assert row["kendall_tau"] == pytest.approx(1 / 3)
    assert row["worst_gpu_hours_pct"] == pytest.approx(10.0) and row["worst_gpu_hours_policy"] == "x"
    assert row["worst_slo_points"] == pytest.approx(3.0)
    assert cf.main(["--detailed", str(det), "--fast", str(fast), "--policies", "x,y,w"]) == 2
    assert "A-v1: no episode in both fidelities for ['w']" in capsys.readouterr().err
    assert cf.main(["--detailed", str(det), "--fast", str(tmp_path / "nowhere"), "--policies", "x,y"]) == 2
    assert "no episodes.csv" in capsys.readouterr().err
    assert cf.main(["--detailed", str(det), "--fast", str(fast), "--policies", "x,y,z"]) == 0
    assert "| A-v1 | 1 | x, y, z | y, x, z | 0.333 |" in capsys.readouterr().out
