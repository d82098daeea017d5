"""Run outputs: the summary agrees with the per-request records, accounting adds up, the
15-minute peak instance-hours, and the ``simulate`` command end to end (including its errors)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sageserve_env.cli import build_workload, main, read_schedule, run_simulation
from sageserve_env.config import load_config
from sageserve_env.sim.metrics import PERCENTILES, quarter_hour_peak_hours

REQUIRED_KEYS = (
    "requests_total", "requests_completed", "requests_dropped", "iw_ttft_p50", "iw_ttft_p90", "iw_ttft_p99",
    "iw_e2e_p50", "iw_e2e_p90", "iw_e2e_p99", "iw_slo_attainment", "niw_completed", "niw_deadline_misses",
    "billed_gpu_hours", "donated_gpu_hours", "wastage_gpu_hours", "instance_hours_15min_peak", "scale_ups",
    "scale_downs", "sim_seconds", "wall_seconds",
)
# Overloaded on purpose: drops, late first tokens, NIW deadline misses and requests still
# unserved at the end, some past their SLO and some not.
OVERLOAD = ["scaling.initial_instances=2", "workload.requests_per_day=3e6", "slo.drop_iw_after_s=120",
            "duration_s=2700", "niw.deadline_s=300", "slo.iw_ttft_s=2"]
SCHEDULE = "time_s,region,model,delta\n600,westus,A,-1\n900,westus,C,3\n1500,westus,C,-2\n2400,westus,A,2\n"


def strict_json(path):
    """Parse JSON, refusing NaN and Infinity (not valid JSON)."""
    def refuse(name):
        raise ValueError(f"{path} holds {name}")
    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def overloaded_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = load_config("small", OVERLOAD)
    (out / "schedule.csv").write_text(SCHEDULE)
    schedule = read_schedule(out / "schedule.csv", cfg)
    run_simulation(cfg, build_workload(cfg, 1), out, schedule=schedule, csv_records=True, plots=False,
                   progress=False)
    return cfg, out, strict_json(out / "summary.json")


def recompute(df: pd.DataFrame, now: float) -> dict:
    """The request metrics of ``summarize`` from the written records, with pandas."""
    iw = df["tier"] == "IW"
    done = df["completion_s"].notna()
    dropped = df["drop_reason"] != ""
    overdue = ~dropped & (df["arrival_s"] + df["sla_s"] < now)
    met = iw & (df["ttft_s"] <= df["sla_s"])
    missed = iw & ~met & (df["ttft_s"].notna() | dropped | overdue)
    niw_late = ~iw & ((done & (df["e2e_s"] > df["sla_s"])) | (~done & (dropped | overdue)))
    tpot = (df["completion_s"] - df["first_token_s"]) / (df["output_tokens"] - 1)
    m = {"requests_total": len(df), "requests_completed": int(done.sum()), "requests_dropped": int(dropped.sum()),
         "iw_slo_attainment": met.sum() / (met.sum() + missed.sum()) if (met | missed).any() else None,
         "niw_completed": int((~iw & done).sum()), "niw_deadline_misses": int(niw_late.sum())}
    for name, values in (("ttft", df.loc[iw, "ttft_s"]), ("e2e", df.loc[iw & done, "e2e_s"]),
                         ("tpot", tpot[iw & done & (df["output_tokens"] > 1)])):
        values = values.dropna().to_numpy()
        for p in PERCENTILES:
            m[f"iw_{name}_p{p}"] = float(np.percentile(values, p)) if len(values) else None
    return m


def test_summary_has_the_required_keys(overloaded_run):
    _, out, summary = overloaded_run
    assert set(REQUIRED_KEYS) <= set(summary)
    for name in ("summary.csv", "summary_by_endpoint.csv", "summary_by_region.csv", "requests.parquet",
                 "requests.csv", "timeline.csv", "scaling_events.csv", "config.yaml"):
        assert (out / name).is_file(), name
    row = pd.read_csv(out / "summary.csv")
    assert len(row) == 1 and set(REQUIRED_KEYS) <= set(row.columns)


def test_summary_agrees_with_the_records(overloaded_run):
    _, out, summary = overloaded_run
    df = pd.read_parquet(out / "requests.parquet")
    for col in ("region", "model", "tier", "served_region", "drop_reason"):
        df[col] = df[col].astype(object)
    assert summary["requests_dropped"] > 0 and summary["niw_deadline_misses"] > 0
    assert 0 < summary["iw_slo_attainment"] < 1
    expected = recompute(df, summary["sim_seconds"])
    assert {k: summary[k] for k in expected} == expected
    assert len(pd.read_csv(out / "requests.csv")) == len(df)
    df["where"] = df["served_region"].fillna(df["region"])
    by_endpoint = {(e["region"], e["model"]): e for e in summary["per_endpoint"]}
    for (region, model), group in df.groupby(["where", "model"]):
        expected = recompute(group, summary["sim_seconds"])
        assert {k: by_endpoint[region, model][k] for k in expected} == expected


def test_gpu_hours_add_up_to_fleet_times_duration(overloaded_run):
    cfg, _, summary = overloaded_run
    hours = summary["sim_seconds"] / 3600
    fleet = 0.0
    for region, r in zip(summary["per_region"], cfg.regions):
        gpus = r.servers * cfg.hardware[r.hardware].gpus_per_server
        fleet += gpus * hours
        total = region["billed_gpu_hours"] + region["donated_gpu_hours"] + region["free_gpu_hours"]
        assert total == pytest.approx(gpus * hours, rel=1e-12)
        endpoints = [e for e in summary["per_endpoint"] if e["region"] == region["region"]]
        assert sum(e["billed_gpu_hours"] for e in endpoints) == pytest.approx(region["billed_gpu_hours"], rel=1e-12)
    total = summary["billed_gpu_hours"] + summary["donated_gpu_hours"] + summary["free_gpu_hours"]
    assert total == pytest.approx(fleet, rel=1e-12)
    assert 0 < summary["wastage_gpu_hours"] < summary["billed_gpu_hours"]
    assert summary["donated_gpu_hours"] > 0
    price = cfg.hardware[cfg.regions[0].hardware].cost_per_gpu_hour
    assert summary["cost_usd"] == pytest.approx(summary["billed_gpu_hours"] * price)


def test_scaling_counts_match_the_event_log(overloaded_run):
    _, out, summary = overloaded_run
    events = pd.read_csv(out / "scaling_events.csv")
    assert summary["scale_downs"] == (events["kind"] == "drain").sum() == summary["scale_drain"] == 3
    assert summary["scale_ups"] == (events["kind"] != "drain").sum() == 5
    for kind, n in events["kind"].value_counts().items():
        assert summary[f"scale_{kind}"] == n


def test_quarter_hour_peak_on_a_hand_made_timeline():
    times = [0, 100, 100, 1000, 2000]
    billed = [2, 5, 3, 1, 4]  # 5 lasts 0 s; bins [0, 900) [900, 1800) [1800, 2700) peak at 3, 3, 4
    assert quarter_hour_peak_hours(times, billed, 2700) == pytest.approx((3 + 3 + 4) / 4)
    assert quarter_hour_peak_hours(times, billed, 2000) == pytest.approx((3 + 3 + 1) / 4)  # 4 starts at the end
    assert quarter_hour_peak_hours(times, billed, 2001) == pytest.approx((3 + 3 + 4) / 4)  # partial bin counts whole
    assert quarter_hour_peak_hours([0], [7], 3600) == pytest.approx(7)
    assert quarter_hour_peak_hours([0], [7], 0) == 0


def test_peak_instance_hours_of_a_static_run_are_the_instance_hours(tmp_path):
    cfg = load_config("small", ["duration_s=1800"])
    summary = run_simulation(cfg, build_workload(cfg, 0), tmp_path, plots=False, progress=False)
    assert summary["scale_ups"] == summary["scale_downs"] == 0
    assert summary["instance_hours_15min_peak"] == pytest.approx(summary["billed_instance_hours"])
    assert summary["billed_instance_hours"] == pytest.approx(2 * 4 * 0.5)  # 2 endpoints x 4 instances x 0.5 h


def test_json_is_valid_without_samples(tmp_path):
    cfg = load_config("small", ["duration_s=600", "workload.iw_share=0"])
    run_simulation(cfg, build_workload(cfg, 0), tmp_path, plots=False, progress=False)
    summary = strict_json(tmp_path / "summary.json")
    assert summary["iw_ttft_p50"] is None and summary["iw_slo_attainment"] is None
    assert summary["niw_completed"] > 0


def test_simulate_command_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["simulate", "scenario=small", "duration_s=1200", "seed=3", f"out={out}", "progress=false",
                 "sim_overrides=['scaling.initial_instances=3']"]) == 0
    printed = capsys.readouterr().out
    assert "IW TTFT" in printed and "westus" in printed
    summary = strict_json(out / "summary.json")
    assert summary["sim_seconds"] == 1200 and summary["requests_total"] > 0
    assert summary["billed_instance_hours"] == pytest.approx(2 * 3 * 1200 / 3600)
    for png in ("instances_vs_load.png", "latency_cdf.png", "gpu_hours_by_state.png"):
        assert (out / png).stat().st_size > 10_000
    written = load_config(str(out / "config.yaml"))
    assert written.scaling.initial_instances == 3 and written.duration_s == 1200
    assert main(["presets"]) == 0
    assert "small" in capsys.readouterr().out.split()


@pytest.mark.parametrize("args, message", [
    (["scenario=nope"], "unknown scenario 'nope'"),
    (["sim_overrides=['scaling.nope=1']"], "config key 'scaling.nope'"),
    (["sim_overrides=[scaling.level]"], "not of the form key=value"),
    (["sim_overrides=['scaling.level=7']"], "scaling.level"),
    (["trace=/nonexistent/trace.csv"], "trace.csv"),
])
def test_simulate_reports_config_errors(tmp_path, capsys, args, message):
    code = main(["simulate", "scenario=small", "duration_s=600", f"out={tmp_path}", *args])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("text, message", [
    ("time_s,region,delta\n0,westus,1\n", "missing column(s) ['model']"),
    ("time_s,region,model,delta\nsoon,westus,A,1\n", "line 2: time_s 'soon' is not a number"),
    ("time_s,region,model,delta\n10,westus,A,1\n9999,westus,A,1\n", "line 3: time_s 9999 is outside [0, duration_s=600]"),
    ("time_s,region,model,delta\n10,mars,A,1\n", "line 2: unknown region 'mars'"),
    ("time_s,region,model,delta\n10,westus,Z,1\n", "line 2: unknown model 'Z'"),
    ("time_s,region,model,delta\n10,westus,A,1.5\n", "line 2: delta '1.5' is not an integer"),
])
def test_simulate_reports_schedule_errors(tmp_path, capsys, text, message):
    path = tmp_path / "schedule.csv"
    path.write_text(text)
    code = main(["simulate", "scenario=small", "duration_s=600", f"out={tmp_path / 'out'}", f"schedule={path}"])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err
    assert not (tmp_path / "out").exists()


def test_simulate_reports_a_missing_schedule(tmp_path, capsys):
    assert main(["simulate", "scenario=small", f"out={tmp_path}", "schedule=missing.csv"]) == 2
    assert "schedule file 'missing.csv' does not exist" in capsys.readouterr().err


def test_plot_matrix_draws_cost_against_slo(tmp_path):
    from sageserve_env.plots import plot_matrix

    episodes = pd.DataFrame({"policy": ["reactive", "reactive", "lt_ua", "lt_ua"], "scenario": ["small"] * 4,
                             "billed_gpu_hours": [10.0, 11.0, 8.0, 8.5], "iw_slo_attainment": [0.99, None, 0.97, 0.98]})
    assert plot_matrix(episodes, tmp_path).stat().st_size > 10_000


def test_a_trace_replays_over_its_own_span(tmp_path):
    """simulate trace= runs to the trace's last arrival and until its requests have left (not
    to the preset's duration_s); duration_s= still sets the span; a policy's episode ends at the
    last arrival, what is left reported as queued or in flight."""
    sample = str(Path(__file__).resolve().parents[1] / "traces" / "sample_small.csv")
    args = ["simulate", "scenario=small", f"trace={sample}", "progress=false", "plots=false"]
    assert main(args + [f"out={tmp_path / 'span'}"]) == 0
    s = json.loads((tmp_path / "span" / "summary.json").read_text())
    last = float(np.loadtxt(sample, delimiter=",", skiprows=1, usecols=0).max())
    assert last < s["sim_seconds"] < last + 120  # drained within two minutes of the last arrival
    assert s["requests_completed"] + s["requests_dropped"] == s["requests_total"]
    assert main(args + ["duration_s=7200", f"out={tmp_path / 'fixed'}"]) == 0
    assert json.loads((tmp_path / "fixed" / "summary.json").read_text())["sim_seconds"] == 7200
    assert main(args + ["policies=[static]", f"out={tmp_path / 'policy'}"]) == 0
    p = json.loads((tmp_path / "policy" / "summary.json").read_text())
    assert p["sim_seconds"] == 60 * np.ceil(last / 60)
    assert p["requests_total"] == sum(p[k] for k in ("requests_completed", "requests_dropped", "requests_queued",
                                                      "requests_in_flight"))


def test_iw_load_per_minute_counts_every_iw_arrival_once():
    from sageserve_env.cli import simulate
    from sageserve_env.plots import iw_load_per_minute

    cfg = load_config("small", ["duration_s=1500"])
    sim, _ = simulate(cfg, build_workload(cfg, 2), progress=False)
    rec = sim.records()
    load = iw_load_per_minute(sim, rec)
    assert load.shape == (len(cfg.region_names) * len(cfg.model_names), 25)
    df = pd.DataFrame({k: rec[k] for k in ("arrival_s", "region", "model", "tier")})
    iw = df[df["tier"] == 0]
    naive = iw.groupby([iw["region"] * len(cfg.model_names) + iw["model"], iw["arrival_s"] // 60]).size()
    for (e, minute), n in naive.items():
        assert load[e, int(minute)] == n
    assert load.sum() == len(iw)
