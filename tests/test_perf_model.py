"""The performance model: fitted coefficients against the measurements, and the guarantees the
simulator relies on (positive, finite, monotone, exactly linear decode, bounded throughput)."""

import dataclasses
import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from sageserve_env.config import CONFIG_DIR, HardwareConfig, ModelConfig, PerfConfig
from sageserve_env.sim.perf_model import COEFFICIENTS_PATH, build_perf_model, load_coefficients

ROOT = Path(__file__).resolve().parents[1]
TABLE = load_coefficients(COEFFICIENTS_PATH)
ENTRIES = sorted(TABLE.entries)
HBM_TBS = {hw: h["hbm_tbs"] for hw, h in yaml.safe_load(COEFFICIENTS_PATH.read_text())["hardware"].items()}
COMPAT = PerfConfig(iteration_overhead_s=0.010, mixed_prefill_factor=1.1, kv_bytes_rule="mha")


def _catalogue() -> dict:
    """ModelConfig per profile name, from the catalogue ``configs/base.yaml``."""
    raw = OmegaConf.load(CONFIG_DIR / "base.yaml").models
    models = [OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), m)) for m in raw.values()]
    return {m.profile: m for m in models}


MODELS = _catalogue()


def _build(model: str, hardware: str, tp: int, perf: PerfConfig = PerfConfig()):
    cfg = dataclasses.replace(MODELS[model], tp=tp)
    hw = HardwareConfig(profile=hardware, hbm_bandwidth_tbs=HBM_TBS[hardware])
    return build_perf_model(cfg, hw, perf, cfg.kv_bytes_per_token(perf.kv_bytes_rule))


def _mape(pred, y) -> float:
    return float(np.mean(np.abs(np.asarray(pred) - y) / y) * 100)


def test_prefill_matches_held_out_measurements(shared_data):
    test = pd.read_csv(shared_data / "perf_profiles" / "llama-3.1-8B-tp-4-test.csv")
    pm = _build("C", "a100-80gb", 4)
    err = _mape([pm.prefill_time(int(t)) for t in test.PromptLength], test.ExecTime.to_numpy())
    print(f"\nheld-out prefill, Llama-3.1-8B a100 TP 4, {len(test)} rows: MAPE {err:.1f}%")
    assert err <= 25.0


@pytest.mark.parametrize("model", ["A", "B"])
def test_fit_reproduces_measured_medians(shared_data, model):
    df = pd.read_csv(shared_data / "perf_profiles" / "perf_model_4_models.csv")
    for (hw, tp), rows in df[df.model == model].groupby(["hardware", "tensor_parallel"]):
        pm = _build(model, hw, int(tp))
        rows = rows[~((tp == 2) & (rows.batch_size == 64))]  # not the stated run, see the doc
        pre = rows.groupby(["prompt_size", "batch_size"]).prompt_time.median().reset_index()
        tokens = pre.prompt_size * pre.batch_size
        y = pre.prompt_time.to_numpy() / 1e3
        pred = np.array([pm.prefill_time(int(t)) for t in tokens])
        assert _mape(pred, y) <= 25.0, (model, hw, tp)
        assert np.all(np.abs(pred - y) / y <= 0.4), (model, hw, tp)
        dec = rows.groupby(["prompt_size", "batch_size", "token_size"]).token_time.median().reset_index()
        kv = dec.batch_size * (dec.prompt_size + dec.token_size // 2)
        pred = np.array([pm.decode_time(int(b), int(k)) for b, k in zip(dec.batch_size, kv)])
        y = dec.token_time.to_numpy() / 1e3
        assert np.all(np.abs(pred - y) / y <= 0.15), (model, hw, tp)


def test_committed_coefficients_are_what_the_fit_script_writes(shared_data, tmp_path):
    spec = importlib.util.spec_from_file_location("fit_perf_model", ROOT / "scripts" / "fit_perf_model.py")
    fit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fit)
    out = tmp_path / "coefficients.yaml"
    fit.write_yaml(fit.fit_all(fit.load_profiles(shared_data / "perf_profiles"), fit.catalogue_models()), out)
    assert yaml.safe_load(out.read_text()) == yaml.safe_load(COEFFICIENTS_PATH.read_text())


@settings(max_examples=400, deadline=None)
@given(key=st.sampled_from(ENTRIES), compat=st.booleans(),
       p=st.integers(0, 200_000), b=st.integers(0, 4096), kv=st.integers(0, 100_000_000),
       dp=st.integers(0, 5000), db=st.integers(0, 600), dkv=st.integers(0, 1_000_000))
def test_positive_finite_and_monotone(key, compat, p, b, kv, dp, db, dkv):
    pm = _build(*key, COMPAT if compat else PerfConfig())
    t = pm.iteration_time(p, b, kv)
    assert 0 < t < math.inf
    assert pm.iteration_time(p + dp, b, kv) >= t
    assert pm.iteration_time(p, b + db, kv) >= t
    assert pm.iteration_time(p, b, kv + dkv) >= t
    assert 0 < pm.prefill_time(p) <= pm.prefill_time(p + dp) < math.inf
    assert 0 < pm.decode_time(b, kv) <= min(pm.decode_time(b + db, kv), pm.decode_time(b, kv + dkv))
    assert pm.decode_time(b + db, kv + dkv) < math.inf


@given(key=st.sampled_from(ENTRIES), b=st.integers(0, 4096), kv=st.integers(0, 100_000_000))
def test_decode_is_exactly_linear(key, b, kv):
    pm = _build(*key)
    expected = pm.decode_base_s + pm.decode_per_seq_s * b + pm.decode_per_kv_token_s * kv
    assert pm.decode_time(b, kv) == expected
    assert pm.iteration_time(0, b, kv) == expected


def test_kv_term_and_compute_floor_come_from_the_model_shape():
    pm = _build("A", "a100-80gb", 8)
    kv_bytes = 2 * 80 * 8 * 128 * 2
    assert pm.decode_per_kv_token_s == pytest.approx(kv_bytes / (8 * 2.04e12 * TABLE.hbm_efficiency))
    assert pm.decode_per_seq_s >= 2 * 70e9 / (8 * 312e12 * TABLE.mfu)


@pytest.mark.parametrize("key", ENTRIES, ids=lambda k: str(k))
def test_throughput_at_batch_512_is_finite_and_below_peak_compute(key):
    pm = _build(*key)
    model, hardware, tp = key
    tokens_per_s = [b / pm.decode_time(b, b * 1024) for b in (1, 64, 512)]
    bound = tp * TABLE.peak_tflops[hardware] * 1e12 / (2 * MODELS[model].params)  # 100% MFU
    assert 0 < tokens_per_s[0] < tokens_per_s[1] < tokens_per_s[2] < bound


def test_mixed_iteration_default_and_compat():
    plain = _build("A", "a100-80gb", 8)
    assert plain.iteration_time(512, 8, 8000) == pytest.approx(
        plain.prefill_time(512) + plain.decode_per_seq_s * 8 + plain.decode_per_kv_token_s * 8000)
    assert plain.iteration_time(512, 0, 0) == plain.prefill_time(512)

    compat = _build("A", "a100-80gb", 8, dataclasses.replace(COMPAT, kv_bytes_rule="gqa"))
    assert compat.decode_time(8, 8000) == pytest.approx(plain.decode_time(8, 8000) + 0.010)
    assert compat.prefill_time(512) == pytest.approx(plain.prefill_time(512) + 0.010)
    assert compat.iteration_time(512, 0, 0) == pytest.approx(plain.prefill_time(512) + 0.010)
    assert compat.iteration_time(512, 8, 8000) == pytest.approx(1.1 * plain.prefill_time(512) + 0.010)
    # floored at the decode-only time: a tiny prefill never shortens a large decode iteration
    assert compat.iteration_time(1, 512, 10**6) == compat.decode_time(512, 10**6)


@pytest.mark.parametrize("model, hardware, tp", [("A", "a100-80gb", 3), ("C", "h100-80gb", 8), ("Z", "a100-80gb", 8)])
def test_missing_entry_raises_a_useful_error(model, hardware, tp):
    cfg = dataclasses.replace(MODELS["A"], profile=model, tp=tp)
    with pytest.raises(ValueError) as err:
        build_perf_model(cfg, HardwareConfig(profile=hardware), PerfConfig(), 1.0)
    msg = str(err.value)
    assert repr(model) in msg and repr(hardware) in msg and f"tp={tp}" in msg and "A/a100-80gb/tp8" in msg
