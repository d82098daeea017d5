"""Scores across tasks in the ``rliable`` convention (Agarwal et al., NeurIPS 2021), in numpy:
the interquartile mean (IQM) of normalized scores and the probability of improvement, each
with a 95% stratified bootstrap interval (episodes resampled within each task)."""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
from scipy.stats import trim_mean


def iqm(scores: np.ndarray) -> float:
    """Mean of the middle 50% of all scores (25% trimmed from each end)."""
    return float(trim_mean(np.asarray(scores, dtype=float).ravel(), 0.25))


def _resample(per_task: List[np.ndarray], rng: np.random.Generator) -> List[np.ndarray]:
    return [x[rng.integers(len(x), size=len(x))] for x in per_task]


def iqm_with_ci(per_task: List[np.ndarray], rng: np.random.Generator, n: int) -> Tuple[float, float, float]:
    """IQM over every episode of every task and its stratified bootstrap 95% interval."""
    point = iqm(np.concatenate(per_task))
    boots = [iqm(np.concatenate(_resample(per_task, rng))) for _ in range(n)]
    return point, float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def prob_improvement(x: List[np.ndarray], y: List[np.ndarray]) -> float:
    """P(X > Y): per task the Mann-Whitney probability that an episode of X scores above one of
    Y (ties count half), averaged over tasks."""
    per = [float(((a[:, None] > b[None, :]) + 0.5 * (a[:, None] == b[None, :])).mean()) for a, b in zip(x, y)]
    return float(np.mean(per))


def prob_improvement_with_ci(x: List[np.ndarray], y: List[np.ndarray], rng: np.random.Generator,
                             n: int) -> Tuple[float, float, float]:
    point = prob_improvement(x, y)
    boots = [prob_improvement(_resample(x, rng), _resample(y, rng)) for _ in range(n)]
    return point, float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def aggregates(scores: Dict[str, List[np.ndarray]], reference: str, n: int, seed: int = 0):
    """Rows per policy: IQM of the normalized score with its interval, and P(policy > reference).
    ``scores[policy]`` holds one array of episode scores per task, tasks in the same order."""
    rng = np.random.default_rng(seed)
    rows = []
    for policy, per_task in scores.items():
        row = {"policy": policy, "tasks": len(per_task), "episodes": int(sum(len(x) for x in per_task))}
        row["iqm"], row["iqm_ci_low"], row["iqm_ci_high"] = iqm_with_ci(per_task, rng, n)
        if reference in scores and policy != reference:
            p, lo, hi = prob_improvement_with_ci(per_task, scores[reference], rng, n)
        else:
            p = lo = hi = float("nan")
        row[f"p_improve_over_{reference}"], row["p_improve_ci_low"], row["p_improve_ci_high"] = p, lo, hi
        rows.append(row)
    return rows
