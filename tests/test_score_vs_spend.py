"""scripts/score_vs_spend.py: a policy's aggregate score read against its spend."""

import pandas as pd
import pytest

from tests.helpers import load_script

svs = load_script("score_vs_spend")


def _suite(folder):
    """Two task-seeds; ``cheap`` bills less than reactive on both (SLO lower on the second),
    ``dear`` bills more on one."""
    folder.mkdir()
    rows = [("A", 1, "reactive", 100.0, 0.7), ("A", 2, "reactive", 200.0, 0.7),
            ("A", 1, "cheap", 90.0, 0.9), ("A", 2, "cheap", 190.0, 0.6),
            ("A", 1, "dear", 110.0, 0.99), ("A", 2, "dear", 196.0, 0.99)]
    pd.DataFrame(rows, columns=["task", "seed", "policy", "billed_gpu_hours", "iw_slo_attainment"]).to_csv(
        folder / "episodes.csv", index=False)
    pd.DataFrame({"policy": ["reactive", "cheap", "dear"], "iqm": [0.0, 0.5, 0.9], "iqm_ci_low": [0.0, 0.4, 0.8],
                  "iqm_ci_high": [0.0, 0.6, 1.0]}).to_csv(folder / "aggregates.csv", index=False)
    return folder


def test_spend_change_and_bar_per_policy(tmp_path):
    suite = _suite(tmp_path / "s")
    table = svs.spend_table(pd.read_csv(suite / "episodes.csv"), pd.read_csv(suite / "aggregates.csv"))
    assert table["policy"].tolist() == ["cheap", "dear"]
    cheap, dear = table.iloc[0], table.iloc[1]
    assert cheap["gpu_hours_change_mean_pct"] == pytest.approx((-10.0 - 5.0) / 2)
    assert cheap["gpu_hours_change_max_pct"] == pytest.approx(-5.0)
    assert (cheap["under_spend"], cheap["task_seeds"]) == (1, 2)  # the second bills less at a lower SLO
    assert dear["gpu_hours_change_max_pct"] == pytest.approx(10.0) and dear["under_spend"] == 1
    assert dear["iqm"] == 0.9


def test_the_command_prints_the_table_and_draws_the_family(tmp_path, capsys):
    suite = _suite(tmp_path / "s")
    out = tmp_path / "f.png"
    assert svs.main([str(suite), "--policies", "dear", "--family", "both=cheap,dear", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "cheap" in printed and "dear" in printed and out.stat().st_size > 0


@pytest.mark.parametrize("argv, match", [
    (["--reference", "static"], "the reference 'static' has no episodes"),
    (["--policies", "nobody"], "policy 'nobody' has no episodes"),
    (["--family", "x=cheap"], "two policies at least"),
])
def test_bad_input_is_named(tmp_path, capsys, argv, match):
    suite = _suite(tmp_path / "s")
    assert svs.main([str(suite), *argv]) == 2
    assert match in capsys.readouterr().err


def test_a_folder_without_a_suite_is_named(tmp_path, capsys):
    assert svs.main([str(tmp_path)]) == 2
    assert "episodes.csv: no such file" in capsys.readouterr().err


def test_a_policy_on_other_seeds_than_the_reference_is_named(tmp_path):
    suite = _suite(tmp_path / "s")
    episodes = pd.read_csv(suite / "episodes.csv")
    episodes.loc[episodes.policy == "dear", "seed"] = 9
    with pytest.raises(ValueError, match="policy 'dear' shares no task-seed with the reference 'reactive'"):
        svs.spend_table(episodes, pd.read_csv(suite / "aggregates.csv"))
