"""Synthetic generator: determinism, calibration of the paper day, jobs, bursts, weekends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sageserve_env.config import load_config
from sageserve_env.workload import IW, NIW, WorkloadError, generate, load_trace, load_workload, write_canonical
from sageserve_env.workload.generator import JOB_SPREAD_S, TOKEN_SIZES, expected_counts
from sageserve_env.workload.readers import DEFAULT_MODEL_POPULARITY, model_popularity, split_weights

COLUMNS = ("arrival_s", "region", "priority", "model", "tier", "prompt_tokens", "output_tokens", "sla_s", "batch_id")
SAMPLE = Path(__file__).resolve().parents[1] / "traces" / "sample_small.csv"


@pytest.fixture(scope="module")
def paper_day():
    cfg = load_config("paper")
    return cfg, generate(cfg, np.random.default_rng(1234), days=1.0, start_day=0)


def hourly(arrival: np.ndarray, hours: int) -> np.ndarray:
    return np.bincount((arrival // 3600).astype(int), minlength=hours)[:hours]


def test_deterministic_per_seed():
    cfg = load_config("small")
    a, b = (generate(cfg, np.random.default_rng(7), days=0.5) for _ in range(2))
    c = generate(cfg, np.random.default_rng(8), days=0.5)
    for col in COLUMNS:
        assert np.array_equal(getattr(a, col), getattr(b, col)), col
    assert len(a) != len(c) or not np.array_equal(a.arrival_s, c.arrival_s)
    assert not np.array_equal(a.prompt_tokens[:1000], c.prompt_tokens[:1000])


def test_paper_day_calibration(paper_day):
    cfg, w = paper_day
    assert abs(len(w) / 1.5e6 - 1) < 0.02
    assert abs((w.tier == IW).mean() - 0.86) < 0.01
    assert w.duration_s < 86400
    total = hourly(w.arrival_s, 24)
    assert total.max() / total.min() > 3.0  # regions three hours apart blur the configured 4x a little
    for r in range(3):  # interactive requests per region follow the configured 4x in local time
        h = hourly(w.arrival_s[(w.region == r) & (w.tier == IW)], 24)
        assert 3.4 < h.max() / h.min() < 4.8, (r, h.max() / h.min())


def test_rates_peak_early_afternoon_local():
    cfg = load_config("paper")
    starts, widths, counts = expected_counts(cfg, 1.0, 0)
    mid_h = (starts + widths / 2) / 3600
    ratio = counts.max(axis=1) / counts.min(axis=1)
    np.testing.assert_allclose(ratio, 4.0, rtol=1e-3)
    # t is westus local time: the 13:00 local peak is at t = 13 h, 11 h, 10 h for UTC-8, -6, -5.
    np.testing.assert_allclose(mid_h[counts.argmax(axis=1)], [13.0, 11.0, 10.0], atol=1 / 60)
    np.testing.assert_allclose(counts.sum(), cfg.workload.requests_per_day, rtol=1e-9)


def test_weekend_lower_than_weekday():
    cfg = load_config("small")
    w = generate(cfg, np.random.default_rng(3), days=7.0, start_day=0)
    daily = np.bincount((w.arrival_s // 86400).astype(int), minlength=7)
    assert abs(daily[:5].mean() / cfg.workload.requests_per_day - 1) < 0.03
    np.testing.assert_allclose(daily[5:] / daily[:5].mean(), cfg.workload.weekend_factor, rtol=0.06)
    saturday_start = generate(cfg, np.random.default_rng(3), days=1.0, start_day=5)
    assert len(saturday_start) < 0.7 * daily[:5].mean()


def test_token_sizes_follow_the_fit(paper_day):
    _, w = paper_day
    spec = yaml.safe_load(TOKEN_SIZES.read_text())
    q = spec["quantiles"]
    for col in ("prompt_tokens", "output_tokens"):
        got = np.quantile(getattr(w, col), q)
        np.testing.assert_allclose(got, spec["fitted_quantiles"][col], rtol=0.03)
        np.testing.assert_allclose(got, spec["trace_quantiles"][col], rtol=0.12)
        assert getattr(w, col).min() >= spec["clip"][0] and getattr(w, col).max() <= spec["clip"][1]


def test_token_fit_matches_azure_trace(shared_data):
    spec = yaml.safe_load(TOKEN_SIZES.read_text())
    raw = pd.read_csv(shared_data / "azure_llm_2023" / "AzureLLMInferenceTrace_conv.csv")
    assert spec["fit"]["rows"] == len(raw)
    np.testing.assert_allclose(np.quantile(raw["ContextTokens"], spec["quantiles"]),
                               spec["trace_quantiles"]["prompt_tokens"])


def test_niw_batch_jobs(paper_day):
    cfg, w = paper_day
    iw, niw = w.tier == IW, w.tier == NIW
    assert (w.batch_id[iw] == -1).all() and (w.batch_id[niw] >= 0).all()
    assert (w.sla_s[iw] == cfg.slo.iw_ttft_s).all() and (w.sla_s[niw] == cfg.niw.deadline_s).all()
    jobs = pd.DataFrame({"job": w.batch_id[niw], "t": w.arrival_s[niw], "region": w.region[niw],
                         "model": w.model[niw]}).groupby("job")
    assert (jobs["region"].nunique() == 1).all() and (jobs["model"].nunique() == 1).all()
    assert ((jobs["t"].max() - jobs["t"].min()) <= JOB_SPREAD_S).all()
    first = jobs["t"].min()
    assert (np.diff(first.to_numpy()) >= -JOB_SPREAD_S).all()  # ids count jobs in order of their start
    assert abs(jobs.size().mean() / cfg.workload.niw_job_size_mean - 1) < 0.15
    assert w.meta["niw_jobs"] == len(first)


def test_bursts_replay_first_minute_of_each_hour():
    plain_cfg = load_config("small")
    burst_cfg = load_config("small", ["workload.burst_factor=3"])
    plain = generate(plain_cfg, np.random.default_rng(5), days=0.25)
    burst = generate(burst_cfg, np.random.default_rng(5), days=0.25)
    first = lambda w: w.arrival_s % 3600 < 60  # noqa: E731
    assert first(burst).sum() == 3 * first(plain).sum() > 0
    assert np.array_equal(burst.arrival_s[~first(burst)], plain.arrival_s[~first(plain)])
    assert np.array_equal(np.unique(burst.arrival_s[first(burst)], return_counts=True)[1] % 3,
                          np.zeros(len(np.unique(burst.arrival_s[first(burst)])), dtype=int))


def test_fractional_days_and_meta():
    cfg = load_config("small")
    w = generate(cfg, np.random.default_rng(0), days=0.25, start_day=2)
    assert w.arrival_s.max() < 0.25 * 86400
    assert w.meta["days"] == 0.25 and w.meta["start_day"] == 2 and w.meta["scenario"] == "small"
    assert w.meta["seed"]["entropy"] == 0
    with pytest.raises(WorkloadError, match="days > 0"):
        generate(cfg, np.random.default_rng(0), days=0.0)


def test_priority_orders_nearest_first(paper_day):
    _, w = paper_day
    assert w.priority_orders == ((0, 1, 2), (1, 2, 0), (2, 1, 0))
    assert np.array_equal(w.priority, w.region)


def test_model_popularity_defaults(paper_day):
    cfg, w = paper_day
    np.testing.assert_allclose(np.bincount(w.model) / len(w), [0.45, 0.20, 0.20, 0.15], atol=0.01)
    np.testing.assert_allclose(model_popularity(load_config("small")), [0.45 / 0.65, 0.20 / 0.65])
    assert split_weights(["X", "Y"], None, DEFAULT_MODEL_POPULARITY).tolist() == [0.5, 0.5]
    only_c = load_config("small", ["workload.model_popularity={C: 1.0}"])
    assert (generate(only_c, np.random.default_rng(0), days=0.05).model == 1).all()


def test_load_workload(tmp_path, monkeypatch):
    cfg = load_config("small")
    direct = generate(cfg, np.random.default_rng(11))
    via = load_workload(cfg, np.random.default_rng(11))
    assert np.array_equal(direct.arrival_s, via.arrival_s) and direct.duration_s > 0.9 * 86400
    path = write_canonical(direct.slice_time(0, 600), tmp_path / "w.parquet")
    traced = load_config("small", {"workload": {"source": "trace", "trace": str(path), "trace_format": "canonical"}})
    loaded = load_workload(traced, np.random.default_rng(0))
    assert np.array_equal(loaded.arrival_s, direct.slice_time(0, 600).arrival_s)
    monkeypatch.chdir(tmp_path)  # a relative trace path is taken from the working directory, once
    relative = load_config("small", {"workload": {"source": "trace", "trace": "w.parquet", "trace_format": "canonical"}})
    assert relative.workload.trace == str(path)
    monkeypatch.chdir(SAMPLE.parent)
    assert np.array_equal(load_workload(relative, np.random.default_rng(0)).arrival_s, loaded.arrival_s)


def test_committed_sample():
    assert SAMPLE.stat().st_size < 1_000_000
    w = load_trace(SAMPLE, "canonical", load_config("small"))
    assert 3500 < w.duration_s < 3600 and set(np.unique(w.tier)) == {IW, NIW}
