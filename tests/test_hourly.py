"""scripts/hourly.py: the per-hour differences of running totals."""

import importlib.util
from pathlib import Path

import numpy as np

SPEC = importlib.util.spec_from_file_location("hourly", Path(__file__).resolve().parents[1] / "scripts" / "hourly.py")
hourly = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(hourly)


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
