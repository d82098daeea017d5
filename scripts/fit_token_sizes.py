"""Fit the generator's token-size distribution on the Azure LLM inference trace (conversation).

Model: a mixture of bivariate log-normals, i.e. a Gaussian mixture on (ln prompt, ln output).
The trace's sizes are multimodal (templated prompts and capped outputs), which one log-normal
cannot follow, and prompt and output sizes are jointly drawn, so their weak correlation is kept.
The number of components is chosen by BIC up to ``--max-components`` (default 8: on this trace
BIC keeps improving as each popular templated size gets its own component, while the KS distance
of the marginals stays ~0.025 from 8 components on). Integer counts get uniform jitter in
[-0.5, 0.5) before the log so that components do not collapse onto single popular values.

Writes ``sageserve_env/workload/token_sizes.yaml`` (parameters, plus the trace's quantiles as
reference for tests). Usage::

    python scripts/fit_token_sizes.py [--data ../shared/data] [--max-components 8]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats
from scipy.special import logsumexp

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "azure_llm_2023/AzureLLMInferenceTrace_conv.csv"
OUT = ROOT / "sageserve_env" / "workload" / "token_sizes.yaml"
CLIP = (1, 32768)
QUANTILES = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
VAR_FLOOR = 1e-4  # smallest variance of a component in ln-token units


def _log_resp(x: np.ndarray, w: np.ndarray, mu: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Per-point, per-component log of weight x density."""
    return np.column_stack([np.log(w[k]) + stats.multivariate_normal.logpdf(x, mu[k], cov[k])
                            for k in range(len(w))])


def fit_gmm(x: np.ndarray, k: int, rng: np.random.Generator, restarts: int = 5, iters: int = 500):
    """EM for a k-component Gaussian mixture; best of ``restarts`` random initialisations."""
    n, d = x.shape
    best = None
    for _ in range(restarts):
        mu = x[rng.choice(n, k, replace=False)]
        cov = np.repeat(np.cov(x.T)[None], k, axis=0)
        w = np.full(k, 1.0 / k)
        prev = -np.inf
        for _ in range(iters):
            lr = _log_resp(x, w, mu, cov)
            ll = logsumexp(lr, axis=1)
            r = np.exp(lr - ll[:, None])
            nk = r.sum(axis=0) + 1e-12
            w = nk / n
            mu = (r.T @ x) / nk[:, None]
            for j in range(k):
                dx = x - mu[j]
                cov[j] = (r[:, j, None] * dx).T @ dx / nk[j] + VAR_FLOOR * np.eye(d)
            total = ll.sum()
            if total - prev < 1e-6 * n:
                break
            prev = total
        if best is None or total > best[0]:
            best = (total, w.copy(), mu.copy(), cov.copy())
    return best


def sample(w, mu, cov, n, rng):
    """Integer (prompt, output) tokens from the fitted mixture, clipped like the generator."""
    comp = rng.choice(len(w), size=n, p=w)
    z = np.empty((n, 2))
    for j in range(len(w)):
        idx = np.flatnonzero(comp == j)
        z[idx] = rng.multivariate_normal(mu[j], cov[j], size=len(idx))
    return np.clip(np.rint(np.exp(z)), *CLIP).astype(np.int64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--max-components", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    df = pd.read_csv(args.data / SOURCE)
    tokens = df[["ContextTokens", "GeneratedTokens"]].to_numpy(dtype=float)
    if (tokens < 1).any():
        raise SystemExit(f"{SOURCE}: token counts below 1; decide how to treat them before fitting")
    rng = np.random.default_rng(args.seed)
    x = np.log(tokens + rng.uniform(-0.5, 0.5, tokens.shape))  # counts >= 1, so x >= ln 0.5
    n = len(x)

    fits = {}
    for k in range(1, args.max_components + 1):
        ll, w, mu, cov = fit_gmm(x, k, rng)
        n_params = k * (1 + 2 + 3) - 1
        fits[k] = (-2 * ll + n_params * np.log(n), w, mu, cov)
    k_best = min(fits, key=lambda k: fits[k][0])
    bic, w, mu, cov = fits[k_best]
    order = np.argsort(mu[:, 0])
    w, mu, cov = w[order], mu[order], cov[order]

    sim = sample(w, mu, cov, 1_000_000, rng)
    q = list(QUANTILES)
    ks = [float(stats.ks_2samp(tokens[:, i], sim[:, i]).statistic) for i in range(2)]
    doc = {
        "distribution": "mixture of bivariate log-normals over (prompt_tokens, output_tokens)",
        "clip": list(CLIP),
        "components": [
            {"weight": round(float(w[j]), 6),
             "mean_ln": [round(float(v), 6) for v in mu[j]],
             "cov_ln": [[round(float(v), 6) for v in row] for row in cov[j]]}
            for j in range(k_best)
        ],
        "fit": {"rows": n, "components_by_bic": k_best, "bic": round(float(bic), 1),
                "ks_prompt": round(ks[0], 4), "ks_output": round(ks[1], 4)},
        "quantiles": q,
        "trace_quantiles": {
            "prompt_tokens": [float(v) for v in np.quantile(tokens[:, 0], q)],
            "output_tokens": [float(v) for v in np.quantile(tokens[:, 1], q)],
        },
        "fitted_quantiles": {
            "prompt_tokens": [float(v) for v in np.quantile(sim[:, 0], q)],
            "output_tokens": [float(v) for v in np.quantile(sim[:, 1], q)],
        },
    }
    header = (
        "# Token sizes for the synthetic generator, fitted by scripts/fit_token_sizes.py on\n"
        f"# shared/data/{SOURCE}\n"
        "# (Azure Public Dataset, Azure LLM inference trace 2023, conversation service, one hour,\n"
        "# CC-BY 4.0). Means and covariances are of ln(tokens).\n"
        "# Draws are rounded to integers and clipped to `clip`. trace_quantiles are the trace's own.\n"
    )
    OUT.write_text(header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100))
    print(f"wrote {OUT.relative_to(ROOT)}: {k_best} components, BIC {bic:.0f}, KS prompt {ks[0]:.3f} "
          f"output {ks[1]:.3f}")


if __name__ == "__main__":
    main()
