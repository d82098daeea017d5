"""Fit the performance model on the measured profiles; write ``configs/perf_coefficients.yaml``.

Sources (the SageServe profiles, ``perf_profiles/`` of the shared data; see its README):
``perf_model_4_models.csv`` for models A and B (milliseconds, one decode iteration per
``token_time``) and the raw ``Llama-3.1-8B-tp-{2,4}.csv`` / ``Llama-3.2-3B-tp-{2,4}.csv`` for C
and D (seconds, ``token_time`` = all ``token_size`` decode iterations, true TP degree).

Per (model, hardware, TP), on the median of the repetitions of each measured configuration:
- decode: per-iteration time minus the KV read term (bandwidth model of ``perf_model``, with
  the catalogue's GQA KV bytes per token), then base + per_seq x batch by non-negative least
  squares on relative errors (``scipy.optimize.nnls``).
  C and D: rows with 8192-token prompts or outputs are dropped (their iteration time jumps
  1.15-3.6x, which no other model or size shows).
- prefill: time = a + b*T + c*T^2 over the iteration's prompt tokens T = prompt_size x
  batch_size, by the same NNLS, with a at least the decode base (a prefill iteration also
  reads all the weights).
  C and D: batch-1 rows only (their batched ``prompt_time`` does not grow with the batch).
- A and B: a configuration (prompt_size, batch_size) whose prefill is faster than half that of
  one with fewer tokens is dropped from both fits (A at TP 2, batch 64: 0.8 s for 32k tokens
  after 6.6 s for 16k, and a decode iteration faster than at batch 32: not the stated run).
- TP 8 of C and D (measured only at TP 2 and 4): every coefficient k follows
  k(tp) = s + p/tp through the TP-2 and TP-4 values (s, p >= 0), evaluated at tp = 8; a
  coefficient that did not shrink from TP 2 to TP 4 keeps its TP-4 value (the prefill base
  stays at least the decode base).

Usage: ``python scripts/fit_perf_model.py [--data DIR] [--out FILE]``; prints fit errors, the
held-out prefill validation and tokens/s per instance for ``docs/perf_model.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from omegaconf import OmegaConf
from scipy.optimize import nnls

from sageserve_env.config import CONFIG_DIR, HardwareConfig, ModelConfig, PerfConfig
from sageserve_env.sim.perf_model import build_perf_model, kv_read_s_per_token, load_coefficients

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "perf_profiles"  # the shared folder beside the repo
OUT = CONFIG_DIR / "perf_coefficients.yaml"
FOUR_MODELS = "perf_model_4_models.csv"
RAW = {"C": "Llama-3.1-8B-tp-{tp}.csv", "D": "Llama-3.2-3B-tp-{tp}.csv"}
HELD_OUT = "llama-3.1-8B-tp-4-test.csv"
# Per GPU: dense bf16 tensor TFLOPS (data sheets; the power cap lowers clocks, which the fitted
# times capture) and the HBM bandwidth used to subtract the KV term at fit time (configs/base.yaml).
HARDWARE = {"a100-80gb": {"peak_tflops": 312.0, "hbm_tbs": 2.04},
            "h100-80gb": {"peak_tflops": 989.0, "hbm_tbs": 3.35},
            "h100-80gb-pcap": {"peak_tflops": 989.0, "hbm_tbs": 3.35}}
HBM_EFFICIENCY = 0.75  # achievable share of HBM bandwidth for streaming KV reads
MFU = 0.5  # achievable share of peak FLOPS, for the compute floor of a decoded token
KEYS = ("prefill_base_s", "prefill_per_token_s", "prefill_per_token_sq_s", "decode_base_s", "decode_per_seq_s")


def catalogue_models() -> dict:
    """ModelConfig per profile name, from ``configs/base.yaml`` (for KV bytes and parameters)."""
    raw = OmegaConf.load(CONFIG_DIR / "base.yaml").models
    models = [OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), m)) for m in raw.values()]
    return {m.profile: m for m in models}


def load_profiles(data: Path) -> pd.DataFrame:
    """All measurements in seconds and true TP, one decode iteration per ``iter_s``."""
    ab = pd.read_csv(data / FOUR_MODELS)
    ab = ab[ab.model.isin(["A", "B"])].assign(prompt_s=lambda d: d.prompt_time / 1e3,
                                              iter_s=lambda d: d.token_time / 1e3)
    cd = [pd.read_csv(data / name.format(tp=tp)).assign(model=m) for m, name in RAW.items() for tp in (2, 4)]
    cd = pd.concat(cd).assign(prompt_s=lambda d: d.prompt_time, iter_s=lambda d: d.token_time / d.token_size)
    cols = ["model", "hardware", "tensor_parallel", "prompt_size", "batch_size", "token_size", "prompt_s", "iter_s"]
    return pd.concat([ab[cols], cd[cols]]).rename(columns={"tensor_parallel": "tp"})


def mape(pred: np.ndarray, y: np.ndarray) -> float:
    """Mean absolute percentage error."""
    return float(np.mean(np.abs(pred - y) / y) * 100)


def select(rows: pd.DataFrame, raw: bool) -> tuple:
    """(prefill rows, decode rows) of one (model, hardware, TP) after the exclusions above."""
    if raw:  # C and D
        return rows[rows.batch_size == 1], rows[(rows.prompt_size < 8192) & (rows.token_size < 8192)]
    med = rows.groupby(["prompt_size", "batch_size"]).prompt_s.median().reset_index()
    med = med.assign(T=med.prompt_size * med.batch_size).sort_values("T")
    bad = med[med.prompt_s < 0.5 * med.prompt_s.cummax().shift(fill_value=0)]
    bad = set(zip(bad.prompt_size, bad.batch_size))
    rows = rows[[(p, b) not in bad for p, b in zip(rows.prompt_size, rows.batch_size)]]
    return rows, rows


def fit_prefill(rows: pd.DataFrame, floor: float) -> tuple:
    """(a, b, c) of a + b*T + c*T^2 with a >= ``floor``, and the in-sample MAPE %, on
    per-configuration medians."""
    med = rows.groupby(["prompt_size", "batch_size"]).prompt_s.median().reset_index()
    t = (med.prompt_size * med.batch_size).to_numpy(float)
    y = med.prompt_s.to_numpy()
    x = np.column_stack([np.ones_like(t), t, t * t])
    coef = nnls(x / y[:, None], (y - floor) / y)[0] + [floor, 0, 0]
    return tuple(coef), mape(x @ coef, y)


def fit_decode(rows: pd.DataFrame, kv_s: float) -> tuple:
    """(base, per_seq) after subtracting the KV read term, and the MAPE % of the full decode time."""
    med = rows.groupby(["prompt_size", "batch_size", "token_size"]).iter_s.median().reset_index()
    b = med.batch_size.to_numpy(float)
    kv = kv_s * b * (med.prompt_size + med.token_size / 2).to_numpy()  # mean KV over the decode
    y = med.iter_s.to_numpy()
    x = np.column_stack([np.ones_like(b), b])
    coef = nnls(x / y[:, None], (y - kv) / y)[0]
    return tuple(coef), mape(x @ coef + kv, y)


def tp8_from_tp2_tp4(k2: float, k4: float) -> float:
    """k(8) for k(tp) = s + p/tp through k(2), k(4) with s, p >= 0 (k(4) if k did not shrink)."""
    return k4 - max(0.0, min(k2 - k4, k4)) / 2


def fit_all(df: pd.DataFrame, models: dict) -> dict:
    """{model: {hardware: {tp: entry}}} for every measured triple, plus derived TP 8 of C and D."""
    out: dict = {}
    for (m, hw, tp), rows in df.groupby(["model", "hardware", "tp"]):
        prefill_rows, decode_rows = select(rows, raw=m in RAW)
        kv_s = kv_read_s_per_token(models[m].kv_bytes_per_token("gqa"), tp, HARDWARE[hw]["hbm_tbs"], HBM_EFFICIENCY)
        (base, per_seq), d_err = fit_decode(decode_rows, kv_s)
        (a, b, c), p_err = fit_prefill(prefill_rows, floor=base)
        out.setdefault(m, {}).setdefault(hw, {})[int(tp)] = {
            "origin": "measured", "prefill_base_s": a, "prefill_per_token_s": b, "prefill_per_token_sq_s": c,
            "decode_base_s": base, "decode_per_seq_s": per_seq, "prefill_mape_pct": p_err, "decode_mape_pct": d_err}
    for m in RAW:
        for hw, by_tp in out[m].items():
            e = {k: tp8_from_tp2_tp4(by_tp[2][k], by_tp[4][k]) for k in KEYS}
            e["prefill_base_s"] = max(e["prefill_base_s"], e["decode_base_s"])
            by_tp[8] = {"origin": "derived from the TP 2 and TP 4 fits (s + p/tp)", **e}
    return out


def round_floats(obj):
    """Floats to 5 significant digits (far below the fit's error), for a readable file."""
    if isinstance(obj, float):
        return float(f"{obj:.5g}")
    if isinstance(obj, dict):
        return {k: round_floats(v) for k, v in obj.items()}
    return obj


def write_yaml(fits: dict, out: Path) -> None:
    """The coefficient file, with a header naming the sources and the method."""
    body = {"hbm_efficiency": HBM_EFFICIENCY, "mfu": MFU, "hardware": HARDWARE, "models": round_floats(fits)}
    header = (
        "# Performance-model coefficients, written by scripts/fit_perf_model.py (do not edit by hand).\n"
        f"# Source: SageServe perf profiles (shared data perf_profiles/): {FOUR_MODELS} for A and B\n"
        "# (ms -> s), Llama-3.1-8B-tp-{2,4}.csv (C) and Llama-3.2-3B-tp-{2,4}.csv (D) (seconds, true TP).\n"
        "# Fit per (model, hardware, tp) on per-configuration medians, NNLS on relative errors:\n"
        "#   prefill(T) = prefill_base_s + prefill_per_token_s*T + prefill_per_token_sq_s*T^2, T = prompt tokens\n"
        "#   decode(b, kv) = decode_base_s + decode_per_seq_s*b + kv*kv_bytes/(tp*hbm*hbm_efficiency);\n"
        "#   the KV term is subtracted from the measurements before the fit and added back at build time\n"
        "#   from the ModelConfig; decode_per_seq_s is raised to 2*params/(tp*peak_tflops*mfu) at build time.\n"
        "# C and D tp 8: not measured, derived from tp 2 and 4 (see docs/perf_model.md). Times in seconds,\n"
        "# overhead (perf.iteration_overhead_s) excluded. *_mape_pct: in-sample fit error, for information.\n")
    out.write_text(header + yaml.safe_dump(body, sort_keys=False, width=120))


def report(data: Path, out: Path, fits: dict, df: pd.DataFrame, models: dict) -> None:
    """Print fit errors, the held-out prefill check, the TP-8 rule checked on A, and tokens/s."""
    for m, by_hw in fits.items():
        for hw, by_tp in by_hw.items():
            for tp, e in by_tp.items():
                errs = f"prefill {e['prefill_mape_pct']:.1f}%  decode {e['decode_mape_pct']:.1f}%" \
                    if e["origin"] == "measured" else e["origin"]
                print(f"{m} {hw:15s} tp{tp}: {errs}")
    hw_cfg = HardwareConfig(profile="a100-80gb", hbm_bandwidth_tbs=HARDWARE["a100-80gb"]["hbm_tbs"])
    pm = build_perf_model(dataclasses.replace(models["C"], tp=4), hw_cfg, PerfConfig(),
                          models["C"].kv_bytes_per_token(), out)
    test = pd.read_csv(data / HELD_OUT)
    pred = np.array([pm.prefill_time(int(t)) for t in test.PromptLength])
    print(f"held-out prefill C a100 tp4 ({HELD_OUT}, {len(test)} rows): MAPE {mape(pred, test.ExecTime.to_numpy()):.1f}%")
    a = fits["A"]["a100-80gb"]
    rule = {k: tp8_from_tp2_tp4(a[2][k], a[4][k]) for k in KEYS}
    rows = df[(df.model == "A") & (df.hardware == "a100-80gb") & (df.tp == 8)]
    med = rows.groupby(["prompt_size", "batch_size"]).prompt_s.median().reset_index()
    t = (med.prompt_size * med.batch_size).to_numpy(float)
    for name, e in (("fitted", a[8]), ("TP-2/4 rule", rule)):
        p = e["prefill_base_s"] + e["prefill_per_token_s"] * t + e["prefill_per_token_sq_s"] * t * t
        d = [e["decode_base_s"] + e["decode_per_seq_s"] * b for b in (1, 64)]
        print(f"A a100 tp8 {name}: prefill MAPE vs TP-8 data {mape(p, med.prompt_s.to_numpy()):.1f}%, "
              f"decode b=1 {d[0] * 1e3:.1f} ms, b=64 {d[1] * 1e3:.1f} ms")
    print("\ntokens/s per instance, a100 tp8, 1k-token contexts (decode only, GQA KV bytes):")
    print("| model | batch 1 | batch 64 | batch 512 |\n|---|---|---|---|")
    for m, cfg in models.items():
        pm = build_perf_model(cfg, hw_cfg, PerfConfig(), cfg.kv_bytes_per_token(), out)
        print(f"| {m} | " + " | ".join(f"{b / pm.decode_time(b, b * 1024):,.0f}" for b in (1, 64, 512)) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the perf_profiles directory")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    models = catalogue_models()
    df = load_profiles(args.data)
    fits = fit_all(df, models)
    write_yaml(fits, args.out)
    load_coefficients.cache_clear()
    print(f"wrote {args.out}")
    report(args.data, args.out, fits, df, models)


if __name__ == "__main__":
    main()
