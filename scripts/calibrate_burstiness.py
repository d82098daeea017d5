"""Burstiness of real arrivals and the v1 log-rate AR(1) calibrated on it.

    python scripts/calibrate_burstiness.py [/path/to/AzureLLMInferenceTrace_conv.csv]

Measures the index of dispersion of counts IDC(w) = Var(N_w) / E(N_w) of the Azure LLM
inference conversation trace (one hour, Nov 2023) over windows w from 1 s to 10 min, raw and
with the hour's linear rate trend divided out (the generator's diurnal curve is the trend), then
fits ``workload.rate_sigma`` and ``workload.rate_tau_s`` of the generator's per-minute log-rate
AR(1) to the detrended IDC at windows >= 60 s (the generator's rates are constant within a
minute, so it cannot reproduce the sub-minute clustering; the table shows that gap). Prints a
Markdown table for docs/workload.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

TRACE = Path("/work/shared/data/azure_llm_2023/AzureLLMInferenceTrace_conv.csv")
WINDOWS_S = (1, 2, 5, 10, 30, 60, 120, 300, 600)
BIN_S = 60.0


def arrival_seconds(path: Path) -> np.ndarray:
    t = pd.to_datetime(pd.read_csv(path, usecols=["TIMESTAMP"])["TIMESTAMP"])
    return np.sort((t - t.min()).dt.total_seconds().to_numpy())


def idc(t: np.ndarray, window: float, detrend: bool) -> float:
    """Index of dispersion of counts in consecutive windows; ``detrend``: counts divided by a
    linear fit of the rate over the span (then rescaled to the mean), so the trend adds nothing."""
    n = int(t.max() // window)
    c = np.bincount((t[t < n * window] // window).astype(int), minlength=n).astype(float)
    if detrend:
        x = np.arange(n)
        fit = np.polyval(np.polyfit(x, c, 1), x)
        c = c * c.mean() / np.maximum(fit, 1e-9)
    return float(c.var(ddof=1) / c.mean())


def model_idc(window: float, rate: float, sigma: float, tau: float) -> float:
    """IDC of a Poisson process whose rate is ``rate * exp(x - sigma^2/2)``, x a stationary AR(1)
    over minute bins (sd sigma, lag-one correlation exp(-60/tau)), rate constant within a bin.
    A window of whole bins sums the bins' covariances; a shorter one lies inside one bin."""
    phi = np.exp(-BIN_S / tau)
    if window < BIN_S:
        return 1.0 + rate * window * np.expm1(sigma ** 2)
    k = int(round(window / BIN_S))
    lags = np.arange(-(k - 1), k)
    cov = np.expm1(sigma ** 2 * phi ** np.abs(lags)) * (k - np.abs(lags))
    return float(1.0 + rate * BIN_S * cov.sum() / k)


def main(argv) -> int:
    path = Path(argv[0]) if argv else TRACE
    t = arrival_seconds(path)
    rate = len(t) / t.max()
    raw = {w: idc(t, w, False) for w in WINDOWS_S}
    flat = {w: idc(t, w, True) for w in WINDOWS_S}
    fit_w = [w for w in WINDOWS_S if w >= BIN_S]

    def loss(p):
        sigma, tau = np.exp(p)
        return sum((np.log(model_idc(w, rate, sigma, tau)) - np.log(flat[w])) ** 2 for w in fit_w)

    best = minimize(loss, np.log([0.3, 600.0]), method="Nelder-Mead")
    sigma, tau = np.exp(best.x)
    print(f"{path.name}: {len(t):,} arrivals over {t.max():.0f} s ({rate:.2f}/s)")
    print(f"fit on windows >= 60 s: rate_sigma = {sigma:.3f}, rate_tau_s = {tau:.0f}")
    print("\n| window (s) | trace IDC | trace IDC, trend removed | v1 AR(1) model at the trace's rate |")
    print("|---|---|---|---|")
    for w in WINDOWS_S:
        print(f"| {w} | {raw[w]:.2f} | {flat[w]:.2f} | {model_idc(w, rate, sigma, tau):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
