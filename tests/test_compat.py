"""Compat mode (``sageserve_compat``, ``docs/compat.md``): the original SageServe arbiters'
mechanisms, their inputs, and the acceptance figures against the original simulator's results on
the shared small trace."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agents.reactive import Trigger, UpWaits
from sageserve_env.config import ArbiterConfig, ConfigError, load_config
from sageserve_env.sim.stats import Stat
from sageserve_env.workload.forecast import DEV_FILE, PROD_FILE, SageServeForecasts, write_sageserve_forecasts

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["A", "B", "C", "D"]


def _script():
    spec = importlib.util.spec_from_file_location("compare_original", ROOT / "scripts" / "compare_original.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def small(shared_data):
    return shared_data / "sageserve_small"


# -- the original's forecast files ---------------------------------------------------------------
def test_window_max_and_dev_share_follow_the_original_rule(small):
    """window_max / dev_max_prompt equal the original's pandas selections on its own files
    (``MilpGlobalArbiter.get_ilp_forecast``), at several plan times."""
    f = SageServeForecasts.read(small / "forecasts", 3, MODELS)
    for now in (0.0, 1234.5, 3600.0, 5000.0):
        got_prod, got_dev = f.window_max(now + 1200, now + 3600), f.dev_max_prompt(
            *((0.0, 3600.0) if now < 3600 else (now - 3600, now)))
        for r in range(3):
            for m, model in enumerate(MODELS):
                df = pd.read_csv(small / "forecasts" / PROD_FILE.format(model=model, region=r))
                df = df.loc[(df["Time"] <= now + 3600) & (df["Time"] >= now + 1200)]
                assert got_prod[r, m] == (df["Predicted"].max() if len(df) else 0.0)
                dev = pd.read_csv(small / "forecasts" / DEV_FILE.format(model=model, region=r))
                dev = dev.loc[dev["arrival_timestamp"] <= 3600] if now < 3600 else dev.loc[
                    (dev["arrival_timestamp"] <= now) & (dev["arrival_timestamp"] >= now - 3600)]
                assert got_dev[r, m] == (dev["prompt_size"].max() if len(dev) else 0.0)


def test_written_forecasts_reproduce_the_shared_files(small, tmp_path):
    """The forecast files made from the trace (ARIMA(3, 1, 2) in-sample plus a 180-minute tail)
    are the ones the original read, for model D in every region."""
    rows = pd.read_csv(small / "SMALL.csv", dtype={"regions": str})
    write_sageserve_forecasts(rows[rows["model_type"] == "D"], tmp_path, 3)
    for r in range(3):
        ours = pd.read_csv(tmp_path / PROD_FILE.format(model="D", region=r))
        theirs = pd.read_csv(small / "forecasts" / PROD_FILE.format(model="D", region=r))
        np.testing.assert_array_equal(ours["Time"], theirs["Time"])
        # the ARIMA fit converges to within ~1e-6 of the shared files, by CPU and BLAS kernel (1.4e-6 seen)
        np.testing.assert_allclose(ours["Predicted"], theirs["Predicted"], rtol=1e-5)
        dev = pd.read_csv(tmp_path / DEV_FILE.format(model="D", region=r))
        ref = pd.read_csv(small / "forecasts" / DEV_FILE.format(model="D", region=r))
        np.testing.assert_array_equal(dev["arrival_timestamp"], ref["arrival_timestamp"])


def _files(directory, prod_rows="0,1.0,0\n1,2.0,60\n"):
    for r in range(1):
        (directory / PROD_FILE.format(model="A", region=r)).write_text(",Predicted,Time\n" + prod_rows)
        (directory / DEV_FILE.format(model="A", region=r)).write_text("arrival_timestamp,prompt_size\n1.0,5\n")


@pytest.mark.parametrize("rows,message", [
    ("0,1.0,0\n1,abc,60\n", "row 3, column 'Predicted'"),
    ("0,1.0,0\n1,2.0,61\n", "row 3: Time must be a non-negative multiple of 60"),
    ("0,-1.0,0\n", "row 2: Time must be"),
])
def test_bad_forecast_files_are_named(tmp_path, rows, message):
    _files(tmp_path, rows)
    with pytest.raises(ValueError, match=message):
        SageServeForecasts.read(tmp_path, 1, ["A"])


def test_missing_forecast_file_and_column(tmp_path):
    with pytest.raises(ValueError, match="is not a directory"):
        SageServeForecasts.read(tmp_path / "nowhere", 1, ["A"])
    _files(tmp_path)
    with pytest.raises(ValueError, match="missing file .*final_B_prod_1minute_region0_arima.csv"):
        SageServeForecasts.read(tmp_path, 1, ["A", "B"])
    (tmp_path / DEV_FILE.format(model="A", region=0)).write_text("arrival_timestamp\n1.0\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['prompt_size'\]"):
        SageServeForecasts.read(tmp_path, 1, ["A"])


# -- settings ------------------------------------------------------------------------------------
def test_defaults_are_ours_and_the_preset_sets_the_original():
    assert load_config("paper").arbiter == ArbiterConfig()
    a = load_config("sageserve_compat").arbiter
    assert (a.trigger, a.reclaim_wait_s, a.spin_up_wait_s, a.down_wait_s) == ("arrival", 65, 155, 0)
    assert (a.start_instances, a.plan_demand, a.ua_tokens) == (8, "window_max", "region")
    assert a.plan_throughput == "fixed" and a.instance_tokens_per_min == pytest.approx({"A": 30 * 7516.67, "B": 30 * 5398.07, "C": 48e6, "D": 48e6})


@pytest.mark.parametrize("override,key", [
    ("arbiter.trigger=always", "arbiter.trigger"),
    ("arbiter.instance_tokens_per_min={E: 10, A: 1, B: 1, C: 1, D: 1}", "arbiter.instance_tokens_per_min.E"),
    ("arbiter.reclaim_wait_s=-1", "arbiter.reclaim_wait_s"),
    ("arbiter.plan_demand=max", "arbiter.plan_demand"),
    ("arbiter.instance_tokens_per_min={A: 0, B: 1, C: 1, D: 1}", "arbiter.instance_tokens_per_min.A"),
    ("arbiter.start_instances=1", "arbiter.start_instances"),
    ("arbiter.ua_tokens=global", "arbiter.ua_tokens"),
])
def test_bad_arbiter_settings_name_the_key(override, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config("sageserve_compat", [override])


def test_fixed_throughputs_name_every_model():
    with pytest.raises(ConfigError, match="'arbiter.instance_tokens_per_min'.*needs every model"):
        load_config("paper", ["arbiter.plan_throughput=fixed", "arbiter.instance_tokens_per_min={A: 10}"])
    with pytest.raises(ConfigError, match="'arbiter.plan_throughput'"):
        load_config("paper", ["arbiter.plan_throughput=constant"])


def test_window_max_without_forecasts_is_refused():
    from agents.long_term import LongTermPolicy
    from sageserve_env.env.sageserve_env import SageServeEnv

    env = SageServeEnv(scenario="sageserve_compat", sim_overrides=["duration_s=120"], decision_interval_s=60)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="set arbiter.forecasts"):
        LongTermPolicy(mode="lt_u").reset(env)


class _View:
    """The parts of SimView that Trigger and UpWaits read."""

    reclaim_s, spin_up_s = 65.0, 155.0

    def __init__(self):
        self.stats = np.zeros((6, len(Stat)))

    def statistics(self):
        return self.stats


class _Env:
    n_regions, n_models = 2, 3


def test_arrival_trigger_picks_the_endpoints_requests_reached():
    view, trigger = _View(), Trigger(_Env(), "arrival")
    assert not trigger.decisions(view).any()
    view.stats[[1, 4], Stat.ARRIVED] = [3, 1]
    assert trigger.decisions(view).ravel().tolist() == [0, 3, 0, 0, 1, 0]
    assert not trigger.decisions(view).any()  # nothing new since
    view.stats[4, Stat.ARRIVED] += 2
    assert trigger.decisions(view).ravel().tolist() == [0, 0, 0, 0, 2, 0]
    assert (Trigger(_Env(), "interval").decisions(view) == 1).all()


def test_up_waits_are_the_delays_unless_the_arbiter_fixes_them():
    view = _View()
    assert UpWaits.of(view) == UpWaits.of(view, ArbiterConfig()) == UpWaits(0.0, 65.0, 155.0)
    fixed = UpWaits.of(view, ArbiterConfig(reclaim_wait_s=10.0, spin_up_wait_s=20.0))
    assert fixed == UpWaits(10.0, 10.0, 20.0)  # an instance it gave away comes back from spot


def test_heavier_trace_keeps_every_request_once_per_copy(small):
    rows = pd.read_csv(small / "SMALL.csv", dtype={"regions": str}).head(500)
    x3 = _script().heavier_trace(rows, 3)
    assert len(x3) == 3 * len(rows) and x3["request_id"].is_unique
    assert x3["arrival_timestamp"].is_monotonic_increasing
    assert x3["arrival_timestamp"].between(0, np.ceil(rows["arrival_timestamp"].max())).all()
    for col in ("prompt_size", "token_size", "model_type", "workload_type"):
        assert sorted(x3[col]) == sorted(list(rows[col]) * 3)
    batches = rows.loc[rows["batch_id"] >= 0, "batch_id"].nunique()
    assert x3.loc[x3["batch_id"] >= 0, "batch_id"].nunique() == 3 * batches


def test_instance_hours_integrate_the_timeline():
    tl = [(0.0, 0, 0, 4, 0, 0, 0), (900.0, 0, 0, 2, 1, 1, 0), (0.0, 0, 1, 2, 0, 0, 0)]
    ih = _script().instance_hours
    assert ih(tl, 1800.0) == pytest.approx((4 * 900 + 3 * 900 + 2 * 1800) / 3600)
    assert ih(tl, 1800.0, draining=True) == pytest.approx((4 * 900 + 4 * 900 + 2 * 1800) / 3600)
    assert ih(tl, 450.0) == pytest.approx(6 * 450 / 3600)


# -- acceptance ----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["reactive", "lt_u", "lt_ua"])
def test_compat_matches_the_original_on_the_small_trace(small, mode):
    """Reactive within 20% of the original on IW TTFT and e2e p50/p95 and instance-hours; the
    long-term modes within 35% on instance-hours (``original_results.json``)."""
    script = _script()
    ours = script.run_mode(mode, small / "SMALL.csv", small / "forecasts")
    theirs = json.loads((small / "original_results.json").read_text())[mode]
    for key, bound in script.TARGETS[mode].items():
        assert abs(ours[key] - theirs[key]) <= bound * theirs[key], (key, ours[key], theirs[key])
    assert ours["completed"] == theirs["completed"]


@pytest.mark.slow
def test_compat_reactive_matches_the_original_on_a_heavier_trace(small, tmp_path):
    """Where the arbiter really scales: the shared trace at ten times its rate (``heavier_trace``),
    its first 600 s, against the original simulator's figures on it
    (``tests/data/sageserve_original_x10_first600.json``, with how they were made): the
    arbiter's figure, instance-hours, within 20%. The latencies are not held to it: at this
    load the instances' batching differs (``docs/compat.md``, "Ours beside the original")."""
    script = _script()
    rows = script.heavier_trace(pd.read_csv(small / "SMALL.csv", dtype={"regions": str}), 10)
    trace = tmp_path / "x10.csv"
    rows[rows["arrival_timestamp"] < 600].to_csv(trace, index=False)
    ours = script.run_mode("reactive", trace, None)
    theirs = json.loads((ROOT / "tests" / "data" / "sageserve_original_x10_first600.json").read_text())["reactive"]
    key = "prod_instance_hours_total"
    assert abs(ours[key] - theirs[key]) <= script.TARGETS["reactive"][key] * theirs[key], (ours[key], theirs[key])
    assert ours["completed"] == theirs["completed"]


class _ArrivalsView:
    """The parts of SimView that RecentTokens reads: a clock and the arrivals so far."""

    def __init__(self, at, region, tokens):
        self.now = 0.0
        self._at, self._region, self._tokens = (np.asarray(x) for x in (at, region, tokens))

    def arrived_since(self, start):
        n = int(np.searchsorted(self._at, self.now, side="right"))
        return n, {"arrival_s": self._at[start:n], "region": self._region[start:n],
                   "prompt_tokens": self._tokens[start:n]}


def test_recent_tokens_count_the_last_minute_per_region():
    from agents.long_term import RecentTokens

    rng = np.random.default_rng(3)
    at = np.sort(rng.uniform(0, 300, 400))
    region, tokens = rng.integers(0, 3, 400), rng.integers(1, 5000, 400)
    view, recent = _ArrivalsView(at, region, tokens), RecentTokens(3)
    for now in np.arange(0.0, 300.0, 7.5):
        view.now = now
        recent.add(view)
        inside = (at > now - 60) & (at <= now)
        np.testing.assert_array_equal(recent.tokens(now), np.bincount(region[inside], tokens[inside], minlength=3))
