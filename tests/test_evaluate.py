"""evaluate.py: the matrix, its table, normalized scores and bad input."""

import numpy as np
import pandas as pd
import pytest

import evaluate


def test_small_matrix_writes_results(tmp_path):
    out = tmp_path / "eval"
    code = evaluate.main(["policies=[static,reactive,oracle]", "scenario=small", "seeds=[1001,1002]",
                          "horizon_s=1800", f"out={out}", "workers=1", "plots=false", "bootstrap=200"])
    assert code == 0
    table = pd.read_csv(out / "results.csv")
    for col in ("policy", "scenario", "episodes", "billed_gpu_hours", "iw_slo_attainment", "iw_ttft_p90",
                "iw_e2e_p90", "niw_deadline_misses", "reward", "normalized_score"):
        assert col in table.columns
    assert set(table.policy) == {"static", "reactive", "oracle"} and (table.episodes == 2).all()
    scores = table.set_index("policy")["normalized_score"]
    assert scores["reactive"] == pytest.approx(0.0) and scores["oracle"] == pytest.approx(1.0)
    assert (out / "results.md").read_text().startswith("| policy")
    episodes = pd.read_csv(out / "episodes.csv")
    assert len(episodes) == 6 and (out / "runs" / "small" / "oracle" / "seed_1001" / "summary.json").exists()


def test_bootstrap_interval_contains_the_mean():
    rng = np.random.default_rng(0)
    values = np.array([1.0, 2.0, 3.0, 4.0])
    low, high = evaluate.bootstrap_ci(values, rng, 500)
    assert low <= values.mean() <= high and low < high
    assert evaluate.bootstrap_ci(np.array([5.0]), rng, 500) == (5.0, 5.0)


@pytest.mark.parametrize("argv, match", [
    (["policies=[reactive,genius]"], "unknown policy 'genius'"),
    (["scenario=nowhere"], "unknown scenario"),
    (["colour=blue"], "Key 'colour' not in 'EvalConfig'"),
    (["fidelity=perfect"], "fidelity must be"),
])
def test_bad_arguments_fail_before_running(tmp_path, capsys, argv, match):
    assert evaluate.main([*argv, f"out={tmp_path / 'x'}"]) == 2
    assert match in capsys.readouterr().err


def test_fast_fidelity_matrix_writes_what_it_can(tmp_path):
    out = tmp_path / "fast"
    assert evaluate.main(["policies=[static,reactive]", "scenario=small", "seeds=[1001]", "horizon_s=1800",
                          "fidelity=fast", f"out={out}", "workers=1"]) == 0
    run = out / "runs" / "small" / "reactive" / "seed_1001"
    assert (run / "summary.json").exists() and (run / "gpu_hours_by_state.png").exists()
    assert not (run / "requests.parquet").exists()  # no per-request records in the fast fidelity
